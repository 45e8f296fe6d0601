//! The security suite: a lab that teaches isolation must not itself open a way out.
//!
//! Root runs the lab; the adversaries are the code inside an instance and an ordinary user of
//! the host. Each test plays one attack for real, with `tests/attacker` (a static program the
//! tests build) as the attacker's code, and checks that it fails: no euid 0 gained, no host file
//! touched.
//!
//! * a setuid copy or a device node written from inside `container`, `oci:runc`, `oci:crun`
//!   (and gVisor's `oci:runsc`), then run or opened by an ordinary user;
//! * symbolic links planted where the `process` and `vm` backends write their `io` file, by a
//!   container and by an ordinary user;
//! * from inside, the other known routes: a writable `/workload` (the file the `process`
//!   backend runs as root, and the container's `/proc/self/exe`), a descriptor leaked into the
//!   container, the cgroup file system;
//!
//! The second round, a file each:
//!
//! * the terminal the lab runs in, device nodes made and opened from inside, the capability
//!   sets of the OCI bundles (`devices.rs`);
//! * namespaces, mounts and keyrings Docker's seccomp profile refuses (`seccomp.rs`);
//! * a `lab check` of a handed-in crate's build script, a student's runtime and VMM, a
//!   student's answers file linked to a root-only file (`labcheck.rs`);
//! * a report of a file naming 30,000 backends, and signals at every stage (`report.rs`);
//! * a disk directory another user owns, shares or plants names in (`diskdir.rs`);
//! * limits the lab records that must be in force for runc's and crun's workloads, and a fork
//!   bomb under every runtime (`limits.rs`).
//!
//! (A hostile guest's attacks on the VMM's devices are the device modules' own tests:
//! `virtio/hostile.rs`.)
//!
//! The attacks on what the lab reads and writes — a report file planted as a link to a host
//! file, `/dev/zero` or a huge file as answers and results — are in `tests/bounds.rs`.

#[path = "../common/mod.rs"]
mod common;
mod devices;
mod diskdir;
mod labcheck;
mod limits;
mod report;
mod seccomp;

use common::{serial, temp_dir, User};
use isolab_backends as backend;
use isolab_backends::container::Container;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Backend, Limits};
use isolab_payload::{Kernel, Spec, WORKLOAD_ELF};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Kept in step with `tests/attacker/src/main.rs`, which reports its own values: the tests
/// check they agree.
const VICTIM: &str = "/tmp/security-test-victim";
const FIRST_PID: u32 = 20_000;

/// What the victim file holds until an attack overwrites it.
const VICTIM_TEXT: &str = "the host's file, which no instance may write\n";

/// The attacker, built once as a static executable (it runs in a container whose root holds
/// nothing else), like the workload: `+crt-static` on the installed target.
fn attacker() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target_dir = root.join("target/attacker");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--target"])
            .arg("x86_64-unknown-linux-gnu")
            .arg("--manifest-path")
            .arg(root.join("tests/attacker/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building tests/attacker failed");
        target_dir.join("x86_64-unknown-linux-gnu/release/isolab-attacker")
    })
}

