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
//! * *depends* — true for some pairs of container and VM and not for others (or several files of
//!   the same host disagree): the answer depends on which runtime and which VM;
//! * *no data* — this report has no measurement that bears on the claim. The ledger never
//!   guesses.
//!
//! Differences must be both **statistically clear** (the 95% confidence interval of the ratio
//! excludes 1) and **large enough to matter** (the median differs from 1 by more than
//! [`MARGIN`]): with many rounds, a 1% difference can be "significant" without meaning that one
//! is faster in any sense a student would care about.
//!
//! VMs whose numbers come from emulation (QEMU TCG, info `emulated`) are left out of the
//! start-up, memory, performance and density claims: an emulator translating every instruction
//! is not how virtual machines run, and including it would flatter the container.

use super::backends::{self, Family};
use super::format;
use super::summary::{self, DensitySeries};
use crate::host::KvmKind;
use crate::measure::stats::Summary;
use crate::results::{info, Results, RunRecord};
use serde::Serialize;

/// A difference smaller than this (5%) counts as "the same".
pub const MARGIN: f64 = 0.05;

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
pub const CLAIMS: [Claim; 8] = [
    Claim {
        id: "startup",
        statement: "A container starts faster than a virtual machine.",
        experiment: "startup",
        rule:
            "Start-up = launch requested → the workload's first instruction. For every container \
               and every (non-emulated) VM, the container's start-up over the VM's, paired by \
               round. Supported if every pair's ratio is below 1 (CI excludes 1, median more than \
               5% below); not supported if no pair is; depends otherwise.",
    },
    Claim {
        id: "memory",
        statement:
            "A container needs less memory than a VM, because it carries no guest operating system.",
        experiment: "memory",
        rule: "Fixed cost = the instance's kernel memory plus its processes' anonymous memory \
               while it waits at ready. For every container and every (non-emulated) VM, the \
               container's fixed cost over the VM's, paired by round and working-set size. \
               Supported if every pair is below 1 (CI excludes 1, beyond 5%) and a VM with a \
               guest OS was among them; depends if the pairs are mixed, or if they all favour the \
               container but no VM ran a guest OS (the reason the claim gives cannot be tested); \
               not supported if no pair is below 1.",
    },
    Claim {
        id: "performance",
        statement: "Programs run faster in a container than in a VM.",
        experiment: "throughput",
        rule: "Rate = work done / time of the measured part, per kernel (cpu, mem, random, \
               syscall, io). For every container, (non-emulated) VM and kernel, the container's \
               rate over the VM's, paired by round. Supported if the container is faster (ratio \
               above 1, CI excludes 1, beyond 5%) in every case; not supported if in none; depends \
               otherwise.",
    },
    Claim {
        id: "density",
        statement: "More containers than VMs fit on one host.",
        experiment: "density",
        rule: "Per-instance cost = what each added instance adds to the memory the instances \
               hold (kernel memory + anonymous PSS), step by step up the density ladder. Supported if every container's \
               per-instance cost is below every (non-emulated) VM's, with 95% CIs that do not \
               overlap and medians more than 5% apart; not supported if no container's is; \
               depends otherwise.",
    },
    Claim {
        id: "kernel",
        statement: "Containers share the host's kernel; each VM runs a kernel of its own.",
        experiment: "isolation",
        rule: "The probe's kernel_release against the host's. Supported if every container \
               reports the host's release and every VM reports another (or none: a guest with no \
               kernel at all); not supported if no container shares it or no VM differs; depends \
               otherwise.",
    },
    Claim {
        id: "isolation",
        statement: "A VM isolates its workload more strongly than a container does.",
        experiment: "isolation",
        rule: "Count the probe facts (kernel, host name, processes, mounts, interfaces, root, \
               user map, capabilities, cgroup, CPUs) that equal the host's own view (the process \
               backend's). Supported if every VM shares fewer facts with the host than every \
               container and no VM answers with the host's kernel; not supported if no VM shares \
               fewer than any container; depends otherwise.",
    },
    Claim {
        id: "images",
        statement: "Container images are small; VM images are large.",
        experiment: "any",
        rule: "Image = the bytes a backend boots or starts (info image_bytes): a container's root \
               file system, a guest's ELF, a Linux guest's kernel plus initramfs. Supported if \
               every container image is smaller than every VM image; not supported if none is; \
               depends otherwise.",
    },
    Claim {
        id: "native",
        statement: "Inside a container, a program runs as fast as a plain process.",
        experiment: "throughput",
        rule: "For every container and kernel, its rate over the process's, paired by round. \
               Supported if no container is slower on any kernel (ratio below 1 with CI excluding \
               1 and more than 5% off); not supported if every container is slower on every \
               kernel; depends otherwise.",
    },
];

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
    /// What limits the verdict on this machine (nested virtualization, left-out emulators).
    pub caveats: Vec<String>,
}

