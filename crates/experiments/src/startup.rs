//! `lab run startup`: how long from "start it" to the workload's first instruction.
//!
//! The workload is the `ready` kernel, which marks `ready` and exits, so a sample is nothing but
//! start-up. Each backend's own phases (`cgroup`, `namespaces`, `rootfs`, ...) are stamped on the
//! same host clock, so the report can show not only *how long* but *where the time goes*.
//!
//! With `--trace`, the runtimes the lab did not write get phases too, from the kernel's own
//! events (`crates/trace`): every other round is traced, the rounds between are not, so the same
//! run shows what the tracing costs each backend. Where tracefs cannot be used (not root, a
//! locked-down kernel) the lab says so once and runs untraced.

use crate::{every_backend_traced, Campaign, ExperimentError, Sampling, Settings};
use isolab_backends::lab::Lab;
use isolab_payload::{Kernel, Spec};

/// 30 rounds after 3 warm-up ones: start-up times are noisy (a busy machine adds a long tail)
/// and one sample costs milliseconds.
pub const SAMPLING: Sampling = Sampling {
    runs: 30,
    warmup: 3,
};

/// Run the start-up experiment on `backends` (or every default backend available); `trace`:
/// trace every other round.
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    settings: &Settings,
    trace: bool,
) -> Result<Campaign, ExperimentError> {
    let spec = Spec::default_for(Kernel::Ready);
    let tracer = if trace {
        match isolab_trace::Tracer::open(lab.ledger(), &lab.workdir().join("tracefs")) {
            Ok(t) => {
                if !t.missing.is_empty() {
                    eprintln!(
                        "tracing: this kernel lacks {}; phases that need them are left out",
                        t.missing.join(", ")
                    );
                }
                Some(t)
            }
            Err(e) => {
                eprintln!("tracing: {e}; running untraced (the lab's own phases only)");
                None
            }
        }
    } else {
        None
    };
    let extra = serde_json::json!({
        "workload": spec.to_string(),
        "trace": tracer.as_ref().map(|_| "every other round, from round 0"),
    });
    let campaign = every_backend_traced(
        lab,
        backends,
        "startup",
        &[spec],
        settings,
        extra,
        Vec::new(),
        tracer.as_ref(),
    )?;
    // The lab's own phases, checked against the kernel's events for the same samples.
    for line in tracer.iter().flat_map(|t| t.check_summary()) {
        eprintln!("cross-check: {line}");
    }
    Ok(campaign)
}
