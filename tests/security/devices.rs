//! Round two: terminals, device nodes and capability sets (issue 25, items 1, 2, 3 and 5).
//!
//! The attacker (`tests/attacker/src/devices.rs`) runs as each container's init and tries:
//!
//! * **the terminal the lab was started from**: `lab exec` run from root's shell leaves that
//!   shell's terminal as the controlling terminal of everything it starts, unless an instance
//!   gets a session of its own. The attacker opens `/dev/tty` and types a command into it with
//!   `TIOCSTI`; the shell reads it as if root had typed it, once the lab has exited. The test
//!   gives the lab a real terminal — a pseudo-terminal whose slave is the controlling terminal
//!   of a child process that runs the lab, as a shell's terminal is — and reads what arrived;
//! * **device nodes**: make a node for `/dev/kvm`, `tty1`, `console`, `/dev/fuse`,
//!   `/dev/net/tun` wherever it can write, and open it; make a node for every loop device and
//!   overwrite the one that carries the test's marker — a loop device over a root-only file,
//!   standing for the host's disk (never a real disk);
//! * and it reports its capability sets, which `oci:*` and `container` must share.
//!
//! Besides: the device policy alone (`isolab_resources::cgroup::devices`), on v1 and as a BPF program on
//! the cgroup v2 tree, against nodes the test makes where device nodes work; and that every
//! backend's first process leads a session of its own.
//!
//! Linux 6.2+ can refuse `TIOCSTI` to everyone without `CAP_SYS_ADMIN`
//! (`dev.tty.legacy_tiocsti=0`), which would hide the hole rather than close it: the terminal
//! test sets it to 1 for its run, and a guardian process puts the old value back however the
//! test ends (even killed).

use super::{attacker, io, lab_with_attacker, VICTIM};
use crate::common::{serial, temp_dir};
use isolab_backends as backend;
use isolab_backends::container::Container;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Backend, Limits};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Kept in step with `tests/attacker/src/devices.rs`.
const TTY_ROWS: u16 = 1234;
const TTY_COLS: u16 = 4321;
const TYPED: &str = "echo isolab-typed-this-into-your-terminal";
const DISK_MARKER: &[u8] = b"ISOLAB-SECURITY-TEST-DISK";

/// The environment variable that tells a test run again in a child process which part it plays.
const ROLE: &str = "ISOLAB_SECURITY_ROLE";
/// Where the child writes what its attacker reported.
const REPORT: &str = "ISOLAB_SECURITY_REPORT";
/// The backend the child runs.
const BACKEND: &str = "ISOLAB_SECURITY_BACKEND";

/// A shell command run when the test ends, however it ends: a guardian process, `sh`, waits for
/// the end of a pipe whose write end only the test holds, then runs it. A test that panics
/// drops the pipe; a test that is killed loses it with its other descriptors.
struct Undo {
    pipe: Option<std::process::ChildStdin>,
    guardian: std::process::Child,
}

