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
//! * *no data* — this report has no measurement that bears on the claim. The ledger never
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
//!    system as their reason. Their verdict rests on VMs *with* a guest OS when one ran; VMs
//!    without an OS (or whose files do not say) are shown, named as such, and decide only when
//!    no VM with a guest OS ran — then a result that favours the container is *depends* (the
//!    data cannot show the guest OS is why), and every sentence says which kind of VM it is
//!    about.
//!
//! Files of one host are judged together: a container and a VM are paired only within a file
//! (by round), and the pairs of all the host's files decide the verdict.

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// Short identifier (also the anchor in the HTML report).
    pub id: &'static str,
    /// The claim, in the lab's words.
    pub statement: &'static str,
    /// The experiment whose data test it.
    pub experiment: &'static str,
    /// How the verdict is decided.
    pub rule: &'static str,
}

/// Every claim the ledger checks, in the order a student meets them.
pub const CLAIMS: [Claim; 11] = [
    Claim {
        id: "startup",
        statement: "A container starts faster than a virtual machine.",
        experiment: "startup",
        rule: "Start-up = launch requested → the workload's first instruction. For every \
               container and every VM (not emulated), the container's start-up over the VM's, \
               paired by round. The claim's reason is that a VM boots an OS, so the VMs with a \
               guest OS decide when one ran. Supported if every pair's ratio is below 1; not \
               supported if no pair's is; depends otherwise — or if they all are but no VM with \
               a guest OS ran.",
    },
    Claim {
        id: "memory",
        statement:
            "A container needs less memory than a VM, because it carries no guest operating system.",
        experiment: "memory",
        rule: "Fixed cost = the instance's kernel memory plus its processes' anonymous memory \
               while it waits at ready. For every container and every VM (not emulated), the \
               container's fixed cost over the VM's, paired by round and working-set size; the \
               VMs with a guest OS decide when one ran. Supported if every pair is below 1; not \
               supported if none is; depends if the pairs are mixed, or if they all favour the \
               container but no VM ran a guest OS (the reason the claim gives cannot be tested).",
    },
    Claim {
        id: "performance",
        statement: "Programs run faster in a container than in a VM.",
        experiment: "throughput",
        rule: "Rate = work done / time of the measured part, per kernel (cpu, mem, random, \
               syscall, io). For every container, VM (not emulated) and kernel, the container's \
               rate over the VM's, paired by round. Supported if the container is faster (ratio \
               above 1) in every case; not supported if in none; depends otherwise.",
    },
    Claim {
        id: "density",
        statement: "More containers than VMs fit on one host.",
        experiment: "density",
        rule: "Per-instance cost = what each added instance adds to the memory the instances \
               hold (kernel memory + anonymous PSS), step by step up the density ladder (at \
               least 6 steps). The VMs with a guest OS decide when one ran. Supported if every \
               container's per-instance cost is below every VM's (not emulated), with 95% CIs \
               that do not overlap and medians more than 5% apart; not supported if no \
               container's is; depends otherwise — or if it is but no VM with a guest OS ran.",
    },
    Claim {
        id: "kernel",
        statement: "Containers share the host's kernel; each VM runs a kernel of its own.",
        experiment: "isolation",
        rule: "The probe's kernel_release against the host's. Supported if every container \
               reports the host's release and every VM reports another (or none: a guest with no \
               kernel at all); not supported if no container shares it or no VM differs; depends \
               otherwise. A sandbox answers with its own user-space kernel: shown, not counted \
               as a container.",
    },
    Claim {
        id: "isolation",
        statement: "A VM isolates its workload more strongly than a container does.",
        experiment: "isolation",
        rule: "Count the probe facts (kernel, host name, processes, mounts, interfaces, root, \
               user map, root's owner, capabilities, cgroup, CPUs) that equal the host's own view \
               (the process baseline's). Supported if every VM shares fewer facts with the host than every \
               container and no VM answers with the host's kernel; not supported if no VM shares \
               fewer than any container; depends otherwise. A sandbox is placed between them.",
    },
    Claim {
        id: "images",
        statement: "Container images are small; VM images are large.",
        experiment: "any",
        rule: "Image = the bytes a backend boots or starts (fact image_bytes): a container's \
               root file system, a guest's ELF, a Linux guest's kernel plus initramfs. The VMs \
               with a guest OS decide when one ran. Supported if every container image is \
               smaller than every VM image; not supported if none is; depends otherwise — or if \
               every one is but no VM with a guest OS ran.",
    },
    Claim {
        id: "layers",
        statement: "Images are built in layers: after a change, only the layers that changed are rebuilt.",
        experiment: "images",
        rule: "docker build of the lab's two-layer image, then again after only its top (app) \
               layer changed. Supported if the rebuild took every layer below the change from \
               its cache and wrote less than a tenth of the first build's bytes; not supported \
               if it rebuilt a layer that did not change; depends otherwise.",
    },
    Claim {
        id: "sharing",
        statement: "Instances of one image share it: each more container costs the host far less memory than each more VM.",
        experiment: "images",
        rule: "On the lab's layered image, what each instance after the first adds to the \
               host's memory — its own anonymous and kernel memory, the image's page cache \
               counted once, less what KSM merged — median over the ladder's steps. Supported if \
               every container's is below a tenth of every VM's without KSM; not supported if \
               some container's is not below every VM's; depends otherwise. VMs with KSM are \
               shown beside, as how far merging closes the gap.",
    },
    Claim {
        id: "native",
        statement: "Inside a container, a program runs as fast as a plain process.",
        experiment: "throughput",
        rule: "For every container and kernel, its rate over the process baseline's, paired by \
               round. Supported if no container is clearly slower on any kernel; not supported \
               if every container is clearly slower on every kernel; depends otherwise.",
    },
    Claim {
        id: "neighbours",
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
    let mine: Vec<&Results> = files
        .iter()
        .copied()
        .filter(|r| claim.experiment == "any" || r.header.experiment == claim.experiment)
        .collect();
    if mine.is_empty() {
        return Assessment::no_data(
            claim,
            format!("This report has no {} results.", claim.experiment),
        );
    }
    let (mine, too_many): (Vec<&Results>, Vec<&Results>) = mine
        .into_iter()
        .partition(|r| r.backend_names().len() <= MAX_BACKENDS);
    let left_out: Vec<String> = too_many
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
        let what = match claim.experiment {
            "any" => String::new(),
            e => format!("{e} "),
        };
        return Assessment::no_data(
            claim,
            format!(
                "Every {what}results file here names more backends than the ledger compares pair \
                 by pair."
            ),
        )
        .with(left_out);
    }
    let files = Files::new(mine);
    let mut a = match claim.id {
        "startup" => startup(claim, &files),
        "memory" => memory(claim, &files),
        "performance" => performance(claim, &files),
        "density" => density(claim, &files),
        "kernel" => kernel(claim, &files),
        "isolation" => isolation(claim, &files),
        "images" => images(claim, &files),
        "native" => native(claim, &files),
        "layers" => layers(claim, &files),
        "sharing" => sharing(claim, &files),
        "neighbours" => neighbours(claim, &files),
        other => unreachable!("claim {other} has no judge"),
    };
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

// ---------------------------------------------------------------------------------------------
// The files of one host, and who is who in them.

/// The files of one host that bear on a claim, and what the claim's judges ask of each file
/// more than once, computed on the first asking.
struct Files<'a> {
    files: Vec<&'a Results>,
    /// Per file: the workloads whose checksums disagree, each with its caveat.
    checks: Vec<OnceCell<Vec<(String, String)>>>,
    /// Per file: the names of those workloads.
    failed: Vec<OnceCell<HashSet<String>>>,
    /// Per file: each backend's workloads in the throughput table, in its order.
    workloads: Vec<OnceCell<HashMap<String, Vec<WorkloadRecord>>>>,
}

impl<'a> Files<'a> {
    fn new(files: Vec<&'a Results>) -> Files<'a> {
        fn cells<T>(n: usize) -> Vec<OnceCell<T>> {
            (0..n).map(|_| OnceCell::new()).collect()
        }
        Files {
            checks: cells(files.len()),
            failed: cells(files.len()),
            workloads: cells(files.len()),
            files,
        }
    }

    /// "dir: " before a figure when the claim reads several files, so each figure says where it
    /// comes from.
    fn prefix(&self, file: usize) -> String {
        if self.files.len() < 2 {
            return String::new();
        }
        format!("{}: ", dir_name(self.files[file]))
    }

    /// Workloads of `file` whose checksums disagree between backends, and the caveat for each.
    fn failed_checks(&self, file: usize) -> &[(String, String)] {
        self.checks[file].get_or_init(|| {
            summary::checksum_mismatches(self.files[file])
                .into_iter()
                .map(|m| {
                    let caveat = format!(
                        "Left out: {}{} — its checksums disagree ({}), so something computed the \
                         wrong thing and none of its samples decides this verdict.",
                        self.prefix(file),
                        m.workload,
                        m.each()
                    );
                    (m.workload, caveat)
                })
                .collect()
        })
    }

    /// The caveats of every workload left out for a failed check.
    fn check_caveats(&self) -> Vec<String> {
        (0..self.files.len())
            .flat_map(|i| self.failed_checks(i).iter().map(|(_, c)| c.clone()))
            .collect()
    }

    /// True when a run's workload passed its check in its file.
    fn passed(&self, file: usize) -> impl Fn(&RunRecord) -> bool + '_ {
        let bad = self.failed[file].get_or_init(|| {
            self.failed_checks(file)
                .iter()
                .map(|(w, _)| w.clone())
                .collect()
        });
        move |r| bad.is_empty() || !bad.contains(&summary::workload_name(&r.workload))
    }

    /// The workloads of `backend` in `file`'s throughput table, in the table's order.
    fn throughput_workloads(&self, file: usize, backend: &str) -> &[WorkloadRecord] {
        self.workloads[file]
            .get_or_init(|| summary::throughput_workloads(self.files[file]))
            .get(backend)
            .map_or(&[], Vec::as_slice)
    }
}

