//! The instances' disks: one preallocated file per instance, on the host's disk.
//!
//! The disk kernels (`disk-seq`, `disk-rand`) need a disk of the instance's own, and a fair
//! comparison needs the *same* disk for every backend. So each instance gets a file of the same
//! size in the same directory of the same host file system: a process opens it by its path, a
//! container sees it bind-mounted at `/dev/vda`, a VM sees a virtio block device at `/dev/vda`
//! that its VMM serves from the file. The bytes land in the same place; only the path between
//! the workload and the file differs.
//!
//! * The files live in `/var/tmp/isolab-<lab id>/` by default: `/var/tmp` is on a disk on every
//!   distribution, where `/tmp` is often a tmpfs — memory, which cannot do the `O_DIRECT` the
//!   kernels use (and would measure memory, not a disk). The directory is in the lab's ledger
//!   before it is made, and goes with the lab.
//! * Each file is **preallocated** (`fallocate`): its blocks are reserved up front, so a write
//!   never waits for the file system to find space, and a disk that does not fit is refused
//!   before anything starts, with the sizes that would fit.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
            DiskError::TooLarge { .. } | DiskError::NoDirectIo { .. } | DiskError::InMemory { .. }
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

/// Check, before anything starts, that disks of `bytes` can be made under `parent`: a file
/// system on a disk that does direct I/O, with enough free space.
pub fn check(parent: &Path, bytes: u64) -> Result<(), DiskError> {
    let fs = nix::sys::statfs::statfs(parent)
        .map_err(|e| io_err("look at the file system of", parent)(e.into()))?;
    // ramfs's magic number (linux/magic.h), which nix does not name.
    const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);
    let kind = fs.filesystem_type();
    if kind == nix::sys::statfs::TMPFS_MAGIC || kind == RAMFS_MAGIC {
        return Err(DiskError::InMemory {
            dir: parent.to_path_buf(),
        });
    }
    let free = free_bytes(parent)?;
    if bytes > free {
        return Err(DiskError::TooLarge {
            mib: bytes.div_ceil(1 << 20),
            dir: parent.to_path_buf(),
            free_mib: free >> 20,
        });
    }
    // Try it: O_DIRECT on a file system that cannot do it fails at open with EINVAL.
    let probe = parent.join(format!(".isolab-direct-{}", std::process::id()));
    let opened = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&probe);
    let _ = fs::remove_file(&probe);
    match opened {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(DiskError::NoDirectIo {
            dir: parent.to_path_buf(),
        }),
        Err(e) => Err(io_err("try direct I/O in", parent)(e)),
    }
}

/// Bytes an unprivileged user may still write under `dir`.
fn free_bytes(dir: &Path) -> Result<u64, DiskError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| io_err("measure the free space of", dir)(e.into()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The lab's directory of disks (already claimed in its ledger).
#[derive(Debug)]
pub struct DiskDir {
    path: PathBuf,
}

impl DiskDir {
    /// Make the directory `path` (mode 0700: the disks are the instances', no one else's).
    pub fn make(path: PathBuf) -> Result<DiskDir, DiskError> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("create", &path))?;
        Ok(DiskDir { path })
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
        check(&self.path, bytes)?;
        let path = self.path.join(format!("{name}.img"));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let disk = Disk { path, bytes };
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
}

impl DiskDir {
    /// A disk for the instance `name` holding a copy of `source` (a VM's copy of the lab's
    /// image), after checking it fits.
    pub fn copy_of(&self, name: &str, source: &Path) -> Result<Disk, DiskError> {
        let bytes = fs::metadata(source)
            .map_err(io_err("measure", source))?
            .len();
        check(&self.path, bytes)?;
        let path = self.path.join(format!("{name}.img"));
        let disk = Disk { path, bytes };
        fs::copy(source, &disk.path).map_err(io_err("copy the image to", &disk.path))?;
        Ok(disk)
    }
}

/// One instance's disk, removed when dropped.
#[derive(Debug)]
pub struct Disk {
    path: PathBuf,
    bytes: u64,
}

impl Disk {
    /// The file on the host.
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
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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

    fn dir(name: &str) -> PathBuf {
        let d = Path::new(DEFAULT_PARENT)
            .join(format!("isolab-disk-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_disk_is_preallocated_and_removed_with_its_instance() {
        let d = DiskDir::make(dir("alloc")).unwrap();
        let disk = d.disk("i-0", 8 << 20, None).unwrap();
        let meta = fs::metadata(disk.path()).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        // Preallocated: its blocks are reserved (512-byte units), not a sparse hole.
        assert!(meta.blocks() * 512 >= 8 << 20, "{} blocks", meta.blocks());
        assert_eq!(meta.mode() & 0o777, 0o600);
        let path = disk.path().to_path_buf();
        drop(disk);
        assert!(!path.exists());
        fs::remove_dir(d.path()).unwrap();
    }

    #[test]
    fn a_disk_larger_than_the_free_space_is_refused_with_the_range() {
        let d = DiskDir::make(dir("big")).unwrap();
        let e = d.disk("i-0", u64::MAX / 2, None).unwrap_err();
        assert!(e.is_usage());
        let text = e.to_string();
        assert!(text.contains("MiB are free (a disk of 1 to"), "{text}");
        assert!(
            fs::read_dir(d.path()).unwrap().next().is_none(),
            "nothing made"
        );
        fs::remove_dir(d.path()).unwrap();
    }

    #[test]
    fn a_tmpfs_cannot_hold_disks() {
        let mnt = dir("tmpfs");
        fs::create_dir(&mnt).unwrap();
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
        fs::remove_dir(&mnt).unwrap();
        assert!(matches!(e, DiskError::InMemory { .. }), "{e}");
        assert!(e.is_usage());
    }
}