impl Undo {
    fn new(command: &str) -> Undo {
        let mut guardian = Command::new("sh")
            .arg("-c")
            .arg(format!("read _; {command}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("sh runs");
        Undo {
            pipe: guardian.stdin.take(),
            guardian,
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.pipe = None;
        let _ = self.guardian.wait();
    }
}

/// `dev.tty.legacy_tiocsti` set to 1 until the returned guard goes (see the module docs).
fn legacy_tiocsti() -> Option<Undo> {
    let path = "/proc/sys/dev/tty/legacy_tiocsti";
    // Before Linux 6.2 there is no such switch: TIOCSTI is always allowed.
    let old = fs::read_to_string(path).ok()?;
    let undo = Undo::new(&format!("echo {} > {path}", old.trim()));
    fs::write(path, "1").expect("root may set dev.tty.legacy_tiocsti");
    Some(undo)
}

/// "The host's disk": a loop device over a root-only file whose first bytes are the marker the
/// attacker looks for. Detached and removed however the test ends.
struct VictimDisk {
    file: PathBuf,
    device: String,
    _undo: Undo,
}

impl VictimDisk {
    fn new(dir: &Path) -> VictimDisk {
        let file = dir.join("victim-disk.img");
        let mut content = DISK_MARKER.to_vec();
        content.resize(1 << 20, 0);
        fs::write(&file, &content).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .expect("losetup (util-linux) runs");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let undo = Undo::new(&format!("losetup -d {device}; rm -f '{}'", file.display()));
        VictimDisk {
            file,
            device,
            _undo: undo,
        }
    }

    fn assert_untouched(&self, after: &str) {
        let head = fs::read(&self.file).unwrap();
        assert!(
            head.starts_with(DISK_MARKER),
            "{after}: the root-only file {} behind {} was overwritten: it starts with {:?}",
            self.file.display(),
            self.device,
            String::from_utf8_lossy(&head[..48])
        );
    }
}

/// What an attacker reported, and what the lab noted about its instance.
#[derive(Debug, Default)]
struct Report {
    facts: BTreeMap<String, String>,
    info: BTreeMap<String, String>,
}

impl Report {
    fn fact(&self, key: &str) -> &str {
        self.facts
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("the attacker reported no {key}: {self:#?}"))
    }

    /// As lines `fact KEY VALUE` / `info KEY VALUE`, for a child to hand to its parent.
    fn to_text(&self) -> String {
        let mut s = String::new();
        for (kind, map) in [("fact", &self.facts), ("info", &self.info)] {
            for (k, v) in map {
                s.push_str(&format!("{kind} {k} {}\n", v.replace('\n', " ")));
            }
        }
        s
    }

    fn from_text(text: &str) -> Report {
        let mut r = Report::default();
        for line in text.lines() {
            let mut words = line.splitn(3, ' ');
            let (Some(kind), Some(k), v) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            let map = if kind == "fact" {
                &mut r.facts
            } else {
                &mut r.info
            };
            map.insert(k.to_string(), v.unwrap_or("").to_string());
        }
        r
    }
}

/// Start the attacker in `backend` on `lab`, let it try everything, and return its report.
fn attack(backend: &dyn Backend, lab: &Lab) -> Report {
    if let Availability::Unavailable(why) = backend.availability(lab) {
        panic!("{} cannot run here: {why}", backend.name());
    }
    let mut instance = backend.start(lab, &io(), &Limits::default()).unwrap();
    instance
        .wait_ready()
        .unwrap_or_else(|e| panic!("{}: the attacker did not start: {e}", backend.name()));
    let run = instance.finish().unwrap();
    let report = Report {
        facts: run.probe.into_iter().collect(),
        info: run.info,
    };
    assert_eq!(
        report.fact("attack.victim"),
        VICTIM,
        "attacker and test disagree"
    );
    report
}

/// The backend a test names: isolab's container with its root the host's, or a registered one.
fn backend_named(name: &str) -> Box<dyn Backend> {
    match name {
        "container-host-root" => Box::new(Container {
            host_root: true,
            ..Container::default()
        }),
        _ => backend::by_name(name).unwrap(),
    }
}

/// Every device the attacker opened, from its `attack.device.*` and `attack.disk` reports.
fn opened(report: &Report) -> Vec<String> {
    let mut opened: Vec<String> = report
        .facts
        .iter()
        .filter(|(k, _)| k.starts_with("attack.device."))
        .flat_map(|(k, v)| v.split(',').map(move |t| format!("{k} {t}")))
        .filter(|t| t.ends_with(":opened"))
        .collect();
    assert!(
        report.facts.keys().any(|k| k == "attack.device.kvm"),
        "the attacker reported no device: {report:#?}"
    );
    let disk = report.fact("attack.disk");
    if disk.contains("opened") {
        opened.push(format!("loop devices: {disk}"));
    }
    let wrote = report.fact("attack.disk.wrote");
    if wrote != "none" {
        opened.push(format!("wrote the marked disk through {wrote}"));
    }
    opened
}

/// `backend`'s container makes device nodes and opens them: nothing opens, the disk stays.
fn device_nodes_open_nothing(name: &str) {
    device_nodes_open_nothing_but(name, &[]);
}

/// [`device_nodes_open_nothing`], where the instance's own kernel implements the devices named
/// `own` (gVisor's Sentry): opening those reaches nothing of the host's.
fn device_nodes_open_nothing_but(name: &str, own: &[&str]) {
    let _serial = serial();
    let temp = temp_dir(&format!("security-devices-{}", name.replace(':', "-")));
    let disk = VictimDisk::new(&temp);
    let lab = lab_with_attacker(&temp);
    let report = attack(backend_named(name).as_ref(), &lab);
    eprintln!("{name}: {}", report.to_text());
    disk.assert_untouched(&format!("{name}: {}", report.fact("attack.disk")));
    let opened: Vec<String> = opened(&report)
        .into_iter()
        .filter(|o| {
            !own.iter()
                .any(|d| o.starts_with(&format!("attack.device.{d} ")))
        })
        .collect();
    assert!(
        opened.is_empty(),
        "{name}: the container opened host devices through nodes it made: {opened:#?}"
    );
    drop(lab);
    drop(disk);
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
fn device_nodes_made_inside_container_open_nothing() {
    device_nodes_open_nothing("container");
}

#[test]
fn device_nodes_made_inside_a_container_whose_root_is_the_hosts_open_nothing() {
    device_nodes_open_nothing("container-host-root");
}

#[test]
fn device_nodes_made_inside_runc_open_nothing() {
    device_nodes_open_nothing("oci:runc");
}

#[test]
#[ignore = "needs crun (CI runs it)"]
fn device_nodes_made_inside_crun_open_nothing() {
    device_nodes_open_nothing("oci:crun");
}

#[test]
#[ignore = "needs runsc, gVisor (CI runs it)"]
fn device_nodes_made_inside_runsc_open_nothing_of_the_hosts() {
    // gVisor's kernel, the Sentry, implements /dev/fuse and /dev/net/tun itself: a node for
    // either opens the Sentry's device, never the host's. The host's kvm, terminals and disks
    // it does not reach (ENXIO).
    device_nodes_open_nothing_but("oci:runsc", &["fuse", "tun"]);
}

/// The device policy alone, without the mount flags that stop the attacks above first: a
/// process in an instance's cgroup with the policy opens nodes the test made on a file system
/// that honours device nodes. `/dev/null`'s opens; `/dev/kvm`'s and the victim disk's do not,
/// with EPERM — the cgroup's refusal — although the test itself, outside it, opens both.
fn the_device_policy_alone(lab: Lab, temp: &Path) {
    let disk = VictimDisk::new(temp);
    let nodes = temp.join("nodes");
    fs::create_dir(&nodes).unwrap();
    let rdev = fs::metadata(&disk.device).unwrap().rdev();
    let made = |name: &str, kind: libc::mode_t, dev: libc::dev_t| {
        let path = nodes.join(name);
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod with a NUL-terminated path and plain integers.
        let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o666, dev) };
        assert_eq!(r, 0, "mknod {}", path.display());
        path
    };
    let null = made("null", libc::S_IFCHR, libc::makedev(1, 3));
    let kvm = made("kvm", libc::S_IFCHR, libc::makedev(10, 232));
    let loop_dev = made("disk", libc::S_IFBLK, rdev);
    let tools = temp.join("tools");
    fs::create_dir(&tools).unwrap();
    let attacker = super::attacker_for_users(&tools);
    let open = |path: &Path, confined: Option<&isolab_resources::cgroup::Cgroup>| {
        let mut cmd = Command::new(&attacker);
        cmd.arg("open").arg(path);
        if let Some(cg) = confined {
            let placement = cg.placement().unwrap();
            // SAFETY: the join is async-signal-safe writes to fds opened before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    placement
                        .join()
                        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                });
            }
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Outside the cgroup every node opens: the file system honours them.
    for node in [&null, &kvm, &loop_dev] {
        assert_eq!(open(node, None), "opened", "{}", node.display());
    }
    let mut cg = lab
        .instance_cgroup("devices-policy", &Limits::default())
        .unwrap()
        .expect("the lab has cgroups");
    let how = lab.confine_devices(&mut cg).unwrap();
    let said: Vec<(String, String)> = [&null, &kvm, &loop_dev]
        .iter()
        .map(|n| (n.display().to_string(), open(n, Some(&cg))))
        .collect();
    eprintln!("{how}: {said:?}");
    assert_eq!(said[0].1, "opened", "{how}: {said:?}");
    assert_eq!(said[1].1, "errno=1", "{how}: {said:?}");
    assert_eq!(said[2].1, "errno=1", "{how}: {said:?}");
    disk.assert_untouched(&how);
    drop(cg);
    drop(lab);
}

