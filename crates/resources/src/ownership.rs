//! What a lab owns on the host, written down *before* it is made, so that nothing outlives the
//! lab — not even a lab killed with SIGKILL.
//!
//! A lab makes things the kernel keeps after the lab's process is gone: cgroup directories (in
//! every hierarchy an OCI runtime touches), a runtime's state (`/run/runc/isolab-…`), the work
//! directory. A lab that ends normally removes them in its `Drop`s. A lab that is killed cannot:
//! the **next** lab, whatever command it runs, removes what a dead one left. For that it must know
//! two things, and a PID tells neither.
//!
//! * **Is that lab dead?** PIDs are per PID namespace. A lab in a container sees other PIDs than
//!   a lab on the host, PID 1 in one namespace is not PID 1 in another, and `kill(pid, 0)` in one
//!   namespace says nothing about a process in another: a lab that judged by PIDs once deleted
//!   the work directory of a lab running beside it. So a lab is known by a random **id**, and it
//!   holds an exclusive `flock(2)` on its **lock file** for as long as it lives. The kernel drops
//!   the lock when the last file descriptor of it is closed — when the lab (and any child it
//!   forked) is gone, however it died. Whoever can take the lock knows the owner is dead, and
//!   keeps holding it while reaping, so two labs never reap the same one.
//! * **What did it own?** Each lab has a **ledger** beside its lock: one JSON line per
//!   [`Resource`] it is *about to* make (a claim), and one line when it has removed it again (a
//!   release). A lab killed between the claim and the creation leaves a claim for something that
//!   does not exist; reaping that costs nothing. The other order would leave something nobody
//!   knows about.
//!
//! ```text
//!  /run/isolab/labs/            (root; else $XDG_RUNTIME_DIR/isolab/labs or /tmp/isolab-<uid>/labs)
//!    3f9a1c0b2e7d.lock          flock(LOCK_EX) held while lab 3f9a1c0b2e7d lives
//!    3f9a1c0b2e7d.ledger        {"entry":"lab","id":"3f9a1c0b2e7d","pid":4242}
//!                               {"entry":"claim","n":0,"resource":{"kind":"dir","path":"/tmp/isolab-3f9a1c0b2e7d"}}
//!                               {"entry":"claim","n":3,"resource":{"kind":"oci-container",...}}
//!                               {"entry":"release","n":3}
//! ```
//!
//! A backend that makes something new says so with [`Ledger::claim`] — "I am about to create
//! this; to undo it, do that" — and keeps the [`Owned`] it gets back; dropping that removes the
//! resource and strikes it from the ledger. Each kind of resource knows how to remove itself
//! ([`Resource::remove`]), which is also exactly what reaping a dead lab does.