/// One backend of one file, as a claim sees it.
#[derive(Clone, Debug)]
struct Entrant {
    file: usize,
    name: String,
    label: String,
    family: Family,
    /// For VMs and emulated machines: what kind of VM.
    kind: Option<VmKind>,
}

/// The backends of a host's files that have data for a claim, by the part they play.
#[derive(Default)]
struct Sides {
    containers: Vec<Entrant>,
    sandboxes: Vec<Entrant>,
    /// VMs on KVM, any kind.
    vms: Vec<Entrant>,
    emulated: Vec<Entrant>,
    /// Backends whose results do not say what they are.
    unplaced: Vec<Entrant>,
    /// (file, name) of every container, sandbox and VM.
    shown: HashSet<(usize, String)>,
}

fn sides(files: &Files, has_data: impl Fn(usize, &Results, &str) -> bool) -> Sides {
    let mut s = Sides::default();
    for (file, r) in files.files.iter().enumerate() {
        for name in r.backend_names() {
            if !has_data(file, r, name) {
                continue;
            }
            let family = r.family(name);
            let e = Entrant {
                file,
                label: crate::backends::label(r, name),
                kind: family.vm_kind(r.fact(name, |f| f.guest_os)),
                name: name.clone(),
                family,
            };
            let side = match family {
                Family::Container => &mut s.containers,
                Family::Sandbox => &mut s.sandboxes,
                f if f.is_vm() => &mut s.vms,
                Family::Emulated => {
                    s.emulated.push(e);
                    continue;
                }
                Family::Unknown => {
                    s.unplaced.push(e);
                    continue;
                }
                _ => continue,
            };
            s.shown.insert((file, name.clone()));
            side.push(e);
        }
    }
    s
}

impl Sides {
    /// True when `name` of `file` takes part (as a container, sandbox or VM): its figures are
    /// shown with the claim.
    fn shows(&self, file: usize, name: &str) -> bool {
        self.shown.contains(&(file, name.to_string()))
    }
}

fn has_runs(results: &Results, backend: &str, keep: impl Fn(&RunRecord) -> bool) -> bool {
    summary::completed(results, backend).any(keep)
}

/// Why a comparison of containers with VMs cannot be made, if it cannot.
fn missing(s: &Sides, what: &str) -> Option<String> {
    if s.containers.is_empty() && s.vms.is_empty() && s.emulated.is_empty() {
        Some(format!("No container and no VM has {what} here."))
    } else if s.containers.is_empty() {
        Some(format!("No container has {what} here."))
    } else if s.vms.is_empty() && !s.emulated.is_empty() {
        Some(format!(
            "Only an emulated machine ({}) has {what} here, and emulation says nothing about \
             how VMs run.",
            names(&s.emulated)
        ))
    } else if s.vms.is_empty() {
        Some(format!("No VM has {what} here."))
    } else {
        None
    }
}

fn names(entrants: &[Entrant]) -> String {
    let mut seen = HashSet::new();
    let out: Vec<&str> = entrants
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| seen.insert(*n))
        .collect();
    out.join(", ")
}

/// The caveat of nested PVM in the ledger: short, as it repeats on every VM timing claim. It
/// says which VMs it slows, so no reader concludes that a VM without an OS would start faster
/// elsewhere.
pub const NESTED_PVM_SHORT: &str = "KVM here is nested PVM (no VT-x/AMD-V): a guest's kernel \
    mode is emulated in software, so whatever runs a guest kernel is far slower here than on \
    hardware virtualization; a VM without an OS runs only in user mode and is barely affected.";

/// The caveat of a machine that is itself emulated (QEMU TCG with emulated VT-x/AMD-V): its VMs
/// run on real KVM code, but on a CPU that is software.
pub const EMULATED_HOST_SHORT: &str = "VMs ran on KVM inside an emulated machine (its VT-x/AMD-V \
    is software), so VM timings here are an emulator's, not a laptop's; compare ratios, not times.";

/// The plain-words caveat of nested PVM, for the summary and environment sections.
pub const NESTED_PVM: &str = "This machine has no VT-x/AMD-V: its KVM is nested PVM, which runs \
    a guest's user mode natively but emulates the guest's kernel mode in software. A guest kernel's \
    boot, and anything that enters a guest kernel, are much slower here than on a laptop or server \
    with hardware virtualization; a VM without an OS, which runs only in user mode, is barely \
    affected.";

/// Caveats of a comparison with VMs: what was left out, and (for timings) nested PVM.
fn vm_caveats(files: &Files, s: &Sides, timing: bool) -> Vec<String> {
    let mut c = Vec::new();
    if timing
        && !s.vms.is_empty()
        && files
            .files
            .iter()
            .any(|r| r.header.environment.kvm == KvmKind::NestedPvm)
    {
        c.push(NESTED_PVM_SHORT.to_string());
    } else if timing
        && !s.vms.is_empty()
        && files
            .files
            .iter()
            .any(|r| r.header.environment.underneath.is_emulator())
    {
        c.push(EMULATED_HOST_SHORT.to_string());
    }
    if !s.emulated.is_empty() {
        c.push(format!(
            "Left out: {} (emulated; TCG translates every guest instruction in software).",
            names(&s.emulated)
        ));
    }
    if !s.unplaced.is_empty() {
        c.push(format!(
            "Left out: {} (its results do not say what kind of backend it is, e.g. whether it \
             was emulated).",
            names(&s.unplaced)
        ));
    }
    c.extend(files.check_caveats());
    c
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

/// How a ratio compares with 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Clearly below 1.
    Below,
    /// Clearly above 1.
    Above,
    /// Not clearly different.
    Same,
    /// Too few samples to call.
    TooFew,
}

impl Side {
    fn opposite(self) -> Side {
        match self {
            Side::Below => Side::Above,
            Side::Above => Side::Below,
            other => other,
        }
    }
}

/// Where a paired ratio falls (rule 1 of the module docs).
fn side(r: &Summary) -> Side {
    if r.n < MIN_PAIRS {
        Side::TooFew
    } else if r.ci_high < 1.0 && r.median < 1.0 - MARGIN {
        Side::Below
    } else if r.ci_low > 1.0 && r.median > 1.0 + MARGIN {
        Side::Above
    } else {
        Side::Same
    }
}

/// One comparison: a container (or sandbox) against a VM (or the baseline).
#[derive(Clone, Debug)]
struct Pair {
    /// Who is compared with whom, on what (to find the same pair in two files).
    key: String,
    file: usize,
    /// The VM's kind, when the other side is a VM.
    kind: Option<VmKind>,
    /// The VM (or baseline) compared against.
    other: String,
    side: Side,
    /// The resource of the workload compared, when pairs are per workload.
    resource: Option<Resource>,
    /// For the figures: backends labelled with their kind.
    text: String,
    /// For sentences, which name the kind already: backends by name.
    brief: String,
}

fn too_few(n: usize) -> String {
    format!(
        " — {n} paired round{}, fewer than {MIN_PAIRS}: not called",
        if n == 1 { "" } else { "s" }
    )
}

/// `a ÷ b` of a run metric, paired by round (and by workload when `per_workload`), within the
/// file both are in, on the samples that passed their check.
fn ratio_pairs(
    files: &Files,
    a: &Entrant,
    b: &Entrant,
    per_workload: bool,
    keep: impl Fn(&RunRecord) -> bool + Copy,
    metric: impl Fn(&RunRecord) -> Option<f64> + Copy,
) -> Vec<Pair> {
    if a.file != b.file {
        return vec![];
    }
    let r = files.files[a.file];
    let passed = files.passed(a.file);
    let groups: Vec<Option<&WorkloadRecord>> = if per_workload {
        files
            .throughput_workloads(a.file, &a.name)
            .iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    // Each side read once: `a`'s samples by workload, `b`'s by the pairing key (which holds
    // the workload, so a sample of `a` meets only `b`'s of the same workload).
    let ok = |x: &&RunRecord| keep(x) && passed(x);
    let base = summary::Pairing::of(
        summary::completed(r, &b.name).filter(ok),
        summary::pair_key,
        metric,
    );
    let mut mine: HashMap<Option<&WorkloadRecord>, Vec<&RunRecord>> = HashMap::new();
    for x in summary::completed(r, &a.name).filter(ok) {
        mine.entry(per_workload.then_some(&x.workload))
            .or_default()
            .push(x);
    }
    let mut out = Vec::new();
    for w in groups {
        let Some(runs) = mine.get(&w) else {
            continue;
        };
        let ratios = base.ratios(runs.iter().copied(), summary::pair_key, metric);
        let Some(s) = Summary::of(&ratios) else {
            continue;
        };
        let on = w.map_or(String::new(), |w| {
            format!(" on {}", summary::workload_name(w))
        });
        let side = side(&s);
        let prefix = files.prefix(a.file);
        let ratio = format::ratio(&s);
        let mut text = format!("{prefix}{} ÷ {}{on}: {ratio}", a.label, b.label);
        let mut brief = format!("{prefix}{} ÷ {}{on} {ratio}", a.name, b.name);
        if side == Side::TooFew {
            text.push_str(&too_few(s.n));
            brief.push_str(&too_few(s.n));
        }
        out.push(Pair {
            key: format!("{} ÷ {}{on}", a.name, b.name),
            file: a.file,
            kind: b.kind,
            other: b.name.clone(),
            side,
            resource: w.and_then(summary::resource_of),
            text,
            brief,
        });
    }
    out
}

/// Which entrants a comparison pairs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Only those of the same file: samples are paired by round, and rounds are a file's.
    File,
    /// Any two of the host's files (independent samples, such as density ladders).
    Host,
}