/// On this machine's hierarchy: the v1 devices controller here, the BPF program on v2.
#[test]
fn the_device_policy_alone_refuses_what_it_does_not_list() {
    let _serial = serial();
    let temp = temp_dir("security-policy");
    let lab = Lab::in_dir(&temp).unwrap();
    the_device_policy_alone(lab, &temp);
    fs::remove_dir_all(&temp).unwrap();
}

/// The BPF program, on the cgroup v2 tree: where the machine's controllers are in v1 (here),
/// on its unified tree, which holds no controller but runs device programs all the same.
#[test]
fn the_device_policy_alone_as_a_bpf_program_on_cgroup_v2() {
    let _serial = serial();
    let unified = Path::new("/sys/fs/cgroup/unified");
    let root = if unified.join("cgroup.procs").exists() {
        unified
    } else {
        Path::new("/sys/fs/cgroup")
    };
    let base = root.join(format!("isolab-devices-test-{}", std::process::id()));
    let temp = temp_dir("security-policy-v2");
    let lab = Lab::in_dir(&temp)
        .unwrap()
        .with_cgroups(isolab_resources::cgroup::Hierarchy::v2_at(base.clone()));
    the_device_policy_alone(lab, &temp);
    fs::remove_dir(&base).unwrap();
    fs::remove_dir_all(&temp).unwrap();
}

