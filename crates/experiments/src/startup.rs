//! `lab run startup`: how long from "start it" to the workload's first instruction.
//!
//! The workload is the `ready` kernel, which marks `ready` and exits, so a sample is nothing but
//! start-up. Each backend's own phases (`cgroup`, `namespaces`, `rootfs`, ...) are stamped on the
//! same host clock, so the report can show not only *how long* but *where the time goes*.

use crate::{every_backend, Campaign, ExperimentError, Sampling, Settings};
use isolab_backends::lab::Lab;
use isolab_payload::{Kernel, Spec};

/// 30 rounds after 3 warm-up ones: start-up times are noisy (a busy machine adds a long tail)
/// and one sample costs milliseconds.
pub const SAMPLING: Sampling = Sampling {
    runs: 30,
    warmup: 3,
};

/// Run the start-up experiment on `backends` (or every default backend available).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    let spec = Spec::default_for(Kernel::Ready);
    let extra = serde_json::json!({ "workload": spec.to_string() });
    every_backend(
        lab,
        backends,
        "startup",
        &[spec],
        settings,
        extra,
        Vec::new(),
    )
}
