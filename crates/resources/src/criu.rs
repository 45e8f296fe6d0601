//! CRIU — Checkpoint/Restore In Userspace — the tool that writes a running process tree to
//! files and makes it run again from them, as Podman's `container checkpoint` and Docker's
//! `checkpoint` do underneath (runc calls it for `runc checkpoint` and `runc restore`).
//!
//! There is no "snapshot this process" system call. CRIU does it from user space with what the
//! kernel lets a tracer see: it freezes the tree (the freezer cgroup, or `ptrace` seize), reads
//! each task's memory map and registers, and injects a small piece of its own code — the
//! *parasite* — into each task to read from inside what `/proc` does not show (signal masks,
//! the contents of anonymous memory, its file descriptors). Restoring runs that backwards: CRIU
//! forks the tree again with the old PIDs (through `clone3`'s `set_tid` or
//! `ns_last_pid`), rebuilds namespaces, mounts, files and pipes, and each task ends in the
//! *restorer blob*, code that unmaps CRIU itself, maps the task's old memory back, and returns to
//! user space through `rt_sigreturn` with the old registers.
//!
//! That last step must place the kernel's own page of code, the vDSO (where `clock_gettime`
//! runs without a system call), where the dumped process had it, and CRIU reads the vDSO's
//! layout when it starts. A CRIU older than the kernel may not understand the kernel's vDSO:
//! Debian 12's CRIU 3.17.1 fails on a 6.18 kernel with "vdso: Unexpected rt vDSO area bounds"
//! before it does anything. `criu check` says so, so the lab runs it once ([`verdict`]) and a
//! restore that cannot work is skipped with CRIU's own words.
//!
//! ```text
//!  <images>/                          a directory of the lab's own, 0700 (a backend's snapshot)
//!    core-*.img mm-*.img pages-*.img  the tree (CRIU's protobuf images)
//!    stats-dump dump.log              CRIU's own timings ([`DumpStats`]) and its -v4 log
//!  <work>/                            one per restore (several may run at once)
//!    stats-restore restore.log        ([`RestoreStats`]); the log holds the reason of a failure
//!    restored.pid                     the restored tree's root
//! ```

use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Debian package that installs `criu`.
pub const PACKAGE: &str = "criu";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    /// CRIU cannot work on this machine: the reason, in one line.
    #[error("{0}")]
    Unusable(String),
    /// A file or directory of the checkpoint could not be used.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the lab was doing.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `criu dump` or `criu restore` failed: its first error, from its log.
    #[error("criu {stage} failed: {why}")]
    Failed {
        /// `dump` or `restore`.
        stage: &'static str,
        /// CRIU's first error line.
        why: String,
    },
    /// A stats file is not what CRIU writes.
    #[error("{path}: not a CRIU stats image ({why})")]
    Stats {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CriuError + 'a {
    move |source| CriuError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What `criu check` said about this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// CRIU works here.
    Works {
        /// The program.
        program: PathBuf,
        /// Its version, in its own words (`3.17.1`).
        version: String,
    },
    /// CRIU cannot checkpoint or restore here: why, in one line.
    Fails(String),
}

impl Verdict {
    /// The reason CRIU cannot be used, or `None` when it works.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Verdict::Works { .. } => None,
            Verdict::Fails(why) => Some(why),
        }
    }
}

/// CRIU's verdict on this machine: `criu check` is run once per lab (it probes dozens of kernel
/// features and takes a few hundred milliseconds) and its answer kept.
pub fn verdict() -> &'static Verdict {
    static VERDICT: OnceLock<Verdict> = OnceLock::new();
    VERDICT.get_or_init(|| judge(crate::tools::find("criu").as_deref()))
}

