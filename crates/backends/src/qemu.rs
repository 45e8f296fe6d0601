//! `qemu`: the Linux guest under QEMU's `microvm` machine — an outside reference for `vm-linux`.
//!
//! The same kernel, the same initramfs and the same command line as the lab's own VMM boots, run
//! by the most widely used VMM there is. QEMU's `microvm` machine is its answer to Firecracker:
//! no PCI, no firmware tables beyond what Linux needs, a 16550 UART, and the kernel loaded
//! directly (`-kernel`, `-initrd`, `-append`).
//!
//! * With hardware virtualization (`host::KvmKind::is_hardware`) QEMU runs the guest on KVM
//!   (`-accel kvm -cpu host`): a fair comparison with `vm-linux`.
//! * Without it — nested PVM here, where a Linux guest kernel cannot run on KVM — QEMU
//!   **emulates** the CPU with TCG, its dynamic binary translator (`-accel tcg`): every guest
//!   instruction is translated to host code. The guest boots and the workload's checksum is
//!   right, but every time is an emulator's time, not a virtual machine's. Such runs carry
//!   `info.emulated`, and every table and plot labels them *emulated*.
//!
//! # The console is the only channel
//!
//! QEMU's serial port is connected to its standard input and output (`-serial stdio`), which are
//! pipes to the lab. A **relay thread** in the lab sits between them and the instance:
//!
//! ```text
//!  guest /init ─ UART ─► QEMU stdout ─► relay: Console (log, stamp on arrival) ─► report pipe ─► Instance
//!  Instance ─ control pipe (go-ahead) ─► relay ─► QEMU stdin ─► UART ─► /init's read(0)
//! ```
//!
//! So [`Instance`] sees exactly what it sees from every backend: marker lines with `t=` on the
//! host clock, and a go-ahead byte it writes for `hold` and `sleep`. When the lab closes the
//! control pipe (the end of a `sleep`), the relay sends the guest one last byte, so the guest
//! ends as a process would at end of file.
//!
//! # The same devices
//!
//! Given a disk and a network card ([`Qemu::start_with`]), QEMU gets the same devices as the
//! lab's VMM gives, virtio over MMIO in their modern form (`virtio-mmio.force-legacy=false`;
//! QEMU's default is still the legacy layout, version 1):
//!
//! * `-drive file=…,format=raw,if=none,cache=none,aio=threads -device virtio-blk-device`:
//!   `cache=none` is `O_DIRECT`, as the lab's VMM opens the file (both fall back to the host's
//!   page cache where the file system refuses `O_DIRECT`, e.g. tmpfs before Linux 6.6), and
//!   `aio=threads` serves requests by `pread`/`pwrite` on worker threads, as the lab's device
//!   thread does;
//! * `-netdev tap,fd=4 -device virtio-net-device,mac=…`: the tap the lab made, inherited as fd
//!   4 (QEMU never opens `/dev/net/tun` itself, and needs no privileges for it);
//!
//! `microvm` describes them to the guest as the lab's VMM does — in ACPI tables for Debian's
//! kernel; for the kernel of `lab kernel build`, which has no ACPI, it goes without
//! (`acpi=off`) and declares them on the command line (`auto-kernel-cmdline`).
//!
//! The guest stops with `reboot=t` (a triple fault), which `-no-reboot` turns into QEMU's exit.
//! QEMU is the instance's only process and lives in the instance's cgroup, so its memory —
//! guest RAM it touched, TCG's translation cache, QEMU itself — is the instance's memory.

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::linux_vm;
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_host::clock::now_ns;
use isolab_host::facts::KvmKind;
use isolab_linux_guest as linux_guest;
use isolab_linux_guest::cmdline::{CmdlineOptions, Reboot};
use isolab_linux_guest::console::Console;
use isolab_linux_guest::devices::{mac_string, GuestDevices};
use isolab_linux_guest::guest_kernel::KernelImage;
use isolab_linux_guest::Boot;
use isolab_linux_guest::{cmdline, ram_bytes};
use isolab_results::info;
use isolab_spawn::child::{close_from, high, ChildSide, Exec, ParentEnds, Reporter};
use isolab_spawn::spawn_exec;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The QEMU program for x86-64 guests.
pub const QEMU: &str = "qemu-system-x86_64";

