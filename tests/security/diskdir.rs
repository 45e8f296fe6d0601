//! The directory of the instances' disks (`--disk-dir`), against an ordinary user of the host.
//!
//! The lab, as root, makes its own directory in the disk directory and a disk file per instance
//! in it; a `process` instance opens its disk by name and writes all of it. An ordinary user who
//! may rename entries of the disk directory — its owner — swaps the lab's directory for one of
//! their own as it is made, and the disk file in there for a link to a file of root's: the
//! workload then writes root's file. In a shared sticky directory (`/var/tmp`) nobody may rename
//! the lab's entries, but anybody may take a name first: a name the lab can be made to expect
//! (`.isolab-direct-<pid>`, `isolab-<lab id>`) must not stop it, and what the lab removes must
//! be what it made. The attacker's side is `tests/attacker/src/diskdir.rs`.

use super::attacker_for_users;
use super::common::{eventually, serial, temp_dir, User};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The size of the victim file and of the instance's disk: the disk kernel writes all of it.
const MIB: u64 = 64;
/// What the victim holds, every byte of it, until something overwrites it.
const PATTERN: u8 = 0xa5;

/// A file of root's, mode 0600, of [`MIB`] MiB: what a planted link points the disk at.
struct BigVictim(PathBuf);

impl BigVictim {
    fn new(dir: &Path) -> BigVictim {
        let path = dir.join("root-only-victim");
        let _ = fs::remove_file(&path);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        let chunk = vec![PATTERN; 1 << 20];
        for _ in 0..MIB {
            std::io::Write::write_all(&mut &file, &chunk).unwrap();
        }
        BigVictim(path)
    }

    /// How many bytes of the victim are no longer the pattern, and its size.
    fn changed(&self) -> (usize, u64) {
        let bytes = fs::read(&self.0).unwrap_or_default();
        let changed = bytes.iter().filter(|b| **b != PATTERN).count();
        (changed, bytes.len() as u64)
    }

    fn assert_untouched(&self, after: &str) {
        let (changed, len) = self.changed();
        assert!(
            changed == 0 && len == MIB << 20,
            "{after}: the root-only file {} was written through the disk directory: {changed} \
             bytes changed, {len} bytes long",
            self.0.display()
        );
    }
}

