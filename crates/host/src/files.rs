//! Files the lab writes into directories it does not own, and files it reads that it did not
//! write.
//!
//! Root runs the lab; the directories it reads from and writes into often belong to an ordinary
//! user (a student's checkout, a results directory in someone's home). That user can put things
//! there the lab does not expect, and the kernel does what the lab *asks*, not what it means:
//!
//! * **Writing.** `open("report/index.html", O_WRONLY|O_CREAT|O_TRUNC)` follows a symbolic link
//!   the user planted at that name: root would overwrite `/etc/shadow` with a report. So the lab
//!   writes through an [`OutDir`]: the directory is opened once with `O_NOFOLLOW` (a link there
//!   is refused), each file is written under a fresh temporary name with `O_CREAT|O_EXCL|
//!   O_NOFOLLOW` (which never opens anything that already exists, link or not), and then
//!   `renameat(2)` puts it in place. A rename replaces the *directory entry*: a planted link is
//!   removed, its target never opened. Every call is relative to the directory's descriptor
//!   (`openat`, `renameat`), so swapping the directory for a link half-way changes nothing either.
//!   A reader also never sees half a file.
//! * **Reading.** `read_to_string("answers.toml")` reads until the end of the file, and
//!   `/dev/zero` has none: the lab grows until the OOM killer ends something. A FIFO blocks the
//!   `open` itself until a writer comes. So the lab reads what it did not write with
//!   [`read_bounded`]: opened with `O_NONBLOCK` (a FIFO's open returns at once), refused unless
//!   it is a regular file, refused before a byte is read when its size is over the limit of its
//!   kind, and read with that limit in case it grows meanwhile.
//!
//! Files of `/proc` and `/sys` are the kernel's own, small, and report a size of 0: they are
//! read as usual, not through here.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Errors of writing into an [`OutDir`] and of reading with bounds.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Not a regular file: a FIFO would block, a device such as `/dev/zero` never ends.
    #[error("{what} {path} is not a regular file (a FIFO, a device such as /dev/zero or a directory is not read)")]
    NotAFile {
        /// What the file was meant to be ("answers file").
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// Larger than the limit of its kind, refused before it was read.
    #[error("{what} {path} is {}; the limit is {}", size_text(*size), size_text(*limit))]
    TooLarge {
        /// What the file was meant to be.
        what: String,
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// It grew past the limit while it was read.
    #[error("{what} {path} grew past the limit of {} while it was read", size_text(*limit))]
    Grew {
        /// What the file was meant to be.
        what: String,
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// Not UTF-8 text where text was expected.
    #[error("{what} {path} is not UTF-8 text")]
    NotText {
        /// What the file was meant to be.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// An output directory that is a symbolic link.
    #[error("{path} is a symbolic link, and the lab does not write through links")]
    LinkedDir {
        /// The directory.
        path: PathBuf,
    },
    /// An output "directory" that is something else.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A name for [`OutDir::write`] that is not one path component.
    #[error("{name:?} is not a file name (one path component, neither . nor ..)")]
    BadName {
        /// The name.
        name: String,
    },
    /// A system call failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read answers file").
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A stop was requested while the file was read ([`crate::interrupt::work_stopped`]).
    #[error("stopped while reading {path}")]
    Interrupted {
        /// The file.
        path: PathBuf,
    },
    /// Read below a directory the lab was given, the path met a symbolic link (see
    /// [`open_regular_beneath`]).
    #[error("{what} {path} is a symbolic link or lies under one: the lab follows no link below {dir} when it reads as root")]
    Linked {
        /// What the file was meant to be.
        what: String,
        /// The file.
        path: PathBuf,
        /// The directory the lab was given.
        dir: PathBuf,
    },
    /// A file with other names (hard links) that does not belong to the owner of the directory
    /// it was found in: another user's file linked in (see [`open_regular_beneath`]).
    #[error("{what} {path} has other names (hard links) and is not the file of {dir}'s owner: it is not read")]
    OtherNames {
        /// What the file was meant to be.
        what: String,
        /// The file.
        path: PathBuf,
        /// The directory the lab was given.
        dir: PathBuf,
    },
}

impl FilesError {
    /// True for what the user can change (exit status 2): a path that names the wrong kind of
    /// thing, a file over its limit, a missing file or directory, no permission.
    pub fn is_usage(&self) -> bool {
        match self {
            FilesError::Io { source, .. } => is_path_problem(source),
            FilesError::Interrupted { .. } => false,
            _ => true,
        }
    }

    /// True when the lab refused to read the file at all: not a regular file, or too large.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            FilesError::NotAFile { .. }
                | FilesError::TooLarge { .. }
                | FilesError::Grew { .. }
                | FilesError::Linked { .. }
                | FilesError::OtherNames { .. }
        )
    }

    fn io(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
        let action = action.into();
        move |source| FilesError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// True for I/O errors that say the path is wrong rather than the machine.
pub fn is_path_problem(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        NotFound
            | PermissionDenied
            | AlreadyExists
            | NotADirectory
            | IsADirectory
            | ReadOnlyFilesystem
            | InvalidInput
            | InvalidFilename
    )
}

/// `bytes` for people: "300 KiB", "1.2 GiB", "64 MiB".
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = if unit == 0 || value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    format!("{} {}", text.trim_end_matches(".0"), UNITS[unit])
}

/// A directory the lab writes files into, held open so every write is relative to it.
#[derive(Debug)]
pub struct OutDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl OutDir {
    /// Make `path` a directory if it is not one yet (with its parents), and open it. Its last
    /// component must be a directory itself, not a symbolic link to one: a link there is
    /// refused ([`FilesError::LinkedDir`]). The parents are the ones the user named, and are
    /// taken as they are.
    pub fn open_or_create(path: &Path) -> Result<OutDir, FilesError> {
        // "report/" and "report/." would make the kernel follow a link at "report": path
        // resolution follows a link that a slash comes after, O_NOFOLLOW or not. Rebuilt from its
        // components, the path ends in the name itself.
        let path: PathBuf = path.components().collect();
        let path = if path.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            path
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(FilesError::io("create", parent))?;
        }
        // mkdir(2) never follows a link at its last component: a link there, dangling or not,
        // is EEXIST, and the open below says what it is.
        match nix::unistd::mkdir(&path, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(FilesError::io("create", &path)(e.into())),
        }
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // O_NOFOLLOW's answer when the last component is a symbolic link is ELOOP, but
            // O_DIRECTORY's ENOTDIR comes first: lstat(2) tells a link from a file.
            Errno::ELOOP | Errno::ENOTDIR
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                FilesError::LinkedDir { path: path.clone() }
            }
            Errno::ENOTDIR => FilesError::NotADirectory { path: path.clone() },
            e => FilesError::io("open", &path)(e.into()),
        })?;
        Ok(OutDir { path, fd })
    }

    /// The directory's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (for messages and for links between files).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Write `bytes` as the file `name` in this directory (mode 0644, less the umask),
    /// replacing whatever has that name (a file, or a symbolic link, which is not followed).
    /// Returns the file's path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, FilesError> {
        self.write_mode(name, bytes, 0o644)
    }

    /// [`OutDir::write`] with the file mode `mode` (e.g. 0o755 for a program).
    pub fn write_mode(&self, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, FilesError> {
        let target = self.join(name);
        if name.is_empty()
            || name.contains('/')
            || name.contains('\0')
            || !matches!(
                Path::new(name).components().next(),
                Some(Component::Normal(_))
            )
        {
            return Err(FilesError::BadName { name: name.into() });
        }
        let (temp, file) = self.create_temp(name, mode)?;
        let written = (&file)
            .write_all(bytes)
            // rename(2) replaces the entry `name` in one step: a reader sees the old file or
            // the new one, and a symbolic link at `name` is replaced, never followed.
            .and_then(|()| {
                nix::fcntl::renameat(self.fd.as_fd(), temp.as_str(), self.fd.as_fd(), name)
                    .map_err(io::Error::from)
            });
        drop(file);
        if let Err(e) = written {
            let _ = nix::unistd::unlinkat(
                self.fd.as_fd(),
                temp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(FilesError::io("write", &target)(e));
        }
        Ok(target)
    }

    /// A new file `.<name>.<random>.tmp` in this directory, and its name. O_EXCL makes the
    /// kernel create it or fail: it never opens a file (or follows a link) someone put there
    /// first. The random part makes such a name impossible to plant in advance; a name taken
    /// anyway is skipped.
    fn create_temp(&self, name: &str, mode: u32) -> Result<(String, File), FilesError> {
        let mut last = Errno::EEXIST;
        for _ in 0..16 {
            let temp = format!(".{name}.{:016x}.tmp", random_u64());
            match nix::fcntl::openat(
                self.fd.as_fd(),
                temp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            ) {
                Ok(fd) => return Ok((temp, File::from(fd))),
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => return Err(FilesError::io("write", &self.join(name))(e.into())),
            }
        }
        Err(FilesError::io("write", &self.join(name))(last.into()))
    }
}

/// 64 bits from the kernel's random source (the clock and the PID where there is none).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into a valid buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == bytes.len() as isize {
        u64::from_ne_bytes(bytes)
    } else {
        crate::clock::now_ns() ^ (u64::from(std::process::id()) << 32)
    }
}

