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
//! * [`cpu`] — long mode in ring 3, set directly through `KVM_SET_SREGS`; the GDT; CPUID;
//! * [`loader`] — the guest ELF into guest RAM, every header checked;
//! * [`exits`] — a pure function from a VM exit to what it means;
//! * [`hypercalls`] — what the VMM does for each hypercall, guest addresses checked;
//! * [`vcpu`] — the guest's time limit: a timer, a signal and `immediate_exit`;
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
//! VMM that crashes takes nothing down with it. It is a real copy-on-write `fork`, not the
//! lab's cheap `spawn_shared`: the VMM is not a program to `exec` but code of `lab` itself that
//! allocates and runs for the whole life of the instance.

pub mod cpu;
pub mod exits;
pub mod fixtures;
pub mod hypercalls;
pub mod kvm;
pub mod linux;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod vcpu;

pub use loader::Guest;
pub use machine::{Machine, MachineConfig, Registers};

use super::child::{self, ChildFds, Reporter, CONTROL_FD, REPORT_FD};
use super::instance::{Instance, Parts, Timeline};
use super::{Availability, Backend, BackendError, Limits, Spec};
use crate::lab::Lab;
use crate::results::info;
use crate::workload::Kernel;
use hypercalls::Host;
use nix::unistd::{fork, ForkResult};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// The bare guest (`guest/`, built by build.rs): a static x86-64 ELF linked at 1 MiB.
pub static GUEST_ELF: &[u8] = include_bytes!(env!("ISOLAB_GUEST_PATH"));