impl Assessment {
    fn no_data(claim: Claim, why: impl Into<String>) -> Assessment {
        Assessment {
            claim,
            verdict: Verdict::NoData,
            figures: vec![],
            why: why.into(),
            caveats: vec![],
        }
    }
}

/// Judge every claim on the files of one host (never mix hosts: a ratio of a fast machine's
/// container to a slow machine's VM means nothing).
pub fn ledger(files: &[&Results]) -> Vec<Assessment> {
    CLAIMS
        .iter()
        .map(|claim| match claim.id {
            "images" => images(*claim, files),
            _ => per_file(*claim, files),
        })
        .collect()
}

/// Judge a claim on each file of its experiment and combine the verdicts.
fn per_file(claim: Claim, files: &[&Results]) -> Assessment {
    let judge = |r: &Results| match claim.id {
        "startup" => startup(claim, r),
        "memory" => memory(claim, r),
        "performance" => performance(claim, r),
        "density" => density(claim, r),
        "kernel" => kernel(claim, r),
        "isolation" => isolation(claim, r),
        "native" => native(claim, r),
        other => unreachable!("claim {other} has no judge"),
    };
    let relevant: Vec<&&Results> = files
        .iter()
        .filter(|r| r.header.experiment == claim.experiment)
        .collect();
    let judged: Vec<(String, Assessment)> = relevant
        .iter()
        .map(|r| (file_label(r), judge(r)))
        .filter(|(_, a)| a.verdict != Verdict::NoData)
        .collect();
    match judged.len() {
        0 => relevant.first().map_or_else(
            || {
                Assessment::no_data(
                    claim,
                    format!("This report has no {} results.", claim.experiment),
                )
            },
            |r| judge(r),
        ),
        1 => judged.into_iter().next().unwrap().1,
        _ => combine(claim, judged),
    }
}

/// The directory a results file is in: what tells two files of one host apart.
fn file_label(r: &Results) -> String {
    r.path.parent().and_then(|p| p.file_name()).map_or_else(
        || r.path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// Several files of one host speak to the same claim: agree, or "depends".
fn combine(claim: Claim, judged: Vec<(String, Assessment)>) -> Assessment {
    let first = judged[0].1.verdict;
    let agree = judged.iter().all(|(_, a)| a.verdict == first);
    let mut figures = Vec::new();
    let mut caveats: Vec<String> = Vec::new();
    for (file, a) in &judged {
        figures.extend(a.figures.iter().map(|f| format!("{file}: {f}")));
        for c in &a.caveats {
            if !caveats.contains(c) {
                caveats.push(c.clone());
            }
        }
    }
    let why = if agree {
        format!(
            "All {} files agree: {}",
            judged.len(),
            judged[0].1.why.clone()
        )
    } else {
        let each: Vec<String> = judged
            .iter()
            .map(|(f, a)| format!("{f} says {}", a.verdict.label()))
            .collect();
        format!("The files of this host disagree ({}).", each.join(", "))
    };
    Assessment {
        claim,
        verdict: if agree { first } else { Verdict::Depends },
        figures,
        why,
        caveats,
    }
}

// ---------------------------------------------------------------------------------------------
// The pieces every comparison shares.

/// How a ratio compares with 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Clearly below 1.
    Below,
    /// Clearly above 1.
    Above,
    /// Not clearly different.
    Same,
}

fn side(r: &Summary) -> Side {
    if r.ci_high < 1.0 && r.median < 1.0 - MARGIN {
        Side::Below
    } else if r.ci_low > 1.0 && r.median > 1.0 + MARGIN {
        Side::Above
    } else {
        Side::Same
    }
}

/// The containers and VMs of a file that have data, and the emulated VMs left out.
struct Sides {
    containers: Vec<String>,
    vms: Vec<String>,
    emulated: Vec<String>,
}

fn sides(results: &Results, has_data: impl Fn(&str) -> bool) -> Sides {
    let mut s = Sides {
        containers: vec![],
        vms: vec![],
        emulated: vec![],
    };
    for b in results.backends() {
        if !has_data(&b) {
            continue;
        }
        match backends::family(&b) {
            Family::Container => s.containers.push(b),
            Family::Vm if backends::is_emulated(results, &b) => s.emulated.push(b),
            Family::Vm => s.vms.push(b),
            _ => {}
        }
    }
    s
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
            "Only an emulated VM ({}) has {what} here, and emulation says nothing about how VMs run.",
            s.emulated.join(", ")
        ))
    } else if s.vms.is_empty() {
        Some(format!("No VM has {what} here."))
    } else {
        None
    }
}

/// The caveats every VM comparison on this file carries.
/// The guest OS a VM backend reported (`info::GUEST_OS`), if any record says.
fn guest_os<'a>(results: &'a Results, backend: &str) -> Option<&'a str> {
    results.info(backend, info::GUEST_OS)
}

fn vm_caveats(results: &Results, s: &Sides) -> Vec<String> {
    let mut c = Vec::new();
    if results.header.environment.kvm == KvmKind::NestedPvm {
        c.push(NESTED_PVM_SHORT.to_string());
    }
    if !s.emulated.is_empty() {
        c.push(format!(
            "Left out: {} (emulated; TCG translates every guest instruction in software).",
            s.emulated.join(", ")
        ));
    }
    c
}

