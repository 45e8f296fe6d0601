//! `lab run isolation`: what can the workload see?
//!
//! The `probe` kernel reports what the instance sees of the machine — kernel, PIDs, host name,
//! mounts, network interfaces, user IDs, capabilities, cgroup — and the report puts the backends
//! side by side. A process sees the host; a container sees its namespaces but the host's kernel;
//! a guest sees its own kernel, or, in the bare microVM, none at all.

use crate::{every_backend, Campaign, ExperimentError, Sampling, Settings};
use isolab_backends::lab::Lab;
use isolab_payload::{Kernel, Spec};

/// One round, no warm-up: what a workload can see does not change from one run to the next.
pub const SAMPLING: Sampling = Sampling { runs: 1, warmup: 0 };

/// Probe every backend (or the ones named).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    let spec = Spec::default_for(Kernel::Probe);
    every_backend(
        lab,
        backends,
        "isolation",
        &[spec],
        settings,
        serde_json::json!({}),
        Vec::new(),
    )
}
