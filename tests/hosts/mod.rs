//! An emulated host: a student's machine — AMD-V, cgroup v2 — emulated on the CI machine, with the
//! lab inside, running a list of checks.
//!
//! The lab's CI machines are themselves VMs without VT-x/AMD-V (nested PVM, cgroup v1), the
//! opposite of what students have. QEMU can emulate the other kind: with TCG (software
//! translation) and `-cpu qemu64,+svm,+npt` the emulated CPU has AMD-V with nested paging, and
//! Debian's kernel, booted in it, loads `kvm-amd` and offers a `/dev/kvm` that runs guests with
//! "hardware" virtualization — software all the way down, so slow, but the same KVM code paths as
//! a laptop's. This module builds such a machine from the lab's own build and runs checks in it:
//!
//! ```text
//!  host: initramfs (cpio newc) = busybox + /init + checks + lab (+ its libraries)
//!        + qemu-system-x86_64 (+ libraries, firmware) + the guest kernel + kvm modules
//!  timeout T qemu-system-x86_64 -accel tcg -cpu qemu64,+svm,+npt -kernel /boot/vmlinuz-… -initrd …
//!    emulated host /init:
//!      1. copy the initramfs into a tmpfs and switch_root (pivot_root, which containers need,
//!         refuses the initramfs' own root)
//!      2. mount /proc, /sys, /dev, cgroup2; insmod irqbypass, ccp, kvm, kvm-amd; users, groups
//!      3. for each check: "@@isolab-check begin NAME", its output, "@@isolab-check end NAME
//!         status=N" — each under `timeout`, as root or as a given user
//!      4. poweroff
//!  host: reads the serial console line by line → one [`CheckResult`] per check, with the
//!        check's own words; the whole console in a log file
//! ```
//!
//! Other tests give their own checks ([`Check`]): shell scripts run by busybox `sh`, with the
//! lab at `/usr/local/bin/lab`. Users (with `/etc/passwd` and `/etc/group` entries, e.g. a
//! `student` in group `kvm`) and root set-up commands (e.g. delegating a cgroup subtree) are
//! part of the machine ([`EmulatedHost::with_user`], [`EmulatedHost::with_setup`], [`Check::run_as`]).
//!
//! The emulator itself sometimes wedges while its kernel boots (timer calibration under TCG),
//! and, on a loaded machine, sometimes later: its one vCPU waits for a timer interrupt that never
//! comes, and the emulator uses no CPU at all from then on. A boot that does not reach its checks
//! within [`EmulatedHost::boot_limit`], or whose emulator has used no CPU time for
//! [`STALLED_AFTER`] while a check runs (a running Linux kernel always has something to do in
//! that long: timers, RCU, writeback), is killed and retried from its first check, up to
//! [`EmulatedHost::attempts`] times; the report counts the retries.
#![allow(dead_code)]

use isolab_linux_guest::devices::{load_order, modules_dir, Wanted};
use isolab_linux_guest::guest_kernel::{KernelImage, Origin};
use isolab_linux_guest::initramfs::CpioWriter;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{fmt, fs};

/// What marks the harness's own lines on the console.
const MARK: &str = "@@isolab-";

/// The modules `/dev/kvm` on AMD needs, in load order (each needs the one before).
const KVM_AMD_MODULES: [&str; 4] = [
    "virt/lib/irqbypass",
    "drivers/crypto/ccp/ccp",
    "arch/x86/kvm/kvm",
    "arch/x86/kvm/kvm-amd",
];

/// The modules the emulated host's own disk needs (a virtio disk on QEMU's PCI bus, formatted
/// ext4): their dependencies come from `modules.dep`.
const DISK_MODULES: [&str; 2] = ["drivers/virtio/virtio_pci", "drivers/block/virtio_blk"];
/// The file systems: the disk's, and the overlays of the lab's layered image.
const FS_MODULES: [&str; 3] = [
    "crypto/crc32c_generic",
    "fs/ext4/ext4",
    "fs/overlayfs/overlay",
];

/// The firmware QEMU's `microvm` machine loads (from QEMU's data directory).
const QEMU_FIRMWARE: [&str; 5] = [
    "bios-microvm.bin",
    "qboot.rom",
    "linuxboot_dma.bin",
    "kvmvapic.bin",
    "pvh.bin",
];

/// The prefix of a results line in a check's output (see [`Check::printing_results`]).
pub const RESULT_LINE: &str = "results-line ";

/// Why an emulated host could not be built or run.
#[derive(Debug)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(what: impl Into<String>) -> Result<T, HostError> {
    Err(HostError(what.into()))
}

