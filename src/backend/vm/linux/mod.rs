//! `vm-linux`: a Linux guest in isolab's own VMM — what Firecracker does, in a few hundred lines.
//!
//! The bare guest ([`super`]) shows the least a VM costs. A Linux guest shows what a real
//! microVM costs: the guest kernel boots, mounts, starts `/init`, and the workload runs as a
//! process *inside* the guest. The VMM is the same one, grown by what a kernel needs:
//!
//! * [`boot`] — the kernel, initramfs and command line in guest memory, and the boot structures
//!   of the PVH or Linux boot protocol (linux-loader), with the e820 memory map;
//! * [`cpu`] — the vCPU as each protocol promises it, and the guest's CPUID;
//! * [`devices`] — a 16550 UART (vm-superio) whose output is the captured console, an i8042 whose
//!   reset line ends the run, the marker port; PIC, I/O APIC and PIT live in KVM;
//! * [`machine`] — all of it put together, and the run loop.
//!
//! It reuses the bare VMM's core: `/dev/kvm` and its capability checks, guest memory, the segment
//! descriptors, the guest time limit, the host end of the report pipe, and the process model —
//! one forked VMM child per instance, in the instance's cgroup.
//!
//! # Which kernel, which protocol
//!
//! The kernel is found as for every Linux-guest backend (`lab kernel show`). By default the VMM
//! boots it through **PVH**: the uncompressed vmlinux starts at its 32-bit entry, and no
//! decompressor runs in the guest; a bzImage is decompressed once on the host to get there
//! ([`crate::linux_guest::extract`]). [`VmLinux::with_protocol`] selects the Linux boot protocol
//! (the bzImage itself, decompressing in the guest) instead.
//!
//! # Where this works
//!
//! With hardware virtualization (VT-x, AMD-V) the guest kernel runs natively. On nested PVM —
//! the lab's own CI machines — guest ring 0 is emulated and a Linux kernel cannot finish booting:
//! the backend is unavailable there, and `--force` boots it as far as it goes (with XSAVE hidden
//! and every kernel message on the console, so "as far as it goes" can be read).

pub mod boot;
pub mod cpu;
pub mod devices;
pub mod machine;

use super::super::child::{self, ChildFds, CONTROL_FD, REPORT_FD};
use super::super::instance::{Instance, Parts, Timeline};
use super::super::{Availability, Backend, BackendError, Limits, Spec};
use super::hypercalls::Host;
use super::machine::Registers;
use super::vmm_child;
use super::{kvm, memory, vcpu};
use crate::host::KvmKind;
use crate::lab::Lab;
use crate::linux_guest::cmdline::{self, CmdlineOptions, Reboot};
use crate::linux_guest::kernel::{self, ImageKind, KernelImage};
use crate::linux_guest::{self, extract, initramfs_path, ram_bytes};
use isolab_kernels::marker;
use machine::LinuxConfig;
use nix::unistd::{fork, ForkResult};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// Errors of the Linux VMM.
#[derive(Debug, thiserror::Error)]
pub enum LinuxVmError {
    /// KVM is missing or unusable.
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    /// Guest RAM could not be made.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The vCPU could not be set up.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// The kernel could not be loaded.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// The time limit could not be set up.
    #[error(transparent)]
    Watchdog(#[from] vcpu::WatchdogError),
    /// A VM ioctl failed.
    #[error("{op}: {source}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// Host I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What the VMM was doing.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// `KVM_RUN` failed.
    #[error("KVM_RUN: {0}")]
    Run(kvm_ioctls::Error),
    /// The guest stopped where it cannot go on.
    #[error("{what}{}; {context}", at(.regs))]
    Stopped {
        /// What happened.
        what: String,
        /// Where the guest was.
        regs: Option<Registers>,
        /// How far the guest got, and why it could not go further.
        context: String,
    },
    /// The guest ran past its time limit.
    #[error("the guest was still booting after {limit:?} and was stopped{}; {context}", at(.regs))]
    Timeout {
        /// The limit.
        limit: Duration,
        /// Where it was.
        regs: Option<Registers>,
        /// How far the guest got.
        context: String,
    },
}

fn at(regs: &Option<Registers>) -> String {
    regs.map_or_else(String::new, |r| format!(" at {r}"))
}

impl LinuxVmError {
    /// The `step=` of the error line.
    pub fn step(&self) -> &'static str {
        match self {
            LinuxVmError::Kvm(_) | LinuxVmError::Ioctl { .. } => "kvm",
            LinuxVmError::Memory(_) => "guest memory",
            LinuxVmError::Cpu(_) => "vcpu setup",
            LinuxVmError::Boot(_) => "load kernel",
            LinuxVmError::Watchdog(_) => "time limit",
            LinuxVmError::Io { .. } => "vmm",
            LinuxVmError::Run(_) => "KVM_RUN",
            LinuxVmError::Stopped { .. } => "guest stopped",
            LinuxVmError::Timeout { .. } => "guest timeout",
        }
    }
}