/// How QEMU runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through KVM.
    Kvm,
    /// Emulation by QEMU's Tiny Code Generator.
    Tcg,
}

impl Accel {
    /// KVM where the host has VT-x/AMD-V, else TCG.
    pub fn for_host() -> Accel {
        if KvmKind::detect().is_hardware() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// The `qemu` backend.
#[derive(Clone, Debug, Default)]
pub struct Qemu {
    accel: Option<Accel>,
    verbose: bool,
    console_log: Option<PathBuf>,
}

impl Qemu {
    /// Force an accelerator instead of choosing by the host.
    pub fn with_accel(mut self, accel: Accel) -> Qemu {
        self.accel = Some(accel);
        self
    }

    /// Boot with every kernel message on the console (slower), instead of `quiet`.
    pub fn verbose(mut self, verbose: bool) -> Qemu {
        self.verbose = verbose;
        self
    }

    /// Keep the guest's console in this file (default: a file in the lab's work directory,
    /// removed with it).
    pub fn with_console_log(mut self, path: PathBuf) -> Qemu {
        self.console_log = Some(path);
        self
    }

    fn accel(&self) -> Accel {
        self.accel.unwrap_or_else(Accel::for_host)
    }

    /// The guest command line for `spec`.
    pub fn cmdline(&self, spec: &Spec) -> String {
        cmdline::render(spec, &self.cmdline_options())
    }

    fn cmdline_options(&self) -> CmdlineOptions {
        let mut extra = Vec::new();
        if self.accel() == Accel::Tcg {
            // Under TCG the guest's TSC *is* the host's (QEMU reads the host's cycle counter
            // for the guest's rdtsc), but the kernel does not know its frequency and measures
            // it against the emulated PIT over a few milliseconds. On a busy host the emulator
            // misses that window, calibration fails, and the kernel then waits forever for a
            // timer it cannot calibrate. Telling it the frequency skips the measurement.
            if let Some(khz) = host_tsc_khz() {
                extra.push(format!("tsc_early_khz={khz}"));
            }
        }
        CmdlineOptions {
            reboot: Reboot::TripleFault,
            verbose: self.verbose,
            marker_port: None,
            extra,
            modules: false,
            init: Vec::new(),
        }
    }

    /// QEMU's arguments for one guest.
    pub fn args(&self, kernel: &Path, initrd: &Path, spec: &Spec) -> Vec<String> {
        self.args_with(kernel, initrd, spec, &self.cmdline_options(), None, false)
    }

    /// QEMU's arguments for one guest with `devices` (the tap, if any, is QEMU's fd
    /// [`TAP_FD`]) and the command line of `options`. `cmdline_devices`: the kernel finds its
    /// devices on its command line, not in ACPI tables (the kernel of `lab kernel build`):
    /// `microvm` then goes without ACPI and adds `virtio_mmio.device=` words itself
    /// (`auto-kernel-cmdline`, which it does only without ACPI).
    pub fn args_with(
        &self,
        kernel: &Path,
        initrd: &Path,
        spec: &Spec,
        options: &CmdlineOptions,
        devices: Option<&GuestDevices>,
        cmdline_devices: bool,
    ) -> Vec<String> {
        let cmdline_devices = cmdline_devices && devices.is_some_and(|d| !d.is_empty());
        let machine = if cmdline_devices {
            "microvm,acpi=off,auto-kernel-cmdline=off"
        } else {
            "microvm"
        };
        let mut args: Vec<String> = vec!["-M".into(), machine.into()];
        match self.accel() {
            Accel::Kvm => args.extend(["-accel", "kvm", "-cpu", "host"].map(String::from)),
            Accel::Tcg => args.extend(["-accel", "tcg"].map(String::from)),
        }
        args.extend(
            [
                "-smp",
                "1",
                "-m",
                &format!("{}M", ram_bytes(spec) >> 20),
                // Only the devices asked for; no config files, no window, no monitor.
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                "stdio",
                // A guest reset (our reboot) ends QEMU instead of booting again.
                "-no-reboot",
                "-kernel",
                &kernel.to_string_lossy(),
                "-initrd",
                &initrd.to_string_lossy(),
                "-append",
                &cmdline::render(spec, options),
            ]
            .map(String::from),
        );
        let Some(devices) = devices.filter(|d| !d.is_empty()) else {
            return args;
        };
        // The modern virtio-mmio layout (version 2), as the lab's VMM has.
        args.extend(["-global", "virtio-mmio.force-legacy=false"].map(String::from));
        // Devices declared on the command line are pinned to known transports.
        let bus = |n: usize| {
            if cmdline_devices {
                format!(",bus=virtio-mmio-bus.{n}")
            } else {
                String::new()
            }
        };
        // QEMU opens the disk by its path, as root: safe because no user but root (and the
        // lab's) may change a directory on it (`isolab_resources::disks`, "Paths others open").
        if let Some(block) = &devices.block {
            let cache = if linux_guest::devices::direct_io_works(&block.path) {
                "none"
            } else {
                "writeback"
            };
            args.push("-drive".into());
            args.push(format!(
                "id=vda,file={},format=raw,if=none,cache={cache},aio=threads{}",
                // QEMU's option syntax doubles a comma inside a value.
                block.path.to_string_lossy().replace(',', ",,"),
                if block.read_only { ",readonly=on" } else { "" }
            ));
            args.push("-device".into());
            args.push(format!("virtio-blk-device,drive=vda{}", bus(0)));
        }
        if let Some(net) = &devices.net {
            args.push("-netdev".into());
            args.push(format!("tap,id=net0,fd={TAP_FD},vhost=off"));
            args.push("-device".into());
            args.push(format!(
                "virtio-net-device,netdev=net0,mac={}{}",
                mac_string(&net.mac),
                bus(usize::from(devices.block.is_some()))
            ));
        }
        args
    }
}

/// The `virtio_mmio.device=` word for QEMU `microvm`'s transport `n`: its transports are 512
/// bytes apart from 0xfeb0_0000, on interrupt lines from 5 (QEMU's `hw/i386/microvm.c`). QEMU
/// appends such words itself (`auto-kernel-cmdline`), but at the end of the command line,
/// where they would land after `--`, among `/init`'s arguments: the lab writes them before.
pub fn microvm_cmdline_device(n: usize) -> String {
    format!(
        "virtio_mmio.device=512@{:#x}:{}",
        0xfeb0_0000u64 + 0x200 * n as u64,
        5 + n
    )
}

/// The descriptor number QEMU finds the guest's tap at.
pub const TAP_FD: RawFd = 4;

/// The descriptor number a restored QEMU finds its migration stream at (`fd:5`).
pub const STREAM_FD: RawFd = 5;

/// The QEMU program on PATH.
pub fn qemu_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU))
        .find(|p| p.is_file())
}