/// A copy of the attacker an ordinary user may run, in `dir`.
fn attacker_for_users(dir: &Path) -> PathBuf {
    let copy = dir.join("attacker");
    fs::copy(attacker(), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// The host file the planted links point at: root's, with known contents; removed at the end.
struct Victim;

impl Victim {
    fn new() -> Victim {
        let _ = fs::remove_file(VICTIM);
        fs::write(VICTIM, VICTIM_TEXT).unwrap();
        fs::set_permissions(VICTIM, fs::Permissions::from_mode(0o644)).unwrap();
        Victim
    }

    fn assert_untouched(&self, after: &str) {
        let now = fs::read_to_string(VICTIM).unwrap_or_else(|e| format!("(unreadable: {e})"));
        assert_eq!(
            now, VICTIM_TEXT,
            "{after}: the host file {VICTIM} was overwritten through a planted link"
        );
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = fs::remove_file(VICTIM);
    }
}

/// A lab in `temp` whose workload is the attacker: every container it starts from now on runs
/// the attacker as its init.
fn lab_with_attacker(temp: &Path) -> Lab {
    let lab = Lab::in_dir(temp).unwrap();
    fs::write(lab.workload_path(), fs::read(attacker()).unwrap()).unwrap();
    lab
}

/// Give the lab its real workload back (before it runs anything as a plain process).
fn restore_workload(lab: &Lab) {
    fs::write(lab.workload_path(), WORKLOAD_ELF).unwrap();
}

/// The `io` kernel on a small file: the kernel whose instances get a scratch directory.
fn io() -> Spec {
    Spec::new(Kernel::Io, 1, 1)
}

/// Start the attacker in `backend` and wait until it has tried everything; `look` runs while it
/// still lives. Returns what the attacker reported.
fn attack_from_inside(
    backend: &dyn Backend,
    lab: &Lab,
    look: impl FnOnce(),
) -> BTreeMap<String, String> {
    let mut instance = backend.start(lab, &io(), &Limits::default()).unwrap();
    instance
        .wait_ready()
        .unwrap_or_else(|e| panic!("{}: the attacker did not start: {e}", backend.name()));
    look();
    let run = instance.finish().unwrap();
    let facts: BTreeMap<String, String> = run.probe.into_iter().collect();
    assert_eq!(facts["attack.victim"], VICTIM, "attacker and test disagree");
    assert!(
        facts["attack.pids"].starts_with(&format!("{FIRST_PID}+")),
        "attacker and test disagree: {facts:?}"
    );
    facts
}

/// Everything under `dir` (not following links) an ordinary user could use to become root:
/// setuid or setgid files and device nodes. Each is tried as `user` — run with `whoami`, or
/// opened — and what worked is returned, in words.
fn escalations(dir: &Path, user: &User, tools: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && meta.mode() & 0o6000 != 0 {
                let out = user.command(&path, tools).arg("whoami").output().unwrap();
                let said = String::from_utf8_lossy(&out.stdout);
                if said.contains("euid=0") {
                    found.push(format!(
                        "{} (mode {:o}, owner {}) ran as root for user {}: {said}",
                        path.display(),
                        meta.mode(),
                        meta.uid(),
                        user.0
                    ));
                }
            } else if kind.is_char_device() || kind.is_block_device() {
                let out = user
                    .command(tools.join("attacker"), tools)
                    .arg("open")
                    .arg(&path)
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("opened") {
                    found.push(format!(
                        "{} (device {:x}) opened read-write by user {}",
                        path.display(),
                        meta.rdev(),
                        user.0
                    ));
                }
            }
        }
    }
    found
}

/// Code running as root in `backend` writes a setuid copy of itself and a /dev/kvm node where
/// the host can reach them; an ordinary user then tries them while the instance lives. Neither
/// gives the user anything: no euid 0, no device. The other routes out are closed too.
fn setuid_and_device_nodes_from_inside(backend: Box<dyn Backend>) {
    let name = backend.name().to_string();
    let _serial = serial();
    let temp = temp_dir(&format!("security-{}", name.replace(':', "-")));
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o755)).unwrap();
    let user = User::new("isolab-a");
    let tools = temp.join("tools");
    fs::create_dir(&tools).unwrap();
    fs::set_permissions(&tools, fs::Permissions::from_mode(0o755)).unwrap();
    attacker_for_users(&tools);
    let lab = lab_with_attacker(&temp);
    if let Availability::Unavailable(why) = backend.availability(&lab) {
        panic!("{name} cannot run here: {why}");
    }
    let mut gained = Vec::new();
    let facts = attack_from_inside(backend.as_ref(), &lab, || {
        gained = escalations(lab.workdir(), &user, &tools);
    });
    assert!(
        gained.is_empty(),
        "{name}: an ordinary user gained root through what the instance wrote: {gained:#?}\n\
         the attacker's report: {facts:#?}"
    );
    // The file the `process` backend runs as root cannot be changed from inside.
    assert!(
        facts["attack.workload"].starts_with("errno="),
        "{name}: /workload: {facts:?}"
    );
    assert!(
        facts["attack.cgroupfs"].starts_with("errno="),
        "{name}: the container mounted the cgroup file system: {facts:?}"
    );
    // Nothing of the host's is open inside: the standard streams and the lab's pipes only
    // (gVisor names the host descriptors it was handed for them `host:[N]`).
    for fd in facts["attack.fds"].split(',') {
        let (n, target) = fd.split_once(':').unwrap();
        let stream = ["pipe:[", "socket:[", "host:["]
            .iter()
            .any(|p| target.starts_with(p));
        assert!(
            target == "/dev/null" || stream,
            "{name}: fd {n} leaked into the instance points at {target}: {facts:?}"
        );
    }
    eprintln!("{name}: the attacker's report: {facts:?}");
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

fn by_name(name: &str) -> Box<dyn Backend> {
    backend::by_name(name).unwrap()
}

#[test]
fn a_setuid_file_or_device_node_written_inside_container_gives_no_user_root() {
    setuid_and_device_nodes_from_inside(by_name("container"));
}

/// The same with the container's root left the host's root, as Docker leaves it: the file is
/// root's and setuid, the node is made — and still out of every user's reach, and inert.
#[test]
fn the_same_from_a_container_whose_root_is_the_hosts() {
    setuid_and_device_nodes_from_inside(Box::new(Container {
        host_root: true,
        ..Container::default()
    }));
}

