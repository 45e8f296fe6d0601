//! Checkpoint or snapshot an instance, restore it, and show that the restored one computes what
//! a cold one computes.
//!
//! ```text
//! cargo run --example restore -- [--profile minimal] [--kernel K] [--iters N] [--console DIR] BACKEND…
//!                                                           (default: container oci:runc)
//! ```
//!
//! For each restorable backend (`vm`, `vm-linux`, `container`, `oci:runc`, ...): one cold run
//! of the kernel (`cpu` by default; its checksum and start-up); one checkpoint of an instance at
//! `ready` (its size and its steps); one restore from it, run to the end (its start-up — the
//! restored workload's first marker — its checksum, its phases). It prints one line each and
//! exits with 0 only when every restored checksum equals its cold one. Where a backend cannot
//! restore here (CRIU failing its own `criu check`), it says why in one line and exits with 2.
//! `--console DIR` keeps a Linux guest's consoles there (`BACKEND-cold.log`, `-checkpoint`,
//! `-restored`), with every kernel message, and prints the end of the restored one's when it
//! fails.

use isolab_backends::lab::Lab;
use isolab_backends::vm_linux::VmLinux;
use isolab_backends::{Availability, Backend, Limits, RestoreOptions};
use isolab_payload::{Kernel, Spec};
use isolab_results::Outcome;
use std::error::Error;
use std::path::{Path, PathBuf};

/// CRIU's restore logs under a checkpoint's directory.
fn logs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(logs(&path));
        } else if path.file_name().is_some_and(|n| n == "restore.log") {
            out.push(path);
        }
    }
    out
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or("-".into(), |ns| format!("{:.1}", ns as f64 / 1e6))
}

/// The backend called `name`; a Linux guest of the lab's VMM keeps its console in `console`
/// (`{name}-{stage}.log`) when asked.
fn backend(name: &str, console: Option<&Path>, stage: &str) -> Result<Box<dyn Backend>, String> {
    match (name, console) {
        ("vm-linux", Some(dir)) => Ok(Box::new(
            VmLinux::default()
                .verbose(true)
                .with_console_log(dir.join(format!("{name}-{stage}.log"))),
        )),
        _ => isolab_backends::by_name(name).ok_or_else(|| format!("no backend {name}")),
    }
}

/// The last lines of a console log.
fn tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n  ")
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut option = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        let value = args.get(at + 1).cloned();
        args.drain(at..(at + 2).min(args.len()));
        value
    };
    let minimal = option("--profile").is_some_and(|p| p == "minimal");
    let kernel = match option("--kernel") {
        Some(k) => Kernel::from_name(k.as_bytes()).ok_or(format!("no kernel {k}"))?,
        None => Kernel::Cpu,
    };
    let console = option("--console").map(PathBuf::from);
    let iters = match option("--iters") {
        Some(n) => Some(
            n.parse::<u64>()
                .map_err(|_| format!("--iters {n}: not a count"))?,
        ),
        None => None,
    };
    let mut names = args;
    if names.is_empty() {
        names = vec!["container".into(), "oci:runc".into()];
    }
    let mut lab = Lab::new()?;
    if minimal {
        // Without Docker's masks and seccomp filter.
        lab.settings.profile = isolab_container::profile::Profile::Minimal;
    }
    let default = Spec::default_for(kernel);
    let spec = match iters {
        Some(n) => Spec::new(kernel, default.mib, n),
        None => default,
    };
    let limits = Limits::default();
    let mut same = true;
    for name in &names {
        let at = |stage| backend(name, console.as_deref(), stage);
        let backend = at("cold")?;
        let restorer = backend.restorer().ok_or("not restorable")?;
        if let Availability::Unavailable(why) = restorer.restore_availability(&lab) {
            eprintln!("skipped {name}: {why}");
            std::process::exit(2);
        }
        let cold = backend.start(&lab, &spec, &limits)?.finish()?;
        let cold_sum = cold.output.map(|o| o.checksum);
        println!(
            "cold {name} startup_ms={} checksum={cold_sum:?} outcome={:?}",
            ms(cold.startup_ns()),
            cold.outcome
        );
        let checkpointing = at("checkpoint")?;
        let snapshot = checkpointing
            .restorer()
            .ok_or("not restorable")?
            .checkpoint(&lab, &spec, &limits)?;
        let phases: Vec<String> = snapshot
            .phases
            .iter()
            .map(|(p, ns)| format!("{p}={}", ms(Some(*ns))))
            .collect();
        println!(
            "checkpoint {name} bytes={} take_ms={} {}",
            snapshot.bytes,
            ms(Some(snapshot.take_ns)),
            phases.join(" ")
        );
        let restoring = at("restored")?;
        let restorer = restoring.restorer().ok_or("not restorable")?;
        let instance = match restorer.restore(&lab, &snapshot, &limits, &RestoreOptions::default())
        {
            Ok(instance) => instance,
            Err(e) => {
                // What the checkpoint holds, and the end of CRIU's own log.
                let dir = snapshot.dir().unwrap_or(std::path::Path::new("/"));
                let mut files: Vec<String> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                files.sort();
                eprintln!("checkpoint holds: {}", files.join(" "));
                for log in logs(snapshot.dir().unwrap_or(std::path::Path::new("/"))) {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!("{}:", log.display());
                    for l in &lines[lines.len().saturating_sub(25)..] {
                        eprintln!("  {l}");
                    }
                }
                return Err(e.into());
            }
        };
        let restored = instance.finish()?;
        let sum = restored.output.map(|o| o.checksum);
        let criu: Vec<String> = restored
            .info
            .iter()
            .filter(|(k, _)| k.starts_with("criu_"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let edges: Vec<String> = restored
            .timeline
            .phases
            .iter()
            .map(|p| p.name.clone())
            .collect();
        println!(
            "restored {name} startup_ms={} checksum={sum:?} outcome={:?} start={} {} phases={}",
            ms(restored.startup_ns()),
            restored.outcome,
            restored.info.get("start").map_or("?", String::as_str),
            criu.join(" "),
            edges.join(",")
        );
        let ok = restored.outcome == Outcome::Completed && sum.is_some() && sum == cold_sum;
        if let (false, Some(dir)) = (ok, &console) {
            let log = dir.join(format!("{name}-restored.log"));
            eprintln!("{}:\n  {}", log.display(), tail(&log));
        }
        same &= ok;
    }
    if !same {
        eprintln!("a restored checksum differs from its cold run's");
        std::process::exit(1);
    }
    Ok(())
}