/// The caveat of nested PVM in the ledger: short, as it repeats on every VM timing claim.
pub const NESTED_PVM_SHORT: &str = "VMs ran on nested PVM (no VT-x/AMD-V: the guest's kernel mode \
    is emulated), so VM timings here are slower than on hardware virtualization.";

/// The plain-words caveat of nested PVM, for the summary and environment sections.
pub const NESTED_PVM: &str = "This machine has no VT-x/AMD-V: its KVM is nested PVM, which runs \
    a guest's user mode natively but emulates the guest's kernel mode in software. VM start-up and \
    anything that enters a guest kernel are much slower here than on a laptop or server with \
    hardware virtualization.";

/// One container-VM comparison: which pair, the ratio, and which side of 1 it fell.
struct Pair {
    text: String,
    side: Side,
}

/// Verdict from pairs where the claim wants `want`: all → supported, none → not supported.
fn verdict_of(pairs: &[Pair], want: Side) -> Verdict {
    let hits = pairs.iter().filter(|p| p.side == want).count();
    if hits == pairs.len() {
        Verdict::Supported
    } else if hits == 0 {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    }
}

fn list(pairs: &[Pair], keep: impl Fn(Side) -> bool) -> String {
    pairs
        .iter()
        .filter(|p| keep(p.side))
        .map(|p| p.text.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Container/VM ratios of a run metric, paired by round and workload.
fn paired(
    results: &Results,
    s: &Sides,
    keep: impl Fn(&RunRecord) -> bool + Copy,
    metric: impl Fn(&RunRecord) -> Option<f64> + Copy,
    name: impl Fn(&str, &str) -> String,
) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for c in &s.containers {
        for v in &s.vms {
            if let Some(r) = Summary::of(&summary::paired_ratios(results, c, v, keep, metric)) {
                pairs.push(Pair {
                    text: format!("{}: {}", name(c, v), format::ratio(&r)),
                    side: side(&r),
                });
            }
        }
    }
    pairs
}

// ---------------------------------------------------------------------------------------------
// The claims.

fn startup(claim: Claim, results: &Results) -> Assessment {
    let metric = |r: &RunRecord| r.startup_ns.map(|n| n as f64);
    let s = sides(results, |b| {
        has_runs(results, b, |r| r.startup_ns.is_some())
    });
    if let Some(why) = missing(&s, "start-up samples") {
        return Assessment::no_data(claim, why);
    }
    let rows = summary::startup(results);
    let mut figures: Vec<String> = rows
        .iter()
        .filter(|r| s.containers.contains(&r.backend) || s.vms.contains(&r.backend))
        .filter_map(|r| {
            let st = r.startup.as_ref()?;
            Some(format!(
                "{}: median {}",
                r.label,
                format::with_ci(st, format::duration)
            ))
        })
        .collect();
    let pairs = paired(results, &s, |_| true, metric, |c, v| format!("{c} ÷ {v}"));
    if pairs.is_empty() {
        return Assessment::no_data(claim, "No round ran both a container and a VM.");
    }
    figures.extend(pairs.iter().map(|p| p.text.clone()));
    let verdict = verdict_of(&pairs, Side::Below);
    let why = match verdict {
        Verdict::Supported => {
            "Every container reached its first instruction clearly sooner than every VM.".into()
        }
        Verdict::NotSupported => format!(
            "No container started clearly sooner than a VM ({}).",
            list(&pairs, |_| true)
        ),
        _ => format!(
            "Some containers start sooner ({}), others do not ({}): it depends on the runtime and \
             the VM, not on the isolation model.",
            list(&pairs, |x| x == Side::Below),
            list(&pairs, |x| x != Side::Below)
        ),
    };
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats: vm_caveats(results, &s),
    }
}

