//! `lab run isolation`: what can the workload see?
//!
//! The `probe` kernel reports what the instance sees of the machine — kernel, PIDs, host name,
//! mounts, network interfaces, user IDs, capabilities, cgroup — and the report puts the backends
//! side by side. A process sees the host; a container sees its namespaces but the host's kernel;
//! a guest sees its own kernel, or, in the bare microVM, none at all.

use super::{campaign, select, Campaign, Case, ExperimentError, Settings};
use crate::lab::Lab;
use crate::workload::{Kernel, Spec};

/// Probe every backend (or the ones named).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    let selection = select(lab, backends)?;
    let spec = Spec::default_for(Kernel::Probe);
    let cases: Vec<Case> = (0..selection.backends.len())
        .map(|backend| Case { backend, spec })
        .collect();
    campaign(
        lab,
        "isolation",
        &selection,
        &cases,
        settings,
        serde_json::json!({}),
    )
}
