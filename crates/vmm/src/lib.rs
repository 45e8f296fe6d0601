//! # isolab-vmm
//!
//! isolab's own virtual machine monitor on KVM: the workload as a bare microVM guest, and a
//! Linux guest with real devices ([`linux`]).
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
//! * [`machine`] — all of it put together;
//! * [`snapshot`] — a ready machine saved to a file, and restored from it by mapping.
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
//! VMM that crashes takes nothing down with it (`isolab-backends`' `vmm_launch`).

pub mod checks;
pub mod cpu;
pub mod exits;
pub mod fixtures;
pub mod hypercalls;
pub mod idt;
pub mod kvm;
pub mod layout;
pub mod linux;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod snapshot;
pub mod vcpu;
pub mod vmm;

pub use loader::Guest;
pub use machine::{Machine, MachineConfig};
pub use vmm::{Place, Registers, VmmError};

use hypercalls::Host;
use isolab_payload::Spec;

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

/// Build a machine, run it to its `ready`, and save it into `file` instead of going on: the
/// body of the VMM process that takes a snapshot. It stamps `snapshot_state` and
/// `snapshot_memory` when each is saved and reports the bytes of RAM it wrote.
pub fn snapshot_machine(
    config: &MachineConfig,
    guest: &Guest,
    spec: &Spec,
    host: &mut Host,
    file: &std::fs::File,
) -> Result<(), VmmError> {
    let mut machine = Machine::boot(config, guest, spec, host)?;
    machine.run_until_ready(host)?;
    machine.snapshot(host, file)?;
    machine.report(host);
    Ok(())
}

/// Restore a machine from the snapshot in `file` and run it to the end: the body of a restored
/// VMM process. `spec` is what the lab expects the snapshot's guest to run; a snapshot of
/// anything else is refused.
pub fn restore_machine(
    config: &MachineConfig,
    file: &std::fs::File,
    spec: &Spec,
    prefault: bool,
    host: &mut Host,
) -> Result<(), VmmError> {
    let mut machine = Machine::restore(config, file, spec, prefault, host)?;
    let result = machine.run(host);
    machine.report(host);
    result
}
