//! overlayfs: one image, many containers, each with a writable layer of its own.
//!
//! An overlay mount stacks directories: `lowerdir=app:base` (read-only, the leftmost on top),
//! `upperdir` (where this mount's writes go) and `workdir` (overlayfs' scratch space, on the same
//! file system as the upper directory). Reading a file finds it in the topmost layer that has it;
//! writing a lower file first copies it up into the upper directory. The lower layers are never
//! written, so any number of overlay mounts can share them — and since they read the very same
//! files, the kernel keeps one copy of their pages in the page cache for all of them.

use crate::image::{io_err, ImageError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The options of an overlay mount of `lowerdir`, writable through `upper` (with its `work`
/// directory) or read-only without one.
pub fn options(lowerdir: &str, upper: Option<(&Path, &Path)>) -> String {
    match upper {
        Some((upper, work)) => format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        ),
        None => format!("lowerdir={lowerdir}"),
    }
}

/// An instance's writable layer: `upper` and `work` directories under one directory, owned by
/// `owner` (the instance's root as the host sees it, or the lab).
#[derive(Debug)]
pub struct Upper {
    dir: PathBuf,
}

impl Upper {
    /// Make `dir/upper` and `dir/work`.
    pub fn make(dir: &Path, owner: Option<(u32, u32)>) -> Result<Upper, ImageError> {
        for d in [dir.to_path_buf(), dir.join("upper"), dir.join("work")] {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&d)
                .map_err(io_err("create", &d))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&d, Some(uid), Some(gid))
                    .map_err(io_err("give to the instance", &d))?;
            }
        }
        Ok(Upper {
            dir: dir.to_path_buf(),
        })
    }

    /// Where this instance's writes go.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// overlayfs' work directory.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

impl Drop for Upper {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An overlay mounted in the lab's own mount namespace (an OCI bundle's root, the view an ext4
/// image is built from), unmounted when dropped. A lab killed first leaves it below its work
/// directory, whose removal unmounts whatever is mounted inside.
#[derive(Debug)]
pub struct Mounted {
    at: PathBuf,
}

impl Mounted {
    /// Mount the overlay of `lowerdir` (and `upper`, if any) at `at` (an existing directory).
    pub fn mount(at: &Path, lowerdir: &str, upper: Option<&Upper>) -> Result<Mounted, ImageError> {
        let (up, work) = match upper {
            Some(u) => (Some(u.upper()), Some(u.work())),
            None => (None, None),
        };
        let opts = options(lowerdir, up.as_deref().zip(work.as_deref()));
        mount(
            Some("overlay"),
            at,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| io_err("mount an overlay at", at)(e.into()))?;
        Ok(Mounted {
            at: at.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.at, MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Image, ImageSpec};

    #[test]
    fn two_overlays_share_the_lower_layers_and_keep_their_writes_apart() {
        let dir = std::env::temp_dir().join(format!("isolab-overlay-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spec = ImageSpec {
            lib_mib: 1,
            app_version: 1,
        };
        let image = Image::build(&dir.join("image"), &spec, b"x").unwrap();
        let mounts: Vec<(Upper, PathBuf)> = ["a", "b"]
            .iter()
            .map(|n| {
                let at = dir.join(format!("root-{n}"));
                fs::create_dir(&at).unwrap();
                (Upper::make(&dir.join(format!("rw-{n}")), None).unwrap(), at)
            })
            .collect();
        let mounted: Vec<Mounted> = mounts
            .iter()
            .map(|(u, at)| Mounted::mount(at, &image.lowerdir(), Some(u)).unwrap())
            .collect();
        // The union: the base's workload and the app's configuration.
        for m in &mounted {
            assert!(m.path().join("workload").exists());
            assert!(m.path().join("etc/app.conf").exists());
        }
        fs::write(mounted[0].path().join("etc/app.conf"), "changed").unwrap();
        // The write went to a's upper layer, not to the image nor to b.
        assert_eq!(
            fs::read_to_string(mounts[0].0.upper().join("etc/app.conf")).unwrap(),
            "changed"
        );
        assert!(fs::read_to_string(mounted[1].path().join("etc/app.conf"))
            .unwrap()
            .contains("version = 1"));
        assert!(fs::read_to_string(dir.join("image/app/etc/app.conf"))
            .unwrap()
            .contains("version = 1"));
        drop(mounted);
        drop(mounts);
        fs::remove_dir_all(&dir).unwrap();
    }
}