/// Errors of the VMM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM is missing, unusable or refused an ioctl.
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    /// Guest RAM could not be made or written.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The vCPU's state could not be set.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// The guest program could not be loaded.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    /// The time limit could not be set up.
    #[error(transparent)]
    Watchdog(#[from] vcpu::WatchdogError),
    /// A hypercall ended the run (the kernel failed, the guest panicked).
    #[error(transparent)]
    Hypercall(#[from] hypercalls::HypercallError),
    /// `KVM_RUN` itself failed.
    #[error("KVM_RUN: {0}")]
    Run(kvm_ioctls::Error),
    /// The guest crashed.
    #[error("{fault}{detail} at {}", show(.regs))]
    GuestFault {
        /// What happened.
        fault: exits::Fault,
        /// What KVM added.
        detail: String,
        /// Where the guest was.
        regs: Option<Registers>,
    },
    /// The guest ran past its time limit.
    #[error("the guest ran for {limit:?} without finishing and was stopped at {}", show(.regs))]
    GuestTimeout {
        /// The limit.
        limit: Duration,
        /// Where the guest was.
        regs: Option<Registers>,
    },
}

fn show(regs: &Option<Registers>) -> String {
    regs.map_or_else(|| "(registers unreadable)".into(), |r| r.to_string())
}

impl VmError {
    /// The `step=` and `msg=` of the error line. A kernel's own failure reads exactly as the
    /// Linux workload reports it (`step=<kernel> msg=<error>`).
    pub fn step_and_message(&self) -> (String, String) {
        let step = match self {
            VmError::Kvm(_) => "kvm",
            VmError::Memory(_) => "guest memory",
            VmError::Cpu(_) => "vcpu setup",
            VmError::Load(_) => "load guest",
            VmError::Watchdog(_) => "time limit",
            VmError::Run(_) => "KVM_RUN",
            VmError::GuestFault { .. } => "guest fault",
            VmError::GuestTimeout { .. } => "guest timeout",
            VmError::Hypercall(hypercalls::HypercallError::KernelFailed { kernel, error }) => {
                return (kernel.to_string(), format!("{error:?}"))
            }
            VmError::Hypercall(hypercalls::HypercallError::Panic(_)) => "guest panic",
            VmError::Hypercall(_) => "hypercall",
        };
        (step.to_string(), self.to_string())
    }
}

/// Build a machine, run it to the end, report what it cost. The body of the VMM process, and of
/// in-process tests.
pub fn run_machine(
    config: &MachineConfig,
    guest: &Guest,
    spec: &Spec,
    host: &mut Host,
) -> Result<(), VmError> {
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

    fn availability(&self, lab: &Lab) -> Availability {
        if let Some(why) = lab.cgroup_problem() {
            return Availability::Unavailable(format!("no usable cgroups: {why}"));
        }
        match kvm::cache_supported_cpuid() {
            Ok(()) => Availability::Available,
            Err(e) => Availability::Unavailable(e.to_string()),
        }
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        // Once per lab, here in the parent: every VMM forked from now on inherits both.
        kvm::cache_supported_cpuid().map_err(|e| BackendError::Unavailable {
            backend: self.name().into(),
            reason: e.to_string(),
        })?;
        vcpu::install_handler().map_err(|e| BackendError::Instance {
            step: "time limit".into(),
            detail: e.to_string(),
        })?;
        let config = self.config(lab, spec);
        // Refuse an impossible machine here, in the lab, rather than in a child.
        memory::check_size(config.ram_bytes).map_err(|e| BackendError::Instance {
            step: "guest memory".into(),
            detail: e.to_string(),
        })?;
        let cgroup = lab.cgroups()?.create(&lab.next_instance_name(), limits)?;
        let join = cgroup.join_fds()?;
        timeline.mark("cgroup");

        let scratch = lab.scratch_dir();
        let (ends, fds) = child::pipes(None)?;
        // SAFETY: fork in a process that may have other threads: the child has only this one,
        // and a lock another thread held at the fork stays locked in the child. glibc's fork
        // re-initialises malloc's locks in the child, so the VMM may allocate; it takes no other
        // lock of the lab's (no stdout, no environment), and it ends in `_exit`, never returning
        // into the lab's code.
        match unsafe { fork() }.map_err(BackendError::sys("fork"))? {
            ForkResult::Child => vmm_process(&join, &fds, &config, &self.guest, spec, &scratch),
            ForkResult::Parent { child } => {
                drop(fds);
                drop(join);
                let mut instance = Instance::new(Parts {
                    backend: self.name().into(),
                    spec: *spec,
                    main: child,
                    helpers: Vec::new(),
                    cgroup: Some(cgroup),
                    ends,
                    timeline,
                    timeout: lab.timeout,
                    cleanup: Vec::new(),
                });
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
    }
}

/// **Child side.** Join the cgroup first (so everything the VMM allocates, KVM's kernel memory
/// included, is charged to the instance), take fds 0..=4, run the VMM, `_exit`.
fn vmm_process(
    join: &[OwnedFd],
    fds: &ChildFds,
    config: &MachineConfig,
    guest: &Guest,
    spec: &Spec,
    scratch: &Path,
) -> ! {
    vmm_child(join, fds, || {
        // SAFETY: `install` put the report and control pipes at these numbers; they stay open
        // until this process exits.
        let (report, control) = unsafe {
            (
                BorrowedFd::borrow_raw(REPORT_FD),
                BorrowedFd::borrow_raw(CONTROL_FD),
            )
        };
        let mut host = Host::new(report, control, scratch.to_path_buf());
        match run_machine(config, guest, spec, &mut host) {
            Ok(()) => 0,
            Err(e) => {
                let (step, msg) = e.step_and_message();
                host.error(&step, &msg);
                1
            }
        }
    })
}

/// **Child side**, in a VMM process just forked from the lab: join the instance's cgroup first
/// (so everything the VMM allocates, KVM's kernel memory included, is charged to the instance),
/// take fds 0..=4, stamp `fork`, arrange to die with the lab, run `vmm` and `_exit` with its
/// status. A panic must not unwind into the lab's code that called fork: it is caught and
/// becomes status 101.
pub(crate) fn vmm_child(join: &[OwnedFd], fds: &ChildFds, vmm: impl FnOnce() -> i32) -> ! {
    if let Err(e) = child::join_cgroup(join) {
        fds.reporter().fail("join cgroup", e);
    }
    if let Err(e) = fds.install() {
        fds.reporter().fail("install fds", e);
    }
    let report = Reporter::INSTALLED;
    report.phase("fork");
    if let Err(e) = child::die_with_parent() {
        report.fail("prctl", e);
    }
    // AssertUnwindSafe: after a panic the process exits at once, so no half-updated state is
    // ever observed.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(vmm)).unwrap_or(101);
    child::exit_now(code)
}