/// The host's TSC frequency in kHz, measured once: TSC ticks over 20 ms of `CLOCK_MONOTONIC`.
/// `None` on a CPU without a constant-rate TSC, whose frequency means nothing.
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
        if !flags.split_whitespace().any(|f| f == "constant_tsc") {
            return None;
        }
        // SAFETY: rdtsc reads a counter; it has no memory effects (CR4.TSD is clear for user
        // mode on Linux, or the flag above would not be reported usable).
        let tsc = || unsafe { std::arch::x86_64::_rdtsc() };
        let (t0, c0) = (now_ns(), tsc());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (t1, c1) = (now_ns(), tsc());
        let ns = t1.checked_sub(t0).filter(|&ns| ns > 0)?;
        Some((c1.wrapping_sub(c0) as u128 * 1_000_000 / ns as u128) as u64)
    })
}

impl Backend for Qemu {
    fn name(&self) -> &str {
        "qemu"
    }

    fn describe(&self) -> &str {
        "the Linux guest under QEMU microvm: KVM with hardware virtualization, else TCG emulation (labelled emulated)"
    }

    fn family(&self) -> isolab_results::Family {
        // Under TCG its runs report `emulated` and are recorded as emulated (Family::of_run).
        isolab_results::Family::VmGuestOs
    }