/// Every pair of `subjects` with `others` (of the same file, or of any, as `scope` says) that
/// `pair` can compare, subject by subject.
fn pairs_with(
    subjects: &[Entrant],
    others: &[Entrant],
    scope: Scope,
    pair: impl Fn(&Entrant, &Entrant) -> Vec<Pair>,
) -> Vec<Pair> {
    // Each file's others, so that pairing within files does not walk the other files' too.
    let mut by_file: HashMap<usize, Vec<&Entrant>> = HashMap::new();
    if scope == Scope::File {
        for b in others {
            by_file.entry(b.file).or_default().push(b);
        }
    }
    let all: Vec<&Entrant> = others.iter().collect();
    let mut out = Vec::new();
    for a in subjects {
        let mine: &[&Entrant] = match scope {
            Scope::File => by_file.get(&a.file).map_or(&[], Vec::as_slice),
            Scope::Host => &all,
        };
        for b in mine {
            out.extend(pair(a, b));
        }
    }
    out
}

/// What the VMs that decide a claim are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basis {
    /// VMs with a guest OS (or, for claims that do not give the guest OS as their reason, any
    /// VMs, listed by kind).
    GuestOs,
    /// Only VMs without an OS.
    NoOs,
    /// Only VMs whose results do not say.
    Unknown,
    /// VMs without an OS and VMs whose results do not say.
    NotKnownToRunOs,
    /// Every kind (claims whose reason is not the guest OS).
    Any,
}

/// How a set of comparisons decides a claim.
struct Decision {
    verdict: Verdict,
    /// The pairs that decided (called, of the basis VMs).
    basis: Vec<Pair>,
    kind: Basis,
    /// True when the pairs all favour the container but no VM with a guest OS was among them.
    untested: bool,
    /// Pairs of the basis that had too few rounds.
    too_few: Vec<Pair>,
    /// Pairs with VMs outside the basis (e.g. without an OS, when one with a guest OS ran).
    aside: Vec<Pair>,
}

/// Decide from `pairs` where the claim wants `want` (rules 1 and 4 of the module docs).
/// `guest_os_reason`: the claim's reason is the guest OS. `None` when no pair can be called.
fn decide(pairs: Vec<Pair>, want: Side, guest_os_reason: bool) -> Result<Decision, Vec<Pair>> {
    let with_os = |p: &Pair| p.kind == Some(VmKind::GuestOs);
    let (basis, aside): (Vec<Pair>, Vec<Pair>) = if guest_os_reason && pairs.iter().any(with_os) {
        pairs.into_iter().partition(with_os)
    } else {
        (pairs, vec![])
    };
    let kinds: Vec<Option<VmKind>> = basis.iter().map(|p| p.kind).collect();
    let kind = if !guest_os_reason {
        Basis::Any
    } else if kinds.contains(&Some(VmKind::GuestOs)) {
        Basis::GuestOs
    } else if kinds.iter().all(|k| *k == Some(VmKind::NoOs)) {
        Basis::NoOs
    } else if kinds.iter().all(|k| *k == Some(VmKind::Unknown)) {
        Basis::Unknown
    } else {
        Basis::NotKnownToRunOs
    };
    let (too_few, called): (Vec<Pair>, Vec<Pair>) =
        basis.into_iter().partition(|p| p.side == Side::TooFew);
    if called.is_empty() {
        return Err(too_few);
    }
    let hits = called.iter().filter(|p| p.side == want).count();
    let mut verdict = if hits == called.len() {
        Verdict::Supported
    } else if hits == 0 {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    };
    let untested = guest_os_reason && kind != Basis::GuestOs && verdict == Verdict::Supported;
    if untested {
        verdict = Verdict::Depends;
    }
    Ok(Decision {
        verdict,
        basis: called,
        kind,
        untested,
        too_few,
        aside,
    })
}

