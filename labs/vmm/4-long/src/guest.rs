//! Step 5: the lab's bare guest — the workload's kernels with no operating system — in this VMM.
//!
//! The guest is a static ELF executable (`guest/` in the lab). Its contract with a VMM is
//! `isolab_kernels::hypercall`: the VMM loads it, writes a **boot page** saying what to run,
//! enters it in long mode ring 3 (step 4), and serves its **hypercalls**: the guest writes its
//! arguments into the **mailbox** page, then `out dx, eax` with a call code to the hypercall port;
//! KVM stops the vCPU (`KVM_EXIT_IO`); the VMM does the work, writes the result into the mailbox
//! and runs the vCPU again.

use super::{entry, fail, Machine, Report};
use kvm_ioctls::{Kvm, VcpuExit};
use labkit::isolab_kernels::hypercall::{
    decode_error, mailbox, status, BootInfo, Call, BOOT_ADDR, IMAGE_BASE, IMAGE_END, MAILBOX_ADDR,
    PORT,
};
use labkit::vmm::Request;

/// The kernels' working memory: from 2 MiB to the end of RAM.
const ARENA: u64 = 2 << 20;

/// Load the bare guest, tell it what to run, and serve it until it exits.
pub fn run(kvm: &Kvm, machine: &mut Machine, elf: &[u8], request: &Request, report: Report) {
    let _ = (kvm, machine, elf, request, load_elf, serve);
    // TODO(step 5): load the ELF (load_elf), write the BootInfo words at BOOT_ADDR, enter
    // long mode at the ELF's entry point, then serve hypercalls until Call::Exit.
    report.todo(5, "run the bare guest");
}

/// Copy each loadable segment of a static ELF executable to the guest-physical address it was
/// linked for; the entry point. Every number from the file is checked before use.
fn load_elf(machine: &mut Machine, elf: &[u8]) -> Result<u64, String> {
    let _ = (machine, elf);
    Err("step 5: load_elf".into())
}

/// Serve one hypercall; false when the guest is finished.
fn serve(call: Call, machine: &mut Machine, spec: &labkit::vmm::Spec, report: Report) -> bool {
    let _ = (call, machine, spec, report);
    false
}