/// Open `path` for reading if it is a regular file of at most `limit` bytes; `what` names its
/// kind in errors ("answers file"). Returns the file and its size. Nothing is read.
///
/// The flags: O_NONBLOCK so that opening a FIFO returns at once instead of waiting for a
/// writer (the FIFO is then refused); O_NOCTTY so that a terminal device named by mistake does
/// not become the lab's controlling terminal; O_CLOEXEC so that no child inherits it.
pub fn open_regular(path: &Path, limit: u64, what: &str) -> Result<(File, u64), FilesError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(FilesError::io(format!("read {what}"), path))?;
    // fstat of what was opened, not stat of the name: the name may change meanwhile.
    let meta = file
        .metadata()
        .map_err(FilesError::io(format!("read {what}"), path))?;
    if !meta.is_file() {
        return Err(FilesError::NotAFile {
            what: what.into(),
            path: path.to_path_buf(),
        });
    }
    if meta.len() > limit {
        return Err(FilesError::TooLarge {
            what: what.into(),
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    Ok((file, meta.len()))
}

/// How much [`read_bounded`] reads between two looks at [`crate::interrupt::work_stopped`].
const CHUNK: u64 = 1 << 20;

/// The contents of `path`, a regular file of at most `limit` bytes (see [`open_regular`]);
/// `what` names its kind in errors.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, FilesError> {
    let (file, size) = open_regular(path, limit, what)?;
    read_opened(file, size, path, limit, what)
}

/// The rest of [`read_bounded`]: read `file` (`size` bytes when it was opened, at most
/// `limit`), stopping early on a stop request.
fn read_opened(
    file: File,
    size: u64,
    path: &Path,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, FilesError> {
    let mut out = Vec::with_capacity(size as usize);
    // One byte more than the limit: reading it means the file grew past the limit.
    let mut rest = file.take(limit.saturating_add(1));
    loop {
        if crate::interrupt::work_stopped() {
            return Err(FilesError::Interrupted {
                path: path.to_path_buf(),
            });
        }
        let n = (&mut rest)
            .take(CHUNK)
            .read_to_end(&mut out)
            .map_err(FilesError::io(format!("read {what}"), path))?;
        if n == 0 {
            break;
        }
    }
    if out.len() as u64 > limit {
        return Err(FilesError::Grew {
            what: what.into(),
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(out)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_to_string_bounded(path: &Path, limit: u64, what: &str) -> Result<String, FilesError> {
    String::from_utf8(read_bounded(path, limit, what)?).map_err(|_| FilesError::NotText {
        what: what.into(),
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("isolab-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_planted_link_is_replaced_and_its_target_untouched() {
        let dir = scratch("link");
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let out = dir.join("report");
        fs::create_dir(&out).unwrap();
        symlink(&victim, out.join("index.html")).unwrap();
        // A dangling link too: O_CREAT through it would create its target.
        symlink(dir.join("created-through-link"), out.join("tables.md")).unwrap();

        let o = OutDir::open_or_create(&out).unwrap();
        assert_eq!(
            o.write("index.html", b"<html>").unwrap(),
            out.join("index.html")
        );
        o.write("tables.md", b"# tables").unwrap();

        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(
            fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.join("created-through-link").exists());
        for (name, text) in [("index.html", "<html>"), ("tables.md", "# tables")] {
            let meta = fs::symlink_metadata(out.join(name)).unwrap();
            assert!(meta.file_type().is_file(), "{name} is a regular file now");
            assert_eq!(fs::read_to_string(out.join(name)).unwrap(), text);
        }
        // No temporary file is left behind, and writing again replaces the file.
        o.write("index.html", b"again").unwrap();
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["index.html", "tables.md"]);
        assert_eq!(fs::read_to_string(out.join("index.html")).unwrap(), "again");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_linked_output_directory_is_refused_and_names_are_one_component() {
        let dir = scratch("linkdir");
        let elsewhere = dir.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let out = dir.join("report");
        symlink(&elsewhere, &out).unwrap();
        for path in [out.clone(), out.join(""), out.join(".")] {
            let e = OutDir::open_or_create(&path).unwrap_err();
            assert!(matches!(e, FilesError::LinkedDir { .. }), "{path:?}: {e}");
            assert!(e.is_usage());
            assert!(e.to_string().contains(&out.display().to_string()), "{e}");
        }
        // A dangling link is refused too, and nothing is made where it points.
        let dangling = dir.join("dangling");
        symlink(dir.join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            OutDir::open_or_create(&dangling),
            Err(FilesError::LinkedDir { .. })
        ));
        assert!(!dir.join("nowhere").exists());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        // A file is not a directory.
        fs::write(dir.join("file"), "").unwrap();
        assert!(matches!(
            OutDir::open_or_create(&dir.join("file")),
            Err(FilesError::NotADirectory { .. })
        ));
        // Missing parents are made.
        let deep = OutDir::open_or_create(&dir.join("a/b/c")).unwrap();
        for bad in ["", ".", "..", "a/b", "../x", "/etc/passwd"] {
            assert!(
                matches!(deep.write(bad, b"x"), Err(FilesError::BadName { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(fs::read_dir(dir.join("a/b/c")).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dev_zero_is_refused() {
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20, "answers file").unwrap_err();
        assert!(matches!(e, FilesError::NotAFile { .. }), "{e}");
        assert!(e.is_usage() && e.is_refusal());
        assert_eq!(
            e.to_string(),
            "answers file /dev/zero is not a regular file (a FIFO, a device such as /dev/zero \
             or a directory is not read)"
        );
    }

    /// Bytes this thread has read through read(2) and its kin (`rchar` of its `io` file).
    fn bytes_read_by_this_thread() -> u64 {
        fs::read_to_string("/proc/thread-self/io")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_file_over_the_limit_is_refused_without_being_read() {
        let dir = scratch("sparse");
        let path = dir.join("huge.toml");
        // Sparse: 2 GiB of size and no data blocks, made in an instant.
        File::create(&path).unwrap().set_len(2 << 30).unwrap();
        let before = bytes_read_by_this_thread();
        let e = read_bounded(&path, 1 << 20, "answers file").unwrap_err();
        let read = bytes_read_by_this_thread() - before;
        assert!(
            matches!(e, FilesError::TooLarge { size, limit, .. } if size == 2 << 30 && limit == 1 << 20),
            "{e}"
        );
        // Only the io file itself was read: the refusal came from the size fstat(2) gave.
        assert!(read < 64 << 10, "{read} bytes read");
        assert_eq!(
            e.to_string(),
            format!(
                "answers file {} is 2 GiB; the limit is 1 MiB",
                path.display()
            )
        );
        // At the limit is fine.
        let ok = dir.join("ok");
        fs::write(&ok, vec![b'a'; 1 << 20]).unwrap();
        assert_eq!(read_bounded(&ok, 1 << 20, "x").unwrap().len(), 1 << 20);
        assert_eq!(
            read_to_string_bounded(&ok, 1 << 20, "x").unwrap().len(),
            1 << 20
        );
        fs::write(&ok, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_to_string_bounded(&ok, 1 << 20, "x"),
            Err(FilesError::NotText { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        // Without O_NONBLOCK the open would wait for a writer that never comes, and this test
        // would hang (CI's time limit would end it).
        let e = read_bounded(&fifo, 1 << 20, "answers file").unwrap_err();
        assert!(matches!(e, FilesError::NotAFile { .. }), "{e}");
        // A directory is not a file either; a missing file is the user's to fix.
        assert!(matches!(
            read_bounded(&dir, 1 << 20, "x"),
            Err(FilesError::NotAFile { .. })
        ));
        let missing = read_bounded(&dir.join("missing"), 1, "x").unwrap_err();
        assert!(missing.is_usage() && !missing.is_refusal(), "{missing}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size_text(0), "0 B");
        assert_eq!(size_text(300 << 10), "300 KiB");
        assert_eq!(size_text(64 << 20), "64 MiB");
        assert_eq!(size_text(1_288_490_189), "1.2 GiB");
        assert_eq!(size_text(2 << 30), "2 GiB");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a user's files as root, without following links

/// Open `rel`, a relative path below the directory `dir` (an open descriptor; `shown` is its
/// path, for messages), for reading as [`open_regular`] does — and without following a symbolic
/// link anywhere on the way. Returns the file and what fstat(2) says of it. Nothing is read.
///
/// Root reads files in directories that ordinary users own: a student's `labs/`, a crate's
/// build output. `open("labs/answers/startup.toml")` follows a link the student put at that
/// name, or at `answers`, to a file only root may read, and the lab would then show what it
/// read. O_NOFOLLOW alone guards only the last component. openat2(2) (Linux 5.6) with
/// `RESOLVE_NO_SYMLINKS` makes the kernel refuse a link at *any* component (ELOOP), and
/// `RESOLVE_BENEATH` any step out of `dir` (`..`, an absolute path); the walk is relative to the
/// descriptor, so renaming directories meanwhile leads nowhere else either.
///
/// A hard link is no symbolic link: it is another name of the same file, and the kernel lets a
/// user make one only to a file they could read or write anyway (`fs.protected_hardlinks`, on
/// by default). Where that protection is off, a file with other names that does not belong to
/// the owner of `dir` is refused too ([`FilesError::OtherNames`]).
pub fn open_regular_beneath(
    dir: std::os::fd::BorrowedFd<'_>,
    shown: &Path,
    rel: &Path,
    limit: u64,
    what: &str,
) -> Result<(File, std::fs::Metadata), FilesError> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    use std::os::unix::fs::MetadataExt;
    let path = shown.join(rel);
    let how = OpenHow::new()
        .flags(
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
        )
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH);
    let fd = nix::fcntl::openat2(dir, rel, how).map_err(|e| match e {
        Errno::ELOOP => FilesError::Linked {
            what: what.into(),
            path: path.clone(),
            dir: shown.to_path_buf(),
        },
        // A kernel older than 5.6 has no openat2: say so rather than fall back to a walk
        // that follows links.
        Errno::ENOSYS => FilesError::Io {
            action: format!("read {what} (without following links, which needs Linux 5.6+)"),
            path: path.clone(),
            source: e.into(),
        },
        e => FilesError::io(format!("read {what}"), &path)(e.into()),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(FilesError::io(format!("read {what}"), &path))?;
    if !meta.is_file() {
        return Err(FilesError::NotAFile {
            what: what.into(),
            path,
        });
    }
    if meta.len() > limit {
        return Err(FilesError::TooLarge {
            what: what.into(),
            path,
            size: meta.len(),
            limit,
        });
    }
    if meta.nlink() > 1 {
        let owner = nix::sys::stat::fstat(dir)
            .map_err(|e| FilesError::io(format!("read {what}"), shown)(e.into()))?
            .st_uid;
        if meta.uid() != owner {
            return Err(FilesError::OtherNames {
                what: what.into(),
                path,
                dir: shown.to_path_buf(),
            });
        }
    }
    Ok((file, meta))
}

/// [`read_bounded`] of `rel` below the directory `dir`, following no link below `dir` (see
/// [`open_regular_beneath`]). `dir` itself is opened as named: it is the caller's choice.
pub fn read_bounded_beneath(
    dir: &Path,
    rel: &Path,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, FilesError> {
    let at = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FilesError::io(format!("read {what}"), &dir.join(rel))(e.into()))?;
    read_bounded_at(at.as_fd(), dir, rel, limit, what)
}

/// [`read_bounded_beneath`] below a directory already open (`shown` is its path, for
/// messages).
pub fn read_bounded_at(
    dir: std::os::fd::BorrowedFd<'_>,
    shown: &Path,
    rel: &Path,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, FilesError> {
    let (file, meta) = open_regular_beneath(dir, shown, rel, limit, what)?;
    read_opened(file, meta.len(), &shown.join(rel), limit, what)
}

/// [`read_bounded_beneath`], as UTF-8 text.
pub fn read_to_string_beneath(
    dir: &Path,
    rel: &Path,
    limit: u64,
    what: &str,
) -> Result<String, FilesError> {
    String::from_utf8(read_bounded_beneath(dir, rel, limit, what)?).map_err(|_| {
        FilesError::NotText {
            what: what.into(),
            path: dir.join(rel),
        }
    })
}

#[cfg(test)]
mod beneath_tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn no_link_is_followed_below_the_directory_given() {
        let dir = std::env::temp_dir().join(format!("isolab-beneath-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let given = dir.join("labs");
        fs::create_dir_all(given.join("answers")).unwrap();
        fs::write(given.join("answers/own.toml"), "a = 1\n").unwrap();
        let secret = dir.join("secret");
        fs::write(&secret, "root's\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        // A link as the last component, a link as a directory on the way, a way out.
        symlink(&secret, given.join("answers/linked.toml")).unwrap();
        symlink(&dir, given.join("up")).unwrap();
        let read =
            |rel: &str| read_to_string_beneath(&given, Path::new(rel), 1 << 20, "answers file");
        assert_eq!(read("answers/own.toml").unwrap(), "a = 1\n");
        for rel in ["answers/linked.toml", "up/secret"] {
            let e = read(rel).unwrap_err();
            assert!(matches!(e, FilesError::Linked { .. }), "{rel}: {e}");
            assert!(e.is_usage() && e.is_refusal(), "{e}");
            assert!(e.to_string().contains("symbolic link"), "{e}");
            assert!(!e.to_string().contains("root's"), "{e}");
        }
        assert!(read("../secret").is_err(), "out of the directory given");
        assert!(
            read(&secret.display().to_string()).is_err(),
            "an absolute path"
        );
        // A hard link to another owner's file (root may make one: here the test is root).
        fs::hard_link(&secret, given.join("answers/hard.toml")).unwrap();
        nix::unistd::chown(&given, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = read("answers/hard.toml").unwrap_err();
        assert!(matches!(e, FilesError::OtherNames { .. }), "{e}");
        // The directory given may itself be reached through a link: it is the caller's choice.
        symlink(&given, dir.join("via")).unwrap();
        assert!(
            read_bounded_beneath(&dir.join("via"), Path::new("answers/own.toml"), 64, "x").is_ok()
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
