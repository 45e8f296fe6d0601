//! The instances' disks: one preallocated file per instance, on the host's disk.
//!
//! The disk kernels (`disk-seq`, `disk-rand`) need a disk of the instance's own, and a fair
//! comparison needs the *same* disk for every backend. So each instance gets a file of the same
//! size in the same directory of the same host file system: a process opens it by its path, a
//! container sees it bind-mounted at `/dev/vda`, a VM sees a virtio block device at `/dev/vda`
//! that its VMM serves from the file. The bytes land in the same place; only the path between
//! the workload and the file differs.
//!
//! * The files live in `/var/tmp/isolab-<lab id>-<random>/` by default: `/var/tmp` is on a disk
//!   on every distribution, where `/tmp` is often a tmpfs — memory, which cannot do the
//!   `O_DIRECT` the kernels use (and would measure memory, not a disk). The directory is in the
//!   lab's ledger before it is made, and goes with the lab.
//! * Each file is **preallocated** (`fallocate`): its blocks are reserved up front, so a write
//!   never waits for the file system to find space, and a disk that does not fit is refused
//!   before anything starts, with the sizes that would fit.
//!
//! # A directory others share
//!
//! Root runs the lab, and root's `open` follows whatever the path leads to. Whoever may
//! **rename** entries of a directory on the way can change where it leads between the lab's
//! steps: the owner of `--disk-dir` swaps the lab's new `isolab-…` directory for one of their
//! own, and in there the disk file for a symbolic link to `/etc/shadow` — which the workload
//! then writes 64 MiB into. In a shared directory such as `/var/tmp`, anybody may also take a
//! name before the lab does. So:
//!
//! * **The way there is checked** ([`Parent::open`]). Each directory from `/` down to
//!   `--disk-dir` is opened relative to the one before, without following links (`openat`,
//!   `O_NOFOLLOW`), and its owner and mode are read from the open descriptor (`fstat`), not
//!   from the name, which could change meanwhile: each must belong to root or to the user the
//!   lab runs as, and be writable by nobody else — unless it is **sticky** (`/tmp`, `/var/tmp`:
//!   mode 1777), where the kernel lets others add names but not rename or remove anyone else's
//!   entries. A directory of another user's is refused, sticky or not: a sticky directory's
//!   *owner* may still rename every entry in it.
//! * **The lab's own directory** is made with `mkdirat`, which never follows a link and fails
//!   when the name exists (what `O_CREAT|O_EXCL` does for files), under a name nobody can guess
//!   (the lab's id and 64 bits from `getrandom`), drawn again when it is taken anyway. It
//!   is then opened without following links and checked by descriptor: a directory, the lab's,
//!   mode 0700. Nobody else can make, rename or remove anything in it.
//! * **The lab's own opens** — the disks, the copy of the image, their removal — go through that
//!   directory's descriptor (`openat`, `unlinkat`), never through the path again.
//! * **Paths others open.** The process workload, the VMM child, QEMU (`-drive file=`),
//!   `mke2fs`, runc/crun/Docker (bind mounts) and the container's own bind all receive
//!   [`Disk::path`] and open it themselves. That is safe *because of the two checks above*:
//!   every directory on the path is root's (or the lab user's) and changeable by nobody else,
//!   so the path names the file the lab made for as long as the lab lives. Nothing else makes a
//!   name safe to hand over: without them, a descriptor would be the only way.
//! * **Removal** (also by the ledger after a crash: [`remove_dir`]) opens the directory without
//!   following links, removes it only if it is the lab's by the same test, and unlinks what is
//!   in it relative to its descriptor: `unlinkat` removes a link, never what it points at.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The disks would not fit in the free space.
    #[error(
        "a disk of {mib} MiB does not fit in {dir}: {free_mib} MiB are free (a disk of 1 to \
         {free_mib} MiB would, or choose another --disk-dir)"
    )]
    TooLarge {
        /// Size asked for.
        mib: u64,
        /// Where.
        dir: PathBuf,
        /// What is free there.
        free_mib: u64,
    },
    /// The file system cannot do direct I/O.
    #[error("{dir} is on a file system without O_DIRECT: choose a --disk-dir on a disk")]
    NoDirectIo {
        /// Where.
        dir: PathBuf,
    },
    /// The directory is in memory.
    #[error(
        "{dir} is a tmpfs: memory, not a disk, so the disk kernels would measure memory (choose a \
         --disk-dir on a disk, such as /var/tmp)"
    )]
    InMemory {
        /// Where.
        dir: PathBuf,
    },
    /// Someone other than root and the lab's user could rename what the lab makes there.
    #[error(
        "--disk-dir {dir} is not safe for the lab's disks: {at} {why}, so another user could \
         swap the lab's disks for links to other files (choose a directory that only root or you \
         may change, such as /var/tmp)"
    )]
    Unsafe {
        /// The directory asked for.
        dir: PathBuf,
        /// The directory on its way that fails the test (itself or one above it).
        at: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Every name drawn for the lab's directory was taken.
    #[error("no free name for the lab's directory in {dir}: {tries} names drawn were all taken")]
    NoFreeName {
        /// Where.
        dir: PathBuf,
        /// How many names were tried.
        tries: usize,
    },
    /// The lab's ledger could not record the directory.
    #[error(transparent)]
    Ledger(#[from] crate::ownership::OwnershipError),
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the lab was doing.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl DiskError {
    /// True when the request was the user's mistake (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DiskError::TooLarge { .. }
                | DiskError::NoDirectIo { .. }
                | DiskError::InMemory { .. }
                | DiskError::Unsafe { .. }
        )
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// The whole disk that holds `dir`: what an I/O limit must name (see
/// [`crate::cgroup::BlockDevice`]).
///
/// `stat(2)` of the directory gives `st_dev`, the device number of its file system. On a disk
/// that number is a block device's — a partition's (`vda1`) or a whole disk's (`vda`, a
/// device-mapper volume such as `dm-0`). `/sys/dev/block/MAJ:MIN` is a link to that device in
/// sysfs; a partition has a `partition` file there, and its disk is the directory above it, whose
/// `dev` file holds the disk's own numbers. A file system with no block device of its own (a
/// tmpfs, an overlay, NFS, a btrfs subvolume) has an anonymous device number with major 0, and
/// there is no disk to limit.
pub fn whole_disk_of(dir: &Path) -> Result<crate::cgroup::BlockDevice, String> {
    let st = nix::sys::stat::stat(dir).map_err(|e| format!("stat {}: {e}", dir.display()))?;
    let (major, minor) = (
        nix::sys::stat::major(st.st_dev) as u32,
        nix::sys::stat::minor(st.st_dev) as u32,
    );
    whole_disk_in(Path::new("/sys/dev/block"), major, minor).map_err(|why| {
        format!(
            "{} is on device {major}:{minor}, {why} (choose a --disk-dir on a disk)",
            dir.display()
        )
    })
}

/// [`whole_disk_of`] for device `major:minor`, looked up in `sys_dev_block` (a test's copy of
/// `/sys/dev/block`).
fn whole_disk_in(
    sys_dev_block: &Path,
    major: u32,
    minor: u32,
) -> Result<crate::cgroup::BlockDevice, String> {
    if major == 0 {
        return Err("a file system with no block device of its own".into());
    }
    let link = sys_dev_block.join(format!("{major}:{minor}"));
    let mut device = fs::canonicalize(&link)
        .map_err(|e| format!("not a block device ({}: {e})", link.display()))?;
    if device.join("partition").exists() {
        device.pop();
    }
    let dev = fs::read_to_string(device.join("dev"))
        .map_err(|e| format!("{}: {e}", device.join("dev").display()))?;
    let (maj, min) = dev
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("{}: not MAJ:MIN", device.join("dev").display()))?;
    Ok(crate::cgroup::BlockDevice {
        major: maj,
        minor: min,
        name: device
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    })
}

/// Where disks go unless told otherwise.
pub const DEFAULT_PARENT: &str = "/var/tmp";

/// How many names the lab draws for its directory before it gives up (64 random bits each:
/// one is taken only by someone who read the lab's mind).
const TRIES: usize = 16;

/// Check, before anything starts, that disks of `bytes` can be made under `parent`: a
/// directory no other user can change ([`Parent::open`]), on a file system on a disk that does
/// direct I/O, with enough free space.
pub fn check(parent: &Path, bytes: u64) -> Result<(), DiskError> {
    let parent = Parent::open(parent)?;
    check_at(parent.fd.as_fd(), &parent.path, bytes)
}

/// The same checks on the directory open as `dir` (at `path`, for messages).
fn check_at(dir: BorrowedFd, path: &Path, bytes: u64) -> Result<(), DiskError> {
    let fs = nix::sys::statfs::fstatfs(dir)
        .map_err(|e| io_err("look at the file system of", path)(e.into()))?;
    // ramfs's magic number (linux/magic.h), which nix does not name.
    const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);
    let kind = fs.filesystem_type();
    if kind == nix::sys::statfs::TMPFS_MAGIC || kind == RAMFS_MAGIC {
        return Err(DiskError::InMemory {
            dir: path.to_path_buf(),
        });
    }
    // What an unprivileged user may still write (root may dip into a reserve besides).
    let st = nix::sys::statvfs::fstatvfs(dir)
        .map_err(|e| io_err("measure the free space of", path)(e.into()))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if bytes > free {
        return Err(DiskError::TooLarge {
            mib: bytes.div_ceil(1 << 20),
            dir: path.to_path_buf(),
            free_mib: free >> 20,
        });
    }
    match probe_direct_io(dir) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => Err(DiskError::NoDirectIo {
            dir: path.to_path_buf(),
        }),
        Err(e) => Err(io_err("try direct I/O in", path)(e.into())),
    }
}

