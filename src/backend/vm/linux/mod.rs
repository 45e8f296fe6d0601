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
//!   reset line ends the run, a CMOS clock, the marker port; PIC, I/O APIC and PIT live in KVM;
//! * [`mptable`] — the MP table that tells the kernel about the I/O APIC;
//! * [`virtio`] — a disk and a network card: virtio-blk and virtio-net over MMIO;
//! * [`acpi`] — the ACPI tables that describe them to a kernel that reads ACPI (Debian's);
//! * [`machine`] — all of it put together, and the run loop.
//!
//! It reuses the bare VMM's skeleton ([`super::vmm`]): `/dev/kvm` and its capability checks, guest
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
//! ([`crate::linux_guest::extract`]). [`VmLinux::with_protocol`] selects the Linux boot protocol
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
pub mod virtio;

use super::super::instance::{Instance, Timeline};
use super::super::{Availability, Backend, BackendError, Limits, Spec};
use super::{kvm, vmm};
use crate::host::KvmKind;
use crate::lab::Lab;
use crate::linux_guest::cmdline::{self, CmdlineOptions, Reboot};
use crate::linux_guest::devices::{Discovery, GuestDevices, NetBacking};
use crate::linux_guest::kernel::{self, ImageKind, KernelImage};
use crate::linux_guest::symbols::Symbols;
use crate::linux_guest::{self, extract, initramfs_path, ram_bytes};
use crate::network::tap::Tap;
use isolab_kernels::marker;
use machine::LinuxConfig;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

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
    notify: Option<virtio::Notify>,
}

impl Default for VmLinux {
    fn default() -> Self {
        VmLinux {
            protocol: Protocol::Pvh,
            verbose: None,
            console_log: None,
            time_limit: None,
            notify: None,
        }
    }
}

/// The environment variable that sets how virtio notifications reach the devices when
/// [`VmLinux::with_notify`] did not: `exit` for MMIO exits to the vCPU thread, anything else
/// (or nothing) for ioeventfds. For measuring the difference with an unchanged `lab`.
pub const NOTIFY_ENV: &str = "ISOLAB_VIRTIO_NOTIFY";

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

    /// Serve virtio notifications this way (default: [`NOTIFY_ENV`], else ioeventfds).
    pub fn with_notify(mut self, notify: virtio::Notify) -> Self {
        self.notify = Some(notify);
        self
    }

    fn notify(&self) -> virtio::Notify {
        self.notify
            .unwrap_or_else(|| match std::env::var(NOTIFY_ENV).as_deref() {
                Ok("exit") => virtio::Notify::Exit,
                _ => virtio::Notify::Ioeventfd,
            })
    }

    /// The command line options for this host.
    pub fn cmdline_options(&self) -> CmdlineOptions {
        let hardware = KvmKind::detect().is_hardware();
        CmdlineOptions {
            reboot: Reboot::Keyboard,
            verbose: self.verbose.unwrap_or(!hardware),
            marker_port: Some(marker::PORT),
            extra: Vec::new(),
            modules: false,
            init: Vec::new(),
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

    /// A VM reads a copy of the lab's image of its own: no file of the host's is shared.
    fn image_files(&self, _lab: &Lab) -> Result<Vec<std::path::PathBuf>, BackendError> {
        Ok(Vec::new())
    }

    /// A disk or network kernel needs a guest kernel that can drive the disk or the card:
    /// refused, naming the drivers it lacks and the fix, before anything starts.
    fn supports(&self, lab: &Lab, kernel: crate::workload::Kernel) -> Result<(), String> {
        crate::linux_guest::devices::refusal_for(lab, kernel)
    }

    /// A disk kernel's guest gets a disk, a network kernel's a network card (see
    /// [`Lab::guest_devices`]); whatever the lab made for it goes when it ends.
    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let (devices, provisions) = lab.guest_devices(spec, &lab.next_instance_name())?;
        let mut instance = self.start_with(lab, spec, limits, devices)?;
        provisions.hand_to(lab, &mut instance);
        Ok(instance)
    }
}

