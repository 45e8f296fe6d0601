//! `vm-linux`: a Linux guest in isolab's own VMM ([`isolab_vmm::linux`]): the kernel the lab
//! found, an initramfs with the workload as `/init`, one forked VMM process per instance.

use crate::instance::{Instance, Timeline};
use crate::lab::Lab;
use crate::linux_vm;
use crate::restore::{Restore, RestoreOptions, Snapshot};
use crate::vm::{kept_file, snapshot_error, snapshot_taken};
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_host::facts::KvmKind;
use isolab_kernels::marker;
use isolab_linux_guest as linux_guest;
use isolab_linux_guest::cmdline::{CmdlineOptions, Reboot};
use isolab_linux_guest::devices::{Discovery, GuestDevices, NetBacking};
use isolab_linux_guest::guest_kernel::{ImageKind, KernelImage};
use isolab_linux_guest::symbols::Symbols;
use isolab_linux_guest::Boot;
use isolab_linux_guest::{cmdline, extract, ram_bytes};
use isolab_resources::network::tap::Tap;
use isolab_results::info;
use isolab_vmm::kvm;
use isolab_vmm::linux::{kvm_problem, machine, virtio, Protocol, NOTIFY_ENV};
use machine::LinuxConfig;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

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

impl Backend for VmLinux {
    fn name(&self) -> &str {
        "vm-linux"
    }

    fn describe(&self) -> &str {
        "Linux microVM: isolab's KVM VMM boots a Linux kernel (linux-loader, PVH) with the workload as /init"
    }

    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::VmGuestOs
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if let Some(why) = kvm_problem(KvmKind::detect()) {
            return Availability::Unavailable(why);
        }
        if let Err(e) = kvm::open() {
            return Availability::Unavailable(e.to_string());
        }
        linux_vm::kernel_availability(lab)
    }

    /// A VM reads a copy of the lab's image of its own: no file of the host's is shared.
    fn image_files(&self, _lab: &Lab) -> Result<Vec<std::path::PathBuf>, BackendError> {
        Ok(Vec::new())
    }

    fn supports(&self, lab: &Lab, kernel: isolab_payload::Kernel) -> Result<(), String> {
        linux_vm::supports(lab, kernel)
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        linux_vm::start(lab, spec, |devices| {
            self.start_with(lab, spec, limits, devices)
        })
    }

    fn restorer(&self) -> Option<&dyn Restore> {
        Some(self)
    }
}

/// How the VMM child makes its machine ([`machine::Start`]), with the snapshot file it is
/// handed as a descriptor where there is one.
#[derive(Debug)]
enum Making {
    Cold,
    Snapshot(OwnedFd),
    Restore { file: OwnedFd, prefault: bool },
}

/// `vm-linux` snapshots: the VMM saves the whole machine at `/init`'s `ready` — vCPU, local
/// APIC, interrupt controllers, PIT, clock, UART, RAM — into an unnamed file of the lab's
/// ([`isolab_vmm::linux::snapshot`]); each restore is a new VMM process that maps that file as
/// guest RAM (shared copy-on-write, as `vm`'s) and puts the state back: no kernel boots.
impl Restore for VmLinux {
    fn restore_availability(&self, lab: &Lab) -> Availability {
        self.availability(lab)
    }

    fn checkpoint(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<Snapshot, BackendError> {
        let file = Snapshot::unnamed_file(lab)?;
        let theirs = file
            .try_clone()
            .map_err(snapshot_error("duplicate the snapshot file's descriptor"))?;
        let instance = linux_vm::start(lab, spec, |devices| {
            self.launch(
                lab,
                spec,
                limits,
                devices,
                Making::Snapshot(OwnedFd::from(theirs)),
            )
        })?;
        // The guest is saved at `ready` and never says it: the VMM ends after the snapshot.
        let run = instance.finish()?;
        snapshot_taken(
            self.name(),
            spec,
            file,
            &run,
            "ready_held",
            "vcpu, interrupt controllers, devices",
        )
    }

    fn restore(
        &self,
        lab: &Lab,
        snapshot: &Snapshot,
        limits: &Limits,
        options: &RestoreOptions,
    ) -> Result<Instance, BackendError> {
        let Some(file) = snapshot.file() else {
            return Err(BackendError::Instance {
                step: "snapshot".into(),
                detail: format!("a snapshot of {} is not a vm-linux's", snapshot.backend),
            });
        };
        let theirs = file
            .try_clone_to_owned()
            .map_err(snapshot_error("duplicate the snapshot file's descriptor"))?;
        let spec = snapshot.spec;
        let prefault = options.prefault;
        let mut instance = linux_vm::start(lab, &spec, |devices| {
            self.launch(
                lab,
                &spec,
                limits,
                devices,
                Making::Restore {
                    file: theirs,
                    prefault,
                },
            )
        })?;
        snapshot.note_restored(&mut instance, prefault);
        instance.note(
            info::IMAGE,
            "a snapshot of the Linux guest at ready, its RAM mapped MAP_PRIVATE",
        );
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
        self.launch(lab, spec, limits, devices, Making::Cold)
    }

    /// Start the VMM child that makes its machine as `making` says.
    fn launch(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
        devices: GuestDevices,
        making: Making,
    ) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        crate::vmm_launch::prepare(self.name())?;
        let Boot {
            image,
            modules,
            discovery,
            initrd,
        } = linux_vm::boot(lab, self.name(), &devices)?;
        let kernel_file = self.kernel_file(&image)?;
        let image_disk = devices.image;
        timeline.mark("image");
        let name = lab.next_instance_name();
        let mut options = self.cmdline_options();
        options.modules = !modules.is_empty();
        options.init = devices.init_words.clone();
        let mut config = LinuxConfig {
            ram_bytes: ram_bytes(spec),
            time_limit: self.time_limit.unwrap_or(lab.settings.timeout.mul_f64(0.9)),
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
        // The VMM is a fork that keeps only the descriptors it is given: the tap is one, the
        // snapshot file another.
        let mut keep: Vec<OwnedFd> = config
            .net
            .as_ref()
            .map(|n| n.tap.try_clone_fd())
            .transpose()
            .map_err(BackendError::io("dup the tap"))?
            .into_iter()
            .collect();
        // The snapshot file, after the tap; `restore`: the prefault asked for (None: taking one).
        let snapshot_at = keep.len();
        let restore = match making {
            Making::Cold => None,
            Making::Snapshot(file) => {
                keep.push(file);
                None
            }
            Making::Restore { file, prefault } => {
                keep.push(file);
                Some(prefault)
            }
        };
        let mut instance = crate::vmm_launch::launch_keeping(
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
                let file = kept.get(snapshot_at).map(|&fd| kept_file(fd));
                let start = match (&file, restore) {
                    (None, _) => machine::Start::Cold,
                    (Some(f), None) => machine::Start::Snapshot(f),
                    (Some(f), Some(prefault)) => machine::Start::Restore { file: f, prefault },
                };
                machine::run_as(&config, net.as_ref(), host, start).map(drop)
            },
        )?;
        let facts =
            linux_guest::guest_facts(&image, &kernel_file, &initrd, image_disk, &config.cmdline);
        for (key, value) in facts {
            instance.note(key, value);
        }
        Ok(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_payload::Kernel;

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