/// One check: a shell script run inside the emulated host.
#[derive(Clone, Debug)]
pub struct Check {
    /// A name: letters, digits, `-` and `_` (it names the script's file).
    pub name: String,
    /// The script, run by busybox `sh` with `set -e` off: its exit status is the verdict.
    pub script: String,
    /// Seconds the script may take; then `timeout` kills it (status 124).
    pub timeout_s: u32,
    /// Run it as this user (through `su`), not as root.
    pub user: Option<String>,
}

impl Check {
    /// A check run as root, with `timeout_s` seconds.
    pub fn new(name: &str, timeout_s: u32, script: &str) -> Check {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "check name {name:?}"
        );
        Check {
            name: name.into(),
            script: script.into(),
            timeout_s,
            user: None,
        }
    }

    /// Run it as `user` instead.
    pub fn run_as(mut self, user: &str) -> Check {
        self.user = Some(user.into());
        self
    }

    /// A check that runs `command` (a `lab run …` writing under `dir`), then prints each line of
    /// the results files there with [`RESULT_LINE`] in front, and ends with `command`'s status:
    /// the host reads them back with [`CheckResult::results`].
    pub fn printing_results(name: &str, timeout_s: u32, command: &str, dir: &str) -> Check {
        Check::new(
            name,
            timeout_s,
            &format!(
                "{command}\nstatus=$?\nfor f in {dir}/*/results.jsonl; do sed 's/^/{RESULT_LINE}/' \"$f\"; done\nexit $status\n"
            ),
        )
    }
}

/// A user of the emulated host.
#[derive(Clone, Debug)]
pub struct User {
    /// Login name.
    pub name: String,
    /// uid, and the gid of its own group.
    pub uid: u32,
    /// Other groups it belongs to (created if missing, e.g. `kvm`).
    pub groups: Vec<String>,
}

/// How one check came out.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// Its name.
    pub name: String,
    /// The script's exit status (`None`: it never finished — the machine stopped first).
    pub status: Option<i32>,
    /// What it printed (stdout and stderr), line by line.
    pub output: Vec<String>,
    /// Kernel messages that appeared on the console meanwhile.
    pub kernel: Vec<String>,
    /// How long it took, as the host saw it.
    pub took: Duration,
}

impl CheckResult {
    /// Exit status 0.
    /// The results file a [`Check::printing_results`] check printed, written under `work`
    /// and read by the lab's own reader.
    pub fn results(&self, work: &Path) -> isolab_results::Results {
        let lines: Vec<&str> = self
            .output
            .iter()
            .filter_map(|l| l.strip_prefix(RESULT_LINE))
            .collect();
        assert!(!lines.is_empty(), "no results printed: {}", self.explain());
        let path = work.join(format!("{}.jsonl", self.name));
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        isolab_results::Results::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn passed(&self) -> bool {
        self.status == Some(0)
    }

    /// The output as one text.
    pub fn text(&self) -> String {
        self.output.join("\n")
    }

    /// The words to show when the check failed: its status and the end of its output.
    pub fn explain(&self) -> String {
        let tail: Vec<&str> = self
            .output
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(String::as_str)
            .collect();
        format!(
            "check {} {} after {:.0?}; the guest said:\n{}",
            self.name,
            match self.status {
                Some(0) => "passed".to_string(),
                Some(124) => "timed out".to_string(),
                Some(n) => format!("failed with status {n}"),
                None => "never finished".to_string(),
            },
            self.took,
            tail.join("\n")
        )
    }
}

/// What a run of the emulated host produced.
#[derive(Debug)]
pub struct Report {
    /// One result per check, in order (a check the machine never reached is missing).
    pub checks: Vec<CheckResult>,
    /// Boots of the emulated host, the successful one included.
    pub boots: u32,
    /// Boots killed because they did not reach their checks (the emulator wedged).
    pub retries: u32,
    /// Seconds from the start of the successful boot to its checks.
    pub boot_s: f64,
    /// Seconds of the whole run, retries included.
    pub total_s: f64,
    /// The emulated host's whole console.
    pub console: PathBuf,
    /// True when the machine powered itself off after its last check.
    pub powered_off: bool,
}

impl Report {
    /// The result of check `name`; panics, with the console's end, if it never ran.
    pub fn check(&self, name: &str) -> &CheckResult {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "check {name} never ran; console in {}",
                    self.console.display()
                )
            })
    }

    /// For the log: the boots and retries, each check's status and time, and the lines of its
    /// output that `keep` picks.
    pub fn summary(&self, title: &str, keep: impl Fn(&str) -> bool) -> String {
        let mut s = format!(
            "{title}: {} boot(s), {} retried; up in {:.0} s; whole run {:.0} s\n",
            self.boots, self.retries, self.boot_s, self.total_s
        );
        for c in &self.checks {
            s.push_str(&format!(
                "  {:<24} status {:?} in {:.0?}\n",
                c.name, c.status, c.took
            ));
            for line in c.output.iter().filter(|l| keep(l)) {
                s.push_str(&format!("  {}| {}\n", c.name, line.trim()));
            }
        }
        s
    }

    /// The `left-behind` check passed and printed nothing, and the machine powered itself off.
    pub fn assert_nothing_left_behind(&self) {
        let left = self.check("left-behind");
        assert!(left.passed(), "{}", left.explain());
        assert!(
            left.output.iter().all(|l| l.trim().is_empty()),
            "left behind: {}",
            left.explain()
        );
        assert!(self.powered_off, "the emulated host powered itself off");
    }
}