    /// Only with hardware virtualization: under TCG one boot takes seconds, and its times are an
    /// emulator's, so `lab run` uses it only when asked (`--backends qemu`) — and says so, for
    /// here it may be the only VM with a guest OS that boots at all.
    fn left_out_by_default(&self) -> Option<String> {
        (self.accel() == Accel::Tcg).then(|| {
            "no VT-x/AMD-V here: QEMU would emulate the CPU (TCG), so its guest boots in \
             seconds and its times are an emulator's, not a VM's; `--backends qemu` runs it \
             anyway, labelled emulated"
                .to_string()
        })
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if qemu_path().is_none() {
            return Availability::Unavailable(format!(
                "{QEMU} is not installed (Debian/Ubuntu: sudo apt install qemu-system-x86)"
            ));
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

    fn restorer(&self) -> Option<&dyn crate::Restore> {
        Some(self)
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        linux_vm::start(lab, spec, |devices| {
            self.start_with(lab, spec, limits, devices)
        })
    }
}

impl Qemu {
    /// [`Backend::start`] with `devices`: the same disk and network card the lab's VMM gives
    /// (see the module documentation). A kernel that cannot drive them is refused, naming the
    /// drivers it lacks.
    pub fn start_with(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
        devices: GuestDevices,
    ) -> Result<Instance, BackendError> {
        Ok(self
            .launch(lab, spec, limits, devices, Extra::default())?
            .instance)
    }

    /// Start QEMU for `spec` with `devices`, and what `extra` adds for a snapshot.
    pub(crate) fn launch(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
        devices: GuestDevices,
        extra: Extra,
    ) -> Result<Launched, BackendError> {
        // Under TCG the command line carries the host's TSC frequency, measured once per lab
        // over 20 ms: measure it before the clock of the first start begins.
        if self.accel() == Accel::Tcg {
            host_tsc_khz();
        }
        let mut timeline = Timeline::start();
        let unavailable = |reason: String| BackendError::Unavailable {
            backend: "qemu".into(),
            reason,
        };
        let qemu = qemu_path().ok_or_else(|| unavailable(format!("{QEMU} not found in PATH")))?;
        let Boot {
            image,
            modules,
            discovery,
            initrd,
        } = linux_vm::boot(lab, self.name(), &devices)?;
        let (block, net) = (devices.block.is_some(), devices.net.is_some());
        let cmdline_devices = discovery == linux_guest::devices::Discovery::CommandLine;
        // The initramfs is written once per lab: this edge is long only for a lab's first guest.
        timeline.mark("image");

        let mut options = self.cmdline_options();
        options.modules = !modules.is_empty();
        if cmdline_devices {
            let count = usize::from(block) + usize::from(net);
            options.extra.extend((0..count).map(microvm_cmdline_device));
        }
        options.init = devices.init_words.clone();
        let guest_args = self.args_with(
            &image.path,
            &initrd,
            spec,
            &options,
            Some(&devices),
            cmdline_devices,
        );
        if let Some(expected) = &extra.expect_args {
            if *expected != guest_args {
                return Err(BackendError::Instance {
                    step: "snapshot".into(),
                    detail: args_differ(expected, &guest_args),
                });
            }
        }
        let name = lab.next_instance_name();
        let cgroup = lab.instance_cgroup(&name, limits)?;
        let placement = isolab_resources::cgroup::Placement::of(cgroup.as_ref())?;
        if cgroup.is_some() {
            timeline.mark("cgroup");
        }
        let mut args = guest_args.clone();
        // The QMP socket, for a snapshot: a Unix socket (no network listener) in a 0700
        // directory of the lab's work directory, so no one but the lab can reach it.
        let qmp = if extra.qmp {
            let dir = lab.workdir().join("qmp");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&dir)
                .map_err(BackendError::io(format!("make {}", dir.display())))?;
            Some(dir.join(format!("{name}.sock")))
        } else {
            None
        };
        if let Some(path) = &qmp {
            args.push("-qmp".into());
            args.push(format!(
                "unix:{},server=on,wait=off",
                path.to_string_lossy().replace(',', ",,")
            ));
            // A migration stream records whether the guest ran (its "global state"): a guest
            // stopped to be saved would be restored stopped. Left out, the restoring QEMU
            // starts the guest itself once the state is loaded, as a QEMU without `-S` does.
            args.extend(["-global", "migration.store-global-state=off"].map(String::from));
        }
        let incoming = extra.incoming.map(high).transpose()?;
        if incoming.is_some() {
            // Wait for the lab to say where the state comes from (`migrate-incoming`), so that
            // the lab is listening for QMP's events before the state loads.
            args.extend(["-incoming", "defer"].map(String::from));
        }
        let exec = Exec::new(&qemu, QEMU, &args, &[]);
        let tap = devices
            .net
            .as_ref()
            .map(|n| n.tap.try_clone_fd())
            .transpose()
            .map_err(BackendError::io("dup the tap"))?
            .map(high)
            .transpose()?;
        let pipes = QemuPipes::new(tap, incoming)?;
        let log_path = self
            .console_log
            .clone()
            .unwrap_or_else(|| lab.workdir().join(format!("console-{name}.log")));
        let log = File::create(&log_path)
            .map_err(BackendError::io(format!("create {}", log_path.display())))?;

        let pid =
            spawn_exec(0, &placement, &pipes.child, &exec).map_err(BackendError::sys("clone"))?;
        drop(placement);
        let QemuPipes {
            child,
            parent,
            relay,
        } = pipes;
        drop(child);
        let relay = std::thread::Builder::new()
            .name("qemu-console".into())
            .spawn(move || relay.run(Console::new(Some(log))))
            .map_err(BackendError::io("start the console relay"))?;
        let socket = qmp.clone();

        let mut instance = Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup,
            ends: parent,
            timeline,
            timeout: lab.settings.timeout,
            // QEMU is gone by the time clean-up runs, so the relay has seen the end of its
            // output and is finishing: wait for it, so no thread outlives the instance. QEMU
            // leaves its QMP socket's name behind: removed here (or with the work directory).
            cleanup: vec![Box::new(move || {
                let _ = relay.join();
                if let Some(path) = socket {
                    let _ = std::fs::remove_file(path);
                }
            })],
        });
        note_guest(&mut instance, &image, &initrd, devices.image, spec, self);
        instance.note(info::GUEST_CMDLINE, cmdline::render(spec, &options));
        if let Some(net) = &devices.net {
            instance.note("net_tap", net.tap.name());
        }
        // QEMU holds its own descriptor of the tap (fd 4); the lab's copy goes with `devices`.
        drop(devices);
        Ok(Launched {
            instance,
            guest_args,
            qmp,
        })
    }
}

