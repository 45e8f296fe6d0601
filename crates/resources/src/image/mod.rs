//! The lab's own layered image: what "images are layered, small and shared" is measured with.
//!
//! An image is a stack of **layers**, each a directory tree; the one an instance sees is their
//! union, the upper layers' files over the lower ones'. isolab's image has two:
//!
//! ```text
//!   app   /etc/app.conf                       a few KiB: what changes from one version to the next
//!   base  /workload, /etc/os-release,         the program and its "shared libraries":
//!         /lib/isolab/libisolab-*.so           deterministic files, 64 MiB by default
//! ```
//!
//! The workload, started with `libs=/lib/isolab`, maps every library and reads every page of it
//! before it runs its kernel, as a dynamically linked program's loader maps and relocates its
//! libraries. So an instance costs what a real program costs: its libraries' pages must be in
//! memory. Who pays for them is the lesson:
//!
//! * **containers** mount the layers with **overlayfs** ([`overlay`]): every container reads the
//!   same files of the same lower layers, so their pages sit **once** in the host's page cache,
//!   whatever the number of containers; each container writes only to an upper layer of its own;
//! * **VMs** get a disk built from the layers ([`ext4`]): each guest reads it into **its own**
//!   page cache, in its own guest memory — once per VM, unless the host merges identical pages
//!   (KSM, [`crate::ksm`]) or the VMs share one read-only disk;
//! * **Docker** builds the same layers itself ([`docker`]), and rebuilds only the layers whose
//!   inputs changed.

pub mod docker;
pub mod ext4;
pub mod overlay;
pub mod pagecache;

use isolab_kernels::rng::Rng;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the lab was doing.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A program the image needs failed or is missing.
    #[error("{program}: {detail}")]
    Program {
        /// Which.
        program: String,
        /// What happened.
        detail: String,
    },
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

/// Where the libraries are inside an instance.
pub const LIBS_INSIDE: &str = "/lib/isolab";

/// How many library files the base layer holds (its size is split among them).
pub const LIBRARIES: u64 = 8;

/// What to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// MiB of libraries in the base layer.
    pub lib_mib: u64,
    /// The app layer's version: changing it changes the top layer only.
    pub app_version: u32,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            lib_mib: 64,
            app_version: 1,
        }
    }
}

/// One layer: a directory, and the bytes its files hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// `base` or `app`.
    pub name: &'static str,
    /// The directory.
    pub path: PathBuf,
    /// The bytes of its files.
    pub bytes: u64,
}

/// A built image: its layers, lowest first.
#[derive(Clone, Debug)]
pub struct Image {
    /// What it was built from.
    pub spec: ImageSpec,
    /// `base`, then `app`.
    pub layers: Vec<Layer>,
}