/// Run `criu check` with `program` (none: not installed) and judge its answer.
pub fn judge(program: Option<&Path>) -> Verdict {
    let Some(program) = program else {
        return Verdict::Fails(format!("criu is not installed (apt-get install {PACKAGE})"));
    };
    let version = version(program);
    let out = match Command::new(program)
        .arg("check")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => return Verdict::Fails(format!("{}: {e}", program.display())),
    };
    // CRIU writes its findings to standard error, its "Looks good." to standard output.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    if out.status.success() {
        return Verdict::Works {
            program: program.to_path_buf(),
            version,
        };
    }
    let why = first_error(&text).unwrap_or_else(|| format!("exit status {}", out.status));
    Verdict::Fails(format!("criu check fails (CRIU {version}): {why}"))
}

/// CRIU's version, `3.17.1`, from `criu --version` ("Version: 3.17.1").
fn version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "of unknown version".into())
}

/// The first error CRIU reported, without its source location: from
/// `Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds` it keeps
/// `vdso: Unexpected rt vDSO area bounds`. The first one is the cause; the lines after it are
/// the callers giving up in turn. Log files prefix each line with a timestamp, `(00.012345)`,
/// which is skipped too, and so is `exited, status=N`: CRIU's report that a helper program it
/// ran failed, which it says even when that was only a probe and nothing failed.
pub fn first_error(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.contains("exited, status="))
        .find_map(|line| {
            let line = line.trim();
            let line = match line.strip_prefix('(') {
                Some(rest) if rest.split_once(')').is_some() => {
                    rest.split_once(')')?.1.trim_start()
                }
                _ => line,
            };
            // A restored task's own lines name it first: `1: Error (…)`.
            let line = match line.split_once(": ") {
                Some((pid, rest)) if pid.chars().all(|c| c.is_ascii_digit()) => rest,
                _ => line,
            };
            let rest = line.strip_prefix("Error")?.trim_start();
            let rest = match rest.strip_prefix('(') {
                Some(r) => r.split_once("):")?.1,
                None => rest.strip_prefix(':')?,
            };
            Some(rest.trim().to_string())
        })
}

/// The log line just before CRIU's first error: the step it was on when it failed (its -v4
/// log says what it is about to do before it does it).
fn step_before_error(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("Error") && !l.contains("exited, status="))?;
    let before = lines[..at].iter().rev().find(|l| !l.trim().is_empty())?;
    let before = match before.trim().split_once(')') {
        Some((stamp, rest)) if stamp.starts_with('(') => rest.trim(),
        _ => before.trim(),
    };
    Some(before.to_string())
}

/// A mount on the root of a process tree's mount namespace, as [`root_mount_points`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted, from the tree's root (`/workload`, `/dev`).
    pub path: PathBuf,
    /// Whether it is mounted on a directory (or on a file: a file bind mount).
    pub dir: bool,
}

/// The mount points on the root mount of `pid`'s mount namespace (its `/`, not the mounts
/// inside those: they are in the file systems CRIU restores).
///
/// CRIU does not restore a mount namespace's root mount: it bind-mounts the directory given
/// as `--root` there instead, as a container runtime's root is a directory of its bundle
/// (runc's is). A container whose root is a tmpfs of its own — isolab's — comes back on that
/// directory, and CRIU then mounts the tree's other mounts on it: each needs its mount point,
/// a directory or, for a file bind mount such as `/workload`, a file. The checkpoint keeps this
/// list, and a restore makes them ([`make_root`]).
pub fn root_mount_points(pid: i32) -> Result<Vec<MountPoint>, CriuError> {
    let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
    // Each line: mount ID, parent ID, device, root, mount point, …; paths escape a space,
    // tab, newline and backslash in octal (`\040`).
    let mounts: Vec<(&str, &str, String)> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Some((*f.first()?, *f.get(1)?, unescape(f.get(4)?)))
        })
        .collect();
    let root = mounts
        .iter()
        .rev()
        .find(|(_, _, at)| at == "/")
        .map(|(id, _, _)| *id)
        .ok_or_else(|| CriuError::Failed {
            stage: "dump",
            why: format!("{} has no mount at /", path.display()),
        })?;
    let mut out = Vec::new();
    for (_, parent, at) in mounts.iter().filter(|(id, _, _)| *id != root) {
        if *parent != root || out.iter().any(|m: &MountPoint| m.path == Path::new(at)) {
            continue;
        }
        let seen = PathBuf::from(format!("/proc/{pid}/root{at}"));
        let meta = fs::metadata(&seen).map_err(io_err("stat", &seen))?;
        out.push(MountPoint {
            path: PathBuf::from(at),
            dir: meta.is_dir(),
        });
    }
    Ok(out)
}

