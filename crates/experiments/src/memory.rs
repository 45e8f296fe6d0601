//! `lab run memory`: what one instance costs the host, before and after its workload.
//!
//! The workload is the `mem` kernel, which touches `mib` MiB, run with `hold`: the instance
//! pauses right after `ready` (nothing of the workload's memory touched yet) and right after
//! `done` (all of it touched), and the lab reads the instance's cgroup and its processes'
//! PSS/USS at both moments. What is charged at `ready` is the **fixed cost** of the isolation
//! model — namespaces, root file system, page tables, a VMM and its guest's RAM — and what is
//! added by `done` is what the workload itself touched. Running 1, 16 and 64 MiB shows that the
//! second part grows with the workload and the first does not.

use crate::{every_backend, Campaign, ExperimentError, Sampling, Settings};
use isolab_backends::lab::Lab;
use isolab_payload::{Kernel, Spec};

/// 10 rounds after 3 warm-up ones: memory figures barely vary, and each sample holds its
/// instance twice while the lab reads it.
pub const SAMPLING: Sampling = Sampling {
    runs: 10,
    warmup: 3,
};

/// Working-set sizes measured by default, in MiB.
pub const DEFAULT_SIZES_MIB: [u64; 3] = [1, 16, 64];

/// The workload of one memory case: touch `mib` MiB once, holding at `ready` and `done`.
pub fn spec(mib: u64) -> Spec {
    Spec {
        hold: true,
        ..Spec::new(Kernel::Mem, mib, 1)
    }
}

/// Run the memory experiment for `sizes` MiB on `backends` (or every default backend here).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    sizes: &[u64],
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    let specs: Vec<Spec> = sizes.iter().map(|&mib| spec(mib)).collect();
    let extra = serde_json::json!({ "sizes_mib": sizes });
    every_backend(lab, backends, "memory", &specs, settings, extra, Vec::new())
}