use crate::cgroup;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The registry directory or a file in it could not be used.
    #[error("the lab registry {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The registry directory belongs to someone else, or others may write to it: a ledger
    /// there could be forged to make the lab delete things.
    #[error(
        "the lab registry {0} is not private to this user (owned by another user, or writable by \
         others): remove it, or set XDG_RUNTIME_DIR to a private directory"
    )]
    NotPrivate(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OwnershipError + '_ {
    move |source| OwnershipError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Something a lab makes on the host, and how to remove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Resource {
    /// A directory tree (the work directory). Removed by unmounting whatever is mounted below
    /// it (a mount would otherwise let the removal reach into another file system), then
    /// deleting it.
    Dir {
        /// The directory.
        path: PathBuf,
    },
    /// The lab's directory of disks, `isolab-<id>-<random>` in `--disk-dir`, and the files in
    /// it. Removed only while it is the lab's — a directory, not a link, of the lab's user, mode
    /// 0700 — without following any link in it ([`crate::disks::remove_dir`]): the disk
    /// directory may be shared with other users.
    DiskDir {
        /// The directory.
        path: PathBuf,
    },
    /// A cgroup directory and everything below it. Removed by killing every process inside,
    /// then removing the directories, deepest first.
    Cgroup {
        /// The directory.
        path: PathBuf,
    },
    /// The same cgroup path in **every** mounted hierarchy. Docker given `--cgroup-parent`
    /// passes its runtime a `linux.cgroupsPath` below it, which the runtime makes in each
    /// controller it knows (blkio, devices, freezer, … on cgroup v1), not only in those the lab
    /// itself uses.
    CgroupEverywhere {
        /// The path relative to each hierarchy's root, e.g. `/isolab/3f9a1c0b2e7d`.
        relative: PathBuf,
    },
    /// A container an OCI runtime keeps state for. Removed through the runtime's own interface,
    /// `delete --force` (after `kill` if need be), which also removes its state directory and its
    /// cgroups.
    OciContainer {
        /// The runtime program (runc, crun, runsc, ...).
        runtime: PathBuf,
        /// The runtime's global options, such as `--root` (where it keeps its state).
        #[serde(default)]
        global: Vec<String>,
        /// The container id.
        id: String,
    },
    /// A container a Docker daemon keeps: it lives in the daemon, not in the lab. Removed
    /// through the CLI, `docker rm --force`.
    DockerContainer {
        /// The `docker` program.
        cli: PathBuf,
        /// The `DOCKER_*` variables that chose the daemon.
        #[serde(default)]
        env: Vec<(String, String)>,
        /// The container's name.
        name: String,
    },
    /// An image a Docker daemon keeps (built by the lab from its layered image). Removed
    /// through the CLI, `docker rmi --force`, which takes its untagged parent layers with it.
    DockerImage {
        /// The `docker` program.
        cli: PathBuf,
        /// The `DOCKER_*` variables that chose the daemon.
        #[serde(default)]
        env: Vec<(String, String)>,
        /// The image's tag, `isolab-image:<lab id>-...`.
        tag: String,
    },
    /// The lab's trace instance in tracefs, `instances/isolab-<lab id>`: its own ring buffer and
    /// event switches ([`crate::tracefs`]). Removed with `rmdir`, through whatever tracefs is
    /// mounted (or one mounted for the moment).
    TraceInstance {
        /// The instance's name.
        name: String,
    },
    /// The host's KSM settings, changed for a run: restored to these values.
    KsmSettings {
        /// `/sys/kernel/mm/ksm/run` before.
        run: String,
        /// `pages_to_scan` before.
        pages_to_scan: String,
        /// `sleep_millisecs` before.
        sleep_millisecs: String,
        /// The lab that changed them: other labs may use KSM too, and the last one to go puts
        /// the settings back ([`crate::ksm::restore`]).
        #[serde(default)]
        lab: String,
        /// The registry whose users record says who else uses KSM.
        #[serde(default)]
        registry: PathBuf,
    },
}

impl Resource {
    /// Remove the resource if it still exists. Returns what was removed, in words (nothing when
    /// it was already gone); an error says what could not be removed.
    pub fn remove(&self) -> Result<Vec<String>, String> {
        match self {
            Resource::Dir { path } => remove_dir_tree(path),
            Resource::DiskDir { path } => crate::disks::remove_dir(path),
            Resource::Cgroup { path } => cgroup::remove_tree(path),
            Resource::CgroupEverywhere { relative } => cgroup::remove_everywhere(relative),
            Resource::OciContainer {
                runtime,
                global,
                id,
            } => crate::containers::remove_oci(runtime, global, id),
            Resource::DockerContainer { cli, env, name } => {
                crate::containers::remove_docker(cli, env, name)
            }
            Resource::DockerImage { cli, env, tag } => crate::image::docker::remove(cli, env, tag),
            Resource::TraceInstance { name } => crate::tracefs::remove_instance(name),
            Resource::KsmSettings {
                run,
                pages_to_scan,
                sleep_millisecs,
                lab,
                registry,
            } => crate::ksm::restore(
                registry,
                lab,
                crate::ksm::Settings {
                    run: run.clone(),
                    pages_to_scan: pages_to_scan.clone(),
                    sleep_millisecs: sleep_millisecs.clone(),
                },
            ),
        }
    }

    /// True when the resource carries lab `id`'s name, as everything a lab makes does. A ledger
    /// is a file on disk: a lab removes only what is named as its owner's, never, say, `/`.
    fn named_for(&self, id: &str) -> bool {
        let last = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let absolute = |p: &Path| p.is_absolute() && !p.components().any(|c| c.as_os_str() == "..");
        match self {
            Resource::Dir { path } => absolute(path) && last(path) == format!("isolab-{id}"),
            Resource::DiskDir { path } => {
                absolute(path) && last(path).starts_with(&format!("isolab-{id}-"))
            }
            // The lab's subtree, or one container's cgroup the lab made where its runtime puts
            // it (runc's in the unified tree of a hybrid machine: `isolab-<id>-<n>`).
            Resource::Cgroup { path } => {
                absolute(path)
                    && (last(path) == id
                        || last(path) == format!("lab-{id}")
                        || last(path).starts_with(&format!("isolab-{id}-")))
                    && cgroup::is_cgroup_dir(path)
            }
            Resource::CgroupEverywhere { relative } => absolute(relative) && last(relative) == id,
            Resource::OciContainer {
                runtime,
                global,
                id: cid,
            } => {
                runtime.is_absolute()
                    && global.iter().all(|g| g.starts_with("--"))
                    && cid.starts_with(&format!("isolab-{id}-"))
            }
            Resource::DockerContainer { cli, env, name } => {
                cli.is_absolute()
                    && env.iter().all(|(k, _)| k.starts_with("DOCKER_"))
                    && name.starts_with(&format!("isolab-{id}-"))
            }
            Resource::DockerImage { cli, env, tag } => {
                cli.is_absolute()
                    && env.iter().all(|(k, _)| k.starts_with("DOCKER_"))
                    && tag.starts_with(&format!("isolab-image:{id}-"))
            }
            Resource::TraceInstance { name } => *name == crate::tracefs::instance_name(id),
            // A setting of the host's, not a named thing: the claim names its lab instead. The
            // values are checked where they are written back ([`crate::ksm::restore`]).
            Resource::KsmSettings { lab, registry, .. } => lab == id && registry.is_absolute(),
        }
    }
}

/// One line of a ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "kebab-case")]
enum Entry {
    /// The first line: whose ledger this is (the PID is for people reading `lab clean`'s
    /// output; it is never used to decide anything).
    Lab {
        /// The lab's id.
        id: String,
        /// Its PID, in its own PID namespace.
        pid: u32,
    },
    /// About to make `resource`.
    Claim {
        /// Sequence number within the ledger.
        n: u64,
        /// What.
        resource: Resource,
    },
    /// Claim `n` was removed again.
    Release {
        /// The claim's number.
        n: u64,
    },
}

/// The longest ledger line a lab reads back (claims are a few hundred bytes).
const MAX_LINE: u64 = 64 * 1024;
/// The most of another lab's ledger a lab reads (a lab with 100 000 runtime containers writes
/// some 30 MiB).
const MAX_LEDGER: u64 = 256 << 20;

/// The directory of lock files and ledgers: `/run/isolab/labs` as root (a tmpfs: empty after a
/// reboot, when nothing of an old lab survives either), else `$XDG_RUNTIME_DIR/isolab/labs`,
/// else `/tmp/isolab-<uid>/labs`. Not under `$TMPDIR`: labs with different temporary
/// directories must still find each other.
pub fn registry_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() && Path::new("/run").is_dir() {
        return PathBuf::from("/run/isolab/labs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir).join("isolab/labs"),
        _ => PathBuf::from(format!("/tmp/isolab-{uid}/labs")),
    }
}

/// Make `dir` (and its parent) private to this user, or refuse one that is not.
fn private_dir(dir: &Path) -> Result<(), OwnershipError> {
    for d in [dir.parent().unwrap_or(dir), dir] {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(d)(e)),
        }
        let meta = fs::symlink_metadata(d).map_err(io_err(d))?;
        if !meta.is_dir()
            || meta.uid() != nix::unistd::geteuid().as_raw()
            || meta.mode() & 0o022 != 0
        {
            return Err(OwnershipError::NotPrivate(d.to_path_buf()));
        }
    }
    Ok(())
}