#[test]
fn a_setuid_file_or_device_node_written_inside_runc_gives_no_user_root() {
    setuid_and_device_nodes_from_inside(by_name("oci:runc"));
}

#[test]
#[ignore = "needs crun (CI runs it)"]
fn a_setuid_file_or_device_node_written_inside_crun_gives_no_user_root() {
    setuid_and_device_nodes_from_inside(by_name("oci:crun"));
}

#[test]
#[ignore = "needs runsc, gVisor (CI runs it)"]
fn a_setuid_file_or_device_node_written_inside_runsc_gives_no_user_root() {
    setuid_and_device_nodes_from_inside(by_name("oci:runsc"));
}

/// Make the kernel hand out the next PID from [`FIRST_PID`]: where the planted links wait.
fn next_pid_is_planted() {
    fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", FIRST_PID - 1))
        .expect("root may set ns_last_pid");
}

/// Run the `io` kernel on `name` with its next PID where the links wait; the victim must stay.
fn io_leaves_the_victim_alone(lab: &Lab, name: &str, victim: &Victim, after: &str) {
    let backend = backend::by_name(name).unwrap();
    next_pid_is_planted();
    let run = backend.run(lab, &io(), &Limits::default()).unwrap();
    victim.assert_untouched(&format!("{after}, then {name} ran the io kernel ({run:?})"));
}

/// Code inside a container plants links named after the `io` kernel's file; the `process`
/// backend, and the `vm` backend where KVM is, run `io` next as root. Neither follows them.
fn links_planted_by_a_container(backends: &[&str]) {
    let _serial = serial();
    let temp = temp_dir("security-links-container");
    let victim = Victim::new();
    let lab = lab_with_attacker(&temp);
    let facts = attack_from_inside(&Container::default(), &lab, || {});
    restore_workload(&lab);
    for name in backends {
        io_leaves_the_victim_alone(
            &lab,
            name,
            &victim,
            &format!("a container planted links ({})", facts["attack.symlinks"]),
        );
    }
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
fn links_planted_by_a_container_are_not_followed_by_a_process() {
    links_planted_by_a_container(&["process"]);
}

#[test]
#[ignore = "needs /dev/kvm (CI runs it)"]
fn links_planted_by_a_container_are_not_followed_by_the_vmm() {
    common::needs_kvm();
    links_planted_by_a_container(&["vm"]);
}

/// An ordinary user plants the same links, wherever in the lab's work directory they can write;
/// the lab's `io` runs as root next and follows none.
fn links_planted_by_a_user(backends: &[&str]) {
    let _serial = serial();
    let temp = temp_dir("security-links-user");
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o755)).unwrap();
    let victim = Victim::new();
    let user = User::new("isolab-p");
    let tools = temp.join("tools");
    fs::create_dir(&tools).unwrap();
    fs::set_permissions(&tools, fs::Permissions::from_mode(0o755)).unwrap();
    let attacker = attacker_for_users(&tools);
    let lab = Lab::in_dir(&temp).unwrap();
    let mut said = Vec::new();
    for dir in [lab.workdir().to_path_buf(), lab.workdir().join("scratch")] {
        let out = user
            .command(&attacker, &tools)
            .arg("plant")
            .arg(&dir)
            .output()
            .unwrap();
        said.push(format!(
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    for name in backends {
        io_leaves_the_victim_alone(
            &lab,
            name,
            &victim,
            &format!("user {} planted links ({said:?})", user.0),
        );
    }
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
fn links_planted_by_a_user_are_not_followed_by_a_process() {
    links_planted_by_a_user(&["process"]);
}

#[test]
#[ignore = "needs /dev/kvm (CI runs it)"]
fn links_planted_by_a_user_are_not_followed_by_the_vmm() {
    common::needs_kvm();
    links_planted_by_a_user(&["vm"]);
}

/// `lab exec --backend container --kernel probe` says whose root the container's root is: not
/// the host's, as root (a user namespace of its own); the host's for runc, as Docker leaves it.
#[test]
fn the_probe_says_whether_a_containers_root_is_the_hosts() {
    let _serial = serial();
    let temp = temp_dir("security-probe");
    let probe = |backend: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["exec", "--backend", backend, "--kernel", "probe"])
            .env("TMPDIR", &temp)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("root_on_host "))
            .unwrap_or_else(|| panic!("{backend}: no root_on_host in {out}"))
            .to_string();
        (line, out)
    };
    let (container, out) = probe("container");
    assert!(
        container.contains("no: uid 0 here is uid 2"),
        "{container}\n{out}"
    );
    assert!(out.contains("container_root"), "{out}");
    let (runc, _) = probe("oci:runc");
    assert!(
        runc.contains("yes: uid 0 here is uid 0 of the host"),
        "{runc}"
    );
    fs::remove_dir_all(&temp).unwrap();
}