/// An emulated machine with AMD-V, ready to boot.
#[derive(Clone, Debug)]
pub struct EmulatedHost {
    kernel: PathBuf,
    release: String,
    modules: Vec<PathBuf>,
    qemu: PathBuf,
    lab: PathBuf,
    binaries: Vec<PathBuf>,
    files: Vec<(PathBuf, String)>,
    programs: Vec<(PathBuf, String)>,
    users: Vec<User>,
    setup: Vec<String>,
    cpus: u32,
    memory_mib: u32,
    /// How long a boot may take to reach its first check.
    pub boot_limit: Duration,
    /// Boots to try before giving up.
    pub attempts: u32,
    /// Its disk, if it has one.
    disk: Option<Disk>,
    work: PathBuf,
}

impl EmulatedHost {
    /// A machine that boots the newest kernel in `/boot` that has the KVM modules for AMD, with
    /// `lab` (the lab's binary) inside, working in `work`. Everything it needs from the host is
    /// checked here, with the command that installs what is missing.
    pub fn new(lab: &Path, work: &Path) -> Result<EmulatedHost, HostError> {
        let qemu = which("qemu-system-x86_64").ok_or_else(|| {
            HostError("no qemu-system-x86_64 (apt install qemu-system-x86)".into())
        })?;
        if which("timeout").is_none() {
            return err("no timeout program (apt install coreutils)");
        }
        let busybox = Path::new("/bin/busybox");
        if !busybox.is_file() || !is_static(busybox) {
            return err("no static /bin/busybox (apt install busybox-static)");
        }
        let (kernel, release, modules) = kernel_with_kvm_amd()?;
        if !lab.is_file() {
            return err(format!("no lab binary at {}", lab.display()));
        }
        fs::create_dir_all(work).map_err(|e| HostError(format!("{}: {e}", work.display())))?;
        // The container backend's seccomp profiles are read from the files their packages
        // install (Docker's: golang-github-docker-docker-dev), as on a student's machine.
        let mut files = Vec::new();
        for shipped in isolab_container::seccomp::source::SHIPPED {
            if Path::new(shipped.path).is_file() {
                files.push((PathBuf::from(shipped.path), shipped.path.to_string()));
            }
        }
        Ok(EmulatedHost {
            kernel,
            release,
            modules,
            qemu,
            lab: lab.to_path_buf(),
            binaries: Vec::new(),
            files,
            programs: Vec::new(),
            users: Vec::new(),
            setup: Vec::new(),
            cpus: 1,
            memory_mib: 4096,
            boot_limit: Duration::from_secs(240),
            attempts: 3,
            disk: None,
            work: work.to_path_buf(),
        })
    }

    /// The kernel release it boots (and offers its Linux guests as `/boot/vmlinuz-<release>`).
    pub fn release(&self) -> &str {
        &self.release
    }

    /// Also put this dynamically linked program (and its libraries) at the same path inside.
    pub fn with_binary(mut self, path: &Path) -> EmulatedHost {
        self.binaries.push(path.to_path_buf());
        self
    }

    /// Also put the host file `from` at `to` inside.
    pub fn with_file(mut self, from: &Path, to: &str) -> EmulatedHost {
        self.files.push((from.to_path_buf(), to.to_string()));
        self
    }

    /// Also put the host program `from` (dynamically linked: its libraries come too) at `to`
    /// inside, executable.
    pub fn with_program(mut self, from: &Path, to: &str) -> EmulatedHost {
        self.programs.push((from.to_path_buf(), to.to_string()));
        self
    }

