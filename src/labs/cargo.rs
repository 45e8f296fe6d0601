//! Building a student's crate.
//!
//! Every step crate lives in the `labs/` workspace, so `cargo build` shares that workspace's
//! target directory and lock file: the dependencies (nix, caps, kvm-ioctls) are compiled once,
//! for the first step, and every later step is a few seconds. The program's path comes from
//! cargo's own JSON messages (`compiler-artifact`), so it is right whatever target directory
//! cargo chose (`CARGO_TARGET_DIR` included).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a crate did not build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No `Cargo.toml` there.
    #[error("no crate at {0} (no Cargo.toml)")]
    NoCrate(PathBuf),
    /// cargo could not be started.
    #[error("cannot run cargo ({0}): is Rust installed, and is cargo in root's PATH?")]
    NoCargo(std::io::Error),
    /// The compiler said no; the first error, as the compiler wrote it.
    #[error("it does not compile:\n{0}")]
    Compile(String),
    /// cargo built nothing runnable.
    #[error("cargo built no program for {0}")]
    NoProgram(PathBuf),
}

/// `cargo build --release` the crate at `dir`; the path of its program.
pub fn build(dir: &Path, say: &mut dyn FnMut(&str)) -> Result<PathBuf, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoCrate(dir.to_path_buf()));
    }
    say(&format!(
        "building {} (the first build of a track compiles its dependencies: a minute or two)",
        dir.display()
    ));
    // `lab` run by `cargo run` knows its cargo; otherwise PATH's.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        // Settings of an outer build (`cargo test` of the lab) must not leak into this one.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdin(Stdio::null())
        .output()
        .map_err(BuildError::NoCargo)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BuildError::Compile(first_error(&String::from_utf8_lossy(
            &output.stderr,
        ))));
    }
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| same_file(Path::new(p), &manifest))
        })
        .find_map(|m| {
            // The file in deps/ has a hash of the crate's path in its name; the copy cargo
            // makes without it is shared by every crate of that name, e.g. a copy of the step
            // built in another checkout at the same moment.
            m["executable"].as_str()?;
            let built = m["filenames"].as_array()?.first()?.as_str()?;
            Some(PathBuf::from(built))
        })
        .ok_or_else(|| BuildError::NoProgram(dir.to_path_buf()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The first error the compiler reported, with its source lines (at most 20 lines).
fn first_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("error"))
        .unwrap_or(0);
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.is_empty())
        .map_or(lines.len(), |i| start + 1 + i)
        .min(start + 20);
    lines[start..end].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_picked_out_of_cargos_output() {
        let stderr = "   Compiling x v0.1.0\nwarning: unused\n\nerror[E0425]: cannot find value `y`\n --> src/main.rs:2:5\n  |\n2 |     y\n\nerror: aborting\n";
        let e = first_error(stderr);
        assert!(e.starts_with("error[E0425]"), "{e}");
        assert!(
            e.contains("src/main.rs:2:5") && !e.contains("aborting"),
            "{e}"
        );
    }
}
