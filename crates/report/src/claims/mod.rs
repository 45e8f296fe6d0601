//! The claims ledger: what introductions to Docker tell students, checked against the data of
//! one report.
//!
//! Each [`Claim`] is stated in the lab's own words, with the experiment that can test it and the
//! **rule** that decides its verdict. The rules are written down (and printed in every report)
//! so that a verdict is never a matter of taste:
//!
//! * *supported* — the data show what the claim says, for every container and every VM
//!   compared;
//! * *not supported* — the data show no such difference, or the opposite;
//! * *depends* — true for some pairs of container and VM and not for others: the answer depends
//!   on which runtime and which VM — or the data favour the container but cannot test the
//!   reason the claim gives (see below);
//! * *no data* — this report has no measurement that bears on the claim, or none of the kind
//!   of VM the claim is about; the ledger says which command would give it. The ledger never
//!   guesses.
//!
//! Four rules hold for every claim:
//!
//! 1. **A difference is called only when it is clear and large enough.** The 95% confidence
//!    interval of the ratio excludes 1, its median differs from 1 by more than [`MARGIN`], and
//!    it rests on at least [`MIN_PAIRS`] paired rounds (or density steps). With many rounds a 1%
//!    difference can be "significant" without meaning anything a student would care about; with
//!    a handful, a bootstrap interval is too narrow to trust.
//! 2. **Data that fail their own check never decide.** Every kernel returns a checksum; when
//!    the backends of a file disagree on a workload's checksum, something computed the wrong
//!    thing, and that workload's samples are left out of every verdict (the row says so).
//! 3. **Families, not names.** Who is a container and who is a VM comes from the isolation
//!    [`Family`] every record carries. Emulated machines are left out of the timing, memory and
//!    density claims (an emulator is not how VMs run); sandboxes (a container runtime with a
//!    kernel of its own in user space, like gVisor) are placed between containers and VMs, not
//!    counted as either; backends whose kind is not recorded take no side.
//! 4. **Say which VM.** Start-up, memory, density and images claims give a guest operating
//!    system as their reason, so only VMs *with* a guest OS decide them. VMs without an OS (or
//!    whose files do not say) are shown, named as such, for comparison, and never stand for
//!    VMs with one, whichever way their figures point: a bare guest that starts as fast as a
//!    container says nothing about a VM that boots Linux. Without a VM with a guest OS the
//!    verdict is *no data*, with the command that measures one. The other claims compare
//!    every kind of VM and every sentence says which kind each is.
//!
//! Each claim is judged from the experiment made for it (its [`Claim::experiment`]), never from
//! whatever else a file happens to record. The files of one host are judged together: the
//! files of an experiment of samples in rounds are one set of samples (`evidence::pool`) —
//! a container and a VM are paired only within a round, and a round is one run's, whichever
//! file holds it — so the same samples give the same verdict and the same figures however they
//! are split into files, and in whatever order the files are named.

use crate::summary::DensitySeries;
use crate::{format, summary};
use isolab_host::facts::KvmKind;
use isolab_host::stats::Summary;
use isolab_payload::Resource;
use isolab_results::{Family, Results, RunRecord, VmKind, WorkloadRecord};
use serde::Serialize;
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

/// A difference smaller than this (5%) counts as "the same".
pub const MARGIN: f64 = 0.05;

/// Fewer paired rounds (or density steps) than this, and a difference is not called. Six is the
/// least for which even a sign test — all six pairs on one side — is significant at 5% (two
/// sides: 2 × 0.5⁶ ≈ 0.031; with five, 0.0625 is not).
pub const MIN_PAIRS: usize = 6;

/// What the data say about a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The data show what the claim says.
    Supported,
    /// The data show no such difference, or the opposite.
    NotSupported,
    /// True for some backends and not for others.
    Depends,
    /// Nothing in this report bears on the claim.
    NoData,
}