impl Decision {
    /// The VMs that decided, in words: "the VM without an OS (vm)", "every VM with a guest OS
    /// (qemu, vm-linux)". `any` writes "any" instead of "every" for a plural.
    fn vms(&self, any: bool) -> String {
        let mut vms: Vec<(&str, Option<VmKind>)> = Vec::new();
        let mut seen = HashSet::new();
        for p in &self.basis {
            if seen.insert(p.other.as_str()) {
                vms.push((&p.other, p.kind));
            }
        }
        let list = vms.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let every = if any { "any" } else { "every" };
        let one_kind = vms.iter().all(|(_, k)| *k == vms[0].1);
        match (vms[0].1, vms.len()) {
            (Some(k), 1) => format!("the {} ({list})", k.noun()),
            (Some(k), _) if one_kind => format!("{every} {} ({list})", k.noun()),
            _ if self.kind == Basis::NotKnownToRunOs => {
                format!("{every} VM measured ({list}), none of them known to run a guest OS")
            }
            _ => format!(
                "{every} VM measured ({})",
                vms.iter()
                    .map(|(n, k)| format!("{n}: {}", k.map_or("VM", VmKind::noun)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }

    fn list(&self, keep: impl Fn(Side) -> bool) -> String {
        briefs(self.basis.iter().filter(|p| keep(p.side)))
    }

    /// What a reader must know besides the verdict: no VM with a guest OS ran; VMs left aside;
    /// pairs too short to call; the same pair disagreeing between files.
    fn addenda(&self) -> String {
        let mut out = String::new();
        if matches!(
            self.kind,
            Basis::NoOs | Basis::Unknown | Basis::NotKnownToRunOs
        ) && !self.untested
        {
            out.push_str(match self.kind {
                Basis::NoOs => {
                    " No VM with a guest OS ran: this says nothing about VMs that boot an \
                     operating system."
                }
                _ => {
                    " No VM known to run a guest OS ran: this says nothing about VMs that boot \
                     an operating system."
                }
            });
        }
        if !self.aside.is_empty() {
            let kinds: Vec<&str> = {
                let mut k: Vec<&str> = Vec::new();
                for p in &self.aside {
                    let noun = p.kind.map_or("VMs", VmKind::plural);
                    if !k.contains(&noun) {
                        k.push(noun);
                    }
                }
                k
            };
            out.push_str(&format!(
                " {} do not decide a claim whose reason is the guest OS; for comparison: {}.",
                format::capitalise(&kinds.join(" and ")),
                briefs(&self.aside)
            ));
        }
        if !self.too_few.is_empty() {
            out.push_str(&format!(
                " Not called, too few rounds: {}.",
                briefs(&self.too_few)
            ));
        }
        // The same pair in other files: each pair is looked for among those of its own key.
        let mut by_key: HashMap<&str, Vec<&Pair>> = HashMap::new();
        for p in &self.basis {
            by_key.entry(p.key.as_str()).or_default().push(p);
        }
        // How many pairs of each key came so far: the ones after `p` are `same[n..]`.
        let mut so_far: HashMap<&str, usize> = HashMap::new();
        for p in &self.basis {
            let same = &by_key[p.key.as_str()];
            let n = so_far.entry(p.key.as_str()).or_insert(0);
            *n += 1;
            if let Some(q) = same[*n..]
                .iter()
                .find(|q| q.file != p.file && q.side != p.side)
            {
                out.push_str(&format!(
                    " The files of this host disagree on {}: {} and {}.",
                    p.key, p.brief, q.brief
                ));
            }
        }
        out
    }
}

/// Comparisons for a sentence, `; `-separated.
fn briefs<'a>(pairs: impl IntoIterator<Item = &'a Pair>) -> String {
    pairs
        .into_iter()
        .map(|p| p.brief.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A paired claim's assessment: its sentence, what a reader must also know about the decision
/// ([`Decision::addenda`]), and where the sandboxes stand.
fn assess(
    claim: Claim,
    d: &Decision,
    why: String,
    sandboxes: &str,
    figures: Vec<String>,
    caveats: Vec<String>,
) -> Assessment {
    Assessment {
        claim,
        verdict: d.verdict,
        figures,
        why: format!("{why}{}{sandboxes}", d.addenda()),
        caveats,
        parts: vec![],
    }
}

/// When no pair could be called: the claim has no data, and says why.
fn not_called(claim: Claim, too_few: Vec<Pair>) -> Assessment {
    let mut a = Assessment::no_data(
        claim,
        format!(
            "Too few paired rounds to call any difference (at least {MIN_PAIRS} are needed; run \
             with --runs {MIN_PAIRS} or more)."
        ),
    );
    a.figures = too_few.into_iter().map(|p| p.text).collect();
    a
}

/// Where each sandbox stands between the containers and the VMs, in one sentence:
/// `better`/`worse` are the claim's words for the container's side and the VM's side.
fn sandboxes_stand(
    s: &Sides,
    want: Side,
    words: (&str, &str),
    scope: Scope,
    pair: impl Fn(&Entrant, &Entrant) -> Vec<Pair>,
    figures: &mut Vec<String>,
) -> String {
    let mut out = String::new();
    for sb in &s.sandboxes {
        let vs_c = pairs_with(std::slice::from_ref(sb), &s.containers, scope, &pair);
        let vs_v = pairs_with(std::slice::from_ref(sb), &s.vms, scope, &pair);
        if vs_c.is_empty() && vs_v.is_empty() {
            continue;
        }
        let stand = |pairs: &[Pair], against: &str| {
            let called: Vec<&Pair> = pairs.iter().filter(|p| p.side != Side::TooFew).collect();
            if called.is_empty() {
                return format!("not compared with {against}");
            }
            let all = |side: Side| called.iter().all(|p| p.side == side);
            if all(want) {
                format!("clearly {} than {against}", words.0)
            } else if all(want.opposite()) {
                format!("clearly {} than {against}", words.1)
            } else if all(Side::Same) {
                format!("not clearly different from {against}")
            } else {
                format!("mixed against {against}")
            }
        };
        out.push_str(&format!(
            " {} is a sandbox (a kernel of its own, in user space), counted as neither: {} and \
             {}.",
            sb.label,
            stand(&vs_c, "the containers"),
            stand(&vs_v, "the VMs")
        ));
        figures.extend(vs_c.iter().chain(&vs_v).map(|p| p.text.clone()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The claims.

fn startup(claim: Claim, files: &Files) -> Assessment {
    let metric = |r: &RunRecord| r.startup_ns.map(|n| n as f64);
    let s = sides(files, |_, r, b| has_runs(r, b, |x| x.startup_ns.is_some()));
    if let Some(why) = missing(&s, "start-up samples") {
        return Assessment::no_data(claim, why).with(vm_caveats(files, &s, false));
    }
    let mut figures: Vec<String> = Vec::new();
    for (i, r) in files.files.iter().enumerate() {
        for row in summary::startup(r) {
            let shown = s.shows(i, &row.backend);
            if let (true, Some(st)) = (shown, row.startup.as_ref()) {
                figures.push(format!(
                    "{}{}: median {}",
                    files.prefix(i),
                    row.label,
                    format::with_ci(st, format::duration)
                ));
            }
        }
    }
    let pair = |a: &Entrant, b: &Entrant| ratio_pairs(files, a, b, false, |_| true, metric);
    let pairs = pairs_with(&s.containers, &s.vms, Scope::File, pair);
    if pairs.is_empty() {
        return Assessment::no_data(claim, "No round ran both a container and a VM.");
    }
    figures.extend(pairs.iter().map(|p| p.text.clone()));
    let d = match decide(pairs, Side::Below, true) {
        Ok(d) => d,
        Err(few) => return not_called(claim, few),
    };
    let why = match d.verdict {
        Verdict::Supported => format!(
            "Every container reached its first instruction clearly sooner than {}: {}.",
            d.vms(false),
            d.list(|_| true)
        ),
        _ if d.untested => format!(
            "Every container started clearly sooner than {}, but no VM with a guest OS ran, so \
             the data cannot show that booting an OS is why.",
            d.vms(false)
        ),
        Verdict::NotSupported => format!(
            "No container started clearly sooner than {}: {}.",
            d.vms(true),
            d.list(|_| true)
        ),
        _ => format!(
            "Some containers start clearly sooner than {}: {}; others do not: {}. It depends on \
             the runtime and the VM, not on the isolation model alone.",
            d.vms(false),
            d.list(|x| x == Side::Below),
            d.list(|x| x != Side::Below)
        ),
    };
    let sandboxes = sandboxes_stand(
        &s,
        Side::Below,
        ("sooner", "later"),
        Scope::File,
        pair,
        &mut figures,
    );
    assess(
        claim,
        &d,
        why,
        &sandboxes,
        figures,
        vm_caveats(files, &s, true),
    )
}

fn memory(claim: Claim, files: &Files) -> Assessment {
    let keep = |r: &RunRecord| r.memory_at_ready.is_some();
    let s = sides(files, |_, r, b| {
        has_runs(r, b, |x| summary::fixed_bytes(x).is_some())
    });
    if let Some(why) = missing(&s, "memory samples") {
        return Assessment::no_data(claim, why).with(vm_caveats(files, &s, false));
    }
    let mut figures: Vec<String> = Vec::new();
    for (i, r) in files.files.iter().enumerate() {
        for row in summary::memory(r) {
            let shown = s.shows(i, &row.backend);
            let Some(fixed) = row.fixed.as_ref().filter(|_| shown) else {
                continue;
            };
            let mut line = format!(
                "{}{}, {} MiB working set: fixed cost {}",
                files.prefix(i),
                row.label,
                row.mib,
                format::with_ci(fixed, format::bytes)
            );
            if let (Some(g), Some(o)) = (row.guest_touched, row.vmm_overhead) {
                line.push_str(&format!(
                    "; by the end of the run, guest RAM touched {} and VMM overhead {}",
                    format::bytes(g.median),
                    format::bytes(o.median)
                ));
            }
            figures.push(line);
        }
    }
    let pair = |a: &Entrant, b: &Entrant| {
        // Paired by round and working-set size: the pair key includes the workload.
        ratio_pairs(files, a, b, false, keep, summary::fixed_bytes)
    };
    let pairs = pairs_with(&s.containers, &s.vms, Scope::File, pair);
    if pairs.is_empty() {
        return Assessment::no_data(claim, "No round measured both a container and a VM.");
    }
    figures.extend(pairs.iter().map(|p| p.text.clone()));
    let d = match decide(pairs, Side::Below, true) {
        Ok(d) => d,
        Err(few) => return not_called(claim, few),
    };
    let why = match d.verdict {
        Verdict::Supported => format!(
            "Every container's fixed cost is clearly below that of {}: {}. Such a VM pays for \
             its guest kernel's memory and a VMM besides the workload.",
            d.vms(false),
            d.list(|_| true)
        ),
        _ if d.untested && d.kind == Basis::NoOs => format!(
            "Containers cost less here than {}, but not because of a guest OS: it runs none. \
             What the VM pays more is the hypervisor's own cost (KVM's structures for the VM and \
             its vCPU, the VMM process). A VM with a guest OS (e.g. vm-linux, qemu) would \
             measure what a guest OS adds.",
            d.vms(false)
        ),
        _ if d.untested => format!(
            "Containers cost less here than {}, but the results do not show that a guest OS is \
             why: no VM known to run one was measured.",
            d.vms(false)
        ),
        Verdict::NotSupported => {
            let mut w = format!(
                "No container costs clearly less than {}: {}.",
                d.vms(true),
                d.list(|_| true)
            );
            if d.kind == Basis::NoOs {
                w.push_str(" A minimal guest can be as small as a container runtime.");
            }
            w
        }
        _ => format!(
            "Some containers cost clearly less than {}: {}; others do not: {}. It depends on the \
             runtime.",
            d.vms(false),
            d.list(|x| x == Side::Below),
            d.list(|x| x != Side::Below)
        ),
    };
    let sandboxes = sandboxes_stand(
        &s,
        Side::Below,
        ("smaller", "larger"),
        Scope::File,
        pair,
        &mut figures,
    );
    // Memory does not depend on how fast the guest's kernel mode runs.
    assess(
        claim,
        &d,
        why,
        &sandboxes,
        figures,
        vm_caveats(files, &s, false),
    )
}

fn rate(r: &RunRecord) -> Option<f64> {
    summary::rate(r).map(|x| x.0)
}

fn performance(claim: Claim, files: &Files) -> Assessment {
    let s = sides(files, |_, r, b| {
        has_runs(r, b, |x| summary::rate(x).is_some())
    });
    if let Some(why) = missing(&s, "throughput samples") {
        return Assessment::no_data(claim, why).with(vm_caveats(files, &s, false));
    }
    let pair = |a: &Entrant, b: &Entrant| ratio_pairs(files, a, b, true, |_| true, rate);
    let pairs = pairs_with(&s.containers, &s.vms, Scope::File, pair);
    if pairs.is_empty() {
        return Assessment::no_data(
            claim,
            "No round ran one workload in both a container and a VM (or every such workload \
             failed its checksum check).",
        );
    }
    let mut figures: Vec<String> = pairs.iter().map(|p| p.text.clone()).collect();
    let parts = by_resource(&pairs, |resource, pairs| {
        let (verdict, outcome) = match decide(pairs, Side::Above, false) {
            Err(_) => (Verdict::NoData, "too few paired rounds to call".to_string()),
            Ok(d) => {
                let outcome = match d.verdict {
                    Verdict::Supported => {
                        format!("containers clearly faster than {}", d.vms(false))
                    }
                    Verdict::NotSupported => {
                        format!("no container clearly faster than {}", d.vms(true))
                    }
                    _ => format!(
                        "containers clearly faster only on {}",
                        d.list(|x| x == Side::Above)
                    ),
                };
                (d.verdict, outcome)
            }
        };
        Part {
            resource: resource.name(),
            verdict,
            why: format!(
                "{}: {outcome}. {}",
                format::capitalise(resource.name()),
                vm_costs(resource)
            ),
        }
    });
    let d = match decide(pairs, Side::Above, false) {
        Ok(d) => d,
        Err(few) => return not_called(claim, few),
    };
    let why = match d.verdict {
        Verdict::Supported => format!(
            "Every kernel ran clearly faster in every container than in {}.",
            d.vms(false)
        ),
        Verdict::NotSupported => format!(
            "On no kernel did a container clearly outrun {}: work that stays in user mode runs \
             at the same speed under both.",
            d.vms(true)
        ),
        _ => format!(
            "Containers are clearly faster than {} only on some kernels: {}. Elsewhere there is \
             no clear difference, or the VM wins.",
            d.vms(false),
            d.list(|x| x == Side::Above)
        ),
    };
    let sandboxes = sandboxes_stand(
        &s,
        Side::Above,
        ("faster", "slower"),
        Scope::File,
        pair,
        &mut figures,
    );
    let mut a = assess(
        claim,
        &d,
        why,
        &sandboxes,
        figures,
        vm_caveats(files, &s, true),
    );
    a.parts = parts;
    a
}

/// Judge `pairs` resource by resource with `judge`, in [`Resource::ALL`]'s order.
fn by_resource(pairs: &[Pair], judge: impl Fn(Resource, Vec<Pair>) -> Part) -> Vec<Part> {
    Resource::ALL
        .into_iter()
        .filter_map(|r| {
            let of: Vec<Pair> = pairs
                .iter()
                .filter(|p| p.resource == Some(r))
                .cloned()
                .collect();
            (!of.is_empty()).then(|| judge(r, of))
        })
        .collect()
}

/// Where a container and a VM pay for their isolation on `resource`, and why.
fn vm_costs(resource: Resource) -> &'static str {
    match resource {
        Resource::Compute => {
            "User-mode instructions run natively in both: a VM's CPU is the host's, nothing \
             traps."
        }
        Resource::Memory => {
            "The same memory; a VM's TLB misses walk two levels of page tables (the guest's, then \
             the host's nested ones), which random access shows."
        }
        Resource::SystemCalls => {
            "A container's system calls go straight to the host's kernel; a guest's go to its own \
             kernel, without leaving the VM (a bare guest's become VM exits)."
        }
        Resource::Disk => {
            "A container's disk is a file of the host's, reached through the host's own kernel; a \
             VM's every request is a virtio notification — a VM exit — served by its VMM from the \
             same file, and its completion an interrupt injected back."
        }
        Resource::Network => {
            "A container's packets cross one veth pair into the peer's namespace; a VM's cross a \
             virtio card — a VM exit per notification — its VMM and a tap device; gVisor's go \
             through its network stack in user space."
        }
    }
}

fn per_instance_line(prefix: &str, d: &DensitySeries, memory_bytes: u64) -> Option<String> {
    let per = d.per_instance.as_ref()?;
    let mut line = format!(
        "{prefix}{}: {} per instance",
        d.label,
        format::with_ci(per, format::bytes)
    );
    if let Some(fit) = d.projected_fit(memory_bytes) {
        line.push_str(&format!(
            " (≈ {:.0} would fit in the host's {}; {} were started",
            fit,
            format::bytes(memory_bytes as f64),
            d.max_n()
        ));
        if let Some(end) = &d.end {
            line.push_str(&format!(", stopped: {}", end.reason));
        }
        line.push(')');
    }
    Some(line)
}

/// Density compares independent samples (each backend's ladder ran alone): a container's and a
/// VM's per-instance costs are compared across the files of a host, and the two 95% intervals
/// must not overlap.
fn density_pair(
    files: &Files,
    series: &[Vec<DensitySeries>],
    a: &Entrant,
    b: &Entrant,
) -> Vec<Pair> {
    let find = |e: &Entrant| {
        series[e.file]
            .iter()
            .find(|d| d.backend == e.name)
            .and_then(|d| d.per_instance)
    };
    let (Some(x), Some(y)) = (find(a), find(b)) else {
        return vec![];
    };
    let n = x.n.min(y.n);
    let side = if n < MIN_PAIRS {
        Side::TooFew
    } else if x.ci_high < y.ci_low && x.median < y.median * (1.0 - MARGIN) {
        Side::Below
    } else if x.ci_low > y.ci_high && x.median > y.median * (1.0 + MARGIN) {
        Side::Above
    } else {
        Side::Same
    };
    let line = |a_name: &str, b_name: &str| {
        let mut t = format!(
            "{}{a_name} {} vs {}{b_name} {} per instance",
            files.prefix(a.file),
            format::bytes(x.median),
            files.prefix(b.file),
            format::bytes(y.median)
        );
        if side == Side::TooFew {
            t.push_str(&format!(
                " — {n} ladder steps, fewer than {MIN_PAIRS}: not called (a higher --max gives \
                 more)"
            ));
        }
        t
    };
    vec![Pair {
        key: format!("{} vs {}", a.name, b.name),
        file: a.file,
        kind: b.kind,
        other: b.name.clone(),
        side,
        resource: None,
        text: line(&a.label, &b.label),
        brief: line(&a.name, &b.name),
    }]
}

fn density(claim: Claim, files: &Files) -> Assessment {
    let series: Vec<Vec<DensitySeries>> = files.files.iter().map(|r| summary::density(r)).collect();
    let s = sides(files, |_, r, b| r.density_of(b).next().is_some());
    if let Some(why) = missing(&s, "density steps") {
        return Assessment::no_data(claim, why).with(vm_caveats(files, &s, false));
    }
    let mut figures: Vec<String> = Vec::new();
    for e in s.containers.iter().chain(&s.sandboxes).chain(&s.vms) {
        let r = files.files[e.file];
        if let Some(d) = series[e.file].iter().find(|d| d.backend == e.name) {
            figures.extend(per_instance_line(
                &files.prefix(e.file),
                d,
                r.header.environment.memory_bytes,
            ));
        }
    }
    // Every container with every VM of the host, whichever file each ladder is in.
    let pairs = pairs_with(&s.containers, &s.vms, Scope::Host, |a, b| {
        density_pair(files, &series, a, b)
    });
    if pairs.is_empty() {
        return Assessment::no_data(claim, "No per-instance cost could be computed.");
    }
    let d = match decide(pairs, Side::Below, true) {
        Ok(d) => d,
        Err(few) => return not_called(claim, few),
    };
    let why = match d.verdict {
        Verdict::Supported => format!(
            "Each container adds clearly less memory than {}, so more of them fit in the same \
             memory: {}.",
            d.vms(false),
            d.list(|_| true)
        ),
        _ if d.untested => format!(
            "Each container adds clearly less memory than {}, but no VM with a guest OS ran, so \
             the data cannot show that a guest OS is why.",
            d.vms(false)
        ),
        Verdict::NotSupported => format!(
            "No container is clearly cheaper per instance than {}: {}.",
            d.vms(true),
            d.list(|_| true)
        ),
        _ => format!(
            "Some containers are clearly cheaper per instance than {}: {}; others are not: {}.",
            d.vms(false),
            d.list(|x| x == Side::Below),
            d.list(|x| x != Side::Below)
        ),
    };
    let sandboxes = sandboxes_stand(
        &s,
        Side::Below,
        ("cheaper", "costlier"),
        Scope::Host,
        |a, b| density_pair(files, &series, a, b),
        &mut figures,
    );
    let mut caveats = vm_caveats(files, &s, false);
    caveats.push(
        "Fit is projected from memory alone; CPU, PIDs and the launch rate limit density too."
            .into(),
    );
    assess(claim, &d, why, &sandboxes, figures, caveats)
}

/// The probe's view of every backend that ran it, file by file.
struct Probed<'a> {
    entrant: Entrant,
    /// The side it is on.
    role: Role,
    iso: std::rc::Rc<summary::Isolation>,
    host_release: &'a str,
}

/// The side of the probe claims a backend is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Container,
    Sandbox,
    Vm,
    Unplaced,
}

fn probed<'a>(files: &Files<'a>) -> (Vec<Probed<'a>>, Sides) {
    let mut out = Vec::new();
    let mut s = Sides::default();
    for (file, r) in files.files.iter().enumerate() {
        let Some(iso) = summary::isolation(r) else {
            continue;
        };
        let iso = std::rc::Rc::new(iso);
        for name in &iso.backends {
            let family = r.family(name);
            let e = Entrant {
                file,
                name: name.clone(),
                label: crate::backends::label(r, name),
                family,
                kind: family.vm_kind(r.fact(name, |f| f.guest_os)),
            };
            let (side, role) = match family {
                Family::Container => (&mut s.containers, Role::Container),
                Family::Sandbox => (&mut s.sandboxes, Role::Sandbox),
                // What a guest can see does not depend on how fast its instructions run:
                // emulated machines count as VMs here.
                f if f.is_vm() || f == Family::Emulated => (&mut s.vms, Role::Vm),
                Family::Unknown => (&mut s.unplaced, Role::Unplaced),
                _ => continue,
            };
            side.push(e.clone());
            out.push(Probed {
                entrant: e,
                role,
                iso: iso.clone(),
                host_release: &r.header.environment.kernel_release,
            });
        }
    }
    (out, s)
}

impl Probed<'_> {
    fn release(&self) -> Option<&str> {
        self.iso.value(&self.entrant.name, "kernel_release")
    }
    fn shares_host_kernel(&self) -> bool {
        self.release() == Some(self.host_release)
    }
    fn root_on_host(&self) -> Option<&str> {
        self.iso.value(&self.entrant.name, "root_on_host")
    }
    fn shared(&self) -> usize {
        self.iso.shared_with_host(&self.entrant.name).unwrap_or(0)
    }
    fn family(&self) -> Family {
        self.entrant.family
    }
    fn is(&self, role: Role) -> bool {
        self.role == role
    }
}

fn kernel(claim: Claim, files: &Files) -> Assessment {
    let (all, s) = probed(files);
    if all.is_empty() {
        return Assessment::no_data(claim, "No backend ran the probe here.");
    }
    let with_release: Vec<&Probed> = all.iter().filter(|p| p.release().is_some()).collect();
    let containers: Vec<&&Probed> = with_release
        .iter()
        .filter(|p| p.is(Role::Container))
        .collect();
    let vms: Vec<&&Probed> = with_release.iter().filter(|p| p.is(Role::Vm)).collect();
    if containers.is_empty() || vms.is_empty() {
        return Assessment::no_data(
            claim,
            "The probe needs at least one container and one VM to compare.",
        );
    }
    let mut figures = vec![format!("host: {}", all[0].host_release)];
    figures.extend(with_release.iter().map(|p| {
        format!(
            "{}{}: {}",
            files.prefix(p.entrant.file),
            p.entrant.label,
            p.release().unwrap_or(format::NONE)
        )
    }));
    let sharing = containers.iter().filter(|p| p.shares_host_kernel()).count();
    let own = vms.iter().filter(|p| !p.shares_host_kernel()).count();
    let verdict = if sharing == containers.len() && own == vms.len() {
        Verdict::Supported
    } else if sharing == 0 || own == 0 {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    };
    let mut why = match verdict {
        Verdict::Supported => "Every container answered with the host's kernel release, every VM with another.".to_string(),
        Verdict::NotSupported if sharing == 0 => "No container reported the host's kernel: this runtime puts a kernel of its own between the workload and the host.".into(),
        Verdict::NotSupported => "Every VM reported the host's kernel release: the guest booted the same release (the probe cannot tell a copy from the host's own).".into(),
        _ => "Some containers or VMs break the pattern: the kernel boundary belongs to the runtime, not to the word \"container\".".into(),
    };
    let none: Vec<&str> = vms
        .iter()
        .filter(|p| p.release().is_some_and(|r| r.starts_with("none")))
        .map(|p| p.entrant.name.as_str())
        .collect();
    if !none.is_empty() {
        why.push_str(&format!(
            " {} runs no kernel at all: its VMM answers for it, so a VM needs no guest OS.",
            none.join(", ")
        ));
    }
    for p in with_release
        .iter()
        .filter(|p| p.family() == Family::Sandbox)
    {
        why.push_str(&format!(
            " {} is a sandbox, not counted as a container: its workload's system calls go to a \
             kernel of its own running in user space, which answered {}{} — the sandbox shares \
             the host's kernel only for its own processes.",
            p.entrant.name,
            p.release().unwrap_or(format::NONE),
            if p.shares_host_kernel() {
                " (the host's release: that kernel reports the host's version)"
            } else {
                ", not the host's release"
            }
        ));
    }
    let mut caveats = Vec::new();
    if !s.unplaced.is_empty() {
        caveats.push(format!(
            "Left out: {} (its results do not say what kind of backend it is).",
            names(&s.unplaced)
        ));
    }
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats,
        parts: vec![],
    }
}

fn isolation(claim: Claim, files: &Files) -> Assessment {
    let (all, s) = probed(files);
    if all.is_empty() {
        return Assessment::no_data(claim, "No backend ran the probe here.");
    }
    let containers: Vec<&Probed> = all.iter().filter(|p| p.is(Role::Container)).collect();
    let vms: Vec<&Probed> = all.iter().filter(|p| p.is(Role::Vm)).collect();
    if containers.is_empty() || vms.is_empty() {
        return Assessment::no_data(
            claim,
            "The probe needs at least one container and one VM to compare.",
        );
    }
    let placed: Vec<&Probed> = all
        .iter()
        .filter(|p| p.is(Role::Container) || p.is(Role::Sandbox) || p.is(Role::Vm))
        .collect();
    let figures: Vec<String> = placed
        .iter()
        .map(|p| {
            let root = p
                .root_on_host()
                .map(|r| format!("; root on the host: {r}"))
                .unwrap_or_default();
            format!(
                "{}{}: {} of {} facts equal the host's{root}",
                files.prefix(p.entrant.file),
                p.entrant.label,
                p.shared(),
                p.iso.rows.len()
            )
        })
        .collect();
    let vm_on_host_kernel = vms.iter().any(|p| p.shares_host_kernel());
    let min_c = containers.iter().map(|p| p.shared()).min().unwrap_or(0);
    let max_c = containers.iter().map(|p| p.shared()).max().unwrap_or(0);
    let max_v = vms.iter().map(|p| p.shared()).max().unwrap_or(0);
    let min_v = vms.iter().map(|p| p.shared()).min().unwrap_or(0);
    let verdict = if max_v < min_c && !vm_on_host_kernel {
        Verdict::Supported
    } else if min_v >= max_c {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    };
    let mut why = match verdict {
        Verdict::Supported => "Every VM's workload sees less of the host than every container's, and none of them talks to the host's kernel.",
        Verdict::NotSupported => "The VMs see as much of the host as the containers do.",
        _ => "Some containers see as little of the host as some VMs: how much is hidden depends on the configuration, not only on the model.",
    }
    .to_string();
    for p in all.iter().filter(|p| p.is(Role::Sandbox)) {
        let n = p.shared();
        let place = if n < min_v {
            "fewer than every VM"
        } else if n >= max_c && n > max_v {
            "as many as the containers"
        } else if n < min_c && n > max_v {
            "between the containers and the VMs"
        } else {
            "within the range of the containers and VMs"
        };
        why.push_str(&format!(
            " {} is a sandbox (a kernel of its own, in user space), counted as neither: it \
             shares {n} facts with the host, {place}.",
            p.entrant.name
        ));
    }
    // Whose root a container's root is: the same view can hide the host's root or a nobody.
    let root_is_hosts = |yes: bool| -> Vec<&str> {
        all.iter()
            .filter(|p| p.is(Role::Container) || p.is(Role::Sandbox))
            .filter(|p| {
                p.root_on_host()
                    .is_some_and(|r| r.starts_with("yes") == yes)
            })
            .map(|p| p.entrant.name.as_str())
            .collect()
    };
    let (hosts, mapped) = (root_is_hosts(true), root_is_hosts(false));
    if !hosts.is_empty() {
        why.push_str(&format!(
            " Root inside is the host's root in {}: whatever escapes, or whatever such a \
             container writes where the host can reach it, is root's.",
            hosts.join(", ")
        ));
    }
    if !mapped.is_empty() {
        why.push_str(&format!(
            " In {}, root inside is an unprivileged uid on the host (a user namespace).",
            mapped.join(", ")
        ));
    }
    let mut caveats = vec![
        "What an instance can see is a proxy: the boundary an attacker must cross is the host \
         kernel's system-call interface for a container, the VMM's exits for a VM."
            .to_string(),
    ];
    if !s.unplaced.is_empty() {
        caveats.push(format!(
            "Left out: {} (its results do not say what kind of backend it is).",
            names(&s.unplaced)
        ));
    }
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats,
        parts: vec![],
    }
}

fn images(claim: Claim, files: &Files) -> Assessment {
    let rows = summary::images(&files.files);
    let image_line = |r: &summary::ImageRow| {
        let what = r
            .what
            .as_deref()
            .map_or(String::new(), |w| format!(" ({w})"));
        format!("{}: {}{what}", r.label, format::bytes(r.bytes as f64))
    };
    let containers: Vec<&summary::ImageRow> = rows
        .iter()
        .filter(|r| r.family == Family::Container)
        .collect();
    // An image's size does not depend on how the machine runs it: emulated machines count,
    // with the OS they booted.
    let kind = |r: &summary::ImageRow| r.family.vm_kind(r.guest_os);
    let vms: Vec<&summary::ImageRow> = rows.iter().filter(|r| kind(r).is_some()).collect();
    if containers.is_empty() || vms.is_empty() {
        return Assessment::no_data(
            claim,
            "Image sizes of at least one container and one VM are needed (fact image_bytes).",
        );
    }
    let figures: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.family == Family::Container || r.family == Family::Sandbox || kind(r).is_some()
        })
        .map(image_line)
        .collect();
    // Every container image against every VM image; the VMs with a guest OS decide if any.
    let pairs: Vec<Pair> = containers
        .iter()
        .flat_map(|c| {
            vms.iter().map(move |v| Pair {
                key: format!("{} vs {}", c.backend, v.backend),
                file: 0,
                kind: kind(v),
                other: v.backend.clone(),
                side: match c.bytes.cmp(&v.bytes) {
                    std::cmp::Ordering::Less => Side::Below,
                    std::cmp::Ordering::Greater => Side::Above,
                    std::cmp::Ordering::Equal => Side::Same,
                },
                resource: None,
                text: format!(
                    "{} {} vs {} {}",
                    c.label,
                    format::bytes(c.bytes as f64),
                    v.label,
                    format::bytes(v.bytes as f64)
                ),
                brief: format!(
                    "{} {} vs {} {}",
                    c.backend,
                    format::bytes(c.bytes as f64),
                    v.backend,
                    format::bytes(v.bytes as f64)
                ),
            })
        })
        .collect();
    let d = match decide(pairs, Side::Below, true) {
        Ok(d) => d,
        Err(_) => unreachable!("image sizes are never too few"),
    };
    let mut why = match d.verdict {
        Verdict::Supported => format!(
            "Every container image is smaller than the image of {}.",
            d.vms(false)
        ),
        _ if d.untested => format!(
            "Every container image is smaller than the image of {}, but no VM with a guest OS \
             ran, so the data cannot show that a guest OS is what makes VM images large.",
            d.vms(false)
        ),
        Verdict::NotSupported => {
            let mut w = format!(
                "No container image is smaller than the image of {}: {}.",
                d.vms(true),
                d.list(|_| true)
            );
            if d.kind == Basis::NoOs {
                w.push_str(
                    " A VM without an OS boots only what its workload needs: an image's size \
                     follows what is packed in it.",
                );
            }
            w
        }
        _ => format!(
            "Not every container image is smaller than the image of {}: {}. An image's size \
             follows what is packed in it, not the isolation model alone.",
            d.vms(false),
            d.list(|x| x != Side::Below)
        ),
    };
    why.push_str(&d.addenda());
    for sb in rows.iter().filter(|r| r.family == Family::Sandbox) {
        why.push_str(&format!(
            " {} is a sandbox, counted as neither: its image is {}.",
            sb.label,
            format::bytes(sb.bytes as f64)
        ));
    }
    Assessment {
        claim,
        verdict: d.verdict,
        figures,
        why,
        caveats: vec![],
        parts: vec![],
    }
}