/// What a start for a snapshot adds to a cold start's QEMU ([`Qemu::launch`]).
#[derive(Default)]
pub(crate) struct Extra {
    /// Give QEMU a QMP socket in the lab's work directory.
    pub qmp: bool,
    /// A migration stream to load, QEMU's descriptor [`STREAM_FD`]: QEMU starts with
    /// `-incoming defer` and loads it when told to over QMP.
    pub incoming: Option<OwnedFd>,
    /// The guest's arguments a snapshot was taken with: a guest whose arguments now differ is
    /// refused before QEMU starts.
    pub expect_args: Option<Vec<String>>,
}

/// A QEMU started by [`Qemu::launch`].
pub(crate) struct Launched {
    pub instance: Instance,
    /// QEMU's arguments for the guest (without `-qmp` and `-incoming`).
    pub guest_args: Vec<String>,
    /// Its QMP socket, if asked for.
    pub qmp: Option<PathBuf>,
}

/// Why a snapshot's QEMU arguments are not the ones this guest would have, in one line.
fn args_differ(expected: &[String], now: &[String]) -> String {
    let first = expected
        .iter()
        .zip(now)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(now.len()));
    format!(
        "the snapshot was taken of another guest: QEMU's argument {} was {:?}, is now {:?} \
         (another workload, guest kernel, initramfs or host TSC frequency)",
        first + 1,
        expected.get(first).map_or("", String::as_str),
        now.get(first).map_or("", String::as_str),
    )
}