/// A new random lab id: 12 hex digits (48 bits) from the kernel's random source.
fn new_id() -> String {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into a valid buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No getrandom (Linux < 3.17): the clock and the PID are unique enough for this.
        let t = isolab_host::clock::now_ns() ^ (u64::from(std::process::id()) << 32);
        bytes.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Try to take the exclusive lock on `file` without waiting. `Ok(false)`: someone holds it.
///
/// The lock is never released explicitly: it goes when the last descriptor of this open file
/// closes, which is what makes it mean "alive".
fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own, with constant flags.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// One lab's entry in the registry: its lock, held while it lives, and its ledger.
#[derive(Debug)]
pub struct Ledger {
    id: String,
    dir: PathBuf,
    /// Open (and locked) for the life of the lab; never read.
    _lock: File,
    journal: Mutex<File>,
    next: AtomicU64,
    /// Claims not yet released: while any remain, dropping the ledger keeps its files, for the
    /// next lab to finish the job.
    open_claims: Mutex<BTreeMap<u64, Resource>>,
}

impl Ledger {
    /// A new lab in the registry at [`registry_dir`].
    pub fn open() -> Result<Arc<Ledger>, OwnershipError> {
        Ledger::open_in(&registry_dir())
    }

    /// A new lab in the registry at `dir`.
    ///
    /// The lock is taken on a file with a temporary name and only then renamed into place, so
    /// no other lab ever sees a lock file that nobody holds yet (and takes it for a dead lab's).
    pub fn open_in(dir: &Path) -> Result<Arc<Ledger>, OwnershipError> {
        private_dir(dir)?;
        let create = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(io_err(path))
        };
        let (id, fresh) = loop {
            let id = new_id();
            let fresh = dir.join(format!("{id}.new"));
            match create(&fresh) {
                Ok(file) => break (id, (fresh, file)),
                // 48 random bits rarely collide; when they do, draw again.
                Err(OwnershipError::Io { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        };
        let (fresh_path, lock) = fresh;
        let lock_path = dir.join(format!("{id}.lock"));
        let locked = try_lock(&lock)
            .map_err(io_err(&fresh_path))
            .and_then(|_| fs::rename(&fresh_path, &lock_path).map_err(io_err(&lock_path)));
        if let Err(e) = locked {
            let _ = fs::remove_file(&fresh_path);
            return Err(e);
        }
        let journal_path = dir.join(format!("{id}.ledger"));
        let journal = match create(&journal_path) {
            Ok(j) => j,
            Err(e) => {
                let _ = fs::remove_file(&lock_path);
                return Err(e);
            }
        };
        let ledger = Ledger {
            id: id.clone(),
            dir: dir.to_path_buf(),
            _lock: lock,
            journal: Mutex::new(journal),
            next: AtomicU64::new(0),
            open_claims: Mutex::new(BTreeMap::new()),
        };
        ledger.append(&Entry::Lab {
            id,
            pid: std::process::id(),
        })?;
        Ok(Arc::new(ledger))
    }

    /// The registry directory the lab is in.
    pub fn registry(&self) -> &Path {
        &self.dir
    }

    /// The lab's id: unique across PID namespaces, and part of the name of everything it makes.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn append(&self, entry: &Entry) -> Result<(), OwnershipError> {
        let mut line = serde_json::to_vec(entry).expect("ledger entries serialise");
        line.push(b'\n');
        let path = self.dir.join(format!("{}.ledger", self.id));
        // One write(2) per line on an O_APPEND file: a lab killed mid-way leaves whole lines
        // (and at worst one torn last line, which the reader skips).
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal.write_all(&line).map_err(io_err(&path))
    }

    /// Write down that this lab is about to make `resource`. Make it only after this returns;
    /// keep the [`Owned`] until it is removed (dropping it removes it).
    pub fn claim(self: &Arc<Ledger>, resource: Resource) -> Result<Owned, OwnershipError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.append(&Entry::Claim {
            n,
            resource: resource.clone(),
        })?;
        self.open_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, resource.clone());
        Ok(Owned {
            ledger: Arc::clone(self),
            n,
            resource,
            released: false,
        })
    }

    fn release(&self, n: u64) {
        if self.append(&Entry::Release { n }).is_ok() {
            self.open_claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&n);
        }
    }
}