fn layers(claim: Claim, files: &Files) -> Assessment {
    let Some((file, builds)) = files
        .files
        .iter()
        .enumerate()
        .find_map(|(i, r)| Some((i, r.image.as_ref()?.docker.as_ref()?)))
    else {
        return Assessment::no_data(
            claim,
            "Docker did not build the lab's image here (lab run images with the docker backend \
             does).",
        );
    };
    let prefix = files.prefix(file);
    // `FROM scratch` makes no layer; the app layer is the last step.
    let layer_steps = |b: &isolab_resources::image::docker::Build| -> Vec<(String, bool)> {
        b.steps
            .iter()
            .filter(|s| !s.instruction.starts_with("FROM"))
            .map(|s| (s.instruction.clone(), s.cached))
            .collect()
    };
    let rebuilt = layer_steps(&builds.rebuild);
    let figures: Vec<String> = rebuilt
        .iter()
        .map(|(step, cached)| {
            format!(
                "{prefix}rebuild, {step}: {}",
                if *cached {
                    "from the cache"
                } else {
                    "built again"
                }
            )
        })
        .chain([format!(
            "{prefix}bytes written: first build {}, rebuild {}",
            format::bytes(builds.first.written_bytes as f64),
            format::bytes(builds.rebuild.written_bytes as f64)
        )])
        .collect();
    let Some(((_, top_cached), below)) = rebuilt.split_last() else {
        return Assessment::no_data(claim, "Docker's build printed no steps.");
    };
    let below_cached = below.iter().all(|(_, c)| *c);
    let small = builds.rebuild.written_bytes * 10 < builds.first.written_bytes.max(1);
    let (verdict, why) = if below_cached && !top_cached && small {
        (
            Verdict::Supported,
            "Docker took every layer below the changed one from its cache and built only the \
             changed layer again: a rebuild writes what changed, not the image.",
        )
    } else if !below_cached {
        (
            Verdict::NotSupported,
            "Docker built again a layer whose inputs did not change.",
        )
    } else {
        (
            Verdict::Depends,
            "The layers below the change came from the cache, but the rebuild did not write \
             only what changed.",
        )
    };
    Assessment {
        claim,
        verdict,
        figures,
        why: why.into(),
        caveats: vec![],
        parts: vec![],
    }
}

