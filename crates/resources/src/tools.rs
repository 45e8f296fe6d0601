//! The field's tools — fio, netperf, iperf3 — carried into an instance.
//!
//! `lab validate` runs the tools the field trusts beside the lab's own disk and network kernels,
//! inside the same instances. A container's root holds only the workload, and the tools are
//! ordinary dynamically linked programs (Debian's packages): each needs its shared libraries
//! and the dynamic loader that maps them. So the lab makes one directory with everything they
//! need, as a container image that has them installed would:
//!
//! ```text
//! tools/
//!   ld.so                     the dynamic loader (/lib64/ld-linux-x86-64.so.2)
//!   bin/fio bin/netperf bin/iperf3
//!   lib/libc.so.6 lib/libaio.so.1 …   every library `ldd` says they load
//! ```
//!
//! A process runs the tools from there too, so both run the same files. The workload starts a
//! tool through the loader (`ld.so --library-path tools/lib tools/bin/fio …`): a program's
//! loader is named by an absolute path in its `PT_INTERP` header, which would be looked up in
//! the container's root, where it is not; started as a program, the loader maps the tool and
//! takes the libraries from the directory it is told. A container sees the directory at
//! `/tools`, read-only (`isolab_container::rootfs`).
//!
//! The directory lives in the lab's work directory and goes with it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tools, each with the Debian package that installs it.
pub const TOOLS: [(&str, &str); 3] = [("fio", "fio"), ("netperf", "netperf"), ("iperf3", "iperf3")];

/// The servers the tools talk to, run by the lab beside its peer, with their packages.
pub const SERVERS: [(&str, &str); 2] = [("netserver", "netperf"), ("iperf3", "iperf3")];

/// Where a container finds the tools.
pub const TOOLS_INSIDE: &str = "/tools";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    /// A tool is not installed.
    #[error(
        "{tool} is not installed (apt-get install {package}{note})",
        note = if *package == "netperf" { "; netperf is in Debian's non-free component" } else { "" }
    )]
    Missing {
        /// The program.
        tool: String,
        /// The package that installs it.
        package: &'static str,
    },
    /// `ldd` could not say what a tool loads.
    #[error("ldd {tool}: {why} (apt-get install libc-bin)")]
    Ldd {
        /// The program.
        tool: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// Copying a file failed.
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

impl ToolsError {
    /// True when the machine lacks what the user can install (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, ToolsError::Missing { .. } | ToolsError::Ldd { .. })
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ToolsError + 'a {
    move |source| ToolsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The installed program `name`: the first executable file of that name on `$PATH`, or in the
/// directories Debian installs programs to.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `name`, installed, or the error that says which package installs it.
pub fn require(name: &str, package: &'static str) -> Result<PathBuf, ToolsError> {
    find(name).ok_or_else(|| ToolsError::Missing {
        tool: name.to_string(),
        package,
    })
}

/// Every tool and server, installed; the first missing one is the error.
pub fn check() -> Result<(), ToolsError> {
    for (name, package) in TOOLS.into_iter().chain(SERVERS) {
        require(name, package)?;
    }
    Ok(())
}

/// The version `tool` reports, in its own words (its first line).
pub fn version(tool: &str) -> String {
    let flag = match tool {
        "netperf" => "-V",
        _ => "--version",
    };
    let Some(path) = find(tool) else {
        return "not installed".into();
    };
    Command::new(path)
        .arg(flag)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().next().map(|l| l.trim().to_string())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The shared libraries `program` loads, as `ldd` resolves them, the loader included.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, ToolsError> {
    let err = |why: String| ToolsError::Ldd {
        tool: program.to_path_buf(),
        why,
    };
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)";
            // the vDSO ("linux-vdso.so.1 (0x…)") is the kernel's, in every process already.
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// The directory of tools a lab carries into its instances (see the module docs).
#[derive(Debug)]
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Make `dir` (which must not exist) with the tools of [`TOOLS`], their libraries and the
    /// loader. Everything in it is readable and the programs executable by every user: a
    /// container's root is not the host's.
    pub fn build(dir: &Path) -> Result<Tools, ToolsError> {
        let mkdir = |p: &Path| -> Result<(), ToolsError> {
            fs::create_dir(p).map_err(io_err("make", p))?;
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", p))
        };
        mkdir(dir)?;
        mkdir(&dir.join("bin"))?;
        mkdir(&dir.join("lib"))?;
        let copy = |from: &Path, to: &Path, mode: u32| -> Result<(), ToolsError> {
            // fs::copy copies what a link points to: the libraries' names are often links.
            fs::copy(from, to).map_err(io_err("copy", from))?;
            fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", to))
        };
        for (name, package) in TOOLS {
            let program = require(name, package)?;
            copy(&program, &dir.join("bin").join(name), 0o755)?;
            for lib in shared_libraries(&program)? {
                let Some(file) = lib.file_name() else {
                    continue;
                };
                let is_loader = file.to_string_lossy().starts_with("ld-linux");
                let to = if is_loader {
                    dir.join("ld.so")
                } else {
                    dir.join("lib").join(file)
                };
                if !to.exists() {
                    copy(&lib, &to, if is_loader { 0o755 } else { 0o644 })?;
                }
            }
        }
        if !dir.join("ld.so").exists() {
            return Err(ToolsError::Ldd {
                tool: dir.join("bin"),
                why: "no dynamic loader among the libraries it names".into(),
            });
        }
        Ok(Tools {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory, on the host.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = require("isolab-no-such-tool", "isolab-pkg").unwrap_err();
        assert!(e.is_usage());
        assert!(e.to_string().contains("apt-get install isolab-pkg"), "{e}");
    }

    #[test]
    #[ignore = "needs fio, netperf (Debian's non-free component) and iperf3: apt-get install -y fio netperf iperf3 (CI runs it)"]
    fn the_loader_runs_a_tool_with_the_libraries_it_was_given() {
        if let Err(e) = check() {
            panic!("{e} (see the README's lab validate)");
        }
        let parent = std::env::temp_dir().join(format!("isolab-tools-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        fs::create_dir(&parent).unwrap();
        let tools = Tools::build(&parent.join("tools")).unwrap();
        // Started by the copied loader, from the copied libraries only: the version it prints is
        // the installed one's.
        let out = Command::new(tools.dir().join("ld.so"))
            .arg("--library-path")
            .arg(tools.dir().join("lib"))
            .arg(tools.dir().join("bin/fio"))
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        let _ = fs::remove_dir_all(&parent);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), version("fio"));
    }
}
