//! The image as a VM sees it: a disk holding an ext4 file system built from the layers.
//!
//! A VM has no overlayfs of the host's to share: its kernel reads blocks from a disk. So the
//! layers are flattened into one file system image (`mke2fs -d DIR` copies a directory tree into
//! the new file system without mounting it), and each VM gets a copy of it — or, as an option,
//! all VMs one read-only disk. Either way each guest reads the libraries into its own page
//! cache, inside its own guest memory.

use crate::image::overlay::Mounted;
use crate::image::{Image, ImageError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file system image of the layers of an image.
#[derive(Debug)]
pub struct Ext4Image {
    path: PathBuf,
}

impl Ext4Image {
    /// Build `path` from `image`'s layers, seen through a read-only overlay at `view` (an empty
    /// directory): room for the files, their metadata and a journal, in 4 KiB blocks.
    pub fn build(image: &Image, view: &Path, path: &Path) -> Result<Ext4Image, ImageError> {
        let mounted = Mounted::mount(view, &image.lowerdir(), None)?;
        let bytes = image.bytes() + image.bytes() / 4 + (16 << 20);
        let blocks = bytes.div_ceil(4096);
        let out = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "isolab", "-d"])
            .arg(mounted.path())
            .arg(path)
            .arg(blocks.to_string())
            .output()
            .map_err(|e| ImageError::Program {
                program: "mke2fs".into(),
                detail: format!("{e} (Debian/Ubuntu: sudo apt install e2fsprogs)"),
            })?;
        drop(mounted);
        if !out.status.success() {
            let _ = fs::remove_file(path);
            // One line: the first of mke2fs's complaint. A mke2fs that does not know these
            // options (BusyBox has one, first in some PATHs) gets the fix named.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed");
            let hint = if stderr.contains("invalid option") || stderr.contains("BusyBox") {
                " (this is not e2fsprogs' mke2fs, which fills a file system from a directory with \
                 -d: install e2fsprogs and put it first in PATH)"
            } else {
                ""
            };
            return Err(ImageError::Program {
                program: "mke2fs".into(),
                detail: format!("{}{hint}", first.trim()),
            });
        }
        Ok(Ext4Image {
            path: path.to_path_buf(),
        })
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageSpec;

    #[test]
    fn the_layers_become_one_file_system_holding_both() {
        let dir = std::env::temp_dir().join(format!("isolab-ext4-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spec = ImageSpec {
            lib_mib: 2,
            app_version: 7,
        };
        let image = Image::build(&dir.join("image"), &spec, b"x").unwrap();
        fs::create_dir(dir.join("view")).unwrap();
        let disk = Ext4Image::build(&image, &dir.join("view"), &dir.join("disk.img")).unwrap();
        // debugfs reads a file system image without mounting it.
        let cat = Command::new("debugfs")
            .args(["-R", "cat /etc/app.conf"])
            .arg(disk.path())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&cat.stdout).contains("version = 7"));
        let ls = Command::new("debugfs")
            .args(["-R", "ls -l /lib/isolab"])
            .arg(disk.path())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&ls.stdout).contains("libisolab-7.so"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