fn sharing(claim: Claim, files: &Files) -> Assessment {
    let mut containers: Vec<(String, f64)> = Vec::new();
    let mut vms: Vec<(String, f64, bool)> = Vec::new();
    let mut figures = Vec::new();
    for (i, r) in files.files.iter().enumerate() {
        for d in summary::density(r) {
            let Some(per) = d.per_instance_on_image else {
                continue;
            };
            let ksm = d.steps.iter().any(|s| s.image.ksm_pages_sharing.is_some());
            let family = r.family(&d.backend);
            figures.push(format!(
                "{}{}: {} per more instance{}",
                files.prefix(i),
                d.label,
                format::with_ci(&per, format::bytes),
                if ksm { ", with KSM" } else { "" }
            ));
            if family == Family::Container {
                containers.push((d.label.clone(), per.median));
            } else if family.is_vm() || family == Family::Emulated {
                vms.push((d.label.clone(), per.median, ksm));
            }
        }
    }
    if containers.is_empty() {
        return Assessment::no_data(
            claim,
            "No container climbed a ladder on the lab's image here.",
        );
    }
    let plain: Vec<&(String, f64, bool)> = vms.iter().filter(|v| !v.2).collect();
    if plain.is_empty() {
        let mut a = Assessment::no_data(
            claim,
            "No VM climbed a ladder on the lab's image here without KSM: there is nothing to \
             compare the containers with.",
        );
        a.figures = figures;
        return a;
    }
    let worst = containers.iter().map(|c| c.1).fold(f64::MIN, f64::max);
    let cheapest_vm = plain.iter().map(|v| v.1).fold(f64::MAX, f64::min);
    let verdict = if worst < cheapest_vm / 10.0 {
        Verdict::Supported
    } else if worst >= cheapest_vm {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    };
    let mut why = match verdict {
        Verdict::Supported => "Every more container costs the host less than a tenth of what every more VM costs: the containers read the image's pages from one page cache, each VM into its own memory.".to_string(),
        Verdict::NotSupported => "Some container costs as much as a VM: what it keeps of its own outweighs the image they share.".to_string(),
        _ => "Every more container costs less than every more VM, but not by ten times.".to_string(),
    };
    for (label, per, _) in vms.iter().filter(|v| v.2) {
        why.push_str(&format!(
            " With KSM, {label} costs {} per more VM ({:.0}% of the cheapest VM without it).",
            format::bytes(*per),
            100.0 * per / cheapest_vm
        ));
    }
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats: vec![],
        parts: vec![],
    }
}