impl Ledger {
    /// True while some claim is neither released nor removed: something the lab could not
    /// remove while it lives (the cgroup leaf a rootless lab runs in) or failed to remove.
    pub fn has_open_claims(&self) -> bool {
        !self
            .open_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

impl Drop for Ledger {
    /// Everything released: the lab leaves no trace in the registry. Otherwise the files stay,
    /// and once this lab's lock is gone (the lab has exited) the next lab removes what is left.
    fn drop(&mut self) {
        let open = self.open_claims.lock().unwrap_or_else(|p| p.into_inner());
        if open.is_empty() {
            let _ = fs::remove_file(self.dir.join(format!("{}.ledger", self.id)));
            let _ = fs::remove_file(self.dir.join(format!("{}.lock", self.id)));
        }
    }
}

/// A claimed resource. Dropping it (or [`Owned::release`]) removes the resource and strikes it
/// from the ledger.
#[derive(Debug)]
pub struct Owned {
    ledger: Arc<Ledger>,
    n: u64,
    resource: Resource,
    released: bool,
}

impl Owned {
    /// What is owned.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// Remove the resource now. A resource that cannot be removed (the lab's own cgroup, which
    /// the lab is still in) stays claimed, for the next lab to reap once this one has gone.
    pub fn release(mut self) -> Result<Vec<String>, String> {
        self.release_now()
    }

    /// The resource was never made (its name turned out to be taken): strike the claim and
    /// remove nothing — what has the name is someone else's.
    pub fn unmade(mut self) {
        self.released = true;
        self.ledger.release(self.n);
    }

    fn release_now(&mut self) -> Result<Vec<String>, String> {
        if self.released {
            return Ok(Vec::new());
        }
        self.released = true;
        let removed = self.resource.remove()?;
        self.ledger.release(self.n);
        Ok(removed)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

/// What reaping one dead lab did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The dead lab's id.
    pub lab: String,
    /// Its PID (in its own namespace), from its ledger.
    pub pid: Option<u32>,
    /// What was removed, in words.
    pub removed: Vec<String>,
    /// What could not be removed (the next lab tries again).
    pub failed: Vec<String>,
}

/// A lab found alive in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLab {
    /// Its id.
    pub id: String,
    /// Its PID in its own PID namespace (only for people to read).
    pub pid: Option<u32>,
}

/// What [`reap`] found.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    /// Dead labs and what was removed of each.
    pub reaped: Vec<Reaped>,
    /// Labs alive, left alone.
    pub live: Vec<LiveLab>,
}

/// Remove what every dead lab in the registry at `dir` left behind, and leave live labs alone.
/// Every lab does this as it starts; `lab clean` does it on request.
pub fn reap(dir: &Path) -> Sweep {
    let mut sweep = Sweep::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return sweep;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if let Some(id) = name.strip_suffix(".lock") {
            match reap_one(dir, id) {
                Some(Ok(reaped)) => sweep.reaped.push(reaped),
                Some(Err(live)) => sweep.live.push(live),
                None => {}
            }
        } else if name.ends_with(".new") {
            // A lab killed between creating its lock file and renaming it into place: it had
            // claimed nothing yet.
            let path = dir.join(&name);
            if let Ok(file) = File::open(&path) {
                if try_lock(&file).unwrap_or(false) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
    sweep
}

/// One lab in the registry, as [`census`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabStatus {
    /// Its id.
    pub id: String,
    /// Its PID in its own PID namespace (only for people to read).
    pub pid: Option<u32>,
    /// Whether its lock is held: the lab is running.
    pub alive: bool,
}

/// Every lab in the registry at `dir`, alive or dead, without reaping any (tests use this to
/// tell a live lab's cgroups from a dead one's).
pub fn census(dir: &Path) -> Vec<LabStatus> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".lock")?.to_string();
            let lock = File::open(e.path()).ok()?;
            // Taking the lock for a moment and letting it go (by closing) disturbs nobody.
            let alive = !try_lock(&lock).unwrap_or(false);
            let (pid, _) = read_ledger(&dir.join(format!("{id}.ledger")), &id);
            Some(LabStatus { id, pid, alive })
        })
        .collect()
}

