//! `lab run throughput`: does isolation slow the work down?
//!
//! Five kernels, each stressing one thing an isolation model could tax:
//!
//! | kernel    | measures                        | where isolation could cost             |
//! |-----------|---------------------------------|----------------------------------------|
//! | `cpu`     | integer and floating-point work | nowhere: the CPU runs it natively      |
//! | `mem`     | memory bandwidth (STREAM triad) | little: the same DRAM                  |
//! | `random`  | dependent random reads          | TLB misses; nested paging in a VM      |
//! | `syscall` | kernel entries                  | a VM exit instead of a system call     |
//! | `io`      | write, fsync, read back         | the path to the disk                   |
//!
//! Each sample's rate is the kernel's operations (or bytes) over its measured time (`start` or
//! `ready` → `done`, on the host clock). Each backend's rate is divided by `process`'s rate *in
//! the same round*, and those ratios are summarised with a bootstrap confidence interval.

use super::{every_backend, Campaign, ExperimentError, Sampling, Settings};
use crate::lab::Lab;
use crate::workload::{Kernel, Spec};

/// The kernels of the throughput experiment.
pub const KERNELS: [Kernel; 5] = [
    Kernel::Cpu,
    Kernel::Mem,
    Kernel::Random,
    Kernel::Syscall,
    Kernel::Io,
];

/// 10 rounds after 3 warm-up ones: each sample takes a fraction of a second, and the paired
/// ratios to `process` cancel the machine's drift.
pub const SAMPLING: Sampling = Sampling {
    runs: 10,
    warmup: 3,
};

/// The kernels called `names`, each one of [`KERNELS`].
pub fn kernels_named(names: &[String]) -> Result<Vec<Kernel>, ExperimentError> {
    names
        .iter()
        .map(|n| {
            Kernel::from_name(n.as_bytes())
                .filter(|k| KERNELS.contains(k))
                .ok_or_else(|| ExperimentError::UnknownKernel {
                    name: n.clone(),
                    known: KERNELS
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

/// Run `kernels` (default parameters) on `backends` (or every default backend here).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    kernels: &[Kernel],
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    let specs: Vec<Spec> = kernels.iter().map(|&k| Spec::default_for(k)).collect();
    let extra = serde_json::json!({
        "workloads": specs.iter().map(ToString::to_string).collect::<Vec<_>>()
    });
    every_backend(lab, backends, "throughput", &specs, settings, extra)
}
