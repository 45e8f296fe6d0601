//! `lab run startup`: how long from "start it" to the workload's first instruction.
//!
//! The workload is the `ready` kernel, which marks `ready` and exits, so a sample is nothing but
//! start-up. Each backend's own phases (`cgroup`, `namespaces`, `rootfs`, ...) are stamped on the
//! same host clock, so the report can show not only *how long* but *where the time goes*.

use super::{campaign, select, Campaign, Case, ExperimentError, Settings};
use crate::lab::Lab;
use crate::workload::{Kernel, Spec};

/// Run the start-up experiment on `backends` (or every default backend available).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    let selection = select(lab, backends)?;
    let spec = Spec::default_for(Kernel::Ready);
    let cases: Vec<Case> = (0..selection.backends.len())
        .map(|backend| Case { backend, spec })
        .collect();
    campaign(
        lab,
        "startup",
        &selection,
        &cases,
        settings,
        serde_json::json!({ "workload": spec.to_string() }),
    )
}