/// The attacker program, run as `user` in the background; its lines are collected as it says
/// them. Killed (it is this test's child) when dropped.
struct Racer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Racer {
    fn start(user: &User, tools: &Path, args: &[&Path]) -> Racer {
        let mut child = user
            .command(tools.join("attacker"), tools)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Racer { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait until the attacker has said a line starting with `start`.
    fn wait_for(&self, start: &str) {
        let said = eventually(Duration::from_secs(30), || {
            self.lines().iter().any(|l| l.starts_with(start))
        });
        assert!(said, "the attacker never said {start}: {:?}", self.lines());
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's stage: a temporary directory the user may enter, the attacker copied where the
/// user may run it, and the victim.
struct Stage {
    temp: PathBuf,
    tools: PathBuf,
    user: User,
    victim: BigVictim,
}

impl Stage {
    fn new(name: &str, user: &str) -> Stage {
        let temp = temp_dir(name);
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o755)).unwrap();
        let tools = temp.join("tools");
        fs::create_dir(&tools).unwrap();
        fs::set_permissions(&tools, fs::Permissions::from_mode(0o755)).unwrap();
        attacker_for_users(&tools);
        Stage {
            victim: BigVictim::new(&temp),
            user: User::new(user),
            tools,
            temp,
        }
    }

    /// A shared directory as `/var/tmp` is: root's, world-writable, sticky (mode 1777).
    fn sticky_dir(&self) -> PathBuf {
        let dir = self.temp.join("shared");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        dir
    }

    /// `lab exec --backend process --kernel KERNEL --mib 64 --disk-dir DIR`, its work directory
    /// in the test's directory.
    fn lab(&self, kernel: &str, disks: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lab"));
        cmd.args(["exec", "--backend", "process", "--kernel", kernel])
            .args(["--mib", &MIB.to_string(), "--disk-dir"])
            .arg(disks)
            .env("TMPDIR", &self.temp);
        cmd
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.temp);
    }
}

fn said(o: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The attack: the user owns the disk directory and races every lab that uses it. The
/// lab refuses the directory — exit 2, one line that names it — before it makes anything there,
/// and root's file keeps every byte.
#[test]
fn a_disk_dir_owned_by_another_user_is_refused_and_the_race_never_starts() {
    let _serial = serial();
    let stage = Stage::new("security-diskdir-owned", "isolab-d");
    let disks = stage.temp.join("users-disks");
    fs::create_dir(&disks).unwrap();
    let uid = nix::unistd::User::from_name(&stage.user.0)
        .unwrap()
        .unwrap()
        .uid;
    nix::unistd::chown(&disks, Some(uid), None).unwrap();
    // The race is won within a try or two where the lab takes the directory: five tries. A try
    // the attacker loses (the lab fails on its own) is no refusal either.
    let mut not_refused = Vec::new();
    for attempt in 1..=5 {
        let racer = Racer::start(
            &stage.user,
            &stage.tools,
            &[Path::new("race-disk"), &disks, &stage.victim.0],
        );
        let out = stage.lab("disk-seq", &disks).output().unwrap();
        let lines = racer.lines();
        drop(racer);
        let after = format!(
            "try {attempt}: the lab {}; the attacker: {lines:?}",
            said(&out)
        );
        stage.victim.assert_untouched(&after);
        if out.status.code() != Some(2) {
            not_refused.push(after);
            continue;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{after}");
        assert!(
            stderr.contains(&disks.display().to_string()) && stderr.contains("owned by"),
            "{after}"
        );
        assert!(
            fs::read_dir(&disks).unwrap().next().is_none(),
            "{after}: the lab made something in a directory it refused"
        );
    }
    assert!(
        not_refused.is_empty(),
        "the lab took the directory: {not_refused:#?}"
    );
}

/// The same race in a shared sticky directory, which the lab uses: the user sees the lab's
/// directory appear but may not rename it, the lab runs, and root's file keeps every byte.
#[test]
fn a_user_racing_the_lab_in_a_sticky_disk_dir_cannot_swap_its_directory() {
    let _serial = serial();
    let stage = Stage::new("security-diskdir-sticky", "isolab-s");
    let shared = stage.sticky_dir();
    for attempt in 1..=3 {
        let racer = Racer::start(
            &stage.user,
            &stage.tools,
            &[Path::new("race-disk"), &shared, &stage.victim.0],
        );
        let out = stage.lab("disk-seq", &shared).output().unwrap();
        let lines = racer.lines();
        drop(racer);
        let after = format!(
            "try {attempt}: the lab {}; the attacker: {lines:?}",
            said(&out)
        );
        stage.victim.assert_untouched(&after);
        assert!(out.status.success(), "{after}");
        // The attacker saw the lab's directory, and the kernel refused to let it go (EPERM).
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("swap isolab-") && l.ends_with("errno=1")),
            "{after}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("swapped")), "{after}");
        let left: Vec<_> = fs::read_dir(&shared)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{after}: left in the shared directory: {left:?}"
        );
    }
}

/// Where the test makes the kernel hand out the lab's PID, and how many PIDs from there the
/// attacker plants `.isolab-direct-<pid>` for (other processes of the machine take some).
const FIRST_PID: u32 = 24_000;
const PIDS: u32 = 2_000;

/// Every name in `dir` that starts with `isolab-`, with its owner.
fn lab_names(dir: &Path) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(e.path()).ok()?;
            name.starts_with("isolab-").then_some((name, meta.uid()))
        })
        .collect();
    v.sort();
    v
}

