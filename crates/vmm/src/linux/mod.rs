//! A Linux guest in isolab's own VMM — what Firecracker does, in a few hundred lines.
//!
//! The bare guest ([`super`]) shows the least a VM costs. A Linux guest shows what a real
//! microVM costs: the guest kernel boots, mounts, starts `/init`, and the workload runs as a
//! process *inside* the guest. The VMM is the same one, grown by what a kernel needs:
//!
//! * [`boot`] — the kernel, initramfs and command line in guest memory, and the boot structures
//!   of the PVH or Linux boot protocol (linux-loader), with the e820 memory map;
//! * [`cpu`] — the vCPU as each protocol promises it, and the guest's CPUID;
//! * [`devices`] — a 16550 UART (vm-superio) whose output is the captured console, an i8042 whose
//!   reset line ends the run, a CMOS clock, the marker port; PIC, I/O APIC and PIT live in KVM;
//! * [`mptable`] — the MP table that tells the kernel about the I/O APIC;
//! * [`virtio`] — a disk and a network card: virtio-blk and virtio-net over MMIO;
//! * [`acpi`] — the ACPI tables that describe them to a kernel that reads ACPI (Debian's);
//! * [`machine`] — all of it put together, and the run loop;
//! * [`snapshot`] — the machine saved at `ready`, and restored without a boot.
//!
//! It reuses the bare VMM's skeleton ([`isolab_vmm::vmm`]): `/dev/kvm` and its capability checks, guest
//! memory, the segment descriptors and the guest state as data, the run loop under the time limit,
//! exit counting, the error type and the report of where a guest stopped, the cost report, and
//! the process model — one forked VMM child per instance, in the instance's cgroup. What is here
//! is only what a Linux kernel adds.
//!
//! # Which kernel, which protocol
//!
//! The kernel is found as for every Linux-guest backend (`lab kernel show`). By default the VMM
//! boots it through **PVH**: the uncompressed vmlinux starts at its 32-bit entry, and no
//! decompressor runs in the guest; a bzImage is decompressed once on the host to get there
//! ([`isolab_linux_guest::extract`]). [`VmLinux::with_protocol`] selects the Linux boot protocol
//! (the bzImage itself, decompressing in the guest) instead.
//!
//! # Where this works
//!
//! With hardware virtualization (VT-x, AMD-V) the guest kernel runs natively. On nested PVM —
//! the lab's own CI machines — guest ring 0 is emulated and a Linux kernel cannot finish booting:
//! the backend is unavailable there, and `--force` boots it as far as it goes (with XSAVE hidden
//! and every kernel message on the console, so "as far as it goes" can be read).

pub mod acpi;
pub mod boot;
pub mod cpu;
pub mod devices;
pub mod machine;
pub mod mptable;
pub mod snapshot;
pub mod virtio;

use isolab_host::facts::KvmKind;

/// The boot protocol the VMM uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The vmlinux's PVH entry (extracted from a bzImage if need be).
    Pvh,
    /// The bzImage through the Linux boot protocol's 64-bit entry.
    BzImage,
}

/// The environment variable that sets how virtio notifications reach the devices when
/// [`VmLinux::with_notify`] did not: `exit` for MMIO exits to the vCPU thread, anything else
/// (or nothing) for ioeventfds. For measuring the difference with an unchanged `lab`.
pub const NOTIFY_ENV: &str = "ISOLAB_VIRTIO_NOTIFY";

/// Why a Linux guest cannot run on KVM of this kind, if it cannot.
pub fn kvm_problem(kind: KvmKind) -> Option<String> {
    match kind {
        KvmKind::NestedPvm => Some(
            "/dev/kvm is nested PVM: guest ring 0 is emulated (~1000x slower) and cannot run \
             x87/SSE/XSAVE, so a Linux kernel cannot finish booting (`--force` boots it as far \
             as it goes; the qemu backend boots it with TCG emulation)"
                .into(),
        ),
        KvmKind::Absent => Some("no /dev/kvm".into()),
        _ => None,
    }
}
