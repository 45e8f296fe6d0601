//! The vmlinux inside a bzImage: what the kernel's own decompressor would produce, done on the
//! host instead.
//!
//! A bzImage's header says where its compressed kernel (the *payload*) lies: `payload_offset`
//! and `payload_length`, from boot protocol 2.08 on. The payload is `vmlinux` — the kernel as an
//! ELF file, stripped of symbols — compressed with whatever the kernel was configured for, with
//! its uncompressed length appended as 4 little-endian bytes. Debian compresses with **XZ**, with
//! the **x86 BCJ filter** before LZMA2: BCJ rewrites the relative targets of `call`/`jmp`
//! instructions (0xE8/0xE9) as absolute addresses, so that repeated calls to one function become
//! repeated byte strings that LZMA2 compresses well. Decoding undoes both, in reverse order.
//! The kernel's decompressor uses the XZ Embedded decoder; here `lzma-rust2`, a pure-Rust port of
//! XZ for Java, which implements the BCJ filters of the .xz format.
//!
//! Why bother: booting the bzImage runs that decompressor *inside the guest*, in guest ring 0,
//! with SSE — on nested PVM ring 0 is emulated about a thousand times slower, and SSE there stops
//! the vCPU. The extracted vmlinux boots through its PVH entry and skips the decompressor
//! entirely; on hardware it saves the guest a few tens of milliseconds of every boot, too.
//!
//! Extraction takes about a second for Debian's kernel, so the result is cached (see
//! [`cached_vmlinux`]).

use crate::guest_kernel::{cache_dir, KernelImage, SetupHeader};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Reading the bzImage or writing the result failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the lab was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Not a bzImage with a payload (boot protocol older than 2.08, or not a bzImage).
    #[error(
        "{0} has no payload fields in its boot-protocol header (protocol 2.08 or later needed)"
    )]
    NoPayload(PathBuf),
    /// A compression this lab does not decode.
    #[error("{path}: the kernel is compressed with {format}; isolab decodes XZ and gzip (boot the bzImage itself, or build a kernel with `lab kernel build`)")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The format, from its magic bytes.
        format: &'static str,
    },
    /// The decoder failed: a damaged or truncated payload.
    #[error("decompressing the kernel in {path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: io::Error,
    },
    /// The decompressed payload is not an ELF file.
    #[error("the payload of {0} decompresses to something that is not an ELF vmlinux")]
    NotElf(PathBuf),
    /// The bzImage could not be opened, or was refused (not a regular file, too large).
    #[error(transparent)]
    Kernel(#[from] crate::guest_kernel::KernelError),
}

/// The compression of a payload, from its first bytes.
pub fn compression(magic: &[u8]) -> &'static str {
    match magic {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [b'B', b'Z', b'h', ..] => "bzip2",
        [0x02, 0x21, 0x4c, 0x18, ..] => "lz4",
        [0x89, b'L', b'Z', b'O', ..] => "lzo",
        [0x5d, 0x00, ..] => "lzma",
        _ => "an unknown format",
    }
}

/// The most a vmlinux may decompress to (real ones are tens of MiB): a bound on what a hostile
/// bzImage, a small file that decompresses to gigabytes, can make the lab allocate.
const MAX_VMLINUX: u64 = 1 << 30;

/// Decompress the vmlinux ELF out of the bzImage at `path`.
pub fn vmlinux_from_bzimage(path: &Path) -> Result<Vec<u8>, ExtractError> {
    let io_err = |action| {
        move |source| ExtractError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    // A regular file of at most MAX_KERNEL bytes: the payload read below lies inside it.
    let mut file = crate::guest_kernel::open(path)?;
    let mut head = vec![0u8; 0x300];
    file.read_exact(&mut head).map_err(io_err("read"))?;
    let (offset, length) = SetupHeader::parse(&head)
        .and_then(|h| h.payload())
        .ok_or_else(|| ExtractError::NoPayload(path.to_path_buf()))?;
    // The header's numbers are the file's word, not ours: a payload must lie inside the file.
    let size = file.metadata().map_err(io_err("stat"))?.len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(ExtractError::NoPayload(path.to_path_buf()));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_err("seek"))?;
    let mut payload = vec![0u8; length as usize];
    file.read_exact(&mut payload).map_err(io_err("read"))?;

    // The last 4 bytes are the uncompressed size (the build's `size_append`), a useful capacity.
    let size_hint = payload
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes(payload[at..].try_into().expect("4 bytes")) as usize)
        .filter(|&n| n < 1 << 30)
        .unwrap_or(0);
    let mut out = Vec::with_capacity(size_hint);
    let decode_err = |source| ExtractError::Decode {
        path: path.to_path_buf(),
        source,
    };
    match compression(&payload) {
        "xz" => {
            // One stream; the size bytes after it are not part of the .xz format.
            let xz = lzma_rust2::XzReader::new(&payload[..], false);
            xz.take(MAX_VMLINUX)
                .read_to_end(&mut out)
                .map_err(decode_err)?;
        }
        "gzip" => {
            flate2::read::GzDecoder::new(&payload[..])
                .take(MAX_VMLINUX)
                .read_to_end(&mut out)
                .map_err(decode_err)?;
        }
        format => {
            return Err(ExtractError::Unsupported {
                path: path.to_path_buf(),
                format,
            })
        }
    }
    if !out.starts_with(b"\x7fELF") {
        return Err(ExtractError::NotElf(path.to_path_buf()));
    }
    Ok(out)
}