impl VmLinux {
    /// [`Backend::start`] with `devices`: a disk (`/dev/vda`) and a network card (`eth0`) for
    /// this guest, served by the VMM's own virtio devices. A kernel that cannot drive them is
    /// refused, naming the drivers it lacks.
    pub fn start_with(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
        devices: GuestDevices,
    ) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let unavailable = |reason: String| BackendError::Unavailable {
            backend: "vm-linux".into(),
            reason,
        };
        vmm::prepare(self.name())?;
        let image =
            kernel::find(lab.guest_kernel.as_deref()).map_err(|e| unavailable(e.to_string()))?;
        let (block, net) = (devices.block.is_some(), devices.net.is_some());
        let wanted = linux_guest::devices::Wanted {
            block,
            net,
            ext4: devices.image,
        };
        // What the kernel needs for the devices: drivers (built in, or modules to carry) and
        // a way to find them (its command line, or ACPI tables).
        let (modules, discovery) = if devices.is_empty() {
            (Vec::new(), Discovery::None)
        } else {
            let drivers = linux_guest::devices::inspect(&image);
            if let Some(why) = drivers.refusal(wanted) {
                return Err(unavailable(why));
            }
            (drivers.modules(wanted), drivers.discovery)
        };
        let kernel_file = self.kernel_file(&image)?;
        let initrd = initramfs_path(lab, &modules).map_err(|e| BackendError::Instance {
            step: "initramfs".into(),
            detail: e.to_string(),
        })?;
        timeline.mark("image");
        let name = lab.next_instance_name();
        let mut options = self.cmdline_options();
        options.modules = !modules.is_empty();
        options.init = devices.init_words.clone();
        let mut config = LinuxConfig {
            ram_bytes: ram_bytes(spec),
            time_limit: self.time_limit.unwrap_or(lab.timeout.mul_f64(0.9)),
            kernel: kernel_file.clone(),
            initrd: initrd.clone(),
            cmdline: String::new(),
            hide_xsave: KvmKind::detect() == KvmKind::NestedPvm,
            console_log: self
                .console_log
                .clone()
                .unwrap_or_else(|| lab.workdir().join(format!("console-{name}.log"))),
            // Symbols name where a guest stopped; only a PVH boot runs the kernel at the
            // addresses it was linked for (the bzImage's decompressor may move it: KASLR).
            symbols: (self.protocol == Protocol::Pvh)
                .then(|| Symbols::locate(&image, &kernel_file))
                .flatten(),
            block: devices.block,
            net: devices.net,
            acpi: discovery == Discovery::Acpi,
            notify: self.notify(),
        };
        if discovery == Discovery::CommandLine {
            options
                .extra
                .extend(config.slots().iter().map(|(_, slot)| slot.cmdline()));
        }
        config.cmdline = cmdline::render(spec, &options);
        // The VMM is a fork that keeps only the descriptors it is given: the tap is one.
        let keep = config
            .net
            .as_ref()
            .map(|n| n.tap.try_clone_fd())
            .transpose()
            .map_err(BackendError::io("dup the tap"))?
            .into_iter()
            .collect();
        let mut instance = vmm::launch_keeping(
            lab,
            self.name(),
            &name,
            spec,
            limits,
            timeline,
            keep,
            |host, kept| {
                let net = match (&config.net, kept.first()) {
                    (Some(n), Some(&fd)) => Some(NetBacking {
                        // SAFETY: the launch installed the tap's copy at this number in this
                        // process, and nothing else owns it.
                        tap: Tap::inherited(unsafe { OwnedFd::from_raw_fd(fd) }, n.tap.name()),
                        mac: n.mac,
                    }),
                    _ => None,
                };
                machine::run(&config, net.as_ref(), host).map(drop)
            },
        )?;
        for (key, value) in linux_guest::guest_facts(&image, &kernel_file, &initrd, &config.cmdline)
        {
            instance.note(key, value);
        }
        Ok(instance)
    }
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