impl Verdict {
    /// The verdict's CSS class in the HTML report.
    pub fn class(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::NotSupported => "not-supported",
            Verdict::Depends => "depends",
            Verdict::NoData => "no-data",
        }
    }

    /// The verdict in words.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::NotSupported => "not supported",
            Verdict::Depends => "depends",
            Verdict::NoData => "no data",
        }
    }
}

/// One claim of the introductions, and how this lab tests it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Claim {
    /// Short identifier (also the anchor in the HTML report).
    pub id: &'static str,
    /// The claim, in the lab's words.
    pub statement: &'static str,
    /// The experiment whose data test it.
    pub experiment: &'static str,
    /// How the verdict is decided.
    pub rule: &'static str,
    /// The command that gives the data the claim needs, in a sentence ("`lab run startup
    /// --backends …` gives them."): what a *no data* verdict tells the reader to run.
    pub gives: &'static str,
    /// Who decides it, by that rule: one judge per claim, each in a file of its own.
    #[serde(skip)]
    pub(crate) judge: &'static dyn Judge,
}

/// Two claims are the same claim when they have the same identifier.
impl PartialEq for Claim {
    fn eq(&self, other: &Claim) -> bool {
        self.id == other.id
    }
}

impl Eq for Claim {}

/// How one claim is decided, from the results of its experiment on one host ([`Claim::judge`]).
pub(crate) trait Judge: std::fmt::Debug + Sync {
    /// The verdict on `claim`, with its reasons and caveats.
    fn judge(&self, claim: Claim, files: &Files) -> Assessment;

    /// True when `results`, a file of another experiment than the claim's, records figures
    /// the claim reads (every instance notes its image's size, say): a reader of that file
    /// may take them for an answer, so it is told where the answer comes from.
    fn seen_in(&self, _results: &Results) -> bool {
        false
    }

    /// Experiments besides the claim's own whose samples it judges as its own (the start-up
    /// claim reads `lab run restore`'s cold and restored starts).
    fn also_reads(&self) -> &'static [&'static str] {
        &[]
    }
}

impl Claim {
    /// True when a reader of `results` should hear this claim's verdict: the file is of the
    /// claim's experiment, or records figures the claim reads but does not judge from it.
    pub fn bears_on(&self, results: &Results) -> bool {
        self.reads(results) || self.judge.seen_in(results)
    }

    /// True when the claim is judged from `results`: a file of its experiment, or of one its
    /// judge also reads.
    pub fn reads(&self, results: &Results) -> bool {
        let e = results.header.experiment.as_str();
        e == self.experiment || self.judge.also_reads().contains(&e)
    }
}