/// What a container pays on `resource` that a plain process does not.
fn process_costs(resource: Resource) -> &'static str {
    match resource {
        Resource::Compute | Resource::Memory => {
            "A container's instructions and memory are a process's: nothing to pay."
        }
        Resource::SystemCalls => {
            "Docker's seccomp filter runs on every system call a container makes: a few BPF \
             instructions each."
        }
        Resource::Disk => {
            "The same file on the same file system; a bind mount adds nothing on the way."
        }
        Resource::Network => {
            "Both reach the peer over a veth pair of their own (the process in a network \
             namespace the lab made, like the container's): the same kind of link."
        }
    }
}

fn native(claim: Claim, files: &Files) -> Assessment {
    let s = sides(files, |_, r, b| {
        has_runs(r, b, |x| summary::rate(x).is_some())
    });
    // The baseline of each file, as an entrant to pair with.
    let baselines: Vec<Entrant> = files
        .files
        .iter()
        .enumerate()
        .filter_map(|(file, r)| {
            let name = r.baseline()?;
            has_runs(r, &name, |x| summary::rate(x).is_some()).then(|| Entrant {
                file,
                label: crate::backends::label(r, &name),
                name,
                family: Family::Process,
                kind: None,
            })
        })
        .collect();
    if baselines.is_empty() {
        return Assessment::no_data(
            claim,
            "The process baseline has no throughput samples here.",
        );
    }
    if s.containers.is_empty() {
        return Assessment::no_data(claim, "No container has throughput samples here.");
    }
    let pair = |a: &Entrant, b: &Entrant| ratio_pairs(files, a, b, true, |_| true, rate);
    let pairs = pairs_with(&s.containers, &baselines, Scope::File, pair);
    if pairs.is_empty() {
        return Assessment::no_data(
            claim,
            "No round ran one workload as both a container and a process (or every such \
             workload failed its checksum check).",
        );
    }
    let mut figures: Vec<String> = pairs.iter().map(|p| p.text.clone()).collect();
    let parts = by_resource(&pairs, |resource, pairs| {
        let called: Vec<&Pair> = pairs.iter().filter(|p| p.side != Side::TooFew).collect();
        let slower: Vec<&Pair> = called
            .iter()
            .copied()
            .filter(|p| p.side == Side::Below)
            .collect();
        let (verdict, outcome) = if called.is_empty() {
            (Verdict::NoData, "too few paired rounds to call".to_string())
        } else if slower.is_empty() {
            (
                Verdict::Supported,
                "no container clearly slower".to_string(),
            )
        } else if slower.len() == called.len() {
            (
                Verdict::NotSupported,
                "every container clearly slower".to_string(),
            )
        } else {
            (
                Verdict::Depends,
                format!("clearly slower on {}", briefs(slower.into_iter())),
            )
        };
        Part {
            resource: resource.name(),
            verdict,
            why: format!(
                "{}: {outcome}. {}",
                format::capitalise(resource.name()),
                process_costs(resource)
            ),
        }
    });
    let (too_few, called): (Vec<Pair>, Vec<Pair>) =
        pairs.into_iter().partition(|p| p.side == Side::TooFew);
    if called.is_empty() {
        return not_called(claim, too_few);
    }
    let slower = called.iter().filter(|p| p.side == Side::Below).count();
    let (verdict, mut why) = if slower == 0 {
        (
            Verdict::Supported,
            "No kernel ran clearly slower in a container than as a plain process: a container is \
             a process, its system calls go to the same kernel."
                .to_string(),
        )
    } else if slower == called.len() {
        (
            Verdict::NotSupported,
            "Every kernel ran clearly slower in every container.".to_string(),
        )
    } else {
        (
            Verdict::Depends,
            format!(
                "Clearly slower in a container on: {}.",
                briefs(called.iter().filter(|p| p.side == Side::Below))
            ),
        )
    };
    if !too_few.is_empty() {
        why.push_str(&format!(
            " Not called, too few rounds: {}.",
            briefs(&too_few)
        ));
    }
    for sb in &s.sandboxes {
        let sp = pairs_with(std::slice::from_ref(sb), &baselines, Scope::File, pair);
        if sp.is_empty() {
            continue;
        }
        let slow = sp.iter().filter(|p| p.side == Side::Below).count();
        why.push_str(&format!(
            " {} is a sandbox (its system calls go to a kernel in user space), counted as \
             neither: clearly slower than a process on {slow} of {} kernels.",
            sb.label,
            sp.len()
        ));
        figures.extend(sp.into_iter().map(|p| p.text));
    }
    let mut caveats = files.check_caveats();
    if !s.unplaced.is_empty() {
        caveats.push(format!(
            "Left out: {} (its results do not say what kind of backend it is).",
            names(&s.unplaced)
        ));
    }
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats,
        parts,
    }
}

// ---------------------------------------------------------------------------------------------
// Neighbours

/// How far a neighbour reached one backend's victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Not even without limits.
    Not,
    /// Without limits it did; under them it did not.
    HeldByLimits,
    /// It did, limits or not.
    Reached,
    /// Too few paired rounds to call.
    TooFew,
}

/// One part of the neighbours claim: a load or a failure.
struct NeighbourPart {
    aggressor: &'static str,
    /// The part's name in the ledger.
    name: &'static str,
    /// What the lab's limits do, and do not do, about it: the kernel's reason.
    lesson: &'static str,
}

const NEIGHBOUR_PARTS: [NeighbourPart; 5] = [
    NeighbourPart {
        aggressor: "cpu",
        name: "CPU",
        lesson: "Without a CPU limit the scheduler shares the CPUs among whoever is runnable; a \
                 limit (CFS bandwidth: a quota of CPU time per 100 ms period, after which the \
                 cgroup waits for the next period) caps what a hog can take, but reserves \
                 nothing for the victim. A VM's vCPUs are threads of its monitor, scheduled and \
                 limited the same way.",
    },
    NeighbourPart {
        aggressor: "mem",
        name: "memory bandwidth",
        lesson: "No cgroup limits memory bandwidth or the CPU's shared caches: every core's \
                 loads and stores go through the same memory controllers, and a streamer's \
                 cache lines evict the victim's. Only a CPU limit, by cutting the streamer's \
                 running time, cuts what it takes; a VM shares the same memory.",
    },
    NeighbourPart {
        aggressor: "disk",
        name: "disk",
        lesson: "Without an I/O limit the disk serves whoever queues the most requests; io.max \
                 (v1: blkio.throttle) delays a cgroup's requests once it has spent its bytes \
                 per second, so the writer's queue stays short.",
    },
    NeighbourPart {
        aggressor: "fork",
        name: "fork bomb",
        lesson: "A bomb stops where a limit refuses its forks: pids.max of its cgroup, or inside \
                 a VM the guest's own limit; the lab never runs one without (the unlimited \
                 configuration included: there it has the lab's safety limit). Without any, it \
                 would stop at the host's pid_max or when memory ran out, and every other \
                 process of the host would be refused with it.",
    },
    NeighbourPart {
        aggressor: "oom",
        name: "memory hog",
        lesson: "The OOM killer acts where memory ran out: in the hog's own cgroup at its \
                 memory.max, or inside a guest, whose RAM is all the hog can have. The lab \
                 never runs a hog without one of those (the unlimited configuration included).",
    },
];