/// Reap lab `id` if it is dead. `None`: its files vanished meanwhile (another lab reaped it).
fn reap_one(dir: &Path, id: &str) -> Option<Result<Reaped, LiveLab>> {
    let lock = File::open(dir.join(format!("{id}.lock"))).ok()?;
    if !try_lock(&lock).unwrap_or(false) {
        let (pid, _) = read_ledger(&dir.join(format!("{id}.ledger")), id);
        return Some(Err(LiveLab { id: id.into(), pid }));
    }
    Some(Ok(reap_locked(dir, id)))
}

/// Undo what dead lab `id` left, holding its lock (so nobody else does it at the same time).
fn reap_locked(dir: &Path, id: &str) -> Reaped {
    let lock_path = dir.join(format!("{id}.lock"));
    let ledger_path = dir.join(format!("{id}.ledger"));
    let (pid, claims) = read_ledger(&ledger_path, id);
    // Undo in the reverse order of making: a runtime's container before the cgroups it lives
    // in, those before the work directory.
    let mut reaped = Reaped {
        lab: id.to_string(),
        pid,
        ..Reaped::default()
    };
    let mut done = Vec::new();
    for (n, resource) in claims.iter().rev() {
        if !resource.named_for(id) {
            reaped.failed.push(format!(
                "refused a claim that does not carry the lab's name: {resource:?}"
            ));
            continue;
        }
        match resource.remove() {
            Ok(removed) => {
                reaped.removed.extend(removed);
                done.push(*n);
            }
            Err(e) => reaped.failed.push(e),
        }
    }
    if reaped.failed.is_empty() {
        let _ = fs::remove_file(&ledger_path);
        let _ = fs::remove_file(&lock_path);
    } else if let Ok(mut ledger) = OpenOptions::new().append(true).open(&ledger_path) {
        // Strike what is done, so the next attempt retries only the rest.
        for n in done {
            let mut line = serde_json::to_vec(&Entry::Release { n }).expect("serialises");
            line.push(b'\n');
            let _ = ledger.write_all(&line);
        }
    }
    reaped
}