/// The session process `pid` belongs to: field 6 of `/proc/PID/stat`, counted after the
/// command's closing parenthesis (a command may contain spaces and parentheses itself).
fn session_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(3)?.parse().ok()
}

/// The first process of an instance of each backend named leads a session of its own: the lab's
/// terminal, whatever it is, is none of its business. For the backends that exec a program
/// (process, container, the OCI runtimes, QEMU) that holds as soon as `start` returns; the
/// VMM, a fork of the lab, gets there on its own, so the test waits a moment for it.
fn every_instance_leads_a_session_of_its_own(names: &[&str]) {
    let _serial = serial();
    let temp = temp_dir("security-sessions");
    let lab = Lab::in_dir(&temp).unwrap();
    let ours = session_of(std::process::id() as i32).unwrap();
    let spec = isolab_payload::Spec::default_for(isolab_payload::Kernel::Sleep);
    for name in names {
        let backend = backend_named(name);
        let instance = backend.start(&lab, &spec, &Limits::default()).unwrap();
        let main = instance.main_pid().as_raw();
        let led = crate::common::eventually(std::time::Duration::from_secs(10), || {
            session_of(main) == Some(main)
        });
        assert!(
            led,
            "{name}: its first process {main} is in session {:?}, not one of its own (the \
             lab's is {ours})",
            session_of(main)
        );
        drop(instance);
    }
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
fn every_instance_of_a_process_container_or_runc_leads_a_session_of_its_own() {
    every_instance_leads_a_session_of_its_own(&[
        "process",
        "container",
        "container-host-root",
        "oci:runc",
    ]);
}

#[test]
#[ignore = "needs /dev/kvm (CI runs it)"]
fn every_vmm_leads_a_session_of_its_own() {
    crate::common::needs_kvm();
    every_instance_leads_a_session_of_its_own(&["vm"]);
}

#[test]
#[ignore = "needs qemu-system-x86 and a Linux kernel to boot (CI runs it)"]
fn every_qemu_leads_a_session_of_its_own() {
    crate::common::needs_qemu();
    every_instance_leads_a_session_of_its_own(&["qemu"]);
}

/// Run the test `test` of this binary again, in a child process, as `role`; `command` adds to
/// the command what the child needs (its terminal, what it runs between fork and exec). The
/// child's report comes back through a file.
fn rerun(
    test: &str,
    role: &str,
    backend: &str,
    temp: &Path,
    mut command: impl FnMut(&mut Command),
) -> (std::process::ExitStatus, Report) {
    let report = temp.join(format!("report-{role}"));
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--include-ignored"])
        .arg("--test-threads=1")
        .env(ROLE, role)
        .env(REPORT, &report)
        .env(BACKEND, backend)
        .env("TMPDIR", temp);
    command(&mut cmd);
    let status = cmd.status().expect("the test binary runs again");
    let text = fs::read_to_string(&report).unwrap_or_default();
    (status, Report::from_text(&text))
}

/// In a child run by [`rerun`]: the part to play, if this is one.
fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// In a child run by [`rerun`]: run the attacker in the backend named, on `lab`, and hand its
/// report to the parent.
fn play_attack(lab: &Lab) {
    let name = std::env::var(BACKEND).unwrap();
    let report = attack(backend_named(&name).as_ref(), lab);
    fs::write(std::env::var(REPORT).unwrap(), report.to_text()).unwrap();
}

/// A pseudo-terminal of the window size the attacker looks for: (master, slave).
fn terminal() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: TTY_ROWS,
        ws_col: TTY_COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds into the integers given; no name buffer, no termios.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: two new fds that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Bytes waiting to be read on the terminal whose slave is `slave`: what was typed into it.
fn typed_ahead(slave: &OwnedFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCINQ (FIONREAD) writes one int.
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n
}

/// The terminal attack on `backend` (see the module docs), as the test `test`.
fn terminal_attack(test: &str, backend: &str) {
    if role().as_deref() == Some("lab-in-a-terminal") {
        let temp = temp_dir("security-tty-lab");
        let lab = lab_with_attacker(&temp);
        play_attack(&lab);
        drop(lab);
        fs::remove_dir_all(&temp).unwrap();
        return;
    }
    let _serial = serial();
    let temp = temp_dir(&format!("security-tty-{}", backend.replace(':', "-")));
    let _tiocsti = legacy_tiocsti();
    let (master, slave) = terminal();
    // The output of the child (its test harness, the lab) goes to the terminal; someone must
    // read it, or the child blocks once the terminal's buffer is full.
    let reader = {
        let master = fs::File::from(master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut master = master;
            let mut buf = [0u8; 4096];
            // EIO once the child's side is closed and the parent's slave is gone.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let (status, report) = rerun(test, "lab-in-a-terminal", backend, &temp, |cmd| {
        let stdio = || Stdio::from(slave.try_clone().unwrap());
        cmd.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: setsid and ioctl, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // A session of its own whose controlling terminal is the slave: what a login
                // shell has, and so what `lab exec` run from it inherits.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let waiting = typed_ahead(&slave);
    // Read what is left, then let the reader see the end of the terminal.
    let mut left = vec![0u8; waiting.max(0) as usize];
    if waiting > 0 {
        let _ = fs::File::from(slave.try_clone().unwrap()).read(&mut left);
    }
    drop(slave);
    let output = reader.join().unwrap();
    eprintln!("{backend}: {}", report.to_text());
    assert!(
        status.success(),
        "the lab in a terminal failed ({status}):\n{output}"
    );
    let tiocsti = report.fact("attack.tiocsti");
    assert!(
        waiting == 0 && !output.contains(TYPED),
        "{backend}: the container typed {waiting} bytes into the terminal the lab ran in \
         ({:?}); the attacker says: {tiocsti}\nthe terminal showed:\n{output}",
        String::from_utf8_lossy(&left)
    );
    assert!(
        !tiocsti.contains("typed="),
        "{backend}: the container could type into the lab's terminal: {tiocsti}"
    );
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
fn a_container_cannot_type_into_the_terminal_of_the_shell_that_ran_the_lab() {
    terminal_attack(
        "devices::a_container_cannot_type_into_the_terminal_of_the_shell_that_ran_the_lab",
        "container",
    );
}

#[test]
fn runc_cannot_type_into_the_terminal_of_the_shell_that_ran_the_lab() {
    terminal_attack(
        "devices::runc_cannot_type_into_the_terminal_of_the_shell_that_ran_the_lab",
        "oci:runc",
    );
}

/// Item 3: where the kernel allows no user namespace (`user.max_user_namespaces=0`) the
/// container's root is the host's root — with `CAP_MKNOD` — and on the lab's layered image its
/// root is a writable overlay. The sysctl is simulated for the lab alone: the lab runs in a
/// child process, in a mount namespace of its own where a file holding `0` is bound over
/// `/proc/sys/user/max_user_namespaces` — what the lab reads to decide. Nothing of the host
/// changes, and the namespace goes with the child, however it ends.
#[test]
fn without_user_namespaces_a_layered_container_opens_no_device_it_makes() {
    let test = "devices::without_user_namespaces_a_layered_container_opens_no_device_it_makes";
    if role().as_deref() == Some("lab-without-userns") {
        let temp = temp_dir("security-nouserns-lab");
        let mut lab = lab_with_attacker(&temp);
        lab.settings.image_spec = Some(isolab_resources::image::ImageSpec {
            lib_mib: 1,
            app_version: 1,
        });
        // The image carries its own copy of the workload: the attacker's, there too.
        let image = lab.image().unwrap().unwrap();
        let exe = image.layers[0].path.join("workload");
        fs::write(&exe, fs::read(attacker()).unwrap()).unwrap();
        play_attack(&lab);
        drop(lab);
        fs::remove_dir_all(&temp).unwrap();
        return;
    }
    let _serial = serial();
    let temp = temp_dir("security-nouserns");
    let disk = VictimDisk::new(&temp);
    let zero = temp.join("max_user_namespaces");
    fs::write(&zero, "0\n").unwrap();
    let zero = CString::new(zero.as_os_str().as_bytes()).unwrap();
    let (status, report) = rerun(test, "lab-without-userns", "container", &temp, |cmd| {
        let zero = zero.clone();
        // SAFETY: unshare and mount on prepared strings, async-signal-safe, between fork and
        // exec.
        unsafe {
            cmd.pre_exec(move || {
                let sysctl = c"/proc/sys/user/max_user_namespaces";
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0
                    && libc::mount(
                        zero.as_ptr(),
                        sysctl.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) == 0;
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    eprintln!("{}", report.to_text());
    assert!(status.success(), "the lab without user namespaces failed");
    let root = report
        .info
        .get("container_root")
        .cloned()
        .unwrap_or_default();
    assert!(
        root.contains("the host's root") && root.contains("max_user_namespaces is 0"),
        "the container's root is the host's where user namespaces are refused: {root}"
    );
    disk.assert_untouched(report.fact("attack.disk"));
    let opened = opened(&report);
    assert!(
        opened.is_empty(),
        "a container whose root is the host's opened host devices: {opened:#?}"
    );
    drop(disk);
    fs::remove_dir_all(&temp).unwrap();
}

/// Item 5: the OCI bundles' capability sets are the container's: no inheritable, no ambient.
fn same_capabilities_as_the_container(runtime: &str) {
    let _serial = serial();
    let temp = temp_dir(&format!("security-caps-{}", runtime.replace(':', "-")));
    let lab = lab_with_attacker(&temp);
    let container = attack(&Container::default(), &lab);
    let oci = attack(backend_named(runtime).as_ref(), &lab);
    let (mine, theirs) = (container.fact("attack.caps"), oci.fact("attack.caps"));
    eprintln!("container: {mine}\n{runtime}: {theirs}");
    assert!(
        mine.contains("inh=0000000000000000,") && mine.ends_with("amb=0000000000000000"),
        "{mine}"
    );
    assert_eq!(
        mine, theirs,
        "{runtime}'s capability sets differ from the container's"
    );
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
fn runc_runs_with_the_containers_capability_sets() {
    same_capabilities_as_the_container("oci:runc");
}

#[test]
#[ignore = "needs crun (CI runs it)"]
fn crun_runs_with_the_containers_capability_sets() {
    same_capabilities_as_the_container("oci:crun");
}