/// Try `O_DIRECT` in the directory `dir`: a file system that cannot do it fails the open with
/// `EINVAL`.
///
/// The file tried is an unnamed one (`O_TMPFILE`): the kernel makes an inode in the directory's
/// file system with no name at all, which goes when its last descriptor closes. A name could
/// have been taken by anyone first (a probe named after the lab's PID once was, and stopped the
/// lab); no name cannot. A file system without unnamed files (`EOPNOTSUPP`; `EISDIR` from a
/// kernel older than 3.11, which reads the flag as `O_DIRECTORY`) gets a named probe, under a
/// fresh random name, made with `O_EXCL` and removed at once.
fn probe_direct_io(dir: BorrowedFd) -> Result<(), Errno> {
    let direct = OFlag::O_RDWR | OFlag::O_DIRECT | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    match nix::fcntl::openat(dir, ".", direct | OFlag::O_TMPFILE, mode) {
        Err(Errno::EOPNOTSUPP | Errno::EISDIR) => {}
        other => return other.map(drop),
    }
    for _ in 0..TRIES {
        let name = format!(".isolab-direct-{:016x}", isolab_host::files::random_u64());
        match create_new(dir, &name, direct) {
            Ok(file) => {
                drop(file);
                return nix::unistd::unlinkat(
                    dir,
                    name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EEXIST)
}

/// A new file `name` in the directory `dir`, mode 0600: `O_CREAT|O_EXCL` makes the kernel
/// create it or fail, so it never opens what is already there, and `O_NOFOLLOW` makes a link
/// at the name a failure too.
fn create_new(dir: BorrowedFd, name: &str, flags: OFlag) -> Result<File, Errno> {
    nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map(File::from)
}

/// `--disk-dir`, opened after checking that no user but root and the lab's own can change
/// anything on the way to it (see the module's documentation).
#[derive(Debug)]
pub struct Parent {
    /// Its path, with every link resolved: the path of every disk starts with it.
    path: PathBuf,
    fd: OwnedFd,
}

impl Parent {
    /// Open `dir` and check every directory from `/` down to it.
    ///
    /// The links in what the user typed are resolved once (`realpath`); then each directory on
    /// the resolved path is opened relative to the one above, with `O_NOFOLLOW` (a link put
    /// there meanwhile fails the walk) and `O_PATH` (a descriptor that only names the
    /// directory: it needs no read permission, and enough for `openat`, `mkdirat` and `fstat`),
    /// and is judged by `fstat` of that descriptor — what the lab will use, not what a name
    /// pointed at a moment before.
    pub fn open(dir: &Path) -> Result<Parent, DiskError> {
        let path = fs::canonicalize(dir).map_err(io_err("find", dir))?;
        let me = nix::unistd::geteuid().as_raw();
        let walk = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut at = PathBuf::from("/");
        let mut fd = nix::fcntl::open("/", walk, Mode::empty())
            .map_err(|e| io_err("open", &at)(e.into()))?;
        judge(dir, &at, fd.as_fd(), me)?;
        for part in path.components() {
            let std::path::Component::Normal(name) = part else {
                continue;
            };
            at.push(name);
            fd = nix::fcntl::openat(&fd, name, walk, Mode::empty())
                .map_err(|e| io_err("open", &at)(e.into()))?;
            judge(dir, &at, fd.as_fd(), me)?;
        }
        Ok(Parent { path, fd })
    }

    /// Its path, links resolved.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether the directory `at` on the way to `dir`, open as `fd`, is safe from every user but
/// root and `me` (the user the lab runs as).
///
/// Write permission on a directory is the right to add, rename and remove its entries —
/// whoever owns them. The **sticky bit** (`S_ISVTX`, the `t` of `drwxrwxrwt`) takes renaming and
/// removing away again, except for each entry's owner and the directory's. So a directory is
/// safe when it is root's or `me`'s and writable by nobody else, or sticky: then others may
/// add names, but never move the lab's (root's) entries.
fn judge(dir: &Path, at: &Path, fd: BorrowedFd, me: u32) -> Result<(), DiskError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| io_err("look at", at)(e.into()))?;
    let refuse = |why: String| DiskError::Unsafe {
        dir: dir.to_path_buf(),
        at: at.to_path_buf(),
        why,
    };
    if st.st_uid != 0 && st.st_uid != me {
        return Err(refuse(format!("is owned by uid {}", st.st_uid)));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
        let who = if mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        return Err(refuse(format!(
            "is writable by {who} (mode {mode:o}) and not sticky"
        )));
    }
    Ok(())
}

/// Whether the directory open as `fd` is one the lab made: a directory of the lab's user, mode
/// 0700 (`O_NOFOLLOW` at its open already refused a link). The error says what it is instead.
fn is_labs(fd: BorrowedFd) -> Result<(), String> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| e.to_string())?;
    let me = nix::unistd::geteuid().as_raw();
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err("not a directory".into());
    }
    if st.st_uid != me || st.st_mode & 0o7777 != 0o700 {
        return Err(format!(
            "owned by uid {} with mode {:o}",
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// The lab's directory of disks (claimed in its ledger), and its descriptor, through which the
/// lab makes and removes every file in it.
#[derive(Debug)]
pub struct DiskDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl DiskDir {
    /// Make the lab's directory in `parent`, `isolab-<lab id>-<64 random bits>`, each name
    /// claimed in `ledger` before it is tried; a name already taken is left to whoever took it
    /// and another drawn.
    pub fn make(
        parent: &Parent,
        ledger: &Arc<crate::ownership::Ledger>,
    ) -> Result<(DiskDir, crate::ownership::Owned), DiskError> {
        let id = ledger.id().to_string();
        let names = std::iter::repeat_with(move || {
            format!("isolab-{id}-{:016x}", isolab_host::files::random_u64())
        });
        DiskDir::make_named(parent, ledger, names.take(TRIES))
    }

    /// [`DiskDir::make`] with the names `names`, tried in turn.
    fn make_named(
        parent: &Parent,
        ledger: &Arc<crate::ownership::Ledger>,
        names: impl Iterator<Item = String>,
    ) -> Result<(DiskDir, crate::ownership::Owned), DiskError> {
        let mut tries = 0;
        for name in names {
            tries += 1;
            let path = parent.path.join(&name);
            let claim = ledger.claim(crate::ownership::Resource::DiskDir { path: path.clone() })?;
            // mkdir(2) never follows a link at its last component and fails with EEXIST on any
            // name that exists: what `O_CREAT|O_EXCL` is for files.
            match nix::sys::stat::mkdirat(
                &parent.fd,
                name.as_str(),
                Mode::from_bits_truncate(0o700),
            ) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    claim.unmade();
                    continue;
                }
                Err(e) => {
                    claim.unmade();
                    return Err(io_err("create", &path)(e.into()));
                }
            }
            // Made: from here on the claim removes it should anything fail.
            let fd = nix::fcntl::openat(
                &parent.fd,
                name.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("open", &path)(e.into()))?;
            if let Err(why) = is_labs(fd.as_fd()) {
                return Err(io_err("check", &path)(io::Error::other(why)));
            }
            return Ok((
                DiskDir {
                    path,
                    fd: Arc::new(fd),
                },
                claim,
            ));
        }
        Err(DiskError::NoFreeName {
            dir: parent.path.clone(),
            tries,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new disk of `bytes` for the instance `name`, owned by `owner` (uid, gid) — the
    /// instance's root as the host sees it — or by the lab.
    pub fn disk(
        &self,
        name: &str,
        bytes: u64,
        owner: Option<(u32, u32)>,
    ) -> Result<Disk, DiskError> {
        check_at(self.fd.as_fd(), &self.path, bytes)?;
        let (file, disk) = self.create(&format!("{name}.img"), bytes)?;
        // SAFETY: fallocate on a file we just opened; mode 0 allocates and extends it.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) } != 0 {
            return Err(io_err("preallocate", &disk.path)(io::Error::last_os_error()));
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(io_err("give the disk to its instance:", &disk.path))?;
        }
        Ok(disk)
    }

    /// A disk for the instance `name` holding a copy of `source`, a file of this directory (a
    /// VM's copy of the lab's image), after checking it fits.
    pub fn copy_of(&self, name: &str, source: &str) -> Result<Disk, DiskError> {
        let from = self.path.join(source);
        let mut original = nix::fcntl::openat(
            self.fd.as_fd(),
            source,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| io_err("open", &from)(e.into()))?;
        let bytes = original.metadata().map_err(io_err("measure", &from))?.len();
        check_at(self.fd.as_fd(), &self.path, bytes)?;
        let (mut copy, disk) = self.create(&format!("{name}.img"), bytes)?;
        // File to file: the standard library copies in the kernel (copy_file_range).
        io::copy(&mut original, &mut copy).map_err(io_err("copy the image to", &disk.path))?;
        Ok(disk)
    }

    /// A new empty file `file_name` in this directory, for a program to fill by its path (the
    /// lab's image for VMs, by `mke2fs`), kept until the directory goes. Made here first, so
    /// that the name is the lab's own file; the path is safe to hand over (see the module's
    /// documentation).
    pub fn new_file(&self, file_name: &str) -> Result<PathBuf, DiskError> {
        let path = self.path.join(file_name);
        create_new(self.fd.as_fd(), file_name, OFlag::O_WRONLY)
            .map_err(|e| io_err("create", &path)(e.into()))?;
        Ok(path)
    }

    /// The file `file_name` made here, with the [`Disk`] that removes it.
    fn create(&self, file_name: &str, bytes: u64) -> Result<(File, Disk), DiskError> {
        let path = self.path.join(file_name);
        let file = create_new(self.fd.as_fd(), file_name, OFlag::O_RDWR)
            .map_err(|e| io_err("create", &path)(e.into()))?;
        let disk = Disk {
            dir: Arc::clone(&self.fd),
            name: file_name.to_string(),
            path,
            bytes,
        };
        Ok((file, disk))
    }
}

/// Remove the lab's directory of disks at `path` and the files in it, if it is the lab's: the
/// ledger's undo for [`crate::ownership::Resource::DiskDir`], after a crash too.
///
/// The directory is opened without following a link and judged by its descriptor: a
/// directory of the lab's user with mode 0700, as [`DiskDir::make`] made it. Anything else at
/// that name — someone else's directory, a link — is left alone, and said so. The files in it
/// are unlinked relative to that descriptor: `unlinkat` removes a name, and a link is a name —
/// what it points at is never touched.
pub fn remove_dir(path: &Path) -> Result<Vec<String>, String> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{}: not a directory's path", path.display()));
    };
    let parent = match nix::fcntl::open(
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(format!("open {}: {e}", parent.display())),
    };
    let dir = match nix::fcntl::openat(
        &parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            return Ok(vec![format!(
                "left {}: not a directory, not the lab's",
                path.display()
            )])
        }
        Err(e) => return Err(format!("open {}: {e}", path.display())),
    };
    if let Err(why) = is_labs(dir.as_fd()) {
        return Ok(vec![format!(
            "left {}: {why}, not the lab's",
            path.display()
        )]);
    }
    // The directory's entries, listed through its descriptor (`/proc/self/fd/N` leads to the
    // directory itself, wherever its name has gone).
    let listed = fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| format!("list {}: {e}", path.display()))?;
    for entry in listed {
        let entry = entry.map_err(|e| format!("list {}: {e}", path.display()))?;
        let file = entry.file_name();
        nix::unistd::unlinkat(
            &dir,
            file.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| format!("remove {}: {e}", path.join(&file).display()))?;
    }
    match nix::unistd::unlinkat(&parent, name, nix::unistd::UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(vec![format!("removed {}", path.display())]),
        Err(e) => Err(format!("remove {}: {e}", path.display())),
    }
}