/// Start the lab's **guardian**: a small process that outlives the lab on purpose, to remove
/// what the lab owned the moment the lab is gone — also when it was killed with SIGKILL, which
/// no code of the lab's own can catch. Without it, a killed lab's leftovers would wait for the
/// next lab; an OCI runtime's container, whose process is the runtime's child and not the lab's,
/// would even run on.
///
/// The guardian is a copy of the lab (a double `fork`, so it is nobody's child but init's, in a
/// session of its own so the terminal's Ctrl-C never reaches it) that keeps only the read end of
/// a pipe whose write end only the lab holds, and blocks reading it. The read returns end of file
/// when the last write end is closed: when the lab — and every child it forked without exec,
/// which inherited the write end — has exited or the lab has finished cleaning up. The
/// guardian then waits for the lab's lock, which tells the same thing for certain, and reaps the
/// lab exactly as the next lab would ([`reap`]); after a clean end there is nothing left to do.
///
/// Returns the write end: keep it open for the life of the lab. `None` when no process could be
/// made (the next lab still reaps).
pub fn guard(ledger: &Ledger) -> Option<std::os::fd::OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    // Everything the guardian needs after the fork is made before it.
    let lock_path = ledger.dir.join(format!("{}.lock", ledger.id));
    let dir = ledger.dir.clone();
    let id = ledger.id.clone();
    // SAFETY: the child only makes system calls until the lab has gone (see `guardian`), then
    // runs ordinary code in a process of its own.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: setsid and fork in a fresh child, checked; the intermediate child exits
            // at once with _exit.
            unsafe {
                libc::setsid();
                match libc::fork() {
                    0 => guardian(read.as_raw_fd(), &lock_path, &dir, &id),
                    _ => libc::_exit(0),
                }
            }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
            drop(read);
            Some(write)
        }
        Err(_) => None,
    }
}

