//! `vm`: the workload as a bare microVM guest, run by isolab's own minimal VMM on KVM.
//!
//! A virtual machine monitor is an ordinary process. It asks KVM for a VM, gives it some of its
//! own memory as guest RAM, creates a vCPU, puts a program and the CPU state it needs into the VM,
//! and then loops on `KVM_RUN`: the CPU runs guest code natively until the guest needs something,
//! exits to the VMM, which does it and resumes the guest. Everything interesting is in how little
//! that takes:
//!
//! * [`kvm`] — `/dev/kvm`, its API version and capabilities;
//! * [`memory`] — guest RAM, the layout, identity-mapping page tables;
//! * [`cpu`] — long mode in ring 3, set directly through `KVM_SET_SREGS`, as data; the GDT, TSS;
//!   CPUID;
//! * [`checks`] — the rules VT-x's VM entry and AMD-V's VMRUN apply to that state;
//! * [`idt`] — exceptions: the IDT and the VMM's ring-0 handlers that report them;
//! * [`loader`] — the guest ELF into guest RAM, every header checked;
//! * [`exits`] — a pure function from a VM exit to what it means;
//! * [`hypercalls`] — what the VMM does for each hypercall, guest addresses checked;
//! * [`vcpu`] — `KVM_RUN` under the guest's time limit: a timer, a signal and `immediate_exit`;
//! * [`vmm`] — what this VMM and the Linux one share: launch, errors, where a guest stopped,
//!   the cost report;
//! * [`machine`] — all of it put together.
//!
//! The guest is `guest/`: the same `isolab-kernels` crate as the Linux workload, compiled with
//! the same flags, over a shim of hypercalls (`isolab_kernels::hypercall` is the ABI).
//!
//! # One instance = one VMM process
//!
//! ```text
//!  lab ─ cgroup ─ fork ─► VMM child ── joins the instance's cgroup, installs fds 0..=4
//!   │                      │ kvm_open · vm_created · memory_mapped · vcpu_created
//!   │                      │ guest_loaded · first_entry
//!   │  ◄── marker lines ── │ KVM_RUN ⇄ hypercalls: ready, start, done (stamped by the VMM)
//!   │  ── go-ahead ──────► │ (holds, sleep: the VMM blocks in read(2))
//!   │  ◄── info lines ──── │ guest RAM, VMM USS, exits by cause; _exit
//!   └ Instance: wait, sample memory, reap, remove the cgroup
//! ```
//!
//! Like a container's init, the VMM is a child process in its own cgroup, so its memory —
//! guest RAM, KVM's structures, the VMM's own pages — is measured exactly as a container's, and a
//! VMM that crashes takes nothing down with it ([`vmm::launch`]).

pub mod checks;
pub mod cpu;
pub mod exits;
pub mod fixtures;
pub mod hypercalls;
pub mod idt;
pub mod kvm;
pub mod linux;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod vcpu;
pub mod vmm;

pub use loader::Guest;
pub use machine::{Machine, MachineConfig};
pub use vmm::{Place, Registers, VmmError};

use super::instance::{Instance, Timeline};
use super::{Availability, Backend, BackendError, Limits, Spec};
use crate::lab::Lab;
use crate::results::info;
use crate::workload::Kernel;
use hypercalls::Host;
use std::time::Duration;

/// The bare guest (`guest/`, built by build.rs): a static x86-64 ELF linked at 1 MiB.
pub static GUEST_ELF: &[u8] = include_bytes!(env!("ISOLAB_GUEST_PATH"));

/// Build a machine, run it to the end, report what it cost. The body of the VMM process, and of
/// in-process tests.
pub fn run_machine(
    config: &MachineConfig,
    guest: &Guest,
    spec: &Spec,
    host: &mut Host,
) -> Result<(), VmmError> {
    let mut machine = Machine::boot(config, guest, spec, host)?;
    let result = machine.run(host);
    // Whether the guest finished or not, its cost and its exits are worth knowing.
    machine.report(host);
    result
}