/// One instance's disk, removed when dropped.
#[derive(Debug)]
pub struct Disk {
    /// The directory it is in, through which it is removed.
    dir: Arc<OwnedFd>,
    /// Its name there.
    name: String,
    path: PathBuf,
    bytes: u64,
}

impl Disk {
    /// The file on the host: what the workload of a process, a container's bind mount, the
    /// VMM, QEMU and OCI runtimes open. Safe to hand over because nobody but root and the lab's
    /// user can change any directory on this path (see the module's documentation).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Its removal, as an instance's clean-up step.
    pub fn removal(self) -> Box<dyn FnOnce() + Send> {
        Box::new(move || drop(self))
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = nix::unistd::unlinkat(
            self.dir.as_fd(),
            self.name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A copy of sysfs's shape: a disk `vda` (254:0) with a partition `vda1` (254:1).
    #[test]
    fn a_partition_is_traced_to_its_whole_disk() {
        let root = std::env::temp_dir().join(format!("isolab-sysfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let disk = root.join("devices/pci0000:00/virtio4/block/vda");
        fs::create_dir_all(disk.join("vda1")).unwrap();
        fs::write(disk.join("dev"), "254:0\n").unwrap();
        fs::write(disk.join("vda1/dev"), "254:1\n").unwrap();
        fs::write(disk.join("vda1/partition"), "1\n").unwrap();
        let links = root.join("dev/block");
        fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(&disk, links.join("254:0")).unwrap();
        std::os::unix::fs::symlink(disk.join("vda1"), links.join("254:1")).unwrap();
        for minor in [0, 1] {
            let d = whole_disk_in(&links, 254, minor).unwrap();
            assert_eq!((d.major, d.minor, d.name.as_str()), (254, 0, "vda"));
        }
        assert!(whole_disk_in(&links, 0, 51)
            .unwrap_err()
            .contains("no block device"));
        assert!(whole_disk_in(&links, 8, 0)
            .unwrap_err()
            .contains("not a block device"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_disk_directory_is_on_a_disk_and_memory_is_not() {
        let d = whole_disk_of(Path::new(DEFAULT_PARENT)).unwrap();
        let dev = fs::read_to_string(format!("/sys/dev/block/{}:{}/dev", d.major, d.minor));
        assert_eq!(dev.unwrap().trim(), format!("{}:{}", d.major, d.minor));
        assert!(!Path::new(&format!("/sys/dev/block/{}:{}/partition", d.major, d.minor)).exists());
        let e = whole_disk_of(Path::new("/dev/shm")).unwrap_err();
        assert!(e.contains("--disk-dir"), "{e}");
    }

    /// A directory of the test's own under /var/tmp (root's, mode 0755) holding `disks/`,
    /// where the lab's directory goes, and a registry with a lab's ledger.
    struct Setup {
        root: PathBuf,
        parent: PathBuf,
        ledger: Arc<crate::ownership::Ledger>,
    }

    impl Setup {
        fn new(name: &str) -> Setup {
            let root = Path::new(DEFAULT_PARENT)
                .join(format!("isolab-disk-test-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir(&root).unwrap();
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
            let parent = root.join("disks");
            fs::create_dir(&parent).unwrap();
            fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).unwrap();
            let ledger = crate::ownership::Ledger::open_in(&root.join("registry/labs")).unwrap();
            Setup {
                root,
                parent,
                ledger,
            }
        }

        fn disk_dir(&self) -> (DiskDir, crate::ownership::Owned) {
            DiskDir::make(&Parent::open(&self.parent).unwrap(), &self.ledger).unwrap()
        }

        /// A directory `name` under the test's root with `mode`, owned by `uid`.
        fn made(&self, name: &str, mode: u32, uid: u32) -> PathBuf {
            let d = self.root.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&d, Some(uid), None).unwrap();
            d
        }
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    /// An ordinary user's uid: `nobody`'s.
    const NOBODY: u32 = 65534;

    #[test]
    fn a_disk_is_preallocated_and_removed_with_its_instance() {
        let setup = Setup::new("alloc");
        let (d, claim) = setup.disk_dir();
        let name = d.path().file_name().unwrap().to_string_lossy().into_owned();
        let random = name
            .strip_prefix(&format!("isolab-{}-", setup.ledger.id()))
            .unwrap_or_else(|| panic!("{name}: the lab's id first"));
        assert!(
            random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}: 64 random bits after it"
        );
        let meta = fs::symlink_metadata(d.path()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        let disk = d.disk("i-0", 8 << 20, None).unwrap();
        let meta = fs::metadata(disk.path()).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        // Preallocated: its blocks are reserved (512-byte units), not a sparse hole.
        assert!(meta.blocks() * 512 >= 8 << 20, "{} blocks", meta.blocks());
        assert_eq!(meta.mode() & 0o777, 0o600);
        let path = disk.path().to_path_buf();
        drop(disk);
        assert!(!path.exists());
        let dir = d.path().to_path_buf();
        drop((d, claim));
        assert!(!dir.exists(), "the directory goes with its claim");
        assert!(!setup.ledger.has_open_claims());
    }

    #[test]
    fn a_disk_larger_than_the_free_space_is_refused_with_the_range() {
        let setup = Setup::new("big");
        let (d, _claim) = setup.disk_dir();
        let e = d.disk("i-0", u64::MAX / 2, None).unwrap_err();
        assert!(e.is_usage());
        let text = e.to_string();
        assert!(text.contains("MiB are free (a disk of 1 to"), "{text}");
        assert!(
            fs::read_dir(d.path()).unwrap().next().is_none(),
            "nothing made"
        );
    }

    #[test]
    fn a_copy_is_read_through_the_directory_and_never_through_a_link() {
        let setup = Setup::new("copy");
        let (d, _claim) = setup.disk_dir();
        let image = d.new_file("image.ext4").unwrap();
        fs::write(&image, b"the image").unwrap();
        let copy = d.copy_of("i-0", "image.ext4").unwrap();
        assert_eq!(fs::read(copy.path()).unwrap(), b"the image");
        assert_eq!(copy.bytes(), 9);
        assert!(d.new_file("image.ext4").is_err(), "a name is made once");
        std::os::unix::fs::symlink(&image, d.path().join("link")).unwrap();
        let e = d.copy_of("i-1", "link").unwrap_err();
        assert!(e.to_string().contains("link"), "{e}");
    }

    #[test]
    fn a_tmpfs_cannot_hold_disks() {
        let setup = Setup::new("tmpfs");
        let mnt = setup.made("tmpfs", 0o755, 0);
        nix::mount::mount(
            Some("tmpfs"),
            &mnt,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=16m"),
        )
        .unwrap();
        let e = check(&mnt, 1 << 20).unwrap_err();
        nix::mount::umount(&mnt).unwrap();
        assert!(matches!(e, DiskError::InMemory { .. }), "{e}");
        assert!(e.is_usage());
    }

    #[test]
    fn a_directory_another_user_may_change_is_refused_unless_sticky() {
        let setup = Setup::new("judge");
        let refused = |dir: &Path, at: &Path, why: &str| {
            let e = Parent::open(dir).unwrap_err();
            match &e {
                DiskError::Unsafe { at: a, why: w, .. } => {
                    assert_eq!(a, at, "{e}");
                    assert!(w.contains(why), "{e}");
                }
                _ => panic!("{}: {e}", dir.display()),
            }
            assert!(e.is_usage());
            assert!(e.to_string().contains("--disk-dir"), "{e}");
            let e = check(dir, 1).unwrap_err();
            assert!(matches!(e, DiskError::Unsafe { .. }), "{e}");
        };
        // Another user's: sticky or not, the owner may rename what is in it.
        let users = setup.made("users", 0o755, NOBODY);
        refused(&users, &users, "owned by uid 65534");
        let users_sticky = setup.made("users-sticky", 0o1777, NOBODY);
        refused(&users_sticky, &users_sticky, "owned by uid 65534");
        // Root's, but others may rename its entries.
        let open = setup.made("open", 0o777, 0);
        refused(
            &open,
            &open,
            "writable by every user (mode 777) and not sticky",
        );
        let group = setup.made("group", 0o775, 0);
        refused(&group, &group, "writable by its group");
        // A safe directory below another user's: that user may swap it, and is the problem.
        let below = setup.made("users/below", 0o755, 0);
        refused(&below, &users, "owned by uid 65534");
        // Root's and sticky (as /var/tmp): fine; and a link to it leads to it.
        let shared = setup.made("shared", 0o1777, 0);
        assert_eq!(Parent::open(&shared).unwrap().path(), shared);
        let link = setup.root.join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        assert_eq!(Parent::open(&link).unwrap().path(), shared);
        check(&shared, 1).unwrap();
    }

    #[test]
    fn a_taken_name_is_left_to_whoever_took_it_and_another_is_drawn() {
        let setup = Setup::new("taken");
        let parent = Parent::open(&setup.parent).unwrap();
        let taken = setup.made("disks/taken", 0o755, NOBODY);
        let (d, claim) = DiskDir::make_named(
            &parent,
            &setup.ledger,
            ["taken".to_string(), "fresh".to_string()].into_iter(),
        )
        .unwrap();
        assert_eq!(d.path(), setup.parent.join("fresh"));
        drop((d, claim));
        assert!(!setup.parent.join("fresh").exists());
        let meta = fs::symlink_metadata(&taken).unwrap();
        assert_eq!(meta.uid(), NOBODY, "the taken one is still its owner's");
        assert!(!setup.ledger.has_open_claims());
        // Every name taken: said so, nothing claimed.
        let e = DiskDir::make_named(&parent, &setup.ledger, ["taken".to_string()].into_iter())
            .unwrap_err();
        assert!(matches!(e, DiskError::NoFreeName { tries: 1, .. }), "{e}");
        assert!(!setup.ledger.has_open_claims());
    }

    #[test]
    fn removal_takes_only_the_labs_directory_and_follows_no_link() {
        let setup = Setup::new("remove");
        let victim = setup.root.join("victim");
        fs::write(&victim, b"root's").unwrap();
        let left = |path: &Path| {
            let said = remove_dir(path).unwrap();
            assert!(said[0].starts_with("left "), "{said:?}");
            assert!(
                fs::symlink_metadata(path).is_ok(),
                "{} stays",
                path.display()
            );
        };
        // Someone else's directory, root's with another mode, a link to a directory.
        left(&setup.made("disks/users", 0o700, NOBODY));
        left(&setup.made("disks/wide", 0o755, 0));
        let labs_like = setup.made("elsewhere", 0o700, 0);
        let link = setup.parent.join("link");
        std::os::unix::fs::symlink(&labs_like, &link).unwrap();
        left(&link);
        assert!(labs_like.is_dir());
        // The lab's own: removed with what is in it; a link in it goes, its target stays.
        let (d, claim) = setup.disk_dir();
        let disk = d.disk("i-0", 1 << 20, None).unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("i-1.img")).unwrap();
        let path = d.path().to_path_buf();
        std::mem::forget(disk);
        std::mem::forget(claim);
        drop(d);
        let said = remove_dir(&path).unwrap();
        assert_eq!(said, vec![format!("removed {}", path.display())]);
        assert!(!path.exists());
        assert_eq!(fs::read(&victim).unwrap(), b"root's");
        assert_eq!(remove_dir(&path).unwrap(), Vec::<String>::new(), "gone");
    }

    #[test]
    fn the_direct_io_probe_takes_no_name() {
        let setup = Setup::new("probe");
        let planted = setup
            .parent
            .join(format!(".isolab-direct-{}", std::process::id()));
        fs::write(&planted, b"someone's").unwrap();
        check(&setup.parent, 1 << 20).unwrap();
        let names: Vec<_> = fs::read_dir(&setup.parent)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(names, vec![planted]);
    }
}