/// **The guardian process** (see [`guard`]). Never returns.
fn guardian(lifeline: std::os::fd::RawFd, lock_path: &Path, dir: &Path, id: &str) -> ! {
    // SAFETY: system calls on values prepared before the fork; none allocates or locks.
    unsafe {
        // Keep nothing of the lab's but the lifeline: another descriptor held here (the lab's
        // lock, an instance's pipe) would keep what it belongs to alive. The lifeline goes to
        // fd 3, standard I/O to /dev/null, everything else is closed.
        let high = libc::fcntl(lifeline, libc::F_DUPFD, 10);
        let dev_null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(dev_null, fd);
        }
        libc::dup2(high, 3);
        isolab_host::fds::close_from(4);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_NAME, c"isolab-guard".as_ptr());
        let mut byte = 0u8;
        loop {
            let n = libc::read(3, (&mut byte as *mut u8).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
    }
    // The lab is gone or done. Its lock settles which: held until its last descriptor closes.
    if let Ok(lock) = File::open(lock_path) {
        // SAFETY: a blocking flock on a descriptor we own.
        while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {}
        // Reaping runs programs (an OCI runtime's `delete`): bound it, so a guardian can never
        // become the thing that outlives the lab.
        // SAFETY: alarm takes a number; SIGALRM's default action ends the process.
        unsafe { libc::alarm(120) };
        reap_locked(dir, id);
    }
    // SAFETY: _exit ends the process without running the lab's destructors.
    unsafe { libc::_exit(0) }
}

/// The PID and the unreleased claims of a ledger, in claim order. A ledger is read with bounded
/// lines and a bounded total; lines that do not parse (a torn last line) are skipped.
fn read_ledger(path: &Path, id: &str) -> (Option<u32>, Vec<(u64, Resource)>) {
    let Ok(file) = File::open(path) else {
        return (None, Vec::new());
    };
    let mut reader = BufReader::new(file.take(MAX_LEDGER));
    let mut pid = None;
    let mut claims: BTreeMap<u64, Resource> = BTreeMap::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            // Overlong or torn: skip to the next line.
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).is_err() {
                break;
            }
            continue;
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(Entry::Lab { id: lab, pid: p }) if lab == id => pid = Some(p),
            Ok(Entry::Claim { n, resource }) => {
                claims.insert(n, resource);
            }
            Ok(Entry::Release { n }) => {
                claims.remove(&n);
            }
            _ => {}
        }
    }
    (pid, claims.into_iter().collect())
}