/// The boot protocol the VMM uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The vmlinux's PVH entry (extracted from a bzImage if need be).
    Pvh,
    /// The bzImage through the Linux boot protocol's 64-bit entry.
    BzImage,
}

/// The `vm-linux` backend.
#[derive(Clone, Debug)]
pub struct VmLinux {
    protocol: Protocol,
    verbose: Option<bool>,
    console_log: Option<PathBuf>,
    time_limit: Option<Duration>,
}

impl Default for VmLinux {
    fn default() -> Self {
        VmLinux {
            protocol: Protocol::Pvh,
            verbose: None,
            console_log: None,
            time_limit: None,
        }
    }
}

impl VmLinux {
    /// Boot through `protocol`.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Every kernel message on the console (default: only where the guest cannot finish, so
    /// its log shows how far it got).
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = Some(verbose);
        self
    }

    /// Keep the console in this file (default: the lab's work directory, removed with it).
    pub fn with_console_log(mut self, path: PathBuf) -> Self {
        self.console_log = Some(path);
        self
    }

    /// Stop a guest after `limit` (default: 90% of the lab's timeout).
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The command line options for this host.
    pub fn cmdline_options(&self) -> CmdlineOptions {
        let hardware = KvmKind::detect().is_hardware();
        CmdlineOptions {
            reboot: Reboot::Keyboard,
            verbose: self.verbose.unwrap_or(!hardware),
            marker_port: Some(marker::PORT),
            extra: Vec::new(),
        }
    }

    /// The guest command line for `spec`.
    pub fn cmdline(&self, spec: &Spec) -> String {
        cmdline::render(spec, &self.cmdline_options())
    }

    /// The kernel file the VMM loads for `image`.
    fn kernel_file(&self, image: &KernelImage) -> Result<PathBuf, BackendError> {
        match (self.protocol, image.kind) {
            (Protocol::Pvh, _) => {
                extract::cached_vmlinux(image).map_err(|e| BackendError::Instance {
                    step: "extract vmlinux".into(),
                    detail: e.to_string(),
                })
            }
            (Protocol::BzImage, ImageKind::BzImage { .. }) => Ok(image.path.clone()),
            (Protocol::BzImage, ImageKind::Elf) => Err(BackendError::Instance {
                step: "load kernel".into(),
                detail: format!(
                    "{} is a vmlinux, not a bzImage: boot it through PVH",
                    image.path.display()
                ),
            }),
        }
    }
}

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

impl Backend for VmLinux {
    fn name(&self) -> &str {
        "vm-linux"
    }

    fn describe(&self) -> &str {
        "Linux microVM: isolab's KVM VMM boots a Linux kernel (linux-loader, PVH) with the workload as /init"
    }