/// Names planted in a shared sticky directory before the lab uses them: `.isolab-direct-<pid>`
/// for the PIDs the lab is about to get, and `isolab-<lab id>` as soon as the lab's id shows.
/// The lab still runs, never blames its image, and leaves the user's names where they are.
#[test]
fn names_planted_in_a_sticky_disk_dir_do_not_stop_the_lab_nor_get_removed() {
    let _serial = serial();
    let stage = Stage::new("security-diskdir-planted", "isolab-n");
    let shared = stage.sticky_dir();
    let first = FIRST_PID.to_string();
    let count = PIDS.to_string();
    let racer = Racer::start(
        &stage.user,
        &stage.tools,
        &[
            Path::new("plant-disk"),
            &shared,
            &stage.temp,
            Path::new(&first),
            Path::new(&count),
        ],
    );
    racer.wait_for("planted ");
    // First with the lab's PID among the planted ones, then with any PID.
    for pid_planted in [true, false] {
        if pid_planted {
            fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", FIRST_PID - 1))
                .expect("root may set ns_last_pid");
        }
        let child = stage
            .lab("disk-seq", &shared)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let after = format!(
            "the lab (pid {pid}) {}; the attacker: {:?}",
            said(&out),
            racer.lines()
        );
        if pid_planted {
            assert!(
                (FIRST_PID..FIRST_PID + PIDS).contains(&pid),
                "the lab's PID is not among the planted ones: {after}"
            );
        }
        assert!(out.status.success(), "{after}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("image"),
            "{after}"
        );
    }
    let lines = racer.lines();
    drop(racer);
    // The user's planted directories are all there, still theirs; nothing of the lab's is.
    let planted: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("planted isolab-"))
        .collect();
    assert_eq!(planted.len(), 2, "one per lab: {lines:?}");
    let uid = nix::unistd::User::from_name(&stage.user.0)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let mut expected: Vec<(String, u32)> = planted
        .iter()
        .map(|id| (format!("isolab-{id}"), uid))
        .collect();
    expected.sort();
    assert_eq!(
        lab_names(&shared),
        expected,
        "the user's names stay and the lab's go"
    );
    let directs = fs::read_dir(&shared)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".isolab-direct-")
        })
        .count();
    assert_eq!(directs, PIDS as usize, "the user's files stay");
}

/// A lab killed with SIGKILL while its instance writes its disk in the shared directory, among
/// names planted there: once its guardian has reaped it, nothing of the lab's is left, every
/// name of the user's is, and the next lab finds nothing to reap.
#[test]
fn a_lab_killed_in_a_sticky_disk_dir_leaves_nothing_of_its_own_and_all_of_the_users() {
    let _serial = serial();
    let stage = Stage::new("security-diskdir-killed", "isolab-k");
    let shared = stage.sticky_dir();
    let racer = Racer::start(
        &stage.user,
        &stage.tools,
        &[
            Path::new("plant-disk"),
            &shared,
            &stage.temp,
            Path::new("1"),
            Path::new("1"),
        ],
    );
    racer.wait_for("planted ");
    let mut child = stage
        .lab("disk-rand", &shared)
        .args(["--iters", "100000000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Running: the lab's directory (root's) is in the shared one, beside the user's.
    let running = eventually(Duration::from_secs(60), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the lab ended early; the attacker: {:?}",
            racer.lines()
        );
        lab_names(&shared).iter().any(|(_, uid)| *uid == 0)
    });
    assert!(running, "the lab never made its disk directory");
    let ids = super::common::lab_ids(&stage.temp);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let alive = |ids: &[String]| {
        isolab_resources::ownership::census(&isolab_resources::ownership::registry_dir())
            .into_iter()
            .any(|l| ids.contains(&l.id))
    };
    let gone = eventually(Duration::from_secs(30), || {
        !alive(&ids) && lab_names(&shared).iter().all(|(_, uid)| *uid != 0)
    });
    let lines = racer.lines();
    drop(racer);
    assert!(
        gone,
        "left in the shared directory: {:?}; the attacker: {lines:?}",
        lab_names(&shared)
    );
    let planted: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix("planted ")
                .filter(|n| n.starts_with("isolab-"))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(planted.len(), 1, "{lines:?}");
    let names: Vec<String> = lab_names(&shared).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, planted, "the user's directory stays");
    assert!(
        shared.join(".isolab-direct-1").is_file(),
        "the user's file stays"
    );
}