/// The rows of `part` of one backend, at the most aggressors measured, by configuration.
fn part_rows<'a>(
    rows: &'a [summary::InterferenceRow],
    backend: &str,
    aggressor: &str,
) -> Vec<&'a summary::InterferenceRow> {
    let mine: Vec<&summary::InterferenceRow> = rows
        .iter()
        .filter(|r| r.backend == backend && r.aggressor == aggressor)
        .collect();
    let top = mine.iter().map(|r| r.count).max().unwrap_or(0);
    mine.into_iter().filter(|r| r.count == top).collect()
}

/// How far `aggressor` reached in one configuration's row: `Some(true)` clearly, `Some(false)`
/// clearly not, `None` too few rounds.
fn reached_in(row: &summary::InterferenceRow, failure: bool) -> Option<bool> {
    if failure && !row.survived() {
        return Some(true);
    }
    if !failure && row.failed + row.wrong > 0 {
        return Some(true);
    }
    match row.slowdown.as_ref().map(side) {
        Some(Side::Above) => Some(true),
        Some(Side::Same | Side::Below) => Some(false),
        Some(Side::TooFew) | None => None,
    }
}

/// Where one backend stands on one part, over its victims (the worst of them), and the figure
/// behind it.
fn reach(rows: &[&summary::InterferenceRow], failure: bool) -> (Reach, String) {
    use isolab_results::Config;
    let mut worst = Reach::Not;
    let mut texts = Vec::new();
    let mut victims: Vec<&str> = rows.iter().map(|r| r.victim.kernel.as_str()).collect();
    victims.dedup();
    // Each victim's first row in each configuration.
    let mut first: HashMap<(&str, Config), &summary::InterferenceRow> = HashMap::new();
    for r in rows {
        first
            .entry((r.victim.kernel.as_str(), r.config))
            .or_insert(r);
    }
    for v in victims {
        let of = |c: Config| first.get(&(v, c));
        let (u, l) = (of(Config::Unlimited), of(Config::Limited));
        let r = match (
            u.and_then(|u| reached_in(u, failure)),
            l.and_then(|l| reached_in(l, failure)),
        ) {
            (Some(false), _) => Reach::Not,
            (Some(true), Some(false)) => Reach::HeldByLimits,
            (Some(true), Some(true)) => Reach::Reached,
            (Some(true), None) if l.is_none() => Reach::Reached,
            _ => Reach::TooFew,
        };
        let rank = |r: Reach| match r {
            Reach::Not => 0,
            Reach::HeldByLimits => 1,
            Reach::TooFew => 2,
            Reach::Reached => 3,
        };
        if rank(r) > rank(worst) {
            worst = r;
        }
        let one = |x: Option<&&summary::InterferenceRow>| {
            x.map_or(format::NONE.to_string(), |x| {
                let slow = x
                    .slowdown
                    .as_ref()
                    .map_or(format::NONE.into(), format::ratio);
                if failure || !x.survived() {
                    format!(
                        "{slow}, victim completed {}/{}",
                        x.n - x.failed - x.wrong,
                        x.n
                    )
                } else {
                    slow
                }
            })
        };
        let count = u.or(l).map_or(0, |x| x.count);
        texts.push(format!(
            "{v} victim beside {count}: unlimited {}; limited {}",
            one(u),
            one(l)
        ));
    }
    (worst, texts.join("; "))
}

/// `a`, `a and b`, `a, b and c`.
fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => format!(
            "{} and {}",
            rest.iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

fn neighbours(claim: Claim, files: &Files) -> Assessment {
    let rows: Vec<Vec<summary::InterferenceRow>> = files
        .files
        .iter()
        .map(|r| summary::interference(r))
        .collect();
    let with_rows: Vec<HashSet<&str>> = rows
        .iter()
        .map(|rows| rows.iter().map(|x| x.backend.as_str()).collect())
        .collect();
    let s = sides(files, |i, _, b| with_rows[i].contains(b));
    if s.containers.is_empty() && s.sandboxes.is_empty() && s.vms.is_empty() {
        return Assessment::no_data(
            claim,
            if s.emulated.is_empty() {
                "No container and no VM ran beside aggressors here.".to_string()
            } else {
                format!(
                    "Only an emulated machine ({}) ran beside aggressors here, and emulation \
                     says nothing about how VMs share a host.",
                    names(&s.emulated)
                )
            },
        )
        .with(vm_caveats(files, &s, true));
    }
    let deciding: Vec<&Entrant> = s
        .containers
        .iter()
        .chain(&s.sandboxes)
        .chain(&s.vms)
        .collect();
    let who = |e: &Entrant| match e.kind {
        Some(k) => format!("{}{} ({})", files.prefix(e.file), e.name, k.noun()),
        None => format!("{}{}", files.prefix(e.file), e.name),
    };
    let mut figures = Vec::new();
    let mut parts = Vec::new();
    let mut needed: Vec<String> = Vec::new();
    for part in NEIGHBOUR_PARTS {
        let failure = matches!(part.aggressor, "fork" | "oom");
        let mut standing: Vec<(&Entrant, Reach)> = Vec::new();
        for e in &deciding {
            let mine = part_rows(&rows[e.file], &e.name, part.aggressor);
            if mine.is_empty() {
                continue;
            }
            let (r, text) = reach(&mine, failure);
            figures.push(format!("{}, {}: {text}", who(e), part.name));
            if failure {
                for row in &mine {
                    let what = row.stability.describe(part.aggressor);
                    if !what.is_empty() {
                        figures.push(format!(
                            "{}, {} ({}): stopped by {what}",
                            who(e),
                            part.name,
                            row.config.name()
                        ));
                    }
                }
            }
            standing.push((e, r));
        }
        if standing.is_empty() {
            continue;
        }
        let called: Vec<&(&Entrant, Reach)> = standing
            .iter()
            .filter(|(_, r)| *r != Reach::TooFew)
            .collect();
        let list = |want: &[Reach]| {
            let names: Vec<&str> = standing
                .iter()
                .filter(|(_, r)| want.contains(r))
                .map(|(e, _)| e.name.as_str())
                .collect();
            and_list(&names)
        };
        let (verdict, outcome) = if called.is_empty() {
            (
                Verdict::NoData,
                format!("too few paired rounds to call (at least {MIN_PAIRS})"),
            )
        } else {
            let reached = called.iter().filter(|(_, r)| *r == Reach::Reached).count();
            let verdict = if reached == 0 {
                Verdict::Supported
            } else if reached == called.len() {
                Verdict::NotSupported
            } else {
                Verdict::Depends
            };
            let mut out = Vec::new();
            let not = list(&[Reach::Not]);
            let held = list(&[Reach::HeldByLimits]);
            let reached = list(&[Reach::Reached]);
            let few = list(&[Reach::TooFew]);
            if !not.is_empty() {
                out.push(format!("did not reach the victim in {not}, even unlimited"));
            }
            if !held.is_empty() {
                out.push(format!(
                    "reached it unlimited but not under limits in {held}"
                ));
                needed.push(part.name.to_string());
            }
            if !reached.is_empty() {
                out.push(format!("reached it, limits or not, in {reached}"));
            }
            if !few.is_empty() {
                out.push(format!("too few rounds to call in {few}"));
            }
            (verdict, out.join("; "))
        };
        parts.push(Part {
            resource: part.name,
            verdict,
            why: format!(
                "{}: {outcome}. {}",
                format::capitalise(part.name),
                part.lesson
            ),
        });
    }
    let judged: Vec<&Part> = parts
        .iter()
        .filter(|p| p.verdict != Verdict::NoData)
        .collect();
    if judged.is_empty() {
        let mut a = Assessment::no_data(
            claim,
            format!(
                "Too few paired rounds to call any slowdown (at least {MIN_PAIRS} are needed; \
                 run with --runs {MIN_PAIRS} or more)."
            ),
        );
        a.figures = figures;
        a.parts = parts;
        return a;
    }
    let of = |v: Verdict| {
        judged
            .iter()
            .filter(|p| p.verdict == v)
            .map(|p| p.resource)
            .collect::<Vec<_>>()
    };
    let (yes, no) = (of(Verdict::Supported), of(Verdict::NotSupported));
    let verdict = if yes.len() == judged.len() {
        Verdict::Supported
    } else if no.len() == judged.len() {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    };
    let mut why = match verdict {
        Verdict::Supported => format!(
            "No neighbour's {} reached the victim, in any backend measured.",
            and_list(&yes)
        ),
        Verdict::NotSupported => format!(
            "Every neighbour's {} reached the victim in every backend measured.",
            and_list(&no)
        ),
        _ => {
            let mixed = of(Verdict::Depends);
            let mut w = String::new();
            if !yes.is_empty() {
                w.push_str(&format!(
                    "A neighbour's {} did not reach the victim. ",
                    and_list(&yes)
                ));
            }
            if !no.is_empty() {
                w.push_str(&format!("Its {} did, in every backend. ", and_list(&no)));
            }
            if !mixed.is_empty() {
                w.push_str(&format!(
                    "Its {} reached the victim in some backends and not in others. ",
                    and_list(&mixed)
                ));
            }
            w.trim_end().to_string()
        }
    };
    if !needed.is_empty() {
        why.push_str(&format!(
            " Limits were what held back: {}.",
            and_list(&needed)
        ));
    }
    let mut caveats = vm_caveats(files, &s, true);
    caveats.push(format!(
        "The fork bomb and the memory hog ran under the lab's own limits in both \
         configurations (at most {} processes, {} of memory): a neighbour's failure without \
         any limit would be the whole host's, which the lab does not risk.",
        isolab_results::SAFETY_PIDS,
        format::bytes(isolab_results::SAFETY_MEMORY_BYTES as f64)
    ));
    caveats.push(
        "Limits are ceilings, not reservations: a victim under a CPU limit still competes for \
         its share with everything else on the host."
            .into(),
    );
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats,
        parts,
    }
}

#[cfg(test)]
mod tests;