    /// Let the lab give its Linux guests a disk, a network card and the lab's image: the
    /// kernel's configuration and `modules.dep` (how the lab learns which drivers are modules),
    /// the modules the guest's initramfs carries — the ones the lab itself would carry, asked of
    /// the lab — and `tun` and `veth`, loaded: a VM's tap needs `/dev/net/tun`, a process's or a
    /// container's link is a veth pair, and this machine has no `modprobe` for the kernel to
    /// load them on demand as a laptop's does.
    pub fn with_guest_devices(mut self) -> Result<EmulatedHost, HostError> {
        let release = self.release.clone();
        let modules = modules_dir(&release);
        for file in [
            PathBuf::from(format!("/boot/config-{release}")),
            modules.join("modules.dep"),
        ] {
            self.carry(&file)?;
        }
        let image = KernelImage::open(&self.kernel, Origin::Given)
            .map_err(|e| HostError(format!("{}: {e}", self.kernel.display())))?;
        let wanted = Wanted {
            block: true,
            net: true,
            ext4: true,
        };
        let drivers = isolab_linux_guest::devices::inspect(&image);
        if let Some(why) = drivers.refusal(wanted) {
            return err(why);
        }
        for module in drivers.modules(wanted) {
            self.carry(&module)?;
        }
        // The lab writes its image for guests with mke2fs.
        let mke2fs =
            which("mke2fs").ok_or_else(|| HostError("no mke2fs (apt install e2fsprogs)".into()))?;
        self.binaries.push(mke2fs);
        let links = self.load_modules(&["drivers/net/tun", "drivers/net/veth"])?;
        self.setup.extend(links);
        Ok(self)
    }

    /// A disk for the emulated machine, as a student's laptop has one: `mib` MiB, formatted
    /// ext4 here, attached as a virtio disk and mounted at `at` inside (world-writable with the
    /// sticky bit, as `/var/tmp` is). The lab's disks and images must live on a disk, not in the
    /// machine's tmpfs root; the overlay module comes too, for containers on the lab's image.
    pub fn with_disk(mut self, mib: u64, at: &str) -> Result<EmulatedHost, HostError> {
        let disk = Disk {
            path: self.work.join("disk.ext4"),
            mib,
        };
        disk.format()?;
        let mut load = self.load_modules(&DISK_MODULES)?;
        load.extend(self.load_modules(&FS_MODULES)?);
        self.setup.extend(load);
        self.setup.push(format!(
            "mkdir -p {at} && mount -t ext4 /dev/vda {at} && chmod 1777 {at} \
             || echo \"{MARK}host mount of the disk at {at} failed\""
        ));
        self.disk = Some(disk);
        Ok(self)
    }

    /// Also load these kernel modules (paths under the release's `kernel/`, without `.ko`) and
    /// what they depend on, as a laptop's `modprobe` would on demand.
    pub fn with_modules(mut self, modules: &[&str]) -> Result<EmulatedHost, HostError> {
        let lines = self.load_modules(modules)?;
        self.setup.extend(lines);
        Ok(self)
    }

    /// Put a host file at the same path inside (once).
    fn carry(&mut self, file: &Path) -> Result<(), HostError> {
        if !file.is_file() {
            return err(format!(
                "no {} (apt install linux-image-amd64)",
                file.display()
            ));
        }
        let inside = file.display().to_string();
        if !self.files.iter().any(|(_, to)| *to == inside) {
            self.files.push((file.to_path_buf(), inside));
        }
        Ok(())
    }

    /// Carry `modules` (paths under the release's `kernel/`, without `.ko`) and what they
    /// depend on, and return the `insmod` lines that load them in order.
    fn load_modules(&mut self, modules: &[&str]) -> Result<Vec<String>, HostError> {
        let base = modules_dir(&self.release).join("kernel");
        let wanted: Vec<PathBuf> = modules
            .iter()
            .map(|m| base.join(format!("{m}.ko")))
            .collect();
        let mut lines = Vec::new();
        for module in load_order(&self.release, &wanted) {
            self.carry(&module)?;
            lines.push(format!(
                "insmod {0} || echo \"{MARK}host insmod {0} failed\"",
                module.display()
            ));
        }
        Ok(lines)
    }

    /// A user of the machine.
    pub fn with_user(mut self, name: &str, uid: u32, groups: &[&str]) -> EmulatedHost {
        self.users.push(User {
            name: name.into(),
            uid,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        });
        self
    }

    /// A root shell command run after the machine is up (modules, cgroup2, users), before the
    /// checks: e.g. delegating a cgroup subtree to a user.
    pub fn with_setup(mut self, command: &str) -> EmulatedHost {
        self.setup.push(command.into());
        self
    }

    /// Emulated CPUs (default 1: the emulator loses timer interrupts less often with one).
    pub fn with_cpus(mut self, cpus: u32) -> EmulatedHost {
        self.cpus = cpus;
        self
    }

