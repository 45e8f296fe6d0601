//! Where the profiles come from, and how a run records which one it used.
//!
//! Docker does not read its default profile from a file: `dockerd` carries it compiled in. Its
//! source is `profiles/seccomp/default.json` in Docker's (moby's) source tree, and Debian
//! ships that source tree, the JSON file included, in the package
//! `golang-github-docker-docker-dev`, built from the same source package (`docker.io`) as
//! Debian's `dockerd`: the file is the profile that `dockerd` of the same version applies. The lab
//! loads it from there at run time ([`DOCKER`]), so it compiles what Docker compiles, and never
//! carries a copy of its own.
//!
//! Podman's default profile is a different file, `/usr/share/containers/seccomp.json` from the
//! package `golang-github-containers-common` ([`PODMAN`]). It descends from Docker's but went its
//! own way: it allows `unshare`, `clone` with namespace flags, `mount` and `keyctl` to every
//! container (Podman runs rootless containers that build namespaces of their own), where
//! Docker's allows them only with `CAP_SYS_ADMIN`. `--profile podman` loads it.
//!
//! A file can change under the same name (an upgrade, a hand edit), so a run records the file's
//! path, the package and version that installed it (from dpkg's own records), and a SHA-256
//! digest of its bytes ([`Provenance`]).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A profile file a Debian package installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shipped {
    /// Where the package puts it.
    pub path: &'static str,
    /// The package.
    pub package: &'static str,
    /// What it is, in words.
    pub what: &'static str,
}

/// Docker's default profile: moby's `profiles/seccomp/default.json`.
pub const DOCKER: Shipped = Shipped {
    path: "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json",
    package: "golang-github-docker-docker-dev",
    what: "Docker's default profile",
};

/// Podman's default profile: containers/common's `seccomp.json`.
pub const PODMAN: Shipped = Shipped {
    path: "/usr/share/containers/seccomp.json",
    package: "golang-github-containers-common",
    what: "Podman's default profile",
};

/// Every profile file the lab knows a package for.
pub const SHIPPED: [Shipped; 2] = [DOCKER, PODMAN];

impl Shipped {
    /// The known file at `path`, if it is one.
    pub fn at(path: &Path) -> Option<Shipped> {
        SHIPPED.into_iter().find(|s| Path::new(s.path) == path)
    }
}

/// Which file a profile was read from, exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The file.
    pub path: PathBuf,
    /// The package that installed it and that package's version, when dpkg says one did.
    pub package: Option<(String, String)>,
    /// SHA-256 of its bytes, in hex.
    pub sha256: String,
}

impl Provenance {
    /// The provenance of `text`, read from `path`; asks dpkg's records who installed the file.
    pub fn of(path: &Path, text: &str) -> Provenance {
        Provenance {
            path: path.to_path_buf(),
            package: installed_by(path, Path::new(DPKG)),
            sha256: sha256_hex(text.as_bytes()),
        }
    }
}

impl std::fmt::Display for Provenance {
    /// `PATH (PACKAGE VERSION, sha256 0123456789abcdef…)`: what the results record.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (", self.path.display())?;
        if let Some((package, version)) = &self.package {
            write!(f, "{package} {version}, ")?;
        }
        write!(f, "sha256 {})", self.sha256)
    }
}

/// dpkg's database.
const DPKG: &str = "/var/lib/dpkg";

/// The package (and its version) that installed `path`, for the known files: dpkg lists a
/// package's files in `info/PACKAGE.list` and its version in `status`.
fn installed_by(path: &Path, dpkg: &Path) -> Option<(String, String)> {
    let shipped = Shipped::at(path)?;
    let list = std::fs::read_to_string(dpkg.join(format!("info/{}.list", shipped.package))).ok()?;
    if !list.lines().any(|l| Path::new(l) == path) {
        return None;
    }
    let status = std::fs::read_to_string(dpkg.join("status")).ok()?;
    let version = package_version(&status, shipped.package)?;
    Some((shipped.package.to_string(), version))
}

/// The version of installed `package` in dpkg's `status` file: paragraphs of `Field: value`
/// lines separated by blank lines.
fn package_version(status: &str, package: &str) -> Option<String> {
    status.split("\n\n").find_map(|paragraph| {
        let field = |name: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        (field("Package") == Some(package) && installed)
            .then(|| field("Version").map(str::to_string))
            .flatten()
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_installed_packages_paragraph() {
        let status = "Package: other\nStatus: install ok installed\nVersion: 1\n\n\
                      Package: golang-github-docker-docker-dev\nStatus: deinstall ok config-files\n\
                      Version: 19.0\n\n\
                      Package: golang-github-docker-docker-dev\nStatus: install ok installed\n\
                      Architecture: all\nVersion: 20.10.24+dfsg1-1+deb12u1\n";
        assert_eq!(
            package_version(status, "golang-github-docker-docker-dev").as_deref(),
            Some("20.10.24+dfsg1-1+deb12u1")
        );
        assert_eq!(package_version(status, "docker.io"), None);
    }

    #[test]
    fn a_file_is_credited_to_a_package_only_when_dpkg_lists_it() {
        let dir = std::env::temp_dir().join(format!("isolab-dpkg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("info")).unwrap();
        std::fs::write(
            dir.join("status"),
            "Package: golang-github-containers-common\nStatus: install ok installed\n\
             Version: 0.50.1+ds1-4\n",
        )
        .unwrap();
        let list = dir.join("info/golang-github-containers-common.list");
        std::fs::write(&list, "/.\n/usr/share/containers\n").unwrap();
        let podman = Path::new(PODMAN.path);
        assert_eq!(
            installed_by(podman, &dir),
            None,
            "not in the package's list"
        );
        std::fs::write(&list, format!("/.\n{}\n", PODMAN.path)).unwrap();
        assert_eq!(
            installed_by(podman, &dir),
            Some((PODMAN.package.into(), "0.50.1+ds1-4".into()))
        );
        assert_eq!(installed_by(Path::new("/etc/mine.json"), &dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_record_names_file_package_and_digest() {
        let p = Provenance {
            path: PathBuf::from(DOCKER.path),
            package: Some((DOCKER.package.into(), "20.10.24".into())),
            sha256: sha256_hex(b"abc"),
        };
        assert_eq!(
            p.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            p.to_string(),
            format!(
                "{} (golang-github-docker-docker-dev 20.10.24, sha256 {})",
                DOCKER.path, p.sha256
            )
        );
    }

    #[test]
    fn the_installed_docker_profile_is_credited_to_its_package() {
        let path = Path::new(DOCKER.path);
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!("{}: {e} (sudo apt install {})", DOCKER.path, DOCKER.package)
        });
        let p = Provenance::of(path, &text);
        let (package, version) = p.package.expect("dpkg lists the file");
        assert_eq!(package, DOCKER.package);
        assert!(!version.is_empty());
        assert_eq!(p.sha256.len(), 64);
    }
}