/// The facts every `qemu` run records.
fn note_guest(
    instance: &mut Instance,
    image: &KernelImage,
    initrd: &Path,
    image_disk: Option<u64>,
    spec: &Spec,
    q: &Qemu,
) {
    let cmdline = q.cmdline(spec);
    for (key, value) in linux_guest::guest_facts(image, &image.path, initrd, image_disk, &cmdline) {
        instance.note(key, value);
    }
    instance.note(info::GUEST_RAM_BYTES, ram_bytes(spec));
    match q.accel() {
        Accel::Tcg => instance.note(
            info::EMULATED,
            "QEMU TCG: the guest CPU is emulated by binary translation",
        ),
        Accel::Kvm => instance.note("accel", "kvm"),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), BackendError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(BackendError::sys("pipe2"))?;
    Ok((high(r)?, high(w)?))
}

/// QEMU's fds: stdin = the guest's input, stdout = the serial output, stderr, and fd 3 = the
/// report pipe, for the child's own `fork`/`exec` stamps (close-on-exec: QEMU never sees it);
/// fd 4 = the guest's tap, if it has a network card; fd 5 ([`STREAM_FD`]) = the migration
/// stream a restore loads.
struct ChildEnds([OwnedFd; 4], Option<OwnedFd>, Option<OwnedFd>);

impl ChildSide for ChildEnds {
    fn install(&self) -> Result<(), Errno> {
        install(self)
    }
    fn reporter(&self) -> Reporter {
        Reporter::at(self.0[3].as_raw_fd())
    }
}

/// The relay thread's ends.
struct Relay {
    serial: File,
    guest_input: File,
    control: File,
    report: File,
    stderr: File,
}

/// Every pipe of one QEMU instance.
struct QemuPipes {
    child: ChildEnds,
    parent: ParentEnds,
    relay: Relay,
}

impl QemuPipes {
    fn new(tap: Option<OwnedFd>, stream: Option<OwnedFd>) -> Result<QemuPipes, BackendError> {
        let (serial_r, serial_w) = pipe()?;
        let (input_r, input_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let (report_r, report_w) = pipe()?;
        let (control_r, control_w) = pipe()?;
        let dup = |fd: &OwnedFd| -> Result<OwnedFd, BackendError> {
            Ok(high(fd.try_clone().map_err(BackendError::io("dup"))?)?)
        };
        Ok(QemuPipes {
            child: ChildEnds(
                [input_r, serial_w, dup(&stderr_w)?, dup(&report_w)?],
                tap,
                stream,
            ),
            parent: ParentEnds {
                report: File::from(report_r),
                control: File::from(control_w),
                stderr: File::from(stderr_r),
            },
            relay: Relay {
                serial: File::from(serial_r),
                guest_input: File::from(input_w),
                control: File::from(control_r),
                report: File::from(report_w),
                stderr: File::from(stderr_w),
            },
        })
    }
}

/// **Child side.** Put the ends at 0..=3, keep 3 close-on-exec, the tap at 4 and a migration
/// stream at 5 if there are, close everything else.
fn install(child: &ChildEnds) -> Result<(), Errno> {
    for (target, fd) in child.0.iter().enumerate() {
        // SAFETY: dup2 of an fd we own onto a small fixed number.
        Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) })?;
    }
    // SAFETY: fcntl on fd 3, just installed.
    Errno::result(unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // dup2 clears close-on-exec on the copy: QEMU inherits the tap as fd 4 and the stream as
    // fd 5. Every end sits at 10 or above (`high`), so no dup2 here overwrites another.
    for (fd, target) in [(&child.1, TAP_FD), (&child.2, STREAM_FD)] {
        if let Some(fd) = fd {
            // SAFETY: dup2 of an fd we own onto a small fixed number.
            Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
        }
    }
    // Whatever is not used of 4 and 5 is closed with the rest.
    if child.1.is_none() {
        // SAFETY: closing a descriptor number this child does not use.
        unsafe { libc::close(TAP_FD) };
    }
    close_from(STREAM_FD + 1);
    if child.2.is_none() {
        // SAFETY: as above.
        unsafe { libc::close(STREAM_FD) };
    }
    Ok(())
}