    fn family(&self) -> crate::results::Family {
        crate::results::Family::VmGuestOs
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if let Availability::Unavailable(why) = Availability::of_cgroups(lab) {
            return Availability::Unavailable(why);
        }
        if let Some(why) = kvm_problem(KvmKind::detect()) {
            return Availability::Unavailable(why);
        }
        if let Err(e) = kvm::open() {
            return Availability::Unavailable(e.to_string());
        }
        match kernel::find(lab.guest_kernel.as_deref()) {
            Ok(_) => Availability::Available,
            Err(e) => Availability::Unavailable(e.to_string()),
        }
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let unavailable = |reason: String| BackendError::Unavailable {
            backend: "vm-linux".into(),
            reason,
        };
        // Once per lab, in the parent: every VMM forked from now on inherits both.
        kvm::cache_supported_cpuid().map_err(|e| unavailable(e.to_string()))?;
        vcpu::install_handler().map_err(|e| BackendError::Instance {
            step: "time limit".into(),
            detail: e.to_string(),
        })?;
        let image =
            kernel::find(lab.guest_kernel.as_deref()).map_err(|e| unavailable(e.to_string()))?;
        let kernel_file = self.kernel_file(&image)?;
        let initrd = initramfs_path(lab).map_err(|e| BackendError::Instance {
            step: "initramfs".into(),
            detail: e.to_string(),
        })?;
        timeline.mark("image");
        let name = lab.next_instance_name();
        let config = LinuxConfig {
            ram_bytes: ram_bytes(spec),
            time_limit: self.time_limit.unwrap_or(lab.timeout.mul_f64(0.9)),
            kernel: kernel_file.clone(),
            initrd: initrd.clone(),
            cmdline: self.cmdline(spec),
            hide_xsave: KvmKind::detect() == KvmKind::NestedPvm,
            console_log: self
                .console_log
                .clone()
                .unwrap_or_else(|| lab.workdir().join(format!("console-{name}.log"))),
        };
        let cgroup = lab.cgroups()?.create(&name, limits)?;
        let join = cgroup.join_fds()?;
        timeline.mark("cgroup");
        let (ends, fds) = child::pipes(None)?;
        // SAFETY: as for the `vm` backend: the child has only this thread; glibc's fork makes
        // malloc usable in it; it takes no lock of the lab's and ends in `_exit`.
        match unsafe { fork() }.map_err(BackendError::sys("fork"))? {
            ForkResult::Child => vmm_process(&join, &fds, &config),
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
                linux_guest::note_guest(
                    &mut instance,
                    &image,
                    &kernel_file,
                    &initrd,
                    &config.cmdline,
                );
                Ok(instance)
            }
        }
    }
}

/// **Child side.** Join the cgroup, take fds 0..=4, run the VMM, `_exit`.
fn vmm_process(join: &[OwnedFd], fds: &ChildFds, config: &LinuxConfig) -> ! {
    vmm_child(join, fds, || {
        // SAFETY: `install` put the report pipe at REPORT_FD; it stays open until _exit.
        let report = unsafe { BorrowedFd::borrow_raw(REPORT_FD) };
        // SAFETY: likewise the control pipe at CONTROL_FD; the input thread takes it over.
        let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
        // Host's own control end is never read: the input thread owns the pipe.
        // SAFETY: fd 0 is /dev/null (installed above); borrowed only as a placeholder.
        let placeholder = unsafe { BorrowedFd::borrow_raw(0) };
        let host = Host::new(report, placeholder, std::env::temp_dir());
        match machine::run(config, &host, report, control) {
            Ok(_) => 0,
            Err(e) => {
                host.error(e.step(), &e.to_string());
                1
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Kernel;

    #[test]
    fn the_command_line_asks_for_the_marker_port_and_the_keyboard_reset() {
        let line = VmLinux::default().cmdline(&Spec::default_for(Kernel::Ready));
        assert!(line.contains("reboot=k"));
        assert!(line.ends_with(&format!(" port={}", marker::PORT)));
        assert!(line.len() < cmdline::MAX_LEN);
    }

    #[test]
    fn nested_pvm_is_refused_with_the_reason() {
        let why = kvm_problem(KvmKind::NestedPvm).unwrap();
        assert!(why.contains("nested PVM") && why.contains("--force"));
        assert!(kvm_problem(KvmKind::HardwareVtx).is_none());
        assert!(kvm_problem(KvmKind::HardwareAmdV).is_none());
    }
}
