//! Checkpoint a container with CRIU, restore it, and show that the restored one computes what a
//! cold one computes.
//!
//! ```text
//! cargo run --example criu_restore -- [--profile minimal] [container|oci:runc]…   (default: both)
//! ```
//!
//! For each backend: one cold run of the `cpu` kernel (its checksum and start-up); one
//! checkpoint of a container held at `ready` (its size and CRIU's stages); one restore from it,
//! run to the end (its start-up — the restored workload's first marker after the lab let it go —
//! its checksum, and CRIU's own timings). It prints one line each and exits with 0 only when
//! every restored checksum equals its cold one. Where CRIU cannot work (it fails its own
//! `criu check`), it says why in one line and exits with 2.

use isolab_backends::container::Container;
use isolab_backends::lab::Lab;
use isolab_backends::oci::Oci;
use isolab_backends::{Availability, Backend, Limits, RestoreOptions};
use isolab_payload::{Kernel, Spec};
use isolab_results::Outcome;
use std::error::Error;

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

fn main() -> Result<(), Box<dyn Error>> {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    let minimal = names.first().is_some_and(|a| a == "--profile")
        && names.get(1).is_some_and(|p| p == "minimal");
    if minimal {
        names.drain(..2);
    }
    if names.is_empty() {
        names = vec!["container".into(), "oci:runc".into()];
    }
    let mut lab = Lab::new()?;
    if minimal {
        // Without Docker's masks and seccomp filter.
        lab.settings.profile = isolab_container::profile::Profile::Minimal;
    }
    let spec = Spec::default_for(Kernel::Cpu);
    let limits = Limits::default();
    let mut same = true;
    for name in &names {
        let backend: Box<dyn Backend> = match name.as_str() {
            "container" => Box::new(Container::default()),
            "oci:runc" => Box::new(Oci::runc()),
            other => return Err(format!("no restorable backend {other}").into()),
        };
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
        let snapshot = restorer.checkpoint(&lab, &spec, &limits)?;
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
        same &= restored.outcome == Outcome::Completed && sum.is_some() && sum == cold_sum;
    }
    if !same {
        eprintln!("a restored checksum differs from its cold run's");
        std::process::exit(1);
    }
    Ok(())
}