/// The `vm` backend.
#[derive(Clone, Debug)]
pub struct Vm {
    guest: Guest,
    ram_bytes: Option<u64>,
    time_limit: Option<Duration>,
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            guest: Guest::Elf(GUEST_ELF),
            ram_bytes: None,
            time_limit: None,
        }
    }
}

impl Vm {
    /// Run `guest` instead of the bare guest (test fixtures, experiments with other guests).
    pub fn with_guest(mut self, guest: Guest) -> Self {
        self.guest = guest;
        self
    }

    /// Give every guest `bytes` of RAM instead of what its kernel needs.
    pub fn with_ram(mut self, bytes: u64) -> Self {
        self.ram_bytes = Some(bytes);
        self
    }

    /// Stop a guest that runs longer than `limit` (default: 90% of the lab's timeout, so the
    /// VMM's report, with the guest's registers, arrives before the lab stops waiting).
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The machine an instance of `spec` gets: the arena its kernel needs plus the fixed low
    /// 2 MiB (page tables, stack, program), unless told otherwise.
    pub fn config(&self, lab: &Lab, spec: &Spec) -> MachineConfig {
        MachineConfig {
            ram_bytes: self
                .ram_bytes
                .unwrap_or_else(|| memory::ram_for_arena(spec.arena_bytes())),
            time_limit: self.time_limit.unwrap_or(lab.timeout.mul_f64(0.9)),
        }
    }
}

impl Backend for Vm {
    fn name(&self) -> &str {
        "vm"
    }

    fn describe(&self) -> &str {
        "bare microVM: isolab's KVM VMM (rust-vmm crates), a ring-3 guest running the shared kernels over hypercalls"
    }

    fn family(&self) -> crate::results::Family {
        crate::results::Family::VmNoOs
    }

    fn availability(&self, _lab: &Lab) -> Availability {
        match kvm::cache_supported_cpuid() {
            Ok(()) => Availability::Available,
            Err(e) => Availability::Unavailable(e.to_string()),
        }
    }

    /// A bare guest has no drivers: its only I/O is the VMM's hypercalls.
    fn supports(&self, _lab: &Lab, kernel: Kernel) -> Result<(), String> {
        if matches!(kernel, Kernel::ForkBomb | Kernel::MemHog) {
            return Err(
                "a bare guest has no OS: no processes to fork, and no memory to run out of but \
                 the RAM its VMM mapped (vm-linux runs these kernels in a Linux guest)"
                    .into(),
            );
        }
        if kernel.needs_disk() || kernel.needs_network() {
            return Err(
                "a bare guest has no disk or network driver (vm-linux runs these kernels, with \
                 virtio devices)"
                    .into(),
            );
        }
        Ok(())
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let timeline = Timeline::start();
        vmm::prepare(self.name())?;
        let config = self.config(lab, spec);
        // Refuse an impossible machine here, in the lab, rather than in a child.
        memory::check_size(config.ram_bytes).map_err(|e| BackendError::Instance {
            step: "guest memory".into(),
            detail: e.to_string(),
        })?;
        let guest = self.guest;
        let mut instance = vmm::launch(
            lab,
            self.name(),
            &lab.next_instance_name(),
            spec,
            limits,
            timeline,
            |host| run_machine(&config, &guest, spec, host),
        )?;
        instance.note(info::GUEST_OS, "none");
        if let Guest::Elf(elf) = &self.guest {
            instance.note(info::IMAGE_BYTES, elf.len());
            instance.note(
                info::IMAGE,
                "bare guest ELF: the kernels and a hypercall shim, no OS",
            );
        }
        // A bare guest has no OS: its file I/O and its view of the system are the VMM's.
        if matches!(spec.kernel, Kernel::Io | Kernel::Probe) {
            instance.note(info::SERVED_BY, "vmm");
        }
        Ok(instance)
    }
}
