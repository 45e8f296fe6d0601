//! Which Linux kernel a guest boots, and what kind of file it is.
//!
//! A Linux kernel for x86 comes in two shapes:
//!
//! * **bzImage** (`/boot/vmlinuz-*`): what boot loaders load. A 16-bit real-mode *setup* part
//!   with the boot-protocol header (`HdrS` at offset 0x202), then a 32/64-bit *decompressor* with
//!   the real kernel inside it, compressed. A VMM loads it by the Linux boot protocol: it copies
//!   the protected-mode part to 1 MiB, fills in the boot parameters ("zero page") and jumps to
//!   the 64-bit entry; the decompressor then unpacks the kernel and jumps to it.
//! * **vmlinux**: the kernel itself, an uncompressed ELF file. A kernel built with `CONFIG_PVH`
//!   carries an ELF note (`XEN_ELFNOTE_PHYS32_ENTRY`) naming a 32-bit entry point of the **PVH**
//!   boot protocol (from Xen): the VMM loads the ELF segments and starts there, with a small
//!   `hvm_start_info` structure instead of the zero page. No decompressor runs.
//!
//! Where the lab finds one, in order: the path given with `--kernel`; the kernel `lab kernel
//! build` made (in the cache directory, see [`cache_dir`]); the running kernel's image
//! `/boot/vmlinuz-$(uname -r)`; the newest readable `/boot/vmlinuz-*`. [`Origin`] says which, so
//! every run can say which kernel it booted and why.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The largest kernel file the lab opens. A distribution's bzImage is 8–15 MiB and a vmlinux
/// without debugging information a few tens of MiB, but a vmlinux built with full debugging
/// information reaches several hundred MiB, and the lab boots that too (it loads only the
/// segments). 1 GiB, the most the lab lets a bzImage decompress to (`extract`), refuses a
/// file named by mistake (a disk image, a sparse file of any size) before it is read.
pub const MAX_KERNEL: u64 = 1 << 30;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No kernel anywhere the lab looks.
    #[error("no Linux kernel found: none given with --kernel, none built with `lab kernel build`, and no readable /boot/vmlinuz-* (Debian/Ubuntu: sudo apt install linux-image-amd64, or run `lab kernel build`)")]
    NotFound,
    /// The file could not be read.
    #[error("cannot read kernel {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Refused before it was read: not a regular file (a FIFO would block the open, a device
    /// never ends), or larger than [`MAX_KERNEL`].
    #[error(transparent)]
    Refused(isolab_host::files::FilesError),
    /// Neither a bzImage nor an ELF file.
    #[error(
        "{path} is not a Linux kernel: neither a bzImage (no 'HdrS' at 0x202) nor an ELF vmlinux"
    )]
    NotAKernel {
        /// The file.
        path: PathBuf,
    },
}

/// The two shapes of an x86 Linux kernel (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// A compressed, self-decompressing kernel with a boot-protocol header.
    BzImage {
        /// Boot protocol version, e.g. 0x020f for 2.15.
        protocol: u16,
    },
    /// An uncompressed ELF kernel (booted by its PVH entry).
    Elf,
}

/// Why the lab picked a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Named with `--kernel`.
    Given,
    /// Built by `lab kernel build`.
    Built,
    /// The running kernel's own image.
    Running,
    /// The running kernel (`release`) has no readable image in /boot; this is the newest one.
    Newest {
        /// `uname -r` of the host.
        running: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Given => f.write_str("given with --kernel"),
            Origin::Built => f.write_str("built by `lab kernel build`"),
            Origin::Running => f.write_str("the running kernel's image"),
            Origin::Newest { running } => write!(
                f,
                "the newest readable /boot/vmlinuz-* (the running kernel, {running}, has no image in /boot)"
            ),
        }
    }
}

/// A kernel file the lab can boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    /// The file.
    pub path: PathBuf,
    /// Its shape.
    pub kind: ImageKind,
    /// The version string a bzImage carries in its header (`kernel_version`), if any.
    pub version: Option<String>,
    /// Why this one.
    pub origin: Origin,
}

impl KernelImage {
    /// Inspect `path`.
    pub fn open(path: &Path, origin: Origin) -> Result<KernelImage, KernelError> {
        let err = |source| KernelError::Read {
            path: path.to_path_buf(),
            source,
        };
        // Opening a FIFO given as a kernel must not wait for a writer (nor a Ctrl-C); whatever
        // is not a regular file, or is larger than any kernel, is refused before anything is
        // read.
        let mut file = open(path)?;
        let mut head = vec![0u8; 0x300];
        let n = read_up_to(&mut file, &mut head).map_err(err)?;
        head.truncate(n);
        if head.starts_with(b"\x7fELF") {
            return Ok(KernelImage {
                path: path.to_path_buf(),
                kind: ImageKind::Elf,
                version: None,
                origin,
            });
        }
        let header = SetupHeader::parse(&head).ok_or_else(|| KernelError::NotAKernel {
            path: path.to_path_buf(),
        })?;
        let version = header.version_string(&mut file).map_err(err)?;
        Ok(KernelImage {
            path: path.to_path_buf(),
            kind: ImageKind::BzImage {
                protocol: header.protocol,
            },
            version,
            origin,
        })
    }