/// A path from `/proc/*/mountinfo`, its octal escapes (`\040`) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Make in `root` (an empty directory) the mount points of `points`, for `criu restore
/// --root`: directories, and empty files for file bind mounts, with the directories they are
/// in.
pub fn make_root(root: &Path, points: &[MountPoint]) -> Result<(), CriuError> {
    for point in points {
        let inside = point.path.strip_prefix("/").unwrap_or(&point.path);
        let at = root.join(inside);
        if point.dir {
            fs::create_dir_all(&at).map_err(io_err("make", &at))?;
            continue;
        }
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent).map_err(io_err("make", parent))?;
        }
        fs::File::create(&at).map_err(io_err("make", &at))?;
    }
    Ok(())
}

/// Bytes of the images in `dir` on disk: the checkpoint's size (allocated blocks, so a sparse
/// file counts only what it holds).
pub fn images_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// What to checkpoint, and how: `criu dump` of the tree rooted at `pid`.
#[derive(Clone, Debug)]
pub struct Dump {
    /// The root of the process tree (a container's first process).
    pub pid: i32,
    /// Keep the tree running after the dump (`--leave-running`); otherwise CRIU kills it.
    pub leave_running: bool,
    /// Mounts the tree sees that come from outside it, as `mnt[PATH]:KEY` — the bind mounts of
    /// a container's root. CRIU does not dump what another file system holds; it writes down
    /// the key, and the restore is told where each key is now.
    pub external: Vec<String>,
    /// Let CRIU dump and restore the tree's cgroups (`--manage-cgroups`).
    pub manage_cgroups: bool,
    /// Save the tree's network namespace as an empty one (`--empty-ns net`): a container
    /// without a network has nothing in it but a loopback, and saving more would run
    /// iproute2's `ip … save` and `iptables-save` in it.
    pub empty_net: bool,
}

/// What CRIU measured while dumping, in microseconds (its `stats-dump`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Freezing the tree.
    pub freezing_us: u64,
    /// How long the tree stood frozen: the pause a running service would see.
    pub frozen_us: u64,
    /// Reading its memory through the parasite.
    pub memdump_us: u64,
    /// Writing the pages to the images.
    pub memwrite_us: u64,
    /// Pages written.
    pub pages_written: u64,
}

/// What CRIU measured while restoring, in microseconds (its `stats-restore`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Forking the tree again, with its old PIDs.
    pub forking_us: u64,
    /// The whole restore, from CRIU's start to the tree running.
    pub restore_us: u64,
    /// Pages mapped back from the images.
    pub pages_restored: u64,
}

/// A dump done: its wall time as the lab saw it, and CRIU's own stages.
#[derive(Clone, Copy, Debug)]
pub struct Dumped {
    /// From `criu dump` started to its exit.
    pub wall: Duration,
    /// CRIU's own timings.
    pub stats: DumpStats,
}