/// Every claim the ledger checks, in the order a student meets them.
pub const CLAIMS: [Claim; 11] = [
    Claim {
        id: "startup",
        judge: &startup::Startup,
        statement: "A container starts faster than a virtual machine.",
        experiment: "startup",
        rule: "Start-up = launch requested → the workload's first instruction. For every \
               container and every VM (not emulated), the container's start-up over the VM's, \
               paired by round. The claim's reason is that a VM boots an OS, so only VMs with a \
               guest OS decide (others are shown for comparison); without one, no data. \
               Supported if every pair's ratio is below 1; not supported if no pair's is; \
               depends otherwise. `lab run restore` files count too: there a VM restored from a \
               snapshot taken at ready (`vm/restored`) is paired with the containers' cold \
               starts, and each figure says which kind of start it is.",
        gives: "`lab run startup --backends process,container,vm-linux,qemu` gives them, on a \
                machine with VT-x or AMD-V (there QEMU runs on KVM, not emulated).",
    },
    Claim {
        id: "memory",
        judge: &memory::Memory,
        statement:
            "A container needs less memory than a VM, because it carries no guest operating system.",
        experiment: "memory",
        rule: "Fixed cost = the instance's kernel memory plus its processes' anonymous memory \
               while it waits at ready. For every container and every VM (not emulated), the \
               container's fixed cost over the VM's, paired by round and working-set size; only \
               VMs with a guest OS decide (others are shown for comparison); without one, no \
               data. Supported if every pair is below 1; not supported if none is; depends if the \
               pairs are mixed.",
        gives: "`lab run memory --backends process,container,vm-linux,qemu` gives them, on a \
                machine with VT-x or AMD-V (there QEMU runs on KVM, not emulated).",
    },
    Claim {
        id: "performance",
        judge: &performance::Performance,
        statement: "Programs run faster in a container than in a VM.",
        experiment: "throughput",
        rule: "Rate = work done / time of the measured part, per kernel (cpu, mem, random, \
               syscall, io). For every container, VM (not emulated) and kernel, the container's \
               rate over the VM's, paired by round. Supported if the container is faster (ratio \
               above 1) in every case; not supported if in none; depends otherwise.",
        gives: "`lab run throughput --backends process,container,vm` gives them (and \
                vm-linux or qemu, on a machine with VT-x or AMD-V).",
    },
    Claim {
        id: "density",
        judge: &density::Density,
        statement: "More containers than VMs fit on one host.",
        experiment: "density",
        rule: "Per-instance cost = what each added instance adds to the memory the instances \
               hold (kernel memory + anonymous PSS), step by step up the density ladder (at \
               least 6 steps). Only VMs with a guest OS decide (others are shown for \
               comparison); without one, no data. Supported if every container's per-instance \
               cost is below every such VM's (not emulated), with 95% CIs that do not overlap \
               and medians more than 5% apart; not supported if no container's is; depends \
               otherwise.",
        gives: "`lab run density --backends container,vm-linux,qemu` gives them, on a machine \
                with VT-x or AMD-V (there QEMU runs on KVM, not emulated).",
    },
    Claim {
        id: "kernel",
        judge: &kernel::Kernel,
        statement: "Containers share the host's kernel; each VM runs a kernel of its own.",
        experiment: "isolation",
        rule: "The probe's kernel_release against the host's. Supported if every container \
               reports the host's release and every VM reports another (or none: a guest with no \
               kernel at all); not supported if no container shares it or no VM differs; depends \
               otherwise. A sandbox answers with its own user-space kernel: shown, not counted \
               as a container.",
        gives: "`lab run isolation` gives them.",
    },
    Claim {
        id: "isolation",
        judge: &isolation::Isolation,
        statement: "A VM isolates its workload more strongly than a container does.",
        experiment: "isolation",
        rule: "Count the probe facts (kernel, host name, processes, mounts, interfaces, root, \
               user map, root's owner, capabilities, cgroup, CPUs) that equal the host's own view \
               (the process baseline's). Supported if every VM shares fewer facts with the host than every \
               container and no VM answers with the host's kernel; not supported if no VM shares \
               fewer than any container; depends otherwise. A sandbox is placed between them.",
        gives: "`lab run isolation` gives them.",
    },
    Claim {
        id: "images",
        judge: &images::Images,
        statement: "Container images are small; VM images are large.",
        experiment: "images",
        rule: "Image = the bytes a backend starts from (fact image_bytes) on the lab's layered \
               image, as `lab run images` records them: a container's layers; a Linux guest's \
               kernel, initramfs and the same layers as an ext4 disk. Each container's image \
               against each VM's, on the same layered image. Only VMs with a guest OS decide \
               (an emulated one too: an image's size does not depend on how fast it runs; a \
               VM without an OS is shown for comparison); without one, no data. Supported if \
               every container image is smaller than every such VM's; not supported if none \
               is; depends otherwise.",
        gives: "`lab run images --backends container,qemu` gives them (QEMU boots a Linux guest \
                even where it is emulated, and an image's size does not depend on how fast it \
                runs).",
    },
    Claim {
        id: "layers",
        judge: &layers::Layers,
        statement: "Images are built in layers: after a change, only the layers that changed are rebuilt.",
        experiment: "images",
        rule: "docker build of the lab's two-layer image, then again after only its top (app) \
               layer changed. Supported if the rebuild took every layer below the change from \
               its cache and wrote less than a tenth of the first build's bytes; not supported \
               if it rebuilt a layer that did not change; depends otherwise.",
        gives: "`lab run images --backends container,docker` gives them, with a Docker daemon \
                running.",
    },
    Claim {
        id: "sharing",
        judge: &sharing::Sharing,
        statement: "Instances of one image share it: each more container costs the host far less memory than each more VM.",
        experiment: "images",
        rule: "On the lab's layered image, what each instance after the first adds to the \
               host's memory — its own anonymous and kernel memory, the image's page cache \
               counted once, less what KSM merged — median over the ladder's steps. Supported if \
               every container's is below a tenth of every VM's without KSM; not supported if \
               some container's is not below every VM's; depends otherwise. VMs with KSM are \
               shown beside, as how far merging closes the gap.",
        gives: "`lab run images --backends container,qemu` gives them.",
    },
    Claim {
        id: "native",
        judge: &native::Native,
        statement: "Inside a container, a program runs as fast as a plain process.",
        experiment: "throughput",
        rule: "For every container and kernel, its rate over the process baseline's, paired by \
               round. Supported if no container is clearly slower on any kernel; not supported \
               if every container is clearly slower on every kernel; depends otherwise.",
        gives: "`lab run throughput --backends process,container` gives them.",
    },
    Claim {
        id: "neighbours",
        judge: &neighbours::Neighbours,
        statement: "One instance's load and failures do not reach its neighbours.",
        experiment: "interference",
        rule: "A victim beside the most aggressors of its own backend that were measured: its \
               time over its time alone, paired by round and configuration. Judged per load \
               (CPU hog, memory-bandwidth streamer, disk writer) and per failure (fork bomb, \
               memory hog), for every container and VM (not emulated). A load does not reach \
               the victim if its slowdown is not clearly above 1 unlimited — or, failing that, \
               under limits, which are then named as what it needed. A failure does not reach \
               it if every victim completed with the checksum it computes alone and was not \
               clearly slowed. A part is supported if that holds for every backend, not \
               supported if for none, depends otherwise; the claim is supported if every part \
               is, not supported if none is, depends otherwise.",
        gives: "`lab run interference` gives them.",
    },
];