    /// Boot and run `checks`, retrying boots that wedge (before the first check, or with a check
    /// running and the emulator idle for [`STALLED_AFTER`]).
    pub fn run(&self, checks: &[Check]) -> Result<Report, HostError> {
        let initrd = self.work.join("initramfs.cpio");
        let archive = self.initramfs(checks)?;
        fs::write(&initrd, archive).map_err(|e| HostError(format!("write initramfs: {e}")))?;
        let started = Instant::now();
        let mut retries = 0;
        for boot in 1..=self.attempts {
            let console = self.work.join(format!("console-{boot}.log"));
            // Each boot starts from an empty disk, as it starts from a fresh initramfs.
            if let (Some(disk), 2..) = (&self.disk, boot) {
                disk.format()?;
            }
            match self.boot(&initrd, checks, &console)? {
                Boot::Wedged(why) => {
                    eprintln!("emulated host: boot {boot} wedged ({why}); retrying");
                    retries += 1;
                }
                Boot::Ran {
                    checks,
                    boot_s,
                    powered_off,
                } => {
                    return Ok(Report {
                        checks,
                        boots: boot,
                        retries,
                        boot_s,
                        total_s: started.elapsed().as_secs_f64(),
                        console,
                        powered_off,
                    })
                }
            }
        }
        err(format!(
            "the emulated host wedged in all {} boots (consoles in {})",
            self.attempts,
            self.work.display()
        ))
    }