/// The vmlinux of `image`: the file itself for an ELF image; for a bzImage the copy `lab kernel
/// build` left beside it, or else one extracted once into `<cache>/vmlinux/` (named after the
/// bzImage's name, size and modification time, so a new kernel is never mistaken for an old one).
pub fn cached_vmlinux(image: &KernelImage) -> Result<PathBuf, ExtractError> {
    if image.kind == crate::guest_kernel::ImageKind::Elf {
        return Ok(image.path.clone());
    }
    if let Some(sibling) = image.path.parent().map(|d| d.join("vmlinux")) {
        if image.origin == crate::guest_kernel::Origin::Built && sibling.is_file() {
            return Ok(sibling);
        }
    }
    let meta = fs::metadata(&image.path).map_err(|source| ExtractError::Io {
        action: "stat",
        path: image.path.clone(),
        source,
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let name = image
        .path
        .file_name()
        .map_or_else(|| "kernel".into(), |n| n.to_string_lossy().into_owned());
    let dir = cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("vmlinux");
    let target = dir.join(format!("{name}-{}-{mtime}.elf", meta.len()));
    if target.is_file() {
        return Ok(target);
    }
    let elf = vmlinux_from_bzimage(&image.path)?;
    let write_err = |source| ExtractError::Io {
        action: "write",
        path: target.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(write_err)?;
    // Write beside the target, then rename: a concurrent lab never reads half a file.
    let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let written = File::create(&partial)
        .and_then(|mut f| f.write_all(&elf).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&partial, &target));
    if let Err(e) = written {
        let _ = fs::remove_file(&partial);
        return Err(write_err(e));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressions_are_named_by_their_magic() {
        assert_eq!(compression(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]), "xz");
        assert_eq!(compression(&[0x1f, 0x8b, 8]), "gzip");
        assert_eq!(compression(&[0x28, 0xb5, 0x2f, 0xfd]), "zstd");
        assert_eq!(compression(b"nope"), "an unknown format");
    }

    /// A bzImage-shaped file whose payload is `payload` plus the 4 size bytes.
    fn fake_bzimage(payload: &[u8], uncompressed: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0x1f1] = 1;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        b.extend_from_slice(payload);
        b.extend_from_slice(&uncompressed.to_le_bytes());
        b
    }

    #[test]
    fn a_gzip_payload_is_extracted_and_checked_for_elf() {
        let dir = std::env::temp_dir().join(format!("isolab-extract-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let elf = b"\x7fELF and the rest of a kernel".repeat(100);
        let good = dir.join("good");
        fs::write(&good, fake_bzimage(&gz(&elf), elf.len() as u32)).unwrap();
        assert_eq!(vmlinux_from_bzimage(&good).unwrap(), elf);

        let not_elf = dir.join("not-elf");
        fs::write(&not_elf, fake_bzimage(&gz(b"MZ"), 2)).unwrap();
        assert!(matches!(
            vmlinux_from_bzimage(&not_elf),
            Err(ExtractError::NotElf(_))
        ));

        let zstd = dir.join("zstd");
        fs::write(&zstd, fake_bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], 9)).unwrap();
        assert!(matches!(
            vmlinux_from_bzimage(&zstd),
            Err(ExtractError::Unsupported { format: "zstd", .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The real thing: Debian's XZ+BCJ kernel, checked against the `xz` program's own decoding.
    #[test]
    #[ignore = "needs /boot/vmlinuz-* (XZ-compressed: apt install linux-image-amd64) and xz (CI runs it)"]
    fn debians_xz_kernel_extracts_exactly_as_xz_decodes_it() {
        let image = crate::guest_kernel::find_in_boot(
            Path::new("/boot"),
            &isolab_host::facts::kernel_release(),
        )
        .unwrap_or_else(|e| {
            panic!("this test needs a /boot/vmlinuz-* (apt install linux-image-amd64): {e}")
        });
        let ours = vmlinux_from_bzimage(&image.path).unwrap();
        assert_eq!(&ours[..4], b"\x7fELF");
        assert_eq!(ours[4], 2, "a 64-bit ELF");

        // Cut the payload out by hand and let xz(1) decode it: the bytes must agree.
        let file = fs::read(&image.path).unwrap();
        let (offset, len) = SetupHeader::parse(&file).unwrap().payload().unwrap();
        let payload = &file[offset as usize..(offset + len) as usize];
        assert_eq!(
            compression(payload),
            "xz",
            "{} is not XZ-compressed, as Debian's kernels are",
            image.path.display()
        );
        let mut xz = std::process::Command::new("xz")
            .args(["-dc", "--single-stream"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("this test needs xz (apt install xz-utils): {e}"));
        let mut stdin = xz.stdin.take().unwrap();
        let payload = payload.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&payload));
        let theirs = xz.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert_eq!(ours.len(), theirs.stdout.len());
        assert!(ours == theirs.stdout, "the decoded bytes differ");
        // And the size the build appended agrees.
        let appended =
            u32::from_le_bytes(file[(offset + len - 4) as usize..][..4].try_into().unwrap());
        assert_eq!(appended as usize, ours.len());
    }
}