fn memory(claim: Claim, results: &Results) -> Assessment {
    let keep = |r: &RunRecord| r.memory_at_ready.is_some();
    let s = sides(results, |b| {
        has_runs(results, b, |r| summary::fixed_bytes(r).is_some())
    });
    if let Some(why) = missing(&s, "memory samples") {
        return Assessment::no_data(claim, why);
    }
    let rows = summary::memory(results);
    let mut figures: Vec<String> = Vec::new();
    for r in &rows {
        if !(s.containers.contains(&r.backend) || s.vms.contains(&r.backend)) {
            continue;
        }
        let Some(fixed) = r.fixed.as_ref() else {
            continue;
        };
        let mut line = format!(
            "{} ({} MiB): fixed cost {}",
            r.label,
            r.mib,
            format::with_ci(fixed, format::bytes)
        );
        if let (Some(g), Some(o)) = (r.guest_touched, r.vmm_overhead) {
            line.push_str(&format!(
                "; by the end of the run, guest RAM touched {} and VMM overhead {}",
                format::bytes(g.median),
                format::bytes(o.median)
            ));
        }
        figures.push(line);
    }
    let pairs = paired(results, &s, keep, summary::fixed_bytes, |c, v| {
        format!("{c} ÷ {v}")
    });
    if pairs.is_empty() {
        return Assessment::no_data(claim, "No round measured both a container and a VM.");
    }
    figures.extend(pairs.iter().map(|p| p.text.clone()));
    let mut verdict = verdict_of(&pairs, Side::Below);
    // The claim gives a reason: the guest OS. If no VM here ran one, the data can show that
    // containers cost less, but not that a guest OS is why.
    let all_bare = s.vms.iter().all(|b| guest_os(results, b) == Some("none"));
    if verdict == Verdict::Supported && all_bare {
        verdict = Verdict::Depends;
        figures.push(format!(
            "guest OS of the VMs measured: none ({})",
            s.vms.join(", ")
        ));
    }
    let why = match verdict {
        Verdict::Supported => "Every container's fixed cost is clearly below every VM's: a VM \
                               pays for guest memory and a VMM besides the workload."
            .into(),
        Verdict::Depends if all_bare => "Containers cost less here, but not because of a \
             guest OS: the VMs measured run none. What the VM pays more is the hypervisor's own \
             cost (KVM's structures for the VM and its vCPU, the VMM process). Run vm-linux or \
             qemu to measure what a guest OS adds."
            .into(),
        Verdict::NotSupported => format!(
            "No container costs clearly less than a VM ({}): a minimal guest can be as small \
             as a container runtime.",
            list(&pairs, |_| true)
        ),
        _ => format!(
            "Some containers cost less ({}), others do not ({}).",
            list(&pairs, |x| x == Side::Below),
            list(&pairs, |x| x != Side::Below)
        ),
    };
    let mut caveats = vm_caveats(results, &s);
    // Memory does not depend on how fast the guest's kernel mode runs.
    caveats.retain(|c| c != NESTED_PVM_SHORT);
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats,
    }
}

/// Throughput comparisons of `a` against `b`, one per rate kernel.
fn rate_pairs(results: &Results, a: &str, b: &str) -> Vec<Pair> {
    let mut out = Vec::new();
    for row in summary::throughput(results) {
        if row.backend != a {
            continue;
        }
        let w = row.workload.clone();
        let ratios = summary::paired_ratios(
            results,
            a,
            b,
            |r| r.workload == w,
            |r| summary::rate(r).map(|x| x.0),
        );
        if let Some(r) = Summary::of(&ratios) {
            out.push(Pair {
                text: format!(
                    "{} ÷ {} on {}: {}",
                    a,
                    b,
                    summary::workload_name(&w),
                    format::ratio(&r)
                ),
                side: side(&r),
            });
        }
    }
    out
}

fn performance(claim: Claim, results: &Results) -> Assessment {
    let s = sides(results, |b| {
        has_runs(results, b, |r| summary::rate(r).is_some())
    });
    if let Some(why) = missing(&s, "throughput samples") {
        return Assessment::no_data(claim, why);
    }
    let mut pairs = Vec::new();
    for c in &s.containers {
        for v in &s.vms {
            pairs.extend(rate_pairs(results, c, v));
        }
    }
    if pairs.is_empty() {
        return Assessment::no_data(
            claim,
            "No round ran one workload in both a container and a VM.",
        );
    }
    let verdict = verdict_of(&pairs, Side::Above);
    let why = match verdict {
        Verdict::Supported => "Every kernel ran clearly faster in every container than in every VM.".into(),
        Verdict::NotSupported => "On no kernel did a container clearly outrun a VM: work that stays in user mode runs at the same speed under both.".into(),
        _ => format!(
            "Containers are clearly faster only on some kernels ({}); elsewhere there is no clear difference or the VM wins.",
            list(&pairs, |x| x == Side::Above)
        ),
    };
    Assessment {
        claim,
        verdict,
        figures: pairs.iter().map(|p| p.text.clone()).collect(),
        why,
        caveats: vm_caveats(results, &s),
    }
}