impl Relay {
    /// Move bytes until QEMU's serial output ends (QEMU exited).
    fn run(mut self, mut console: Console) {
        let mut control_open = true;
        let mut buf = [0u8; 4096];
        loop {
            let mut fds = vec![PollFd::new(self.serial.as_fd(), PollFlags::POLLIN)];
            if control_open {
                fds.push(PollFd::new(self.control.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
            let serial_ready = fds[0].any().unwrap_or(false);
            let control_ready = control_open && fds[1].any().unwrap_or(false);
            drop(fds);
            if control_ready {
                match self.control.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        // The lab let go of the instance: one last byte releases a guest that
                        // waits for the host, as end of file releases a process.
                        let _ = self.guest_input.write_all(b"\n");
                        control_open = false;
                    }
                    Ok(n) => {
                        let _ = self.guest_input.write_all(&buf[..n]);
                    }
                }
            }
            if serial_ready {
                match self.serial.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        for line in console.feed(&buf[..n], now_ns()) {
                            let _ = self.report.write_all(&line);
                        }
                    }
                }
            }
        }
        for line in console.finish(now_ns()) {
            let _ = self.report.write_all(&line);
        }
        // Where the guest's own story stopped, for the error message of a run that failed.
        if let Some(last) = console.last_kernel_line() {
            let _ = writeln!(self.stderr, "guest console, last line: {last}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_linux_guest::devices::BlockBacking;
    use isolab_payload::Kernel;

    fn args(devices: &GuestDevices, cmdline_devices: bool) -> Vec<String> {
        let q = Qemu::default().with_accel(Accel::Tcg);
        q.args_with(
            Path::new("/k"),
            Path::new("/i"),
            &Spec::default_for(Kernel::Probe),
            &q.cmdline_options(),
            Some(devices),
            cmdline_devices,
        )
    }

    #[test]
    fn a_disk_is_a_modern_virtio_mmio_device_on_the_file() {
        let devices = GuestDevices {
            block: Some(BlockBacking {
                path: "/var/tmp/a,b.img".into(),
                read_only: false,
            }),
            ..Default::default()
        };
        let a = args(&devices, false);
        let joined = a.join(" ");
        assert!(joined.contains("-M microvm "), "{joined}");
        assert!(
            joined.contains("virtio-mmio.force-legacy=false"),
            "{joined}"
        );
        assert!(
            joined.contains("file=/var/tmp/a,,b.img,format=raw,if=none,cache="),
            "a comma in the path is doubled: {joined}"
        );
        assert!(joined.contains("aio=threads"), "{joined}");
        assert!(
            joined.contains("-device virtio-blk-device,drive=vda"),
            "{joined}"
        );
        assert!(!joined.contains("bus="), "{joined}");
        // Without devices, nothing of the above.
        let plain = args(&GuestDevices::default(), false).join(" ");
        assert!(!plain.contains("virtio"), "{plain}");
    }

    #[test]
    fn devices_for_a_kernel_without_acpi_are_pinned_and_named_before_the_double_dash() {
        let devices = GuestDevices {
            block: Some(BlockBacking {
                path: "/d.img".into(),
                read_only: true,
            }),
            ..Default::default()
        };
        let joined = args(&devices, true).join(" ");
        assert!(
            joined.contains("-M microvm,acpi=off,auto-kernel-cmdline=off"),
            "{joined}"
        );
        assert!(
            joined.contains("drive=vda,bus=virtio-mmio-bus.0"),
            "{joined}"
        );
        // A shared disk is offered read-only.
        assert!(joined.contains("aio=threads,readonly=on "), "{joined}");
        assert_eq!(
            microvm_cmdline_device(1),
            "virtio_mmio.device=512@0xfeb00200:6"
        );
    }
}