    /// Bytes of the file.
    pub fn size(&self) -> u64 {
        fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// One line for users: which kernel and why.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            ImageKind::BzImage { protocol } => {
                format!(
                    "bzImage, boot protocol {}.{:02}",
                    protocol >> 8,
                    protocol & 0xff
                )
            }
            ImageKind::Elf => "ELF vmlinux".into(),
        };
        format!("{} ({kind}; {})", self.path.display(), self.origin)
    }
}

/// Open the kernel file `path` for reading: a regular file of at most [`MAX_KERNEL`] bytes (see
/// [`isolab_host::files::open_regular`]).
pub fn open(path: &Path) -> Result<File, KernelError> {
    isolab_host::files::open_regular(path, MAX_KERNEL, "kernel")
        .map(|(file, _)| file)
        .map_err(|e| match e {
            isolab_host::files::FilesError::Io { source, .. } => KernelError::Read {
                path: path.to_path_buf(),
                source,
            },
            e => KernelError::Refused(e),
        })
}

/// The fields of the boot-protocol header (`struct setup_header`, Documentation/arch/x86/boot.rst)
/// the lab reads from a bzImage file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// 512-byte sectors of real-mode setup code after the boot sector (0 means 4).
    pub setup_sects: u8,
    /// Boot protocol version.
    pub protocol: u16,
    /// Offset of the version string, minus 0x200.
    pub kernel_version: u16,
    /// Offset of the compressed kernel from the start of the protected-mode code (2.08+).
    pub payload_offset: u32,
    /// Its length in bytes.
    pub payload_length: u32,
}

impl SetupHeader {
    /// The header magic at 0x202: "HdrS".
    pub const MAGIC: &'static [u8; 4] = b"HdrS";

    /// Parse the header from the first bytes of a bzImage (at least 0x250 of them).
    pub fn parse(head: &[u8]) -> Option<SetupHeader> {
        if head.get(0x202..0x206)? != Self::MAGIC {
            return None;
        }
        let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
        let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
        let protocol = u16_at(0x206)?;
        let has_payload = protocol >= 0x0208;
        Some(SetupHeader {
            setup_sects: *head.get(0x1f1)?,
            protocol,
            kernel_version: u16_at(0x20e)?,
            payload_offset: if has_payload { u32_at(0x248)? } else { 0 },
            payload_length: if has_payload { u32_at(0x24c)? } else { 0 },
        })
    }

    /// File offset of the protected-mode code: after the boot sector and the setup sectors.
    pub fn protected_mode_offset(&self) -> u64 {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            self.setup_sects
        };
        (sects as u64 + 1) * 512
    }

    /// File offset and length of the compressed kernel, if the header says (protocol 2.08+).
    pub fn payload(&self) -> Option<(u64, u64)> {
        (self.payload_length > 0).then(|| {
            (
                self.protected_mode_offset() + self.payload_offset as u64,
                self.payload_length as u64,
            )
        })
    }

    /// The NUL-terminated version string the header points at.
    fn version_string(&self, file: &mut File) -> io::Result<Option<String>> {
        if self.kernel_version == 0 {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(self.kernel_version as u64 + 0x200))?;
        let mut buf = [0u8; 256];
        let n = read_up_to(file, &mut buf)?;
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()))
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// isolab's cache directory: `$XDG_CACHE_HOME/isolab`, or `~/.cache/isolab`.
pub fn cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|home| home.join(".cache"))
    })?;
    Some(base.join("isolab"))
}

/// Where `lab kernel build` puts its kernel: `<cache>/kernel/`.
pub fn built_dir() -> Option<PathBuf> {
    cache_dir().map(|c| c.join("kernel"))
}

/// Find the kernel to boot (see the module documentation for the order).
pub fn find(given: Option<&Path>) -> Result<KernelImage, KernelError> {
    if let Some(path) = given {
        return KernelImage::open(path, Origin::Given);
    }
    if let Some(built) = built_dir().map(|d| d.join("bzImage")) {
        if readable(&built) {
            return KernelImage::open(&built, Origin::Built);
        }
    }
    find_in_boot(Path::new("/boot"), &isolab_host::facts::kernel_release())
}