/// The rule every verdict shares, printed once under the claims.
pub const COMMON_RULE: &str = "A difference counts only if its 95% confidence interval \
    excludes \"equal\", its median differs by more than 5%, and it rests on at least 6 paired \
    rounds. Samples of a workload whose checksums disagree between backends decide nothing.";

/// One claim judged on one host's data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assessment {
    /// The claim.
    pub claim: Claim,
    /// The verdict.
    pub verdict: Verdict,
    /// The figures behind it, one per line.
    pub figures: Vec<String>,
    /// Why, in one sentence.
    pub why: String,
    /// What limits the verdict on this machine (nested virtualization, left-out backends, data
    /// that failed their check).
    pub caveats: Vec<String>,
    /// The same claim judged resource by resource (compute, memory, system calls, disk,
    /// network), where it is about speed: the isolation models pay in different places.
    pub parts: Vec<Part>,
}

/// A claim judged on the kernels of one resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Part {
    /// The resource.
    pub resource: &'static str,
    /// The verdict on it.
    pub verdict: Verdict,
    /// Why, and where each model pays on this resource.
    pub why: String,
}

impl Assessment {
    fn no_data(claim: Claim, why: impl Into<String>) -> Assessment {
        Assessment {
            claim,
            verdict: Verdict::NoData,
            figures: vec![],
            why: why.into(),
            caveats: vec![],
            parts: vec![],
        }
    }

    /// The same, with `caveats` (what was left out, so a reader sees why there is no data).
    fn with(mut self, caveats: Vec<String>) -> Assessment {
        self.caveats = caveats;
        self
    }
}

