//! Building a student's crate.
//!
//! Every step crate lives in the `labs/` workspace, so `cargo build` shares that workspace's
//! target directory and lock file: the dependencies (nix, caps, kvm-ioctls) are compiled once,
//! for the first step, and every later step is a few seconds. The program's path comes from
//! cargo's own JSON messages (`compiler-artifact`), so it is right whatever target directory
//! cargo chose (`CARGO_TARGET_DIR` included).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    /// A stop was requested during the build; cargo and its compilers were stopped.
    #[error("the build was stopped")]
    Interrupted,
    /// Waiting for cargo failed.
    #[error("waiting for cargo: {0}")]
    Wait(std::io::Error),
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
    let mut child = Command::new(cargo)
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process group of its own, led by cargo: its compilers, build scripts and linkers
        // join it, so one kill(2) of the group stops the whole build (see `stop`).
        .process_group(0)
        .spawn()
        .map_err(BuildError::NoCargo)?;
    // Read both pipes while cargo runs: a pipe holds 64 KiB, and a cargo that cannot write its
    // messages would wait for the lab while the lab waits for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait(&mut child)?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout);
    if !status.success() {
        return Err(BuildError::Compile(first_error(&String::from_utf8_lossy(
            &stderr,
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

/// Wait for cargo to end, or for a stop request: then stop the build and say so.
///
/// The lab catches SIGINT and SIGTERM (see [`isolab_host::interrupt`]), so they no longer end it, nor
/// reach cargo, which runs in a process group of its own: a Ctrl-C at the terminal is sent to
/// the terminal's foreground group, the lab's. Waiting with `interrupt::sleep` wakes at once on
/// a stop request; the lab then stops the build itself.
fn wait(child: &mut Child) -> Result<ExitStatus, BuildError> {
    loop {
        if let Some(status) = child.try_wait().map_err(BuildError::Wait)? {
            return Ok(status);
        }
        if isolab_host::interrupt::requested().is_some() {
            stop(child);
            return Err(BuildError::Interrupted);
        }
        isolab_host::interrupt::sleep(Duration::from_millis(50));
    }
}

/// Stop cargo and everything it started: SIGTERM to its process group (cargo and rustc end on
/// it, and cargo then removes its partial outputs), SIGKILL to what is left after 5 s. Then
/// reap cargo.
fn stop(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    // The group's id is cargo's pid (`process_group(0)` made cargo its leader). Until cargo is
    // reaped, at the very end, its pid cannot be reused: the group named is this build's.
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // WNOWAIT: has cargo ended? — without reaping it yet.
        match waitid(
            Id::Pid(group),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    // Whatever of the build outlived cargo (ESRCH if nothing did).
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
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
