//! `lab run throughput`: does isolation slow the work down?
//!
//! Nine kernels, each stressing one thing an isolation model could tax:
//!
//! | kernel       | measures                        | where isolation could cost               |
//! |--------------|---------------------------------|------------------------------------------|
//! | `cpu`        | integer and floating-point work | nowhere: the CPU runs it natively        |
//! | `mem`        | memory bandwidth (STREAM triad) | little: the same DRAM                    |
//! | `random`     | dependent random reads          | TLB misses; nested paging in a VM        |
//! | `syscall`    | kernel entries                  | a VM exit instead of a system call       |
//! | `io`         | write, fsync, read back         | the path to the file (page cache)        |
//! | `disk-seq`   | O_DIRECT bandwidth to a disk    | a VM exit and the VMM per request        |
//! | `disk-rand`  | 4 KiB O_DIRECT reads: IOPS      | the same, for every small request        |
//! | `net-stream` | TCP bandwidth to the peer       | a veth hop; a tap and the VMM; gVisor's  |
//! |              |                                 | network stack in user space              |
//! | `net-rr`     | one-byte TCP round trips        | the same, once per packet each way       |
//!
//! The first five run where they are; `cpu` to `io` are equal by construction in a container
//! and a VM, whose CPU and memory are the host's. The disk and network kernels are where the
//! models differ: each instance gets a disk of its own (the same size, on the same host file
//! system: [`isolab_resources::disks`]) and a link to the lab's peer ([`isolab_resources::network`]).
//!
//! Each sample's rate is the kernel's operations (or bytes) over its measured time (`start` or
//! `ready` → `done`, on the host clock). Each backend's rate is divided by `process`'s rate *in
//! the same round*, and those ratios are summarised with a bootstrap confidence interval.

use crate::{Campaign, ExperimentError, Sampling, Settings};
use isolab_backends::lab::Lab;
use isolab_payload::{Kernel, Spec};
use isolab_results::Skipped;

/// The kernels of the throughput experiment.
pub const KERNELS: [Kernel; 9] = [
    Kernel::Cpu,
    Kernel::Mem,
    Kernel::Random,
    Kernel::Syscall,
    Kernel::Io,
    Kernel::DiskSeq,
    Kernel::DiskRand,
    Kernel::NetStream,
    Kernel::NetRr,
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

/// The kernels to run when none are named: all of [`KERNELS`] that this lab can provide for.
/// Without root the network kernels are left out (the lab's network needs CAP_NET_ADMIN), and
/// the results say so.
pub fn default_kernels(lab: &Lab) -> (Vec<Kernel>, Vec<Skipped>) {
    let (mut kernels, mut skipped) = (Vec::new(), Vec::new());
    let mut refused: Vec<(Kernel, String)> = Vec::new();
    for k in KERNELS {
        match crate::check_provisions(lab, &[Spec::default_for(k)]) {
            Ok(()) => kernels.push(k),
            Err(e) => refused.push((k, e.to_string())),
        }
    }
    for (k, why) in refused {
        skipped.push(Skipped {
            backend: format!("kernel {k}"),
            reason: why,
        });
    }
    (kernels, skipped)
}

/// How big the device kernels' runs are, where not their defaults ([`Spec::default_for`]): a
/// slow machine (an emulated one, a laptop on battery) can make them smaller so one run fits
/// its timeout, and the results record the sizes each run had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    /// MiB of each instance's disk for disk-seq and disk-rand.
    pub disk_mib: Option<u64>,
    /// MiB net-stream sends to the peer.
    pub stream_mib: Option<u64>,
    /// Requests per run of disk-rand (4 KiB reads) and net-rr (round trips).
    pub requests: Option<u64>,
}

impl Sizes {
    /// `kernel`'s parameters: its defaults, with these sizes where they apply.
    pub fn spec(&self, kernel: Kernel) -> Spec {
        let mut spec = Spec::default_for(kernel);
        if let (true, Some(mib)) = (kernel.needs_disk(), self.disk_mib) {
            spec.mib = mib;
        }
        if let (Kernel::NetStream, Some(mib)) = (kernel, self.stream_mib) {
            spec.mib = mib;
        }
        if let (Kernel::DiskRand | Kernel::NetRr, Some(n)) = (kernel, self.requests) {
            spec.iters = n;
        }
        spec
    }
}

/// Run `kernels` (default parameters, but for `sizes`) on `backends` (or every default backend
/// here); `skipped` says what was left out before.
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    kernels: &[Kernel],
    sizes: Sizes,
    skipped: Vec<Skipped>,
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    let specs: Vec<Spec> = kernels.iter().map(|&k| sizes.spec(k)).collect();
    let extra = serde_json::json!({
        "workloads": specs.iter().map(ToString::to_string).collect::<Vec<_>>()
    });
    crate::every_backend(
        lab,
        backends,
        "throughput",
        &specs,
        settings,
        extra,
        skipped,
    )
}