fn per_instance_line(d: &DensitySeries, memory_bytes: u64) -> Option<String> {
    let per = d.per_instance.as_ref()?;
    let mut line = format!(
        "{}: {} per instance",
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

fn density(claim: Claim, results: &Results) -> Assessment {
    let series = summary::density(results);
    let find = |b: &str| series.iter().find(|d| d.backend == b);
    let s = sides_of_density(results, &series);
    if let Some(why) = missing(&s, "density steps") {
        return Assessment::no_data(claim, why);
    }
    let memory_bytes = results.header.environment.memory_bytes;
    let figures: Vec<String> = s
        .containers
        .iter()
        .chain(&s.vms)
        .filter_map(|b| per_instance_line(find(b)?, memory_bytes))
        .collect();
    let mut pairs = Vec::new();
    for c in &s.containers {
        for v in &s.vms {
            let (Some(cs), Some(vs)) = (
                find(c).and_then(|d| d.per_instance),
                find(v).and_then(|d| d.per_instance),
            ) else {
                continue;
            };
            // Independent samples: the two intervals must not overlap.
            let side = if cs.ci_high < vs.ci_low && cs.median < vs.median * (1.0 - MARGIN) {
                Side::Below
            } else if cs.ci_low > vs.ci_high && cs.median > vs.median * (1.0 + MARGIN) {
                Side::Above
            } else {
                Side::Same
            };
            pairs.push(Pair {
                text: format!(
                    "{c} {} vs {v} {} per instance",
                    format::bytes(cs.median),
                    format::bytes(vs.median)
                ),
                side,
            });
        }
    }
    if pairs.is_empty() {
        return Assessment::no_data(claim, "No per-instance cost could be computed.");
    }
    let verdict = verdict_of(&pairs, Side::Below);
    let why = match verdict {
        Verdict::Supported => "Each container adds clearly less memory than each VM, so more of them fit in the same memory.".into(),
        Verdict::NotSupported => format!("No container is clearly cheaper per instance than a VM ({}).", list(&pairs, |_| true)),
        _ => format!(
            "Some containers are cheaper per instance ({}), others are not ({}).",
            list(&pairs, |x| x == Side::Below),
            list(&pairs, |x| x != Side::Below)
        ),
    };
    let mut caveats = vm_caveats(results, &s);
    caveats.retain(|c| c != NESTED_PVM_SHORT);
    caveats.push(
        "Fit is projected from memory alone; CPU, PIDs and the launch rate limit density too."
            .into(),
    );
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats,
    }
}

fn sides_of_density(results: &Results, series: &[DensitySeries]) -> Sides {
    let mut s = Sides {
        containers: vec![],
        vms: vec![],
        emulated: vec![],
    };
    for d in series {
        let emulated = backends::is_emulated(results, &d.backend);
        match backends::family(&d.backend) {
            Family::Container => s.containers.push(d.backend.clone()),
            Family::Vm if emulated => s.emulated.push(d.backend.clone()),
            Family::Vm => s.vms.push(d.backend.clone()),
            _ => {}
        }
    }
    s
}

/// Containers and VMs that ran the probe; for isolation, emulated VMs count too (what a guest
/// can see does not depend on how fast its instructions run).
fn probe_sides(iso: &summary::Isolation) -> (Vec<&str>, Vec<&str>) {
    let of = |f: Family| {
        iso.backends
            .iter()
            .filter(|b| backends::family(b) == f)
            .map(String::as_str)
            .collect::<Vec<_>>()
    };
    (of(Family::Container), of(Family::Vm))
}

fn kernel(claim: Claim, results: &Results) -> Assessment {
    let Some(iso) = summary::isolation(results) else {
        return Assessment::no_data(claim, "No backend ran the probe here.");
    };
    let host = results.header.environment.kernel_release.as_str();
    let (containers, vms) = probe_sides(&iso);
    let release = |b: &str| iso.value(b, "kernel_release");
    let containers: Vec<&str> = containers
        .into_iter()
        .filter(|b| release(b).is_some())
        .collect();
    let vms: Vec<&str> = vms.into_iter().filter(|b| release(b).is_some()).collect();
    if containers.is_empty() || vms.is_empty() {
        return Assessment::no_data(
            claim,
            "The probe needs at least one container and one VM to compare.",
        );
    }
    let mut figures = vec![format!("host: {host}")];
    figures.extend(
        containers
            .iter()
            .chain(&vms)
            .map(|b| format!("{b}: {}", release(b).unwrap_or(format::NONE))),
    );
    let sharing = containers
        .iter()
        .filter(|b| release(b) == Some(host))
        .count();
    let own: Vec<&&str> = vms.iter().filter(|b| release(b) != Some(host)).collect();
    let none: Vec<&&str> = vms
        .iter()
        .filter(|b| release(b).is_some_and(|r| r.starts_with("none")))
        .collect();
    let verdict = if sharing == containers.len() && own.len() == vms.len() {
        Verdict::Supported
    } else if sharing == 0 || own.is_empty() {
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
    if !none.is_empty() {
        why.push_str(&format!(
            " {} runs no kernel at all: its VMM answers for it, so a VM needs no guest OS.",
            none.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats: vec![],
    }
}

fn isolation(claim: Claim, results: &Results) -> Assessment {
    let Some(iso) = summary::isolation(results) else {
        return Assessment::no_data(claim, "No backend ran the probe here.");
    };
    let (containers, vms) = probe_sides(&iso);
    if containers.is_empty() || vms.is_empty() {
        return Assessment::no_data(
            claim,
            "The probe needs at least one container and one VM to compare.",
        );
    }
    let shared = |b: &str| iso.shared_with_host(b).unwrap_or(0);
    let total = iso.rows.len();
    let figures: Vec<String> = containers
        .iter()
        .chain(&vms)
        .map(|b| format!("{b}: {} of {total} facts equal the host's", shared(b)))
        .collect();
    let host_release = results.header.environment.kernel_release.as_str();
    let vm_on_host_kernel = vms
        .iter()
        .any(|b| iso.value(b, "kernel_release") == Some(host_release));
    let min_c = containers.iter().map(|b| shared(b)).min().unwrap_or(0);
    let max_c = containers.iter().map(|b| shared(b)).max().unwrap_or(0);
    let max_v = vms.iter().map(|b| shared(b)).max().unwrap_or(0);
    let min_v = vms.iter().map(|b| shared(b)).min().unwrap_or(0);
    let verdict = if max_v < min_c && !vm_on_host_kernel {
        Verdict::Supported
    } else if min_v >= max_c {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    };
    let why = match verdict {
        Verdict::Supported => "Every VM's workload sees less of the host than every container's, and none of them talks to the host's kernel.",
        Verdict::NotSupported => "The VMs see as much of the host as the containers do.",
        _ => "Some containers see as little of the host as some VMs: how much is hidden depends on the configuration, not only on the model.",
    };
    Assessment {
        claim,
        verdict,
        figures,
        why: why.into(),
        caveats: vec![
            "What an instance can see is a proxy: the boundary an attacker must cross is the host \
             kernel's system-call interface for a container, the VMM's exits for a VM."
                .into(),
        ],
    }
}

fn images(claim: Claim, files: &[&Results]) -> Assessment {
    let rows = summary::images(files);
    let of = |f: Family| rows.iter().filter(|r| r.family == f).collect::<Vec<_>>();
    let (containers, vms) = (of(Family::Container), of(Family::Vm));
    if containers.is_empty() || vms.is_empty() {
        return Assessment::no_data(
            claim,
            "Image sizes of at least one container and one VM are needed (info image_bytes).",
        );
    }
    let figures = containers
        .iter()
        .chain(&vms)
        .map(|r| {
            let what = r
                .what
                .as_deref()
                .map_or(String::new(), |w| format!(" ({w})"));
            format!("{}: {}{what}", r.label, format::bytes(r.bytes as f64))
        })
        .collect();
    let max_c = containers.iter().max_by_key(|r| r.bytes).unwrap();
    let min_v = vms.iter().min_by_key(|r| r.bytes).unwrap();
    let min_c = containers.iter().min_by_key(|r| r.bytes).unwrap();
    let max_v = vms.iter().max_by_key(|r| r.bytes).unwrap();
    let (verdict, why) = if max_c.bytes < min_v.bytes {
        (
            Verdict::Supported,
            "Every container image is smaller than every VM image.".to_string(),
        )
    } else if min_c.bytes >= max_v.bytes {
        (
            Verdict::NotSupported,
            "No container image is smaller than any VM image here.".to_string(),
        )
    } else {
        (
            Verdict::Depends,
            format!(
                "{} ({}) is smaller than {} ({}): an image's size follows what is packed in it, \
                 not the isolation model.",
                min_v.label,
                format::bytes(min_v.bytes as f64),
                max_c.label,
                format::bytes(max_c.bytes as f64)
            ),
        )
    };
    Assessment {
        claim,
        verdict,
        figures,
        why,
        caveats: vec![],
    }
}

fn native(claim: Claim, results: &Results) -> Assessment {
    let s = sides(results, |b| {
        has_runs(results, b, |r| summary::rate(r).is_some())
    });
    if !has_runs(results, "process", |r| summary::rate(r).is_some()) {
        return Assessment::no_data(
            claim,
            "The process baseline has no throughput samples here.",
        );
    }
    if s.containers.is_empty() {
        return Assessment::no_data(claim, "No container has throughput samples here.");
    }
    let pairs: Vec<Pair> = s
        .containers
        .iter()
        .flat_map(|c| rate_pairs(results, c, "process"))
        .collect();
    if pairs.is_empty() {
        return Assessment::no_data(
            claim,
            "No round ran one workload as both a container and a process.",
        );
    }
    let slower = pairs.iter().filter(|p| p.side == Side::Below).count();
    let (verdict, why) = if slower == 0 {
        (
            Verdict::Supported,
            "No kernel ran clearly slower in a container than as a plain process: a container is \
             a process, its system calls go to the same kernel."
                .to_string(),
        )
    } else if slower == pairs.len() {
        (
            Verdict::NotSupported,
            "Every kernel ran clearly slower in every container.".to_string(),
        )
    } else {
        (
            Verdict::Depends,
            format!(
                "Clearly slower in a container on: {}.",
                list(&pairs, |x| x == Side::Below)
            ),
        )
    };
    Assessment {
        claim,
        verdict,
        figures: pairs.iter().map(|p| p.text.clone()).collect(),
        why,
        caveats: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::Fixture;
    use crate::results::info;

    fn judge(id: &str, files: &[&Results]) -> Assessment {
        ledger(files)
            .into_iter()
            .find(|a| a.claim.id == id)
            .unwrap()
    }

    /// Start-up: `container_ms` and `vm_ms` over 8 rounds, with a little noise.
    fn startup_file(container_ms: f64, vm_ms: f64) -> Results {
        let mut f = Fixture::new("startup");
        for round in 0..8u32 {
            let noise = 1.0 + f64::from(round % 3) * 0.01;
            f.startup("process", round, (0.6e6 * noise) as u64);
            f.startup("container", round, (container_ms * 1e6 * noise) as u64);
            f.startup("vm", round, (vm_ms * 1e6 * noise) as u64);
        }
        f.results()
    }

    #[test]
    fn a_container_that_starts_sooner_supports_the_claim() {
        let r = startup_file(2.0, 20.0);
        let a = judge("startup", &[&r]);
        assert_eq!(a.verdict, Verdict::Supported, "{a:?}");
        assert!(
            a.figures
                .iter()
                .any(|f| f.contains("container ÷ vm: 0.100×")),
            "{a:?}"
        );
    }

    #[test]
    fn a_container_that_starts_slower_does_not() {
        let r = startup_file(30.0, 5.0);
        assert_eq!(judge("startup", &[&r]).verdict, Verdict::NotSupported);
        // Within the 5% margin is "the same", which does not support "faster" either.
        let r = startup_file(10.0, 10.2);
        assert_eq!(judge("startup", &[&r]).verdict, Verdict::NotSupported);
    }

    #[test]
    fn mixed_runtimes_give_depends() {
        let mut f = Fixture::new("startup");
        for round in 0..6 {
            f.startup("container", round, 2_000_000 + u64::from(round));
            f.startup("oci:runc", round, 30_000_000 + u64::from(round));
            f.startup("vm", round, 10_000_000 + u64::from(round));
        }
        assert_eq!(judge("startup", &[&f.results()]).verdict, Verdict::Depends);
    }

    #[test]
    fn without_a_vm_there_is_no_data_and_emulators_do_not_count() {
        let mut f = Fixture::new("startup");
        for round in 0..4 {
            f.startup("container", round, 2_000_000);
            f.startup("qemu", round, 900_000_000);
        }
        f.info("qemu", info::EMULATED, "tcg");
        let a = judge("startup", &[&f.results()]);
        assert_eq!(a.verdict, Verdict::NoData);
        assert!(a.why.contains("emulated"), "{a:?}");
        let empty = Fixture::new("memory").results();
        assert_eq!(judge("startup", &[&empty]).verdict, Verdict::NoData);
        assert_eq!(judge("density", &[&empty]).verdict, Verdict::NoData);
    }

    #[test]
    fn nested_pvm_adds_its_caveat() {
        let mut f = Fixture::new("startup");
        f.env(|e| e.kvm = KvmKind::NestedPvm);
        for round in 0..4 {
            f.startup("container", round, 2_000_000);
            f.startup("vm", round, 20_000_000);
        }
        let a = judge("startup", &[&f.results()]);
        assert!(a.caveats.iter().any(|c| c.contains("nested PVM")), "{a:?}");
    }

    #[test]
    fn memory_compares_the_fixed_cost() {
        let mut f = Fixture::new("memory");
        for round in 0..6 {
            f.memory("container", round, 16, 600 << 10, (600 << 10) + (16 << 20));
            f.memory("vm", round, 16, 9 << 20, (9 << 20) + (16 << 20));
        }
        assert_eq!(judge("memory", &[&f.results()]).verdict, Verdict::Supported);
        // The same figures, but the VM says it runs no guest OS: the reason cannot be tested.
        let mut f = Fixture::new("memory");
        for round in 0..6 {
            f.memory("container", round, 16, 600 << 10, (600 << 10) + (16 << 20));
            f.memory("vm", round, 16, 9 << 20, (9 << 20) + (16 << 20));
        }
        f.note("vm", info::GUEST_OS, "none");
        let bare = judge("memory", &[&f.results()]);
        assert_eq!(bare.verdict, Verdict::Depends);
        assert!(
            bare.why.contains("not because of a guest OS"),
            "{}",
            bare.why
        );
        f.note("vm", info::GUEST_OS, "linux");
        assert_eq!(judge("memory", &[&f.results()]).verdict, Verdict::Supported);
        let mut f = Fixture::new("memory");
        for round in 0..6 {
            f.memory("container", round, 16, 9 << 20, 25 << 20);
            f.memory("vm", round, 16, 600 << 10, 17 << 20);
        }
        assert_eq!(
            judge("memory", &[&f.results()]).verdict,
            Verdict::NotSupported
        );
    }

    #[test]
    fn performance_depends_when_only_some_kernels_differ() {
        let mut f = Fixture::new("throughput");
        for round in 0..6 {
            let n = u64::from(round);
            f.work("process", round, "cpu", 1000, 1_000_000 + n, "0x1");
            f.work("container", round, "cpu", 1000, 1_000_000 + n, "0x1");
            f.work("vm", round, "cpu", 1000, 1_001_000 + n, "0x1");
            f.work("process", round, "syscall", 1000, 1_000_000 + n, "0x2");
            f.work("container", round, "syscall", 1000, 1_100_000 + n, "0x2");
            f.work("vm", round, "syscall", 1000, 50_000_000 + n, "0x2");
        }
        let r = f.results();
        let a = judge("performance", &[&r]);
        assert_eq!(a.verdict, Verdict::Depends, "{a:?}");
        assert!(a.why.contains("syscall"), "{a:?}");
        // 10% slower on syscall than a process: near-native does not hold everywhere.
        let n = judge("native", &[&r]);
        assert_eq!(n.verdict, Verdict::Depends, "{n:?}");
    }

    #[test]
    fn density_needs_intervals_apart() {
        let mut f = Fixture::new("density");
        for (i, n) in [1u32, 5, 9, 13].iter().enumerate() {
            let wobble = (i as u64) * 1000;
            f.density_step("container", *n, 4, u64::from(*n) * (1 << 20) + wobble);
            f.density_step("vm", *n, 4, u64::from(*n) * (20 << 20) + wobble);
        }
        let a = judge("density", &[&f.results()]);
        assert_eq!(a.verdict, Verdict::Supported, "{a:?}");
        assert!(a.figures.iter().any(|l| l.contains("would fit")), "{a:?}");
    }

    #[test]
    fn an_emulated_vm_in_a_density_file_takes_no_side() {
        // A density file has no run records: that the VM was emulated comes from its ladder's end.
        let mut f = Fixture::new("density");
        for n in [1u32, 5, 9, 13] {
            f.density_step("container", n, 4, u64::from(n) * (20 << 20));
            f.density_step("qemu", n, 4, u64::from(n) * (1 << 20));
        }
        f.density_end("container", 13, "reached --max 13");
        f.density_end("qemu", 13, "reached --max 13");
        f.note("qemu", info::EMULATED, "tcg");
        let results = f.results();
        assert_eq!(backends::label(&results, "qemu"), "qemu (emulated)");
        assert_eq!(results.backends(), ["container", "qemu"]);
        assert_eq!(judge("density", &[&results]).verdict, Verdict::NoData);
    }

    fn probe_file(vm_release: &str) -> Results {
        let mut f = Fixture::new("isolation");
        f.probe(
            "process",
            &[
                ("kernel_release", "6.1.0-test"),
                ("hostname", "testhost"),
                ("pids_visible", "90"),
                ("cpus", "4"),
            ],
        );
        f.probe(
            "container",
            &[
                ("kernel_release", "6.1.0-test"),
                ("hostname", "box"),
                ("pids_visible", "1"),
                ("cpus", "4"),
            ],
        );
        f.probe(
            "vm",
            &[
                ("kernel_release", vm_release),
                ("hostname", "guest"),
                ("pids_visible", "1"),
                ("cpus", "1"),
            ],
        );
        f.results()
    }

    #[test]
    fn the_probe_decides_the_kernel_and_isolation_claims() {
        let r = probe_file("none: bare guest, answered by the VMM");
        let k = judge("kernel", &[&r]);
        assert_eq!(k.verdict, Verdict::Supported, "{k:?}");
        assert!(k.why.contains("no kernel at all"), "{k:?}");
        assert_eq!(judge("isolation", &[&r]).verdict, Verdict::Supported);
        // A guest that reports the host's release, and otherwise sees as much as the container.
        let r = probe_file("6.1.0-test");
        assert_eq!(judge("kernel", &[&r]).verdict, Verdict::NotSupported);
        assert_ne!(judge("isolation", &[&r]).verdict, Verdict::Supported);
    }

    #[test]
    fn images_compare_sizes_across_files() {
        let mut s = Fixture::new("startup");
        s.startup("container", 0, 1)
            .info("container", info::IMAGE_BYTES, "1445224");
        s.startup("vm", 0, 1).info("vm", info::IMAGE_BYTES, "40960");
        let mut t = Fixture::new("throughput");
        t.work("vm-linux", 0, "cpu", 1, 1, "0x1")
            .info("vm-linux", info::IMAGE_BYTES, "12000000");
        let (s, t) = (s.results(), t.results());
        let a = judge("images", &[&s, &t]);
        assert_eq!(a.verdict, Verdict::Depends, "{a:?}");
        assert!(
            a.why.starts_with("vm (40.0 KiB) is smaller than container"),
            "{a:?}"
        );
        assert_eq!(judge("images", &[&t]).verdict, Verdict::NoData);
    }

    #[test]
    fn files_that_disagree_give_depends() {
        let (a, b) = (startup_file(2.0, 20.0), startup_file(30.0, 5.0));
        let mut b = b;
        b.path = "/fixture/other/results.jsonl".into();
        let v = judge("startup", &[&a, &b]);
        assert_eq!(v.verdict, Verdict::Depends, "{v:?}");
        assert!(v.why.contains("disagree"), "{v:?}");
        assert!(v.figures.iter().any(|f| f.starts_with("other: ")), "{v:?}");
    }
}