impl Dump {
    /// `criu`'s arguments, writing the images to `images`.
    pub fn args(&self, images: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "dump".into(),
            "--tree".into(),
            self.pid.to_string(),
            "--images-dir".into(),
            images.to_string_lossy().into_owned(),
            "-v4".into(),
            "--log-file".into(),
            "dump.log".into(),
        ];
        if self.leave_running {
            args.push("--leave-running".into());
        }
        for e in &self.external {
            args.extend(["--external".into(), e.clone()]);
        }
        if self.manage_cgroups {
            args.push("--manage-cgroups".into());
        }
        if self.empty_net {
            args.extend(["--empty-ns".into(), "net".into()]);
        }
        args
    }

    /// Run `criu dump` (CRIU must work here: [`verdict`]), writing to `images`.
    pub fn run(&self, images: &Path) -> Result<Dumped, CriuError> {
        let program = usable()?;
        let start = Instant::now();
        let status = Command::new(&program)
            .args(self.args(images))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(io_err("run", &program))?;
        let wall = start.elapsed();
        if !status.success() {
            return Err(failed(
                "dump",
                &images.join("dump.log"),
                &status.to_string(),
            ));
        }
        let stats = read_stats(&images.join("stats-dump"))?.dump;
        Ok(Dumped { wall, stats })
    }
}

/// How to restore a checkpoint: `criu restore`.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// Where CRIU writes this restore's log, stats and pidfile (`--work-dir`): one per
    /// restore, as several restores of one checkpoint may run at once. None: the images'.
    pub work: Option<PathBuf>,
    /// The root directory the restored mount namespace is built on (`--root`): the container's
    /// root file system, on the host. CRIU bind-mounts it as the namespace's root mount and
    /// restores nothing in it, then mounts the tree's other mounts on it: it must hold their
    /// mount points ([`make_root`]).
    pub root: Option<PathBuf>,
    /// Where each external mount's key is now, as `mnt[KEY]:PATH`.
    pub external: Vec<String>,
    /// Descriptors the lab passes in place of the tree's old ones, as `(fd, resource)`: the
    /// tree's pipes to a lab that has since made new ones (`pipe:[INODE]` names the old pipe,
    /// `fd` is the lab's new end, which CRIU inherits and puts where the old one was).
    pub inherit: Vec<(RawFd, String)>,
    /// Restore the cgroups (`--manage-cgroups`) below this cgroup (`--cgroup-root`) rather than
    /// where they were: a new instance's.
    pub cgroup_root: Option<PathBuf>,
}

/// A restore done.
#[derive(Clone, Copy, Debug)]
pub struct Restored {
    /// The restored tree's root, a child of the lab (CRIU forks it as its own sibling).
    pub pid: i32,
    /// From `criu restore` started to its exit (the tree then runs).
    pub wall: Duration,
    /// CRIU's own timings.
    pub stats: RestoreStats,
}

impl Restore {
    /// The directory CRIU writes this restore's own files to.
    pub fn work_dir<'a>(&'a self, images: &'a Path) -> &'a Path {
        self.work.as_deref().unwrap_or(images)
    }

