//! The guest's initramfs: a `cpio` archive in the "newc" format, gzip-compressed.
//!
//! A Linux kernel can start without any disk. The boot loader (here: the VMM, or QEMU) puts an
//! archive in guest memory and tells the kernel where it is (`ramdisk_image`/`ramdisk_size` in the
//! boot parameters, or the first module of a PVH boot). Early in boot the kernel unpacks it into
//! its root file system, a RAM-backed `rootfs`, and runs `/init` from it (`init/initramfs.c`).
//!
//! The format the kernel reads is the oldest one there is: **cpio**, "new ASCII" variant
//! (`newc`, magic `070701`). Each entry is a fixed 110-byte header of thirteen 8-digit hex
//! numbers, the path name, and the file's bytes, each padded to a multiple of 4 bytes; an entry
//! named `TRAILER!!!` ends the archive.
//!
//! ```text
//!  070701 ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
//!  "init\0" + padding to 4 · file bytes + padding to 4 · next header ...
//! ```
//!
//! The archive can be compressed with anything the kernel was built to decompress; gzip is the
//! one every kernel has (`CONFIG_RD_GZIP`). isolab's initramfs is small and the same for every
//! run — the workload to run is named on the kernel command line, not in the archive — so a lab
//! writes it once.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{self, Write};

/// File-type bits of `st_mode` (`man 7 inode`).
pub mod mode {
    /// A directory.
    pub const DIR: u32 = 0o040000;
    /// A regular file.
    pub const FILE: u32 = 0o100000;
    /// A character device.
    pub const CHAR: u32 = 0o020000;
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// Writing the archive failed.
    #[error("writing the initramfs: {0}")]
    Io(#[from] io::Error),
    /// A value does not fit the format's 8 hex digits (a file of 4 GiB or more).
    #[error("{what} of {path} does not fit a cpio newc header ({value})")]
    TooLarge {
        /// The entry.
        path: String,
        /// Which field.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A path the kernel would not accept (absolute, empty or with `..`).
    #[error("bad path in initramfs: {0:?} (relative, no '..', not empty)")]
    BadPath(String),
}

/// Writes a cpio newc archive, one entry at a time.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    offset: u64,
}

impl<W: Write> CpioWriter<W> {
    /// An archive written to `out`.
    pub fn new(out: W) -> CpioWriter<W> {
        CpioWriter {
            out,
            // Inode numbers only need to differ between entries (hard links share one).
            next_ino: 1,
            offset: 0,
        }
    }

    /// A directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), InitramfsError> {
        self.entry(path, mode::DIR | perm, 2, 0, &[])
    }