impl Image {
    /// Build the image of `spec` in `dir` (which must not exist yet): the base layer with the
    /// workload and the libraries, the app layer above it.
    pub fn build(dir: &Path, spec: &ImageSpec, workload: &[u8]) -> Result<Image, ImageError> {
        mkdir(dir)?;
        let base = dir.join("base");
        write_file(&base.join("workload"), workload, 0o755)?;
        write_file(
            &base.join("etc/os-release"),
            b"NAME=\"isolab\"\nID=isolab\nPRETTY_NAME=\"the lab's own image\"\n",
            0o644,
        )?;
        let libs = base.join(LIBS_INSIDE.trim_start_matches('/'));
        let per_lib = (spec.lib_mib << 20) / LIBRARIES;
        for i in 0..LIBRARIES {
            write_library(&libs.join(library_name(i)), per_lib, i)?;
        }
        let app = dir.join("app");
        write_file(
            &app.join("etc/app.conf"),
            format!("# the app layer\nversion = {}\n", spec.app_version).as_bytes(),
            0o644,
        )?;
        let layers = [("base", base), ("app", app)]
            .into_iter()
            .map(|(name, path)| {
                Ok(Layer {
                    name,
                    bytes: tree_bytes(&path)?,
                    path,
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        Ok(Image {
            spec: *spec,
            layers,
        })
    }

    /// The layers as overlayfs' `lowerdir=` wants them: top first, `:`-separated.
    pub fn lowerdir(&self) -> String {
        self.layers
            .iter()
            .rev()
            .map(|l| l.path.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Every regular file of every layer: what the page cache holds of the image.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for l in &self.layers {
            collect_files(&l.path, &mut out);
        }
        out
    }

    /// The bytes of all its layers.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.bytes).sum()
    }

    /// The image in words: `the lab's layered image: base 64.0 MiB, app 28 B`.
    pub fn describe(&self) -> String {
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{} {}", l.name, isolab_host::format::bytes(l.bytes as f64)))
            .collect();
        format!("the lab's layered image: {}", layers.join(", "))
    }
}

/// The name of library `i`.
pub fn library_name(i: u64) -> String {
    format!("libisolab-{i}.so")
}

fn mkdir(path: &Path) -> Result<(), ImageError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(io_err("create", path))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ImageError> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let mut f = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))
}

/// A library of `bytes` deterministic bytes: the stream of a generator seeded by its number, so
/// every lab builds the same image, and an instance can check what it read.
fn write_library(path: &Path, bytes: u64, seed: u64) -> Result<(), ImageError> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let f = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("create", path))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, f);
    let mut rng = Rng::new(0x11B5_0000 + seed);
    let mut left = bytes;
    let mut chunk = vec![0u8; 1 << 16];
    while left > 0 {
        let n = chunk.len().min(left as usize);
        for w in chunk[..n].chunks_mut(8) {
            let v = rng.next_u64().to_le_bytes();
            w.copy_from_slice(&v[..w.len()]);
        }
        out.write_all(&chunk[..n]).map_err(io_err("write", path))?;
        left -= n as u64;
    }
    out.flush().map_err(io_err("write", path))?;
    // On the disk before anyone measures a cold start: the kernel drops only clean pages.
    out.get_ref().sync_all().map_err(io_err("sync", path))
}

/// Every regular file under `dir`, appended to `out` (sorted), not following links.
pub fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            collect_files(&e.path(), out);
        } else if kind.is_file() {
            out.push(e.path());
        }
    }
    out.sort();
}

fn tree_bytes(dir: &Path) -> Result<u64, ImageError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files
        .iter()
        .map(|f| {
            fs::metadata(f)
                .map(|m| m.len())
                .map_err(io_err("measure", f))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_has_a_base_and_an_app_layer_of_the_asked_size() {
        let dir = std::env::temp_dir().join(format!("isolab-image-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spec = ImageSpec {
            lib_mib: 8,
            app_version: 3,
        };
        let image = Image::build(&dir, &spec, b"\x7fELF").unwrap();
        assert_eq!(
            image.layers.iter().map(|l| l.name).collect::<Vec<_>>(),
            ["base", "app"]
        );
        let base = &image.layers[0];
        assert!(
            base.bytes >= 8 << 20 && base.bytes < (8 << 20) + 4096,
            "{}",
            base.bytes
        );
        assert!(image.layers[1].bytes < 4096);
        assert_eq!(
            image.lowerdir(),
            format!(
                "{}:{}",
                dir.join("app").display(),
                dir.join("base").display()
            )
        );
        let conf = fs::read_to_string(dir.join("app/etc/app.conf")).unwrap();
        assert!(conf.contains("version = 3"));
        // The same spec builds the same bytes: every lab's image is the same.
        let again = dir.with_extension("again");
        let _ = fs::remove_dir_all(&again);
        Image::build(&again, &spec, b"\x7fELF").unwrap();
        let lib = format!("base/lib/isolab/{}", library_name(5));
        assert_eq!(
            fs::read(dir.join(&lib)).unwrap(),
            fs::read(again.join(&lib)).unwrap()
        );
        assert_eq!(image.files().len(), 2 + LIBRARIES as usize + 1);
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&again).unwrap();
    }
}