/// Judge every claim on the files of one host (never mix hosts: a ratio of a fast machine's
/// container to a slow machine's VM means nothing).
pub fn ledger(files: &[&Results]) -> Vec<Assessment> {
    CLAIMS.iter().map(|claim| judge(*claim, files)).collect()
}

/// The most backends a file may name for the ledger to judge it. The ledger compares a file's
/// backends pair by pair (every container with every VM, each sandbox with both), so its work
/// and its figures grow with the square of their number. The lab has a dozen backends; a file
/// naming thousands did not come from a lab run, and would make a ledger of millions of
/// comparisons. Such a file is left out of the ledger, and every claim it bears on says so.
pub const MAX_BACKENDS: usize = 32;

fn judge(claim: Claim, files: &[&Results]) -> Assessment {
    let mine: Vec<&Results> = files.iter().copied().filter(|r| claim.reads(r)).collect();
    if mine.is_empty() {
        // Figures the claim reads, recorded by other experiments, are named and set aside.
        let elsewhere: Vec<&str> = files
            .iter()
            .filter(|r| claim.judge.seen_in(r))
            .map(|r| r.header.experiment.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let aside = match elsewhere.as_slice() {
            [] => String::new(),
            e => format!(
                " The {} results here record such figures too, but this claim is judged only \
                 from the experiment made for it.",
                evidence::and_list(e)
            ),
        };
        return Assessment::no_data(
            claim,
            format!(
                "This report has no {} results.{aside} {}",
                claim.experiment, claim.gives
            ),
        );
    }
    let (mine, too_many): (Vec<&Results>, Vec<&Results>) = mine
        .into_iter()
        .partition(|r| r.backend_names().len() <= MAX_BACKENDS);
    let mut left_out: Vec<String> = too_many
        .iter()
        .map(|r| {
            format!(
                "Left out: {} names {} backends, more than the ledger compares pair by pair \
                 ({MAX_BACKENDS}).",
                dir_name(r),
                r.backend_names().len()
            )
        })
        .collect();
    if mine.is_empty() {
        return Assessment::no_data(
            claim,
            format!(
                "Every {} results file here names more backends than the ledger compares pair \
                 by pair.",
                claim.experiment
            ),
        )
        .with(left_out);
    }
    // Samples in rounds are judged as one set, whichever files hold them.
    let pooled;
    // One file is pooled too, so that one file and the same samples split over several take
    // the same path to their verdict.
    let judged: Vec<&Results> = if evidence::POOLED.contains(&claim.experiment) {
        pooled = evidence::pool(&mine);
        if pooled.backend_names().len() > MAX_BACKENDS {
            left_out.push(format!(
                "Left out: the {} files together name {} backends, more than the ledger \
                 compares pair by pair ({MAX_BACKENDS}).",
                claim.experiment,
                pooled.backend_names().len()
            ));
            return Assessment::no_data(
                claim,
                format!(
                    "The {} results files here together name more backends than the ledger \
                     compares pair by pair.",
                    claim.experiment
                ),
            )
            .with(left_out);
        }
        vec![&pooled]
    } else {
        mine.clone()
    };
    let files = Files::new(judged, mine);
    let mut a = claim.judge.judge(claim, &files);
    a.caveats.extend(left_out);
    let mut seen = HashSet::new();
    a.caveats.retain(|c| seen.insert(c.clone()));
    a
}

/// The directory holding a results file: what names it among others.
fn dir_name(r: &Results) -> String {
    r.path.parent().and_then(|p| p.file_name()).map_or_else(
        || r.path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

mod density;
mod evidence;
mod images;
mod isolation;
mod kernel;
mod layers;
mod memory;
mod native;
mod neighbours;
mod performance;
mod sharing;
mod startup;

use evidence::Files;
pub use evidence::{EMULATED_HOST_SHORT, NESTED_PVM, NESTED_PVM_SHORT};

#[cfg(test)]
mod tests;