/// Remove a directory tree, first unmounting whatever this mount namespace has mounted inside it
/// (deepest first, detached: a busy mount goes as soon as it is no longer used).
fn remove_dir_tree(path: &Path) -> Result<Vec<String>, String> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for mount in mounts_under(path) {
        if nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH).is_ok() {
            removed.push(format!("unmounted {}", mount.display()));
        }
    }
    fs::remove_dir_all(path).map_err(|e| format!("remove {}: {e}", path.display()))?;
    removed.push(format!("removed {}", path.display()));
    Ok(removed)
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = crate::cgroup::read_mountinfo();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(cgroup::unescape_mount(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "isolab-registry-test-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir.join("labs")
    }

    #[test]
    fn a_live_lab_is_left_alone_and_a_dead_one_is_reaped() {
        let reg = registry("live-dead");
        let work = reg.parent().unwrap().to_path_buf();
        let live = Ledger::open_in(&reg).unwrap();
        let live_dir = work.join(format!("isolab-{}", live.id()));
        let live_claim = live
            .claim(Resource::Dir {
                path: live_dir.clone(),
            })
            .unwrap();
        fs::create_dir_all(live_dir.join("x")).unwrap();
        // A lab that claims a directory, makes it and dies without cleaning up: a child process
        // that ends with _exit. Its id comes back as its exit status's companion, a file.
        let id_file = work.join("dead-id");
        // SAFETY: the child only makes a ledger, a directory and a file, then _exits.
        let dead_pid = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let dead = Ledger::open_in(&reg).unwrap();
                let dir = work.join(format!("isolab-{}", dead.id()));
                std::mem::forget(dead.claim(Resource::Dir { path: dir.clone() }).unwrap());
                fs::create_dir_all(dir.join("x")).unwrap();
                fs::write(&id_file, dead.id()).unwrap();
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                child.as_raw() as u32
            }
        };
        let dead_id = fs::read_to_string(&id_file).unwrap();
        let dead_dir = work.join(format!("isolab-{dead_id}"));
        assert!(dead_dir.exists());

        let sweep = reap(&reg);
        assert_eq!(sweep.live.len(), 1);
        assert_eq!(sweep.live[0].id, live.id());
        assert_eq!(sweep.reaped.len(), 1);
        assert_eq!(sweep.reaped[0].lab, dead_id);
        assert_eq!(sweep.reaped[0].pid, Some(dead_pid));
        assert!(!dead_dir.exists(), "the dead lab's directory is removed");
        assert!(live_dir.exists(), "the live lab's is not");
        assert!(!reg.join(format!("{dead_id}.lock")).exists());
        assert!(!reg.join(format!("{dead_id}.ledger")).exists());

        // The live lab ends normally: nothing of it remains.
        drop(live_claim);
        let id = live.id().to_string();
        drop(live);
        assert!(!live_dir.exists());
        assert!(!reg.join(format!("{id}.lock")).exists());
        fs::remove_dir_all(work).unwrap();
    }

    #[test]
    fn a_claim_not_named_for_its_lab_is_refused() {
        let id = "0123456789ab";
        let ok = Resource::Dir {
            path: PathBuf::from(format!("/tmp/isolab-{id}")),
        };
        assert!(ok.named_for(id));
        // The lab's trace instance, and only its own: another lab's is not this ledger's to
        // remove, and a name with a path in it would reach outside `instances/`.
        assert!(Resource::TraceInstance {
            name: format!("isolab-{id}")
        }
        .named_for(id));
        for name in [
            "isolab-ba9876543210".to_string(),
            format!("../instances/isolab-{id}"),
            String::new(),
        ] {
            assert!(!Resource::TraceInstance { name }.named_for(id));
        }
        // A container's cgroup the lab made where runc puts it, in a real cgroup tree.
        let unified = crate::cgroup::unified_beside_v1().or_else(|| {
            Path::new("/sys/fs/cgroup/cgroup.controllers")
                .exists()
                .then(|| PathBuf::from("/sys/fs/cgroup"))
        });
        let tree = unified.expect("a cgroup2 tree, beside v1 or alone (the tests run as root)");
        let dir = tree.join(format!("isolab-{id}-7"));
        fs::create_dir(&dir).unwrap();
        let named = Resource::Cgroup { path: dir.clone() }.named_for(id);
        fs::remove_dir(&dir).unwrap();
        assert!(named, "a container's cgroup isolab-{id}-7");
        for bad in [
            Resource::Dir {
                path: PathBuf::from("/"),
            },
            Resource::Dir {
                path: PathBuf::from(format!("/tmp/../isolab-{id}")),
            },
            Resource::Dir {
                path: PathBuf::from(format!("isolab-{id}")),
            },
            Resource::Cgroup {
                path: PathBuf::from(format!("/tmp/{id}")),
            },
            Resource::Cgroup {
                path: PathBuf::from(format!("/sys/fs/cgroup/isolab-other-{id}")),
            },
            Resource::CgroupEverywhere {
                relative: PathBuf::from("/"),
            },
            Resource::OciContainer {
                runtime: PathBuf::from("/usr/bin/runc"),
                global: Vec::new(),
                id: "other".into(),
            },
        ] {
            assert!(!bad.named_for(id), "{bad:?}");
        }
    }

    #[test]
    fn a_torn_or_overlong_ledger_line_is_skipped() {
        let reg = registry("torn");
        fs::create_dir_all(&reg).unwrap();
        let path = reg.join("x.ledger");
        let claim = |n: u64| {
            serde_json::to_string(&Entry::Claim {
                n,
                resource: Resource::Dir {
                    path: PathBuf::from(format!("/tmp/isolab-{n}")),
                },
            })
            .unwrap()
        };
        let long = "x".repeat(MAX_LINE as usize * 2);
        let text = format!(
            "{}\n{long}\n{}\n{{\"entry\":\"release\",\"n\":1}}\n{}",
            claim(0),
            claim(1),
            claim(2)
        );
        fs::write(&path, text).unwrap();
        let (_, claims) = read_ledger(&path, "x");
        assert_eq!(claims.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [0]);
        fs::remove_dir_all(reg.parent().unwrap()).unwrap();
    }
}