    /// `criu`'s arguments, reading the images in `images`. The descriptors of
    /// [`Restore::inherit`] must be open in CRIU, not close-on-exec.
    pub fn args(&self, images: &Path) -> Vec<String> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        // `--restore-sibling`: the tree's root is forked with CLONE_PARENT, so its parent is
        // the one who ran CRIU — the lab, which can wait for it — not CRIU, which exits as soon
        // as the tree runs (`--restore-detached`).
        let mut args: Vec<String> = vec![
            "restore".into(),
            "--images-dir".into(),
            path(images),
            "--work-dir".into(),
            path(self.work_dir(images)),
            "-v4".into(),
            "--log-file".into(),
            "restore.log".into(),
            "--restore-detached".into(),
            "--restore-sibling".into(),
            "--pidfile".into(),
            path(&self.work_dir(images).join("restored.pid")),
        ];
        if let Some(root) = &self.root {
            args.extend(["--root".into(), path(root)]);
        }
        for e in &self.external {
            args.extend(["--external".into(), e.clone()]);
        }
        for (fd, what) in &self.inherit {
            args.extend(["--inherit-fd".into(), format!("fd[{fd}]:{what}")]);
        }
        if let Some(cg) = &self.cgroup_root {
            args.extend(["--manage-cgroups".into(), "--cgroup-root".into(), path(cg)]);
        }
        args
    }

    /// After `criu restore` with these [`Restore::args`] ended — `exit` is its failure, in
    /// words, if it failed: the restored tree's root and CRIU's own timings, or CRIU's first
    /// error from its log.
    pub fn outcome(
        &self,
        images: &Path,
        exit: Result<(), String>,
        wall: Duration,
    ) -> Result<Restored, CriuError> {
        let work = self.work_dir(images);
        if let Err(status) = exit {
            return Err(failed("restore", &work.join("restore.log"), &status));
        }
        let pidfile = work.join("restored.pid");
        let text = fs::read_to_string(&pidfile).map_err(io_err("read", &pidfile))?;
        let pid = text.trim().parse().map_err(|_| CriuError::Failed {
            stage: "restore",
            why: format!("{} holds no PID: {text:?}", pidfile.display()),
        })?;
        let stats = read_stats(&work.join("stats-restore"))?.restore;
        Ok(Restored { pid, wall, stats })
    }

    /// Run `criu restore` as a child of the lab (CRIU must work here: [`verdict`]).
    pub fn run(&self, images: &Path) -> Result<Restored, CriuError> {
        let program = usable()?;
        let mut cmd = Command::new(&program);
        cmd.args(self.args(images))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let fds: Vec<RawFd> = self.inherit.iter().map(|(fd, _)| *fd).collect();
        // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and touches
        // only the child's copy of its descriptor table. The lab opens every descriptor
        // close-on-exec (another thread may fork at any time); the ones CRIU inherits must
        // stay open across its exec, so the flag is cleared here, in the child only.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let status = cmd.status().map_err(io_err("run", &program))?;
        let exit = match status.success() {
            true => Ok(()),
            false => Err(status.to_string()),
        };
        self.outcome(images, exit, start.elapsed())
    }
}

/// The `criu` program, if CRIU works here; otherwise why not.
pub fn usable() -> Result<PathBuf, CriuError> {
    match verdict() {
        Verdict::Works { program, .. } => Ok(program.clone()),
        Verdict::Fails(why) => Err(CriuError::Unusable(why.clone())),
    }
}

fn failed(stage: &'static str, log: &Path, status: &str) -> CriuError {
    let text = fs::read_to_string(log).unwrap_or_default();
    let why = match (first_error(&text), step_before_error(&text)) {
        (Some(error), Some(step)) => format!("{error} (after: {step})"),
        (Some(error), None) => error,
        (None, _) => status.to_string(),
    };
    CriuError::Failed { stage, why }
}

/// Both halves of a stats image; a file holds one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// From `stats-dump`.
    pub dump: DumpStats,
    /// From `stats-restore`.
    pub restore: RestoreStats,
}

/// The two magic numbers a CRIU stats file starts with: "service" images (not part of the
/// process tree), then the stats image's own.
const SERVICE_MAGIC: u32 = 0x5510_5940;
const STATS_MAGIC: u32 = 0x5709_3306;

/// Read a CRIU stats file. Every CRIU image is a sequence of protobuf messages, each preceded by
/// its length as a little-endian `u32`, after the magic numbers. The stats image holds one
/// message, `StatsEntry { dump = 1; restore = 2 }`, whose fields are plain numbers; the lab
/// decodes it itself (a few dozen lines) rather than carry a protobuf library for one message.
pub fn read_stats(path: &Path) -> Result<Stats, CriuError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    decode_stats(&bytes).map_err(|why| CriuError::Stats {
        path: path.to_path_buf(),
        why,
    })
}