    /// The initramfs: busybox, /init, the checks, the lab, QEMU, the guest kernel, the modules.
    fn initramfs(&self, checks: &[Check]) -> Result<Vec<u8>, HostError> {
        let mut cpio = Archive::new();
        let read = |p: &Path| fs::read(p).map_err(|e| HostError(format!("{}: {e}", p.display())));
        cpio.file("bin/busybox", 0o755, &read(Path::new("/bin/busybox"))?)?;
        cpio.file("init", 0o755, self.init_script(checks).as_bytes())?;
        for (i, check) in checks.iter().enumerate() {
            cpio.file(
                &format!("checks/{i:02}-{}.sh", check.name),
                0o755,
                check.script.as_bytes(),
            )?;
        }
        cpio.file("usr/local/bin/lab", 0o755, &self.stripped_lab()?)?;
        let mut programs = vec![self.lab.clone(), self.qemu.clone()];
        programs.extend(self.binaries.iter().cloned());
        programs.extend(self.programs.iter().map(|(from, _)| from.clone()));
        let mut libraries = BTreeSet::new();
        for program in &programs {
            libraries.extend(shared_libraries(program)?);
        }
        for lib in &libraries {
            cpio.file(lib.trim_start_matches('/'), 0o755, &read(Path::new(lib))?)?;
        }
        // QEMU and the other binaries at their own paths (the lab is at usr/local/bin/lab).
        for program in std::iter::once(&self.qemu).chain(&self.binaries) {
            let inside = program.to_string_lossy();
            cpio.file(inside.trim_start_matches('/'), 0o755, &read(program)?)?;
        }
        for (from, to) in &self.programs {
            cpio.file(to.trim_start_matches('/'), 0o755, &read(from)?)?;
        }
        let datadir = Path::new("/usr/share/qemu");
        for name in QEMU_FIRMWARE {
            let path = datadir.join(name);
            if path.exists() {
                cpio.file(&format!("usr/share/qemu/{name}"), 0o644, &read(&path)?)?;
            }
        }
        cpio.file(
            &format!("boot/vmlinuz-{}", self.release),
            0o644,
            &read(&self.kernel)?,
        )?;
        for module in &self.modules {
            let name = module.file_name().unwrap().to_string_lossy();
            cpio.file(&format!("lib/modules/isolab/{name}"), 0o644, &read(module)?)?;
        }
        for (from, to) in &self.files {
            cpio.file(to.trim_start_matches('/'), 0o644, &read(from)?)?;
        }
        let (passwd, group) = self.accounts();
        cpio.file("etc/passwd", 0o644, passwd.as_bytes())?;
        cpio.file("etc/group", 0o644, group.as_bytes())?;
        for dir in ["proc", "sys", "dev", "tmp", "root", "newroot"] {
            cpio.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 })?;
        }
        cpio.finish()
    }

    /// The lab binary without its debugging information (a debug build carries ~90 MB of it,
    /// which the emulated kernel would unpack and copy for nothing), when `objcopy` is there.
    fn stripped_lab(&self) -> Result<Vec<u8>, HostError> {
        let out = self.work.join("lab");
        let stripped = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&self.lab)
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success());
        let from = if stripped { &out } else { &self.lab };
        fs::read(from).map_err(|e| HostError(format!("{}: {e}", from.display())))
    }

    /// `/etc/passwd` and `/etc/group`: root, the users, their groups.
    fn accounts(&self) -> (String, String) {
        let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
        let mut groups: Vec<(String, u32, Vec<String>)> = vec![("root".into(), 0, vec![])];
        let mut next_gid = 900;
        for u in &self.users {
            passwd.push_str(&format!(
                "{0}:x:{1}:{1}:{0}:/home/{0}:/bin/sh\n",
                u.name, u.uid
            ));
            groups.push((u.name.clone(), u.uid, vec![]));
            for g in &u.groups {
                match groups.iter_mut().find(|(name, ..)| name == g) {
                    Some((.., members)) => members.push(u.name.clone()),
                    None => {
                        groups.push((g.clone(), next_gid, vec![u.name.clone()]));
                        next_gid += 1;
                    }
                }
            }
        }
        let group = groups
            .iter()
            .map(|(name, gid, members)| format!("{name}:x:{gid}:{}\n", members.join(",")))
            .collect();
        (passwd, group)
    }

    /// The emulated host's `/init` (see the module documentation).
    fn init_script(&self, checks: &[Check]) -> String {
        let modules: Vec<String> = self
            .modules
            .iter()
            .map(|m| m.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let homes: Vec<String> = self
            .users
            .iter()
            .map(|u| format!("mkdir -p /home/{0} && chown {0}:{0} /home/{0}", u.name))
            .collect();
        let mut runs = String::new();
        for (i, c) in checks.iter().enumerate() {
            runs.push_str(&format!(
                "run_check {} {:02}-{} {} {}\n",
                c.name,
                i,
                c.name,
                c.timeout_s,
                c.user.as_deref().unwrap_or("-")
            ));
        }
        format!(
            r#"#!/bin/busybox sh
# The emulated host's init, written by tests/hosts/mod.rs.
# The programs carried in (QEMU, mke2fs, the lab) come before busybox's applets of the same name.
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ ! -e /.isolab-stage2 ]; then
  # pivot_root (which containers use) refuses the initramfs' own root: move to a tmpfs.
  /bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
  for d in /*; do
    case "$d" in /proc|/sys|/dev|/newroot) /bin/busybox mkdir -p "/newroot$d" ;;
    *) /bin/busybox cp -a "$d" /newroot/ ;; esac
  done
  /bin/busybox touch /newroot/.isolab-stage2
  exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox --install -s /bin
hostname amd-v-emulated
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /sys/fs/cgroup
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "{MARK}host cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
for m in {modules}; do
  insmod /lib/modules/isolab/$m || echo "{MARK}host insmod $m failed"
done
if grep -q '^kvm:' /etc/group && [ -e /dev/kvm ]; then chgrp kvm /dev/kvm; chmod 660 /dev/kvm; fi
{homes}
{setup}
export HOME=/root TMPDIR=/tmp
cd /tmp
echo "{MARK}host up $(cat /proc/uptime)"
run_check() {{
  echo "{MARK}check begin $1"
  if [ "$4" = - ]; then timeout "$3" sh "/checks/$2.sh" </dev/null 2>&1
  else timeout "$3" su -s /bin/sh "$4" -c "cd; sh /checks/$2.sh" </dev/null 2>&1; fi
  echo "{MARK}check end $1 status=$?"
}}
{runs}echo "{MARK}host done $(cat /proc/uptime)"
poweroff -f
"#,
            modules = modules.join(" "),
            homes = homes.join("\n"),
            setup = self.setup.join("\n"),
        )
    }

    /// One boot: run QEMU under `timeout`, read the console until the machine powers off.
    fn boot(&self, initrd: &Path, checks: &[Check], console: &Path) -> Result<Boot, HostError> {
        let total: u64 = self.boot_limit.as_secs()
            + checks.iter().map(|c| c.timeout_s as u64 + 30).sum::<u64>()
            + 60;
        let mut child = Command::new("timeout")
            .args(["--kill-after=10", &total.to_string()])
            .arg(&self.qemu)
            .args([
                "-accel",
                "tcg,thread=multi",
                "-machine",
                "q35",
                "-cpu",
                "qemu64,+svm,+npt",
                "-smp",
                &self.cpus.to_string(),
                "-m",
                &self.memory_mib.to_string(),
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
                "-kernel",
            ])
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(self.disk.iter().flat_map(|d| {
                [
                    "-drive".to_string(),
                    format!("file={},if=none,id=disk,format=raw", d.path.display()),
                    "-device".to_string(),
                    "virtio-blk-pci,drive=disk".to_string(),
                ]
            }))
            .args([
                "-append",
                "console=ttyS0 rdinit=/init quiet loglevel=3 panic=-1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| HostError(format!("start timeout/qemu: {e}")))?;
        let guard = Kill(Some(child.id()));
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped");
        let log = fs::File::create(console).map_err(|e| HostError(format!("{e}")))?;
        let reader = std::thread::spawn(move || read_console(stdout, log, tx));

        let started = Instant::now();
        let mut up: Option<f64> = None;
        let mut results: Vec<CheckResult> = Vec::new();
        let mut current: Option<(CheckResult, Instant, u64)> = None;
        let mut powered_off = false;
        // The emulator's CPU time when it last changed, and when that was.
        let mut cpu_seen: Option<(u64, Instant)> = None;
        loop {
            // Deadlines: the boot limit until "up"; then the running check's own, with room.
            let wait = match (&up, &current) {
                (None, _) => self.boot_limit.saturating_sub(started.elapsed()),
                (Some(_), Some((_, since, limit))) => {
                    Duration::from_secs(limit + 60).saturating_sub(since.elapsed())
                }
                (Some(_), None) => Duration::from_secs(120),
            };
            // Look at the emulator's CPU time every half minute while a check runs.
            let step = match &current {
                Some(_) => wait.min(Duration::from_secs(30)),
                None => wait,
            };
            let line = match rx.recv_timeout(step) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if step < wait => {
                    let ticks = children_cpu_ticks(child.id());
                    match (ticks, cpu_seen) {
                        (Some(now), Some((then, since)))
                            if now == then && since.elapsed() >= STALLED_AFTER =>
                        {
                            drop(guard);
                            let _ = child.wait();
                            let _ = reader.join();
                            let name = current.as_ref().map_or("", |(r, ..)| r.name.as_str());
                            return Ok(Boot::Wedged(format!(
                                "the emulator used no CPU for {:.0?} during check {name}",
                                since.elapsed()
                            )));
                        }
                        (Some(now), Some((then, _))) if now == then => {}
                        (Some(now), _) => cpu_seen = Some((now, Instant::now())),
                        (None, _) => {}
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    drop(guard);
                    let _ = child.wait();
                    let _ = reader.join();
                    if up.is_none() {
                        return Ok(Boot::Wedged(format!(
                            "no checks after {:.0?}",
                            started.elapsed()
                        )));
                    }
                    if let Some((mut r, since, _)) = current.take() {
                        r.took = since.elapsed();
                        results.push(r);
                    }
                    return Ok(Boot::Ran {
                        checks: results,
                        boot_s: up.unwrap_or(0.0),
                        powered_off: false,
                    });
                }
            };
            if let Some(rest) = line.strip_prefix(MARK) {
                let words: Vec<&str> = rest.split_whitespace().collect();
                match words.as_slice() {
                    ["host", "up", ..] => {
                        up = Some(started.elapsed().as_secs_f64());
                        eprintln!("emulated host: up after {:.0?}", started.elapsed());
                    }
                    ["host", "done", ..] => powered_off = true,
                    ["check", "begin", name] => {
                        eprintln!("emulated host: check {name} …");
                        let limit = checks
                            .iter()
                            .find(|c| c.name == *name)
                            .map_or(600, |c| c.timeout_s as u64);
                        current = Some((
                            CheckResult {
                                name: name.to_string(),
                                status: None,
                                output: Vec::new(),
                                kernel: Vec::new(),
                                took: Duration::ZERO,
                            },
                            Instant::now(),
                            limit,
                        ));
                    }
                    ["check", "end", _name, status] => {
                        if let Some((mut r, since, _)) = current.take() {
                            r.status = status.strip_prefix("status=").and_then(|s| s.parse().ok());
                            r.took = since.elapsed();
                            eprintln!(
                                "emulated host: check {} status {:?} in {:.0?}",
                                r.name, r.status, r.took
                            );
                            results.push(r);
                        }
                    }
                    _ => {
                        if let Some((r, ..)) = &mut current {
                            r.output.push(line.clone());
                        }
                    }
                }
            } else if let Some((r, ..)) = &mut current {
                if is_kernel_message(&line) {
                    r.kernel.push(line);
                } else {
                    r.output.push(line);
                }
            }
        }
        let _ = child.wait();
        let _ = reader.join();
        drop(guard);
        if up.is_none() {
            return Ok(Boot::Wedged("the machine stopped before its checks".into()));
        }
        if let Some((mut r, since, _)) = current.take() {
            r.took = since.elapsed();
            results.push(r);
        }
        Ok(Boot::Ran {
            checks: results,
            boot_s: up.unwrap_or(0.0),
            powered_off,
        })
    }
}

/// How long an emulator may use no CPU time at all before its machine counts as wedged.
pub const STALLED_AFTER: Duration = Duration::from_secs(180);

/// The CPU time, in clock ticks, of the children of `pid` (the `timeout` that runs QEMU), or
/// `None` when it has none left.
fn children_cpu_ticks(pid: u32) -> Option<u64> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let mut ticks = None;
    for child in children.split_whitespace() {
        let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        // utime and stime are fields 14 and 15; the command name before them may hold spaces.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let t: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        ticks = Some(ticks.unwrap_or(0) + t);
    }
    ticks
}

/// How one boot ended.
enum Boot {
    /// It never reached its checks.
    Wedged(String),
    /// It ran (some of) its checks.
    Ran {
        checks: Vec<CheckResult>,
        boot_s: f64,
        powered_off: bool,
    },
}

/// Kills the `timeout` process (which passes the signal on to QEMU) unless already gone.
struct Kill(Option<u32>);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Copy the console to `log` and send each line (without `\r`) to `tx`.
fn read_console(out: impl std::io::Read, mut log: fs::File, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(out);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let _ = log.write_all(&buf);
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .replace('\r', "");
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// A kernel message on the console: `[   12.345678] ...`.
fn is_kernel_message(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    rest.split_once(']').is_some_and(|(t, _)| {
        let t = t.trim();
        !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

/// A cpio archive that creates every parent directory before its first file, as the kernel's
/// initramfs unpacker needs.
struct Archive {
    cpio: CpioWriter<Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl Archive {
    fn new() -> Archive {
        Archive {
            cpio: CpioWriter::new(Vec::new()),
            dirs: BTreeSet::new(),
        }
    }

    fn parents(&mut self, path: &str) -> Result<(), HostError> {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if self.dirs.insert(dir.clone()) {
                self.cpio
                    .dir(&dir, 0o755)
                    .map_err(|e| HostError(format!("{dir}: {e}")))?;
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), HostError> {
        self.parents(path)?;
        self.cpio
            .file(path, perm, data)
            .map_err(|e| HostError(format!("{path}: {e}")))
    }

    fn dir(&mut self, path: &str, perm: u32) -> Result<(), HostError> {
        self.parents(path)?;
        if self.dirs.insert(path.to_string()) {
            self.cpio
                .dir(path, perm)
                .map_err(|e| HostError(format!("{path}: {e}")))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, HostError> {
        self.cpio.finish().map_err(|e| HostError(e.to_string()))
    }
}

/// `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// True when `path` is not a dynamically linked executable.
fn is_static(path: &Path) -> bool {
    shared_libraries(path).is_ok_and(|libs| libs.is_empty())
}

/// The shared libraries `program` loads, as `ldd` resolves them (the dynamic loader included).
fn shared_libraries(program: &Path) -> Result<Vec<String>, HostError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| HostError(format!("ldd (apt install libc-bin): {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect())
}

/// The emulated machine's disk: a file here, formatted ext4.
#[derive(Clone, Debug)]
struct Disk {
    path: PathBuf,
    mib: u64,
}

impl Disk {
    /// An empty ext4 file system of `mib` MiB in the file (sparse: only what is written takes
    /// space on this machine).
    fn format(&self) -> Result<(), HostError> {
        let file = fs::File::create(&self.path).map_err(|e| HostError(format!("{e}")))?;
        file.set_len(self.mib << 20)
            .map_err(|e| HostError(format!("{}: {e}", self.path.display())))?;
        let made = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&self.path)
            .status()
            .map_err(|e| HostError(format!("mke2fs (apt install e2fsprogs): {e}")))?;
        if !made.success() {
            return err(format!("mke2fs {} failed", self.path.display()));
        }
        Ok(())
    }
}

/// The newest `/boot/vmlinuz-<release>` whose `/lib/modules/<release>` holds the KVM modules
/// for AMD, uncompressed (busybox `insmod` reads plain `.ko` files).
fn kernel_with_kvm_amd() -> Result<(PathBuf, String, Vec<PathBuf>), HostError> {
    let mut found: Vec<(String, PathBuf)> = fs::read_dir("/boot")
        .map_err(|e| HostError(format!("/boot: {e}")))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix("vmlinuz-")?.to_string(), e.path()))
        })
        .collect();
    found.sort();
    for (release, kernel) in found.into_iter().rev() {
        let base = Path::new("/lib/modules").join(&release).join("kernel");
        let modules: Vec<PathBuf> = KVM_AMD_MODULES
            .iter()
            .map(|m| base.join(format!("{m}.ko")))
            .collect();
        if modules.iter().all(|m| m.is_file()) {
            return Ok((kernel, release, modules));
        }
    }
    err("no /boot/vmlinuz-* with uncompressed kvm-amd modules in /lib/modules (apt install linux-image-amd64)")
}