    /// A regular file holding `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), InitramfsError> {
        self.entry(path, mode::FILE | perm, 1, 0, data)
    }

    /// A character device node, e.g. `/dev/console` = (5, 1).
    pub fn char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), InitramfsError> {
        self.entry(
            path,
            mode::CHAR | perm,
            1,
            (major as u64) << 32 | minor as u64,
            &[],
        )
    }

    /// Write the trailer and return the output.
    pub fn finish(mut self) -> Result<W, InitramfsError> {
        // The trailer is an entry like any other, with nlink 1 and nothing in it.
        self.header("TRAILER!!!", 0, 0, 1, 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: u64,
        data: &[u8],
    ) -> Result<(), InitramfsError> {
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(InitramfsError::BadPath(path.to_string()));
        }
        let size = u32::try_from(data.len()).map_err(|_| InitramfsError::TooLarge {
            path: path.to_string(),
            what: "size",
            value: data.len() as u64,
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(path, ino, mode, nlink, size, rdev)?;
        self.write(data)?;
        self.pad()
    }

    /// The 110-byte header and the NUL-terminated name, padded to 4 bytes.
    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: u64,
    ) -> Result<(), InitramfsError> {
        let fields: [u32; 13] = [
            ino,
            mode,
            0, // uid: root
            0, // gid: root
            nlink,
            0, // mtime: 0, so the archive is the same byte for byte every time
            size,
            0, // devmajor, devminor: the device the file lived on (none)
            0,
            (rdev >> 32) as u32, // rdevmajor, rdevminor: the device a node stands for
            rdev as u32,
            name.len() as u32 + 1, // namesize counts the NUL
            0,                     // check: only for the "crc" variant (070702)
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), InitramfsError> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Zeros up to the next multiple of 4: the kernel reads headers at 4-byte boundaries.
    fn pad(&mut self) -> Result<(), InitramfsError> {
        let n = (4 - self.offset % 4) % 4;
        self.write(&[0; 3][..n as usize])
    }
}

/// isolab's initramfs: the static workload as `/init`, a console and empty mount points.
///
/// ```text
///  /init          the static workload executable (0755)
///  /dev/console   character device 5:1 — the kernel opens it as /init's stdin, stdout, stderr
///  /proc /sys     mount points /init mounts on
///  /tmp           scratch for the io kernel (the rootfs itself is RAM)
/// ```
pub fn build(workload: &[u8]) -> Result<Vec<u8>, InitramfsError> {
    build_with_modules(workload, &[])
}

/// Where the initramfs carries kernel modules, and the file listing them in load order.
pub const MODULES_DIR: &str = "modules";
/// The list of modules `/init` loads, one file name a line, dependencies first.
pub const MODULES_ORDER: &str = "modules/order";

/// [`build`], plus kernel `modules` (name of the `.ko` file, its bytes) in load order, for a
/// kernel whose drivers for the guest's devices are modules (Debian's): `/init` loads each
/// with `finit_module` before the workload runs.
///
/// ```text
///  /modules/order        "virtio_ring.ko\nvirtio.ko\n..." — what /init loads, in this order
///  /modules/*.ko         the modules, as the distribution ships them
/// ```
pub fn build_with_modules(
    workload: &[u8],
    modules: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, InitramfsError> {
    // Decompression speed hardly depends on the level; the archive is written once per lab.
    let gz = GzEncoder::new(Vec::new(), Compression::best());
    let mut cpio = CpioWriter::new(gz);
    cpio.dir("dev", 0o755)?;
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.dir("proc", 0o555)?;
    cpio.dir("sys", 0o555)?;
    cpio.dir("tmp", 0o1777)?;
    if !modules.is_empty() {
        cpio.dir(MODULES_DIR, 0o755)?;
        let mut order = String::new();
        for (name, bytes) in modules {
            if name.contains('/') || name.contains('\n') {
                return Err(InitramfsError::BadPath(name.clone()));
            }
            cpio.file(&format!("{MODULES_DIR}/{name}"), 0o644, bytes)?;
            order.push_str(name);
            order.push('\n');
        }
        cpio.file(MODULES_ORDER, 0o644, order.as_bytes())?;
    }
    cpio.file("init", 0o755, workload)?;
    Ok(cpio.finish()?.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Run `cpio` with `args` on `archive`; its stdout. The tests check the writer against the
    /// real `cpio` (CI installs it); without it they fail with the reason.
    fn cpio(args: &[&str], archive: &[u8]) -> String {
        let mut child = Command::new("cpio")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("needs cpio (apt install cpio): {e}"));
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "cpio {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
        out
    }

    #[test]
    fn entries_are_aligned_and_the_header_is_exact() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"xyz").unwrap();
        let bytes = w.finish().unwrap();
        // Header (110) + "a\0" (2) = 112, a multiple of 4; data 3 + 1 padding.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001", "ino");
        assert_eq!(&bytes[14..22], b"000081A4", "mode: regular file 0644");
        assert_eq!(&bytes[54..62], b"00000003", "filesize");
        assert_eq!(&bytes[94..102], b"00000002", "namesize counts the NUL");
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..115], b"xyz");
        assert_eq!(bytes[115], 0, "padding");
        assert_eq!(
            &bytes[116..122],
            b"070701",
            "the trailer starts on a 4-byte boundary"
        );
        assert!(
            bytes.ends_with(b"TRAILER!!!\0\0\0\0"),
            "{:?}",
            &bytes[116..]
        );
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn paths_the_kernel_would_refuse_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in ["", "/init", "a/../b"] {
            assert!(matches!(
                w.file(bad, 0o644, b""),
                Err(InitramfsError::BadPath(_))
            ));
        }
    }

    #[test]
    #[ignore = "needs cpio (CI runs it)"]
    fn cpio_lists_the_lab_initramfs() {
        let archive = gunzip(&build(b"\x7fELF pretend workload").unwrap());
        let listing = cpio(&["-it", "--quiet"], &archive);
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(names, ["dev", "dev/console", "proc", "sys", "tmp", "init"]);
        // The long listing shows types, permissions and the console's device numbers.
        let long = cpio(&["-itv", "--quiet"], &archive);
        let line = |name: &str| {
            long.lines()
                .find(|l| l.ends_with(&format!(" {name}")))
                .unwrap_or_else(|| panic!("{name} missing in {long}"))
                .to_string()
        };
        assert!(line("dev/console").starts_with("crw-------"), "{long}");
        assert!(line("dev/console").contains("5,   1"), "{long}");
        assert!(line("init").starts_with("-rwxr-xr-x"), "{long}");
        assert!(line("tmp").starts_with("drwxrwxrwt"), "{long}");
    }

    #[test]
    #[ignore = "needs cpio (CI runs it)"]
    fn modules_travel_with_their_load_order() {
        let modules = vec![
            ("virtio_ring.ko".to_string(), b"ring".to_vec()),
            ("virtio.ko".to_string(), b"core".to_vec()),
        ];
        let archive = gunzip(&build_with_modules(b"\x7fELF", &modules).unwrap());
        let listing = cpio(&["-it", "--quiet"], &archive);
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "proc",
                "sys",
                "tmp",
                "modules",
                "modules/virtio_ring.ko",
                "modules/virtio.ko",
                "modules/order",
                "init"
            ]
        );
        assert!(matches!(
            build_with_modules(b"", &[("a/b.ko".into(), vec![])]),
            Err(InitramfsError::BadPath(_))
        ));
    }

    #[test]
    #[ignore = "needs cpio (CI runs it)"]
    fn cpio_extracts_the_file_bytes_unchanged() {
        let data: Vec<u8> = (0..10_007u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = CpioWriter::new(Vec::new());
        w.dir("d", 0o755).unwrap();
        w.file("d/f", 0o600, &data).unwrap();
        let archive = w.finish().unwrap();
        assert_eq!(cpio(&["-t", "--quiet"], &archive), "d\nd/f\n");
        let dir = std::env::temp_dir().join(format!("isolab-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("cpio")
            .args(["-id", "--quiet"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success());
        let extracted = std::fs::read(dir.join("d/f")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(extracted, data);
    }
}

/// Property tests of the cpio writer, against a reader of the newc format written here from the
/// format's description (`man 5 cpio`, the kernel's `init/initramfs.c`), not from the writer.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One entry as read back.
    #[derive(Debug, PartialEq)]
    struct Read {
        name: String,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// Every entry of a newc archive up to the trailer; panics on anything malformed, and checks
    /// the 4-byte alignment the kernel relies on.
    fn parse(archive: &[u8]) -> Vec<Read> {
        let align = |at: usize| at.div_ceil(4) * 4;
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(at % 4, 0, "headers start on 4-byte boundaries");
            let header = &archive[at..at + 110];
            assert_eq!(&header[..6], b"070701");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap()
            };
            let (namesize, filesize) = (field(11) as usize, field(6) as usize);
            let name = &archive[at + 110..at + 110 + namesize];
            assert_eq!(name.last(), Some(&0), "the name ends in NUL");
            let name = std::str::from_utf8(&name[..namesize - 1])
                .unwrap()
                .to_string();
            at = align(at + 110 + namesize);
            let data = archive[at..at + filesize].to_vec();
            at = align(at + filesize);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len(), "nothing after the trailer");
                return out;
            }
            out.push(Read {
                name,
                ino: field(0),
                mode: field(1),
                nlink: field(4),
                rdev: (field(9), field(10)),
                data,
            });
        }
    }

    #[derive(Clone, Debug)]
    enum Kind {
        Dir,
        File(Vec<u8>),
        Char(u32, u32),
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Dir),
            proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Kind::File),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Kind::Char(a, b)),
        ]
    }

    /// Paths of any characters but NUL (which no path can hold), including the ones the writer
    /// must refuse: empty, absolute, with `..`.
    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,3}",
            "[^\u{0}]{0,16}",
            Just("..".to_string()),
            Just("a/../b".to_string()),
            Just("/init".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(128)
        })]

        #[test]
        fn every_entry_reads_back_as_written(
            entries in proptest::collection::vec((path(), 0u32..0o7777, kind()), 0..12),
        ) {
            let mut w = CpioWriter::new(Vec::new());
            let mut expected = Vec::new();
            for (path, perm, kind) in &entries {
                let result = match kind {
                    Kind::Dir => w.dir(path, *perm),
                    Kind::File(data) => w.file(path, *perm, data),
                    Kind::Char(major, minor) => w.char_device(path, *perm, *major, *minor),
                };
                let valid = !path.is_empty()
                    && !path.starts_with('/')
                    && !path.split('/').any(|c| c == "..");
                prop_assert_eq!(result.is_ok(), valid, "{:?}", path);
                if valid {
                    expected.push((path.clone(), *perm, kind.clone()));
                }
            }
            let archive = w.finish().unwrap();
            prop_assert_eq!(archive.len() % 4, 0);
            let read = parse(&archive);
            prop_assert_eq!(read.len(), expected.len());
            let mut inos: Vec<u32> = read.iter().map(|r| r.ino).collect();
            inos.sort_unstable();
            inos.dedup();
            prop_assert_eq!(inos.len(), read.len(), "inode numbers differ");
            for (r, (path, perm, kind)) in read.iter().zip(&expected) {
                prop_assert_eq!(&r.name, path);
                prop_assert_eq!(r.mode & 0o7777, *perm);
                match kind {
                    Kind::Dir => {
                        prop_assert_eq!(r.mode & !0o7777, mode::DIR);
                        prop_assert_eq!(r.nlink, 2);
                        prop_assert!(r.data.is_empty());
                    }
                    Kind::File(data) => {
                        prop_assert_eq!(r.mode & !0o7777, mode::FILE);
                        prop_assert_eq!(&r.data, data);
                    }
                    Kind::Char(major, minor) => {
                        prop_assert_eq!(r.mode & !0o7777, mode::CHAR);
                        prop_assert_eq!(r.rdev, (*major, *minor));
                        prop_assert!(r.data.is_empty());
                    }
                }
            }
        }
    }
}