fn decode_stats(bytes: &[u8]) -> Result<Stats, &'static str> {
    let word = |at: usize| -> Result<u32, &'static str> {
        let b = bytes.get(at..at + 4).ok_or("too short")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0)? != SERVICE_MAGIC || word(4)? != STATS_MAGIC {
        return Err("wrong magic");
    }
    let len = word(8)? as usize;
    let entry = bytes.get(12..12 + len).ok_or("message cut short")?;
    let mut stats = Stats::default();
    for (field, value) in fields(entry)? {
        match (field, value) {
            (1, Value::Bytes(dump)) => {
                for (f, v) in fields(dump)? {
                    let Value::Number(n) = v else { continue };
                    match f {
                        1 => stats.dump.freezing_us = n,
                        2 => stats.dump.frozen_us = n,
                        3 => stats.dump.memdump_us = n,
                        4 => stats.dump.memwrite_us = n,
                        7 => stats.dump.pages_written = n,
                        _ => {}
                    }
                }
            }
            (2, Value::Bytes(restore)) => {
                for (f, v) in fields(restore)? {
                    let Value::Number(n) = v else { continue };
                    match f {
                        3 => stats.restore.forking_us = n,
                        4 => stats.restore.restore_us = n,
                        5 => stats.restore.pages_restored = n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(stats)
}

/// One field's value in protobuf's wire format: a number, or a length-delimited run of bytes
/// (an embedded message, here).
enum Value<'a> {
    Number(u64),
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message, as `(field number, value)`. Each field starts with a
/// varint key, `number << 3 | wire type`: 0 is a varint, 1 eight bytes, 2 a varint length and
/// that many bytes, 5 four bytes.
fn fields(mut msg: &[u8]) -> Result<Vec<(u64, Value<'_>)>, &'static str> {
    fn varint(msg: &mut &[u8]) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = msg.split_first().ok_or("varint cut short")?;
            *msg = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long")
    }
    let mut out = Vec::new();
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let value = match key & 7 {
            0 => Value::Number(varint(&mut msg)?),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                let b = msg.get(..n).ok_or("fixed field cut short")?;
                msg = &msg[n..];
                Value::Number(b.iter().rev().fold(0, |a, &x| a << 8 | u64::from(x)))
            }
            2 => {
                let n = varint(&mut msg)? as usize;
                let b = msg.get(..n).ok_or("field cut short")?;
                msg = &msg[n..];
                Value::Bytes(b)
            }
            _ => return Err("unknown wire type"),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_the_cause_without_its_source_location() {
        let check = "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
                     Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n";
        assert_eq!(
            first_error(check).as_deref(),
            Some("vdso: Unexpected rt vDSO area bounds")
        );
        let log = "(00.001200) Warn  (criu/kerndat.c:1): nothing\n\
                   (00.004100) Error (criu/mount.c:1088): mnt: 112:./tools doesn't have a proper root mount\n";
        assert_eq!(
            first_error(log).as_deref(),
            Some("mnt: 112:./tools doesn't have a proper root mount")
        );
        let restored = "(00.108240)      1: mnt-v2: can_mount_now_v2: true as 32 is external\n\
                        (00.111006)      1: Error (criu/mount-v2.c:628): mnt-v2: Can't stat it\n\
                        (00.115307) Error (criu/cr-restore.c:2537): Restoring FAILED.\n";
        assert_eq!(
            first_error(restored).as_deref(),
            Some("mnt-v2: Can't stat it")
        );
        assert_eq!(first_error("Looks good.\n"), None);
    }

    /// The lab's verdict is `criu check`'s own, run here beside it on the real CRIU: where it
    /// fails (Debian's 3.17.1 on a 6.18 kernel) the reason is its first error, word for word;
    /// where it passes, the lab says CRIU works; where it is missing, the package to install.
    #[test]
    fn the_verdict_is_criu_checks_own() {
        let verdict = verdict();
        let Some(program) = crate::tools::find("criu") else {
            assert_eq!(
                verdict.problem(),
                Some("criu is not installed (apt-get install criu)")
            );
            return;
        };
        let out = Command::new(&program)
            .arg("check")
            .output()
            .expect("run criu check");
        let text = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            assert!(
                matches!(verdict, Verdict::Works { .. }),
                "criu check passes, the lab says {verdict:?}"
            );
            return;
        }
        let why = verdict
            .problem()
            .expect("criu check fails, so does the verdict");
        let cause = text
            .lines()
            .find(|l| l.starts_with("Error ("))
            .and_then(|l| l.split_once("): "))
            .map(|(_, cause)| cause.trim())
            .expect("criu check names its error");
        assert!(
            why.ends_with(cause),
            "{why:?} is not criu check's {cause:?}"
        );
        assert!(why.starts_with("criu check fails (CRIU 3."), "{why:?}");
        assert_eq!(why.lines().count(), 1, "one line: {why:?}");
    }

    /// The lab's own mount namespace, read as a checkpoint reads a container's: `/proc` is
    /// mounted on its root, on a directory; nothing listed is the root itself.
    #[test]
    fn the_mount_points_on_a_root_are_read_from_mountinfo() {
        let points = root_mount_points(std::process::id() as i32).expect("read mountinfo");
        assert!(
            points.contains(&MountPoint {
                path: "/proc".into(),
                dir: true
            }),
            "{points:?}"
        );
        assert!(
            points.iter().all(|p| p.path != Path::new("/")),
            "{points:?}"
        );
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/plain\9"), r"/plain\9");
    }

    /// A restore's root holds each mount point as what it was: a directory, or an empty file
    /// (with the directories it is in) for a file bind mount.
    #[test]
    fn a_root_is_made_with_its_mount_points() {
        let root = std::env::temp_dir().join(format!("isolab-criu-root-{}", std::process::id()));
        fs::create_dir(&root).expect("make a directory");
        let points = [
            MountPoint {
                path: "/workload".into(),
                dir: false,
            },
            MountPoint {
                path: "/bin/busybox".into(),
                dir: false,
            },
            MountPoint {
                path: "/dev".into(),
                dir: true,
            },
        ];
        let made = make_root(&root, &points);
        let kinds = ["workload", "bin/busybox", "bin", "dev"].map(|p| {
            fs::metadata(root.join(p)).map_or("missing", |m| match (m.is_dir(), m.len()) {
                (true, _) => "dir",
                (false, 0) => "empty file",
                (false, _) => "file",
            })
        });
        fs::remove_dir_all(&root).expect("remove the directory");
        made.expect("make the root");
        assert_eq!(kinds, ["empty file", "empty file", "dir", "dir"]);
    }

    /// A stats image as the wire format lays it out: the magics, the length, and
    /// `StatsEntry { restore: { pages_compared: 0, pages_skipped_cow: 0, forking_time: 1500,
    /// restore_time: 41_000, pages_restored: 300 } }`.
    #[test]
    fn a_restore_stats_image_is_decoded() {
        let inner: Vec<u8> = vec![
            1 << 3,
            0,
            2 << 3,
            0,
            3 << 3,
            0xdc,
            0x0b, // 1500
            4 << 3,
            0xa8,
            0xc0,
            0x02, // 41000
            5 << 3,
            0xac,
            0x02, // 300
        ];
        let mut msg = vec![2 << 3 | 2, inner.len() as u8];
        msg.extend(&inner);
        let mut file = Vec::new();
        file.extend(SERVICE_MAGIC.to_le_bytes());
        file.extend(STATS_MAGIC.to_le_bytes());
        file.extend((msg.len() as u32).to_le_bytes());
        file.extend(&msg);
        let stats = decode_stats(&file).expect("decodes");
        assert_eq!(
            stats.restore,
            RestoreStats {
                forking_us: 1500,
                restore_us: 41_000,
                pages_restored: 300
            }
        );
        assert_eq!(
            decode_stats(&file[..file.len() - 1]),
            Err("message cut short")
        );
        file[0] ^= 1;
        assert_eq!(decode_stats(&file), Err("wrong magic"));
    }
}