/// The running kernel's image in `boot`, else the newest readable `vmlinuz-*` there.
pub fn find_in_boot(boot: &Path, running: &str) -> Result<KernelImage, KernelError> {
    let own = boot.join(format!("vmlinuz-{running}"));
    if readable(&own) {
        return KernelImage::open(&own, Origin::Running);
    }
    let mut images: Vec<(String, PathBuf)> = fs::read_dir(boot)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let release = name.strip_prefix("vmlinuz-")?.to_string();
                    Some((release, e.path()))
                })
                .filter(|(_, p)| readable(p))
                .collect()
        })
        .unwrap_or_default();
    images.sort_by_key(|a| version_key(&a.0));
    let (_, newest) = images.pop().ok_or(KernelError::NotFound)?;
    KernelImage::open(
        &newest,
        Origin::Newest {
            running: running.to_string(),
        },
    )
}

fn readable(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| f.metadata().is_ok_and(|m| m.is_file()))
}

/// A release string as a sortable key: runs of digits compare as numbers, so 6.10 > 6.9.
fn version_key(release: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = release;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            key.push((0, rest[..text].to_string()));
            rest = &rest[text..];
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that looks like a bzImage header: magic, protocol, setup sectors, payload.
    fn fake_bzimage(protocol: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x600];
        b[0x1f1] = 1;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        b[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&0x20u32.to_le_bytes());
        b[0x500..0x50a].copy_from_slice(b"6.9.1-test");
        b
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("isolab-kernel-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_setup_header_says_where_the_payload_is() {
        let h = SetupHeader::parse(&fake_bzimage(0x020f)).unwrap();
        assert_eq!(h.protocol, 0x020f);
        assert_eq!(
            h.protected_mode_offset(),
            1024,
            "boot sector + 1 setup sector"
        );
        assert_eq!(h.payload(), Some((1024 + 0x10, 0x20)));
        let old = SetupHeader::parse(&fake_bzimage(0x0206)).unwrap();
        assert_eq!(
            old.payload(),
            None,
            "no payload fields before protocol 2.08"
        );
        assert_eq!(SetupHeader::parse(&[0u8; 0x300]), None);
    }

    #[test]
    fn images_are_recognised_by_their_first_bytes() {
        let dir = temp("kinds");
        let bz = dir.join("vmlinuz-6.9.1-test");
        fs::write(&bz, fake_bzimage(0x020f)).unwrap();
        let image = KernelImage::open(&bz, Origin::Given).unwrap();
        assert_eq!(image.kind, ImageKind::BzImage { protocol: 0x020f });
        assert_eq!(image.version.as_deref(), Some("6.9.1-test"));
        let elf = dir.join("vmlinux");
        fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        assert_eq!(
            KernelImage::open(&elf, Origin::Given).unwrap().kind,
            ImageKind::Elf
        );
        let junk = dir.join("junk");
        fs::write(&junk, b"hello").unwrap();
        assert!(matches!(
            KernelImage::open(&junk, Origin::Given),
            Err(KernelError::NotAKernel { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn boot_prefers_the_running_kernel_then_the_newest() {
        let dir = temp("boot");
        for release in ["6.9.1-test", "6.10.2-test", "5.15.0-test"] {
            fs::write(dir.join(format!("vmlinuz-{release}")), fake_bzimage(0x020f)).unwrap();
        }
        fs::write(dir.join("config-7.0.0"), b"not a kernel").unwrap();
        let own = find_in_boot(&dir, "6.9.1-test").unwrap();
        assert_eq!(own.origin, Origin::Running);
        assert!(own.path.ends_with("vmlinuz-6.9.1-test"));
        // 6.10 is newer than 6.9: numbers compare as numbers, not as text.
        let newest = find_in_boot(&dir, "6.18.44-elsewhere").unwrap();
        assert!(newest.path.ends_with("vmlinuz-6.10.2-test"), "{newest:?}");
        assert_eq!(
            newest.origin,
            Origin::Newest {
                running: "6.18.44-elsewhere".into()
            }
        );
        assert!(newest.describe().contains("has no image in /boot"));
        fs::remove_dir_all(&dir).unwrap();
        let empty = temp("empty");
        assert!(matches!(
            find_in_boot(&empty, "x"),
            Err(KernelError::NotFound)
        ));
        fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn the_cache_follows_xdg_then_home() {
        // Read-only check of the rule on this process's environment.
        let dir = cache_dir();
        match std::env::var_os("XDG_CACHE_HOME").filter(|v| Path::new(v).is_absolute()) {
            Some(xdg) => assert_eq!(dir, Some(PathBuf::from(xdg).join("isolab"))),
            None => {
                if let Some(home) = std::env::var_os("HOME") {
                    assert_eq!(dir, Some(PathBuf::from(home).join(".cache/isolab")));
                }
            }
        }
    }
}
