//! Containers an OCI runtime or Docker runs for the lab, and how the ledger removes them.
//!
//! A runtime keeps state of its own that outlives the command that started a container (runc's
//! `/run/runc/<id>`, its cgroups, Docker's container records). The lab writes each container
//! into its ledger before the runtime hears of it ([`crate::ownership::Resource::OciContainer`],
//! [`crate::ownership::Resource::DockerContainer`]) and removes it through the runtime's own
//! interface — here — when the instance ends, or after a crash.

use isolab_host::format::last_lines;
use std::path::Path;
use std::process::{Command, Stdio};

/// Remove container `id` through its runtime (with the runtime's `global` options, such as
/// `--root`): `delete --force` kills whatever of it still runs and removes its state directory
/// and its cgroups. Returns what was removed (nothing when the runtime does not know the
/// container).
pub fn remove_oci(runtime: &Path, global: &[String], id: &str) -> Result<Vec<String>, String> {
    let run = |args: &[&str]| {
        Command::new(runtime)
            .args(global)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
    };
    let what = format!("{} container {id}", runtime.display());
    for attempt in 0..2 {
        let out = run(&["delete", "--force", id]).map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            return Ok(vec![format!("deleted {what}")]);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("does not exist") || stderr.contains("not found") {
            return Ok(Vec::new());
        }
        if attempt == 0 {
            // A container delete cannot stop (paused, say): kill it through the runtime first.
            let _ = run(&["kill", id, "KILL"]);
            std::thread::sleep(std::time::Duration::from_millis(100));
        } else {
            return Err(format!("{what}: delete --force failed: {}", stderr.trim()));
        }
    }
    unreachable!("the second attempt returns")
}

/// Remove container `name` through the Docker CLI `cli` (with `env`, the `DOCKER_*` variables
/// that chose its daemon): `docker rm --force` stops it and removes it. Returns what was removed
/// (nothing when the daemon does not know it: `--rm` removed it at its end).
pub fn remove_docker(
    cli: &Path,
    env: &[(String, String)],
    name: &str,
) -> Result<Vec<String>, String> {
    let out = Command::new(cli)
        .args(["rm", "--force", name])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(vec![format!("removed docker container {name}")])
    } else if stderr.contains("No such container") {
        Ok(Vec::new())
    } else {
        Err(format!("docker rm --force {name}: {}", last_lines(&stderr)))
    }
}
