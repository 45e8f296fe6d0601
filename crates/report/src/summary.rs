//! Figures computed from results: what the tables, plots and claims ledger show.
//!
//! Every function here is a pure function of one results file ([`Results`]). Two rules hold
//! throughout:
//!
//! * **warm-up samples are left out** ([`Results::measured`]) and so are samples that did not
//!   complete (they are counted as `failed` instead);
//! * **ratios are paired**: a sample of backend A is divided by the sample of backend B that ran
//!   in the *same round* with the *same workload*. Both ran within moments of each other, so
//!   slow drift of the machine (a warming CPU, another user's job) cancels out; the ratios are
//!   then summarised like any sample (median, bootstrap 95% CI).
//!
//! The results file is not the lab's to trust (`lab report` runs as root on files anyone can
//! write), so what a figure costs must grow with the file's length (times a log), never with
//! its square. Each function walks
//! the samples once, grouping them — by backend through the index of [`Results::runs_of`], by
//! workload or condition in a hash map — and pairs a backend with the baseline through a
//! [`Pairing`] built once: never "for each backend, scan every sample", which a file naming
//! 30,000 backends turns into 900 million visits. The loops over backends or rows ask for a
//! stop request ([`isolab_host::interrupt::work_stopped`]) as they go and end early when there was
//! one; their callers then discard what they return.

use crate::backends;
use isolab_host::stats;
use isolab_host::stats::Summary;
use isolab_payload::{Kernel, Resource};
use isolab_results::{
    Config, DensityEnd, DensityStep, Family, GuestOs, Outcome, Results, RunRecord, WorkloadRecord,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Phases after `ready` are not part of start-up.
const AFTER_READY: [&str; 3] = ["start", "done", "exited"];

/// Runs of different backends that are compared with each other: same round, same workload.
pub type PairKey = (u32, String, u64, u64, u64);

/// A run's [`PairKey`].
pub fn pair_key(r: &RunRecord) -> PairKey {
    (
        r.round,
        r.workload.kernel.clone(),
        r.workload.mib,
        r.workload.iters,
        r.workload.seed,
    )
}

/// The measured samples of `backend` that completed.
pub fn completed<'a>(results: &'a Results, backend: &str) -> impl Iterator<Item = &'a RunRecord> {
    results
        .measured(backend)
        .filter(|r| r.outcome == Outcome::Completed)
}

/// Measured samples of `backend` that did not complete.
fn failed(results: &Results, backend: &str, keep: impl Fn(&RunRecord) -> bool) -> usize {
    results
        .measured(backend)
        .filter(|r| r.outcome != Outcome::Completed && keep(r))
        .count()
}

/// `metric(a) / metric(b)` for every pair of completed samples of `a` and `b` from the same
/// round and workload, restricted to runs `keep` accepts.
pub fn paired_ratios(
    results: &Results,
    a: &str,
    b: &str,
    keep: impl Fn(&RunRecord) -> bool,
    metric: impl Fn(&RunRecord) -> Option<f64>,
) -> Vec<f64> {
    ratios_by(
        completed(results, a).filter(|r| keep(r)),
        completed(results, b).filter(|r| keep(r)),
        pair_key,
        metric,
    )
}

/// `metric(x) / metric(y)` for every sample `x` of `a` and the sample `y` of `b` with the same
/// `key`: the pairing of [`paired_ratios`], for samples told apart by something other than
/// their backend (a victim beside aggressors and the same victim alone).
pub fn ratios_by<'a, K: Ord>(
    a: impl Iterator<Item = &'a RunRecord>,
    b: impl Iterator<Item = &'a RunRecord>,
    key: impl Fn(&RunRecord) -> K,
    metric: impl Fn(&RunRecord) -> Option<f64>,
) -> Vec<f64> {
    Pairing::of(b, &key, &metric).ratios(a, &key, &metric)
}

/// One side of a pairing, looked up by key: the samples of `b` that [`ratios_by`] divides by,
/// kept so that many backends can be paired with one (the baseline) without reading its samples
/// again for each: each lookup is O(log n).
pub struct Pairing<K> {
    base: BTreeMap<K, f64>,
}

impl<K: Ord> Pairing<K> {
    /// The `metric` of each sample of `b`, by `key` (the last sample of a key wins).
    pub fn of<'a>(
        b: impl Iterator<Item = &'a RunRecord>,
        key: impl Fn(&RunRecord) -> K,
        metric: impl Fn(&RunRecord) -> Option<f64>,
    ) -> Pairing<K> {
        Pairing {
            base: b.filter_map(|r| Some((key(r), metric(r)?))).collect(),
        }
    }

    /// `metric(x) / metric(y)` for every sample `x` of `a` whose key has a sample `y` here.
    pub fn ratios<'a>(
        &self,
        a: impl Iterator<Item = &'a RunRecord>,
        key: impl Fn(&RunRecord) -> K,
        metric: impl Fn(&RunRecord) -> Option<f64>,
    ) -> Vec<f64> {
        a.filter_map(|r| {
            let x = metric(r)?;
            let y = self.base.get(&key(r))?;
            (*y > 0.0).then(|| x / y)
        })
        .collect()
    }
}

/// The baseline's completed samples by [`pair_key`] with their `metric`, to pair each backend's
/// samples with ([`paired_ratios`] against the baseline, for every backend at the cost of one).
/// The key holds the workload, so a backend's samples of one workload meet only the baseline's
/// of the same workload.
fn baseline_pairing(
    results: &Results,
    baseline: Option<&str>,
    metric: impl Fn(&RunRecord) -> Option<f64>,
) -> Option<Pairing<PairKey>> {
    baseline.map(|b| Pairing::of(completed(results, b), pair_key, metric))
}

// ---------------------------------------------------------------------------------------------
// Start-up

/// Start-up figures of one backend.
#[derive(Clone, Debug, PartialEq)]
pub struct StartupRow {
    /// Backend name.
    pub backend: String,
    /// Name to print (says "emulated" where that applies).
    pub label: String,
    /// Every measured start-up time, in nanoseconds, in file order (for distribution plots).
    pub samples_ns: Vec<f64>,
    /// Start-up time summary, in nanoseconds.
    pub startup: Option<Summary>,
    /// Ratio to the baseline (the process backend) in the same round, summarised over rounds
    /// (when a baseline ran).
    pub vs_process: Option<Summary>,
    /// Median duration of each start-up phase, in the order the phases happen, in nanoseconds.
    pub phases: Vec<(String, f64)>,
    /// Samples that did not complete.
    pub failed: usize,
}

/// Start-up figures of every backend in `results`, in table order.
pub fn startup(results: &Results) -> Vec<StartupRow> {
    let startup_ns = |r: &RunRecord| r.startup_ns.map(|n| n as f64);
    let baseline = results.baseline();
    let base = baseline_pairing(results, baseline.as_deref(), startup_ns);
    let mut rows = Vec::new();
    for backend in results.backend_names() {
        // Each backend's figures are its own samples' (and a bootstrap of them): a stop
        // request is asked between two backends. What is computed then is discarded.
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let runs: Vec<&RunRecord> = completed(results, backend).collect();
        let samples_ns: Vec<f64> = runs.iter().filter_map(|r| startup_ns(r)).collect();
        rows.push(StartupRow {
            label: backends::label(results, backend),
            phases: median_phases(&runs),
            startup: Summary::of(&samples_ns),
            samples_ns,
            vs_process: base
                .as_ref()
                .filter(|_| baseline.as_deref() != Some(backend))
                .and_then(|b| Summary::of(&b.ratios(runs.iter().copied(), pair_key, startup_ns))),
            failed: failed(results, backend, |_| true),
            backend: backend.clone(),
        });
    }
    rows
}

/// The median duration of each phase up to `ready`, ordered by when the phase typically ends.
pub fn median_phases(runs: &[&RunRecord]) -> Vec<(String, f64)> {
    // Each phase's durations, in the order phase names are first met; `position` finds a
    // name's place in one lookup, however many names the runs have.
    let mut durations: Vec<(String, Vec<f64>)> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    for run in runs {
        for (name, ns) in run.phases.durations() {
            if AFTER_READY.contains(&name.as_str()) {
                continue;
            }
            match position.get(&name) {
                Some(&i) => durations[i].1.push(ns as f64),
                None => {
                    position.insert(name.clone(), durations.len());
                    durations.push((name, vec![ns as f64]));
                }
            }
        }
    }
    durations
        .into_iter()
        .filter_map(|(name, v)| Some((name, stats::median(&v)?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Memory

/// What one instance of a backend costs in memory, for one working-set size.
///
/// The **fixed cost** is what the instance holds while it is held at `ready`, before the
/// workload has touched its working set: the runtime, the namespaces or the guest, page tables,
/// kernel structures. The **workload-touched** part is what that grew by between `ready` and
/// `done`: the working set itself, which every backend should pay alike. Both are
/// [`isolab_results::MemorySample::instance_bytes`] — the cgroup's kernel memory plus the
/// processes' anonymous PSS, counted exactly — not the cgroup's batch-rounded charge counter.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// Working set the workload touched, in MiB.
    pub mib: u64,
    /// Completed samples.
    pub n: usize,
    /// Samples that did not complete.
    pub failed: usize,
    /// Instance memory at `ready`, bytes.
    pub fixed: Option<Summary>,
    /// Instance memory at `done` minus at `ready`, bytes.
    pub touched: Option<Summary>,
    /// Kernel memory (of the cgroup) at `ready`, bytes.
    pub kernel_at_ready: Option<Summary>,
    /// PSS of the instance's processes at `ready`, bytes.
    pub pss_at_ready: Option<Summary>,
    /// USS of the instance's processes at `ready`, bytes.
    pub uss_at_ready: Option<Summary>,
    /// Guest RAM the VMM mapped, bytes (VMs).
    pub guest_ram: Option<Summary>,
    /// Guest RAM backed by host pages, bytes (VMs).
    pub guest_touched: Option<Summary>,
    /// VMM USS minus the guest RAM it touched, bytes (VMs).
    pub vmm_overhead: Option<Summary>,
}

/// The instance's memory at `ready`, bytes.
pub fn fixed_bytes(r: &RunRecord) -> Option<f64> {
    Some(r.memory_at_ready?.instance_bytes() as f64)
}

/// The growth of the instance's memory from `ready` to `done`, bytes (may be negative: freed
/// start-up memory).
pub fn touched_bytes(r: &RunRecord) -> Option<f64> {
    let done = r.memory_at_done?.instance_bytes() as f64;
    Some(done - fixed_bytes(r)?)
}

/// Memory figures of every (working-set size, backend) with memory samples, ordered by size,
/// then by backend in table order.
pub fn memory(results: &Results) -> Vec<MemoryRow> {
    let sizes: BTreeSet<u64> = results
        .runs
        .iter()
        .filter(|r| r.memory_at_ready.is_some())
        .map(|r| r.workload.mib)
        .collect();
    // Each backend's samples, by size, in one pass over them: (size, backend's place) → the
    // completed samples with memory figures, and how many failed.
    let mut groups: BTreeMap<(u64, usize), (Vec<&RunRecord>, usize)> = BTreeMap::new();
    for (place, backend) in results.backend_names().iter().enumerate() {
        for r in results.measured(backend) {
            if !sizes.contains(&r.workload.mib) {
                continue;
            }
            let completed = r.outcome == Outcome::Completed;
            if completed && r.memory_at_ready.is_none() {
                continue;
            }
            let (runs, failed) = groups.entry((r.workload.mib, place)).or_default();
            if completed {
                runs.push(r);
            } else {
                *failed += 1;
            }
        }
    }
    let names = results.backend_names();
    let mut rows = Vec::new();
    for ((mib, place), (runs, failed)) in groups {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let backend = &names[place];
        let of = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
            Summary::of(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        rows.push(MemoryRow {
            label: backends::label(results, backend),
            mib,
            n: runs.len(),
            failed,
            fixed: of(&fixed_bytes),
            touched: of(&touched_bytes),
            kernel_at_ready: of(&|r| r.memory_at_ready?.cgroup?.kernel_bytes.map(|b| b as f64)),
            pss_at_ready: of(&|r| Some(r.memory_at_ready?.processes.pss_bytes as f64)),
            uss_at_ready: of(&|r| Some(r.memory_at_ready?.processes.uss_bytes as f64)),
            guest_ram: of(&|r| Some(r.facts.guest_ram_bytes? as f64)),
            guest_touched: of(&|r| Some(r.facts.guest_ram_touched_bytes? as f64)),
            vmm_overhead: of(&|r| Some(r.facts.vmm_overhead_bytes? as f64)),
            backend: backend.clone(),
        });
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// What a kernel's rate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateUnit {
    /// Operations per second (`output.ops`).
    Ops,
    /// Bytes per second (`output.bytes`), for kernels that count no operations.
    Bytes,
}

impl RateUnit {
    /// The unit, for table headers.
    pub fn per_second(self) -> &'static str {
        match self {
            RateUnit::Ops => "ops/s",
            RateUnit::Bytes => "B/s",
        }
    }
}

/// A run's rate: what its kernel did divided by how long its measured part took. Bytes for the
/// kernels whose speed is a bandwidth (disk-seq, net-stream); otherwise operations if the
/// kernel counts them, else bytes.
pub fn rate(r: &RunRecord) -> Option<(f64, RateUnit)> {
    let out = r.output.as_ref()?;
    let secs = r.work_ns? as f64 / 1e9;
    if secs <= 0.0 {
        return None;
    }
    let bandwidth = kernel_of(&r.workload).is_some_and(Kernel::rate_in_bytes);
    if out.ops > 0 && !bandwidth {
        Some((out.ops as f64 / secs, RateUnit::Ops))
    } else if out.bytes > 0 {
        Some((out.bytes as f64 / secs, RateUnit::Bytes))
    } else {
        None
    }
}

/// The kernel a workload ran, if this version of the lab knows it.
pub fn kernel_of(w: &WorkloadRecord) -> Option<Kernel> {
    Kernel::from_name(w.kernel.as_bytes())
}

/// The resource a workload stresses, for the kernels that measure a speed.
pub fn resource_of(w: &WorkloadRecord) -> Option<Resource> {
    kernel_of(w).and_then(Kernel::resource)
}

/// Throughput of one backend on one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// The workload.
    pub workload: WorkloadRecord,
    /// What the rate counts.
    pub unit: RateUnit,
    /// Rate summary, per second.
    pub rate: Option<Summary>,
    /// This backend's rate over the baseline's (the process backend's) in the same round: above
    /// 1 is faster than a plain process.
    pub vs_process: Option<Summary>,
    /// Samples that did not complete.
    pub failed: usize,
}

/// A short name for a workload: `mem 64 MiB ×8`.
pub fn workload_name(w: &WorkloadRecord) -> String {
    let mut s = w.kernel.clone();
    if w.mib > 0 {
        s.push_str(&format!(" {} MiB", w.mib));
    }
    if w.iters > 0 {
        s.push_str(&format!(" ×{}", w.iters));
    }
    s
}

/// The distinct workloads of `results`, in the order they first appear, each with its place in
/// that order (a campaign has a handful; a hostile file may have one per line, so they are
/// told apart by hashing, not by comparing each with every other).
fn workloads(results: &Results) -> (Vec<&WorkloadRecord>, HashMap<&WorkloadRecord, usize>) {
    let mut order: Vec<&WorkloadRecord> = Vec::new();
    let mut place: HashMap<&WorkloadRecord, usize> = HashMap::new();
    for r in &results.runs {
        place.entry(&r.workload).or_insert_with(|| {
            order.push(&r.workload);
            order.len() - 1
        });
    }
    (order, place)
}

/// The measured samples of every backend, grouped by (workload's place, backend's place) and
/// in that order — the order of the tables' rows — for the workloads `keep` accepts: each
/// group's completed samples, and how many failed. One pass over the samples.
fn by_workload_and_backend<'a>(
    results: &'a Results,
    place: &HashMap<&WorkloadRecord, usize>,
    keep: impl Fn(&WorkloadRecord) -> bool,
) -> BTreeMap<(usize, usize), (Vec<&'a RunRecord>, usize)> {
    let mut groups: BTreeMap<(usize, usize), (Vec<&RunRecord>, usize)> = BTreeMap::new();
    for (b, backend) in results.backend_names().iter().enumerate() {
        for r in results.measured(backend) {
            if !keep(&r.workload) {
                continue;
            }
            let (runs, failed) = groups.entry((place[&r.workload], b)).or_default();
            if r.outcome == Outcome::Completed {
                runs.push(r);
            } else {
                *failed += 1;
            }
        }
    }
    groups
}

/// Throughput figures of every (workload, backend), workloads in the order they first appear,
/// backends in table order.
pub fn throughput(results: &Results) -> Vec<ThroughputRow> {
    // A victim of the interference experiment ran beside others: its rate is not a backend's.
    if results.runs.iter().any(|r| r.neighbours.is_some()) {
        return Vec::new();
    }
    let rate_of = |r: &RunRecord| rate(r).map(|x| x.0);
    let baseline = results.baseline();
    let base = baseline_pairing(results, baseline.as_deref(), rate_of);
    let (order, place) = workloads(results);
    let names = results.backend_names();
    let groups = by_workload_and_backend(results, &place, |w| resource_of(w).is_some());
    let mut rows = Vec::new();
    for ((w, b), (runs, failed)) in groups {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let backend = &names[b];
        let rates: Vec<(f64, RateUnit)> = runs.iter().filter_map(|r| rate(r)).collect();
        let unit = rates.first().map_or(RateUnit::Ops, |r| r.1);
        let values: Vec<f64> = rates.iter().map(|r| r.0).collect();
        rows.push(ThroughputRow {
            label: backends::label(results, backend),
            workload: order[w].clone(),
            unit,
            rate: Summary::of(&values),
            vs_process: base
                .as_ref()
                .filter(|_| baseline.as_deref() != Some(backend))
                .and_then(|p| Summary::of(&p.ratios(runs.iter().copied(), pair_key, rate_of))),
            failed,
            backend: backend.clone(),
        });
    }
    rows
}

/// The workloads of each backend's rows of [`throughput`], in the rows' order, without their
/// figures: what a claim pairs two backends on, workload by workload.
pub fn throughput_workloads(results: &Results) -> HashMap<String, Vec<WorkloadRecord>> {
    let mut out: HashMap<String, Vec<WorkloadRecord>> = HashMap::new();
    if results.runs.iter().any(|r| r.neighbours.is_some()) {
        return out;
    }
    let (order, place) = workloads(results);
    let names = results.backend_names();
    for (w, b) in by_workload_and_backend(results, &place, |w| resource_of(w).is_some()).into_keys()
    {
        out.entry(names[b].clone())
            .or_default()
            .push(order[w].clone());
    }
    out
}

/// The latency of single requests of one backend on one workload (disk-rand, net-rr): each
/// run times every request and reports its median and 99th percentile; these summarise the
/// runs' figures.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// The workload.
    pub workload: WorkloadRecord,
    /// The runs' median latencies, in ns.
    pub p50: Option<Summary>,
    /// The runs' 99th-percentile latencies, in ns.
    pub p99: Option<Summary>,
    /// This backend's median latency over the process's in the same round: above 1 is slower.
    pub p50_vs_process: Option<Summary>,
}

/// Latency figures of every (workload, backend) that reported them.
pub fn latency(results: &Results) -> Vec<LatencyRow> {
    if results.runs.iter().any(|r| r.neighbours.is_some()) {
        return Vec::new();
    }
    let p50_of = |r: &RunRecord| r.facts.latency_p50_ns.map(|v| v as f64);
    let baseline = results.baseline();
    let base = baseline_pairing(results, baseline.as_deref(), p50_of);
    let (order, place) = workloads(results);
    // The workloads some sample (any backend's, warm-up included) reported a latency for.
    let reports: HashSet<&WorkloadRecord> = results
        .runs
        .iter()
        .filter(|r| r.facts.latency_p50_ns.is_some())
        .map(|r| &r.workload)
        .collect();
    let names = results.backend_names();
    let groups = by_workload_and_backend(results, &place, |w| reports.contains(w));
    let mut rows = Vec::new();
    for ((w, b), (runs, _)) in groups {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let backend = &names[b];
        let figure = |f: fn(&RunRecord) -> Option<u64>| {
            let values: Vec<f64> = runs.iter().filter_map(|r| f(r)).map(|v| v as f64).collect();
            Summary::of(&values)
        };
        let p50 = figure(|r| r.facts.latency_p50_ns);
        if p50.is_none() {
            continue;
        }
        rows.push(LatencyRow {
            label: backends::label(results, backend),
            workload: order[w].clone(),
            p50,
            p99: figure(|r| r.facts.latency_p99_ns),
            p50_vs_process: base
                .as_ref()
                .filter(|_| baseline.as_deref() != Some(backend))
                .and_then(|p| Summary::of(&p.ratios(runs.iter().copied(), pair_key, p50_of))),
            backend: backend.clone(),
        });
    }
    rows
}

/// A run's checksum, as the lab checked it. A network kernel's run is also held against what
/// the lab's peer received from it (`peer_bytes`): bytes that did not all arrive make its
/// checksum one that agrees with no other.
fn checked_sum(r: &RunRecord) -> Option<String> {
    let out = r.output.as_ref()?;
    let sent = match kernel_of(&r.workload) {
        Some(Kernel::NetStream) => Some(out.bytes),
        // One byte per round trip reaches the echo.
        Some(Kernel::NetRr) => Some(out.ops),
        _ => None,
    };
    match (sent, r.facts.peer_bytes) {
        (Some(sent), Some(got)) if sent != got => Some(format!(
            "{} (yet the peer received {got} of {sent} bytes)",
            out.checksum
        )),
        _ => Some(out.checksum.clone()),
    }
}

/// Backends that computed different checksums for the same workload: a wrong or skipped
/// computation, which makes every figure of that workload suspect.
#[derive(Clone, Debug, PartialEq)]
pub struct ChecksumMismatch {
    /// The workload, named.
    pub workload: String,
    /// Each backend (label) and the distinct checksums it reported.
    pub checksums: Vec<(String, Vec<String>)>,
}

impl ChecksumMismatch {
    /// What each backend computed: `process 0x01, container 0x02`.
    pub fn each(&self) -> String {
        self.checksums
            .iter()
            .map(|(b, s)| format!("{b} {}", s.join("/")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every workload whose completed runs (warm-up included: a wrong result is wrong whenever it
/// happens) disagree on the checksum. `probe` is left out: its "checksum" counts the facts
/// reported, which legitimately differs between an OS and a VMM answering for a bare guest.
pub fn checksum_mismatches(results: &Results) -> Vec<ChecksumMismatch> {
    let (order, place) = workloads(results);
    // Each (workload, backend)'s distinct checksums, in one pass over the samples.
    let mut sums: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    for (b, backend) in results.backend_names().iter().enumerate() {
        for r in results.runs_of(backend) {
            if r.workload.kernel == "probe" || r.outcome != Outcome::Completed {
                continue;
            }
            if let Some(sum) = checked_sum(r) {
                sums.entry((place[&r.workload], b)).or_default().insert(sum);
            }
        }
    }
    let names = results.backend_names();
    let mut out = Vec::new();
    let mut groups = sums.into_iter().peekable();
    while let Some(((w, b), first)) = groups.next() {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        // Every backend's checksums of workload `w`: this group and the ones after it.
        let mut by_backend = vec![(b, first)];
        while let Some(((_, b), s)) = groups.next_if(|((next, _), _)| *next == w) {
            by_backend.push((b, s));
        }
        let all: BTreeSet<&String> = by_backend.iter().flat_map(|(_, s)| s).collect();
        if all.len() > 1 {
            out.push(ChecksumMismatch {
                workload: workload_name(order[w]),
                checksums: by_backend
                    .into_iter()
                    .map(|(b, s)| (backends::label(results, &names[b]), s.into_iter().collect()))
                    .collect(),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Density

/// One backend's density ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct DensitySeries {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// Its steps, by number of instances.
    pub steps: Vec<DensityStep>,
    /// What each additional instance added to the instances' cgroup charges, bytes: one value
    /// per step, `Δinstance_bytes / Δn`, summarised.
    pub per_instance: Option<Summary>,
    /// What each additional instance took from the host's MemAvailable, bytes, the same way.
    pub per_instance_host: Option<Summary>,
    /// Instances started per second in each step, summarised.
    pub launch_rate: Option<Summary>,
    /// How the ladder ended.
    pub end: Option<DensityEnd>,
    /// On the lab's image: what each additional instance added to the host's memory, the
    /// image's page cache counted once (`host_bytes`), bytes, step by step, summarised.
    pub per_instance_on_image: Option<Summary>,
}

impl DensitySeries {
    /// On the lab's image: the first instance's start with the image out of the page cache.
    pub fn cold_start_ns(&self) -> Option<u64> {
        self.steps.iter().find_map(|s| s.image.cold_start_ns)
    }

    /// On the lab's image: the later steps' median starts, warm, summarised.
    pub fn warm_start(&self) -> Option<Summary> {
        let warm: Vec<f64> = self
            .steps
            .iter()
            .filter(|s| s.image.cold_start_ns.is_none())
            .filter_map(|s| s.image.start_ns)
            .map(|n| n as f64)
            .collect();
        Summary::of(&warm)
    }

    /// The step with the most instances alive.
    pub fn top(&self) -> Option<&DensityStep> {
        self.steps.iter().max_by_key(|s| s.n)
    }
}

impl DensitySeries {
    /// How many instances of this backend would fit in `memory_bytes`, at the median
    /// per-instance charge (a projection, not a measurement: the ladder may have stopped early).
    pub fn projected_fit(&self, memory_bytes: u64) -> Option<f64> {
        let per = self.per_instance?.median;
        (per > 0.0).then(|| memory_bytes as f64 / per)
    }

    /// The largest number of instances that were alive at once.
    pub fn max_n(&self) -> u32 {
        self.steps.iter().map(|s| s.n).max().unwrap_or(0)
    }
}

/// Density figures of every backend with density steps, in table order (by family).
pub fn density(results: &Results) -> Vec<DensitySeries> {
    results
        .backend_names()
        .iter()
        .filter(|b| results.density_of(b).next().is_some())
        // A stop request ends the list; what is computed then is discarded.
        .take_while(|_| !isolab_host::interrupt::work_stopped())
        .map(|backend| {
            let mut steps: Vec<DensityStep> = results.density_of(backend).cloned().collect();
            steps.sort_by_key(|s| s.n);
            // Marginal cost: each step against the one before it (the first against nothing
            // alive), so a fixed cost shared by all instances shows only once.
            let (mut per, mut per_host, mut launch) = (Vec::new(), Vec::new(), Vec::new());
            let mut on_image = Vec::new();
            // On the image, the first instance also brings the image's pages into the page
            // cache: what each *more* instance costs starts from the second step.
            let mut prev: (u32, f64, f64, Option<f64>) = (0, 0.0, 0.0, None);
            for s in &steps {
                let dn = s.n.saturating_sub(prev.0);
                let host = s.image.host_bytes.map(|b| b as f64);
                if dn > 0 {
                    per.push((s.instance_bytes as f64 - prev.1) / dn as f64);
                    per_host.push((s.mem_available_drop_bytes as f64 - prev.2) / dn as f64);
                    if let (Some(now), Some(before)) = (host, prev.3) {
                        on_image.push((now - before) / dn as f64);
                    }
                }
                if s.added > 0 && s.launch_ns > 0 {
                    launch.push(s.added as f64 / (s.launch_ns as f64 / 1e9));
                }
                prev = (
                    s.n,
                    s.instance_bytes as f64,
                    s.mem_available_drop_bytes as f64,
                    host,
                );
            }
            DensitySeries {
                label: backends::label(results, backend),
                per_instance: Summary::of(&per),
                per_instance_host: Summary::of(&per_host),
                launch_rate: Summary::of(&launch),
                per_instance_on_image: Summary::of(&on_image),
                end: results.ends_of(backend).next().cloned(),
                steps,
                backend: backend.clone(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Isolation

/// The probe's facts, in the order to show them, each with one line that says what it tells.
pub const PROBE_FACTS: [(&str, &str); 24] = [
    ("kernel_release", "Release of the kernel that answers the workload's system calls."),
    ("kernel_version", "That kernel's build string: tells two builds of one release apart."),
    ("hostname", "The UTS name: a container or a guest gets a name of its own."),
    ("pid", "The workload's PID: 1 when it is the first process of a new PID namespace or guest."),
    ("pids_visible", "Processes listed in /proc: the whole machine's, or only its own."),
    ("mounts", "Mount points it sees: the host's table, or a private one."),
    ("root_fs", "File-system type at /: the host's disk, a private tmpfs, or the guest's root."),
    ("interfaces", "Network interfaces: the host's, or only the loopback of a fresh namespace."),
    ("root_entries", "What / holds: the host's whole tree, or just what the instance needs."),
    ("uid_map", "How its user IDs map onto the host's: \"0 0 4294967295\" means its root is the host's root."),
    ("root_on_host", "Whether its root is the host's root: what a file it makes setuid, or a way out, would be worth."),
    ("cap_eff", "Effective capabilities (hex bitmask): which privileged operations it may try."),
    ("no_new_privs", "1: no exec can ever gain privileges (set-uid programs stay powerless)."),
    ("seccomp", "Seccomp filters on its system calls: \"disabled\", or how many are stacked."),
    ("sensitive_calls", "Summary of the calls below (unshare: ok when any namespace flag was allowed)."),
    ("unshare_flags", "unshare with each namespace flag: \"user:ok\" lets it become root of namespaces of its own (EPERM: refused by seccomp or for a missing capability)."),
    ("clone_flags", "clone with each namespace flag: Docker's profile refuses them without CAP_SYS_ADMIN."),
    ("mount_tmpfs", "A tmpfs mounted in a mount namespace of its own, directly or as root of a new user namespace."),
    ("keyctl", "The kernel's keyrings, which are not namespaced."),
    ("bpf", "Creating a BPF map: the kernel's in-kernel virtual machine."),
    ("perf_event_open", "A performance counter on itself: a door to the kernel's perf code."),
    ("ptrace", "PTRACE_TRACEME: whether a process may be traced (Docker allows it from Linux 4.8)."),
    ("cgroup", "Its cgroup paths: \"/\" where a cgroup namespace hides the host's tree."),
    ("cpus", "CPUs it may run on: the host's, or the guest's virtual CPUs."),
];

/// Probe facts that say what the workload may do in the kernel that answers it, not what it
/// sees of the host's: a guest that may make namespaces in its own kernel shares nothing with
/// the host by it, so these never count as "same as the host's".
pub const CALL_FACTS: [&str; 8] = [
    "sensitive_calls",
    "unshare_flags",
    "clone_flags",
    "mount_tmpfs",
    "keyctl",
    "bpf",
    "perf_event_open",
    "ptrace",
];

/// One fact, side by side for every backend.
#[derive(Clone, Debug, PartialEq)]
pub struct IsolationRow {
    /// Probe key.
    pub key: String,
    /// What the fact tells, in one line.
    pub explanation: String,
    /// Each backend's value (in [`Isolation::backends`] order).
    pub values: Vec<Option<String>>,
    /// Whether each value equals the host's (the baseline's view, or the environment record's
    /// for kernel release and host name).
    pub same_as_host: Vec<bool>,
}

/// The most facts the isolation table shows beyond [`PROBE_FACTS`]: the probe reports a few
/// more (and a later probe may report more still), but a file whose runs name thousands of
/// facts did not come from it, and its table would have a row for each, times a column for each
/// backend. Facts past this many, in the order they first appear, are counted and left out.
pub const MAX_EXTRA_FACTS: usize = 64;

/// What each backend's workload could see.
#[derive(Clone, Debug, PartialEq)]
pub struct Isolation {
    /// Backend names, in table order.
    pub backends: Vec<String>,
    /// Names to print.
    pub labels: Vec<String>,
    /// Who answered the probe when it was not the workload's own kernel (fact `served_by`).
    pub served_by: Vec<Option<String>>,
    /// Which backend's values are the host's own view (the baseline's), if it ran the probe.
    pub host_view: Option<usize>,
    /// One row per fact.
    pub rows: Vec<IsolationRow>,
    /// Facts reported beyond [`MAX_EXTRA_FACTS`] more than [`PROBE_FACTS`], left out.
    pub left_out: usize,
    /// Where each backend's column is, and each fact's row.
    column: HashMap<String, usize>,
    row: HashMap<String, usize>,
}

impl Isolation {
    /// The value of `key` for `backend`.
    pub fn value(&self, backend: &str, key: &str) -> Option<&str> {
        let i = *self.column.get(backend)?;
        self.rows[*self.row.get(key)?].values[i].as_deref()
    }

    /// How many facts of `backend` equal the host's.
    pub fn shared_with_host(&self, backend: &str) -> Option<usize> {
        let i = *self.column.get(backend)?;
        Some(self.rows.iter().filter(|r| r.same_as_host[i]).count())
    }
}

/// The probe facts of every backend that ran `probe`; `None` when none did.
pub fn isolation(results: &Results) -> Option<Isolation> {
    let mut backends: Vec<String> = Vec::new();
    let mut facts: Vec<&RunRecord> = Vec::new();
    for backend in results.backend_names() {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        // The first measured sample with facts; a warm-up sample if that is all there is.
        let run = completed(results, backend)
            .find(|r| !r.probe.is_empty())
            .or_else(|| results.runs_of(backend).find(|r| !r.probe.is_empty()));
        if let Some(run) = run {
            backends.push(backend.clone());
            facts.push(run);
        }
    }
    if backends.is_empty() {
        return None;
    }
    // Each run's facts by key (the first of a key, as it was reported), so a cell is one
    // lookup, not a walk along the run's facts.
    let by_key: Vec<HashMap<&str, &str>> = facts
        .iter()
        .map(|r| {
            let mut m = HashMap::new();
            for (k, v) in &r.probe {
                m.entry(k.as_str()).or_insert(v.as_str());
            }
            m
        })
        .collect();
    let mut keys: Vec<String> = PROBE_FACTS.iter().map(|(k, _)| k.to_string()).collect();
    let mut seen: HashSet<&str> = PROBE_FACTS.iter().map(|(k, _)| *k).collect();
    let mut left_out = 0;
    for run in &facts {
        for (k, _) in &run.probe {
            if seen.insert(k.as_str()) {
                if keys.len() < PROBE_FACTS.len() + MAX_EXTRA_FACTS {
                    keys.push(k.clone());
                } else {
                    left_out += 1;
                }
            }
        }
    }
    let env = &results.header.environment;
    let host_view = results
        .baseline()
        .and_then(|p| backends.iter().position(|b| *b == p));
    let rows: Vec<IsolationRow> = keys
        .into_iter()
        .filter_map(|key| {
            let values: Vec<Option<String>> = by_key
                .iter()
                .map(|m| m.get(key.as_str()).map(|v| v.to_string()))
                .collect();
            if values.iter().all(Option::is_none) {
                return None;
            }
            let host: Option<String> = match host_view {
                Some(i) => values[i].clone(),
                None => match key.as_str() {
                    "kernel_release" => Some(env.kernel_release.clone()),
                    "hostname" => Some(env.hostname.clone()),
                    _ => None,
                },
            };
            let view = !CALL_FACTS.contains(&key.as_str());
            let same_as_host = values
                .iter()
                .enumerate()
                .map(|(i, v)| view && Some(i) != host_view && v.is_some() && *v == host)
                .collect();
            let explanation = PROBE_FACTS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("Reported by the probe.", |(_, e)| e)
                .to_string();
            Some(IsolationRow {
                key,
                explanation,
                values,
                same_as_host,
            })
        })
        .collect();
    Some(Isolation {
        labels: backends
            .iter()
            .map(|b| backends::label(results, b))
            .collect(),
        served_by: facts.iter().map(|r| r.facts.served_by.clone()).collect(),
        host_view,
        column: backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.clone(), i))
            .collect(),
        row: rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key.clone(), i))
            .collect(),
        backends,
        rows,
        left_out,
    })
}

// ---------------------------------------------------------------------------------------------
// Interference

/// A victim of `lab run interference` in one condition: on a backend, beside `count`
/// aggressors of one kind, in one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct InterferenceRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// The victim's workload.
    pub victim: WorkloadRecord,
    /// The aggressor (`cpu`, `mem`, `disk`, `fork`, `oom`).
    pub aggressor: String,
    /// How many ran beside the victim.
    pub count: u32,
    /// With or without limits.
    pub config: Config,
    /// The victim's time (`start` or `ready` → `done`) beside them over its time alone in the
    /// same round and configuration: above 1 is slower.
    pub slowdown: Option<Summary>,
    /// Measured samples of the victim.
    pub n: usize,
    /// Of those, samples whose victim did not complete.
    pub failed: usize,
    /// Completed samples whose checksum is not the one the victim computes alone.
    pub wrong: usize,
    /// What happened to the aggressors.
    pub stability: Stability,
}

impl InterferenceRow {
    /// True when every measured victim completed with the checksum it computes alone.
    pub fn survived(&self) -> bool {
        self.n > 0 && self.failed == 0 && self.wrong == 0
    }
}

/// What the aggressors of one condition did and suffered, over its measured samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stability {
    /// Aggressor instances, over all samples.
    pub aggressors: usize,
    /// How they ended, and how often (`stopped`, `completed`, `oom-killed`, `failed`).
    pub outcomes: BTreeMap<String, usize>,
    /// OOM kills the host counted in the aggressors' cgroups.
    pub oom_kills: u64,
    /// OOM kills guests counted inside (VMs).
    pub guest_oom_kills: u64,
    /// Memory hogs killed (and started again), by the workload's count.
    pub hog_kills: u64,
    /// The most memory one hog touched.
    pub hog_bytes: u64,
    /// Forks the aggressors' cgroups refused at `pids.max` (the host's count).
    pub pids_max_refused: u64,
    /// Forks the bombs' processes saw refused (their own count: in a guest, the only one).
    pub forks_refused: u64,
    /// The most processes one bomb made.
    pub forks: u64,
    /// A bomb's limit inside a guest, when one ran there.
    pub fork_limit: Option<u64>,
    /// The loosest `pids.max` in force for a bomb's processes, read back at `ready`.
    pub pids_in_force: Option<u64>,
    /// Signals that ended an aggressor's child.
    pub signals: Vec<String>,
    /// Why aggressors failed, the first few.
    pub failures: Vec<String>,
}

impl Stability {
    /// Count the aggressors of one sample; `signals` holds the signals already listed.
    fn add(&mut self, n: &isolab_results::Neighbours, signals: &mut HashSet<String>) {
        for a in &n.aggressors {
            self.aggressors += 1;
            let kind = match &a.outcome {
                Outcome::Completed => "completed",
                Outcome::OomKilled => "oom-killed",
                Outcome::Stopped => "stopped",
                Outcome::Failed { reason } => {
                    if self.failures.len() < 3 && !self.failures.contains(reason) {
                        self.failures.push(reason.clone());
                    }
                    "failed"
                }
            };
            *self.outcomes.entry(kind.to_string()).or_default() += 1;
            let f = &a.facts;
            self.oom_kills += f.oom_kills.unwrap_or(0);
            self.guest_oom_kills += f.guest_oom_kills.unwrap_or(0);
            self.hog_kills += f.hog_kills.unwrap_or(0);
            self.hog_bytes = self.hog_bytes.max(f.hog_bytes.unwrap_or(0));
            self.pids_max_refused += f.pids_max_refused.unwrap_or(0);
            self.forks_refused += f.forks_refused.unwrap_or(0);
            self.forks = self.forks.max(f.forks.unwrap_or(0));
            self.fork_limit = self.fork_limit.or(f.fork_limit);
            self.pids_in_force = self.pids_in_force.max(f.pids_limit_in_force);
            if let Some(sig) = &f.child_signal {
                if signals.insert(sig.clone()) {
                    self.signals.push(sig.clone());
                }
            }
        }
    }

    /// Who stopped the aggressors' failure, and how, in words: "the OOM killer in its cgroup
    /// (12 kills)", "pids.max of its cgroup (3,410 forks refused)".
    pub fn describe(&self, aggressor: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        if aggressor == "oom" {
            if self.oom_kills > 0 {
                parts.push(format!(
                    "the OOM killer in the hog's own cgroup ({} kill{})",
                    self.oom_kills,
                    plural(self.oom_kills)
                ));
            }
            if self.guest_oom_kills > 0 {
                parts.push(format!(
                    "the guest's OOM killer ({} kill{})",
                    self.guest_oom_kills,
                    plural(self.guest_oom_kills)
                ));
            }
            if parts.is_empty() && self.hog_kills > 0 {
                parts.push(format!(
                    "{} kill{} of the hog ({})",
                    self.hog_kills,
                    plural(self.hog_kills),
                    self.signals.join(", ")
                ));
            }
            if parts.is_empty() {
                parts.push(format!(
                    "nothing: the hog reached {} and was stopped by the lab",
                    crate::format::bytes(self.hog_bytes as f64)
                ));
            } else {
                parts.push(format!(
                    "a hog reached {}",
                    crate::format::bytes(self.hog_bytes as f64)
                ));
            }
        } else if aggressor == "fork" {
            if self.pids_max_refused > 0 {
                let value = self
                    .pids_in_force
                    .map_or_else(String::new, |p| format!(" ({p}, read back)"));
                parts.push(format!(
                    "pids.max{value} of the bomb's own cgroup ({} forks refused)",
                    self.pids_max_refused
                ));
            } else if let Some(limit) = self.fork_limit {
                parts.push(format!(
                    "the guest's own limit, RLIMIT_NPROC {limit} ({} forks refused)",
                    self.forks_refused
                ));
            } else if self.forks_refused > 0 {
                parts.push(format!("{} forks refused", self.forks_refused));
            }
            parts.push(format!("a bomb reached {} processes", self.forks + 1));
        }
        if !self.failures.is_empty() {
            parts.push(format!("aggressors failed: {}", self.failures.join("; ")));
        }
        parts.join("; ")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The victim's alone sample a sample is paired with: same backend, round, configuration and
/// workload.
type AloneKey = (String, u32, Config, String, u64, u64, u64);

fn alone_key(r: &RunRecord) -> Option<AloneKey> {
    let n = r.neighbours.as_ref()?;
    let w = &r.workload;
    Some((
        r.backend.clone(),
        r.round,
        n.config,
        w.kernel.clone(),
        w.mib,
        w.iters,
        w.seed,
    ))
}

/// Every condition of an interference file, by backend (in table order), then victim,
/// aggressor, count and configuration.
pub fn interference(results: &Results) -> Vec<InterferenceRow> {
    let time = |r: &RunRecord| r.work_ns.map(|n| n as f64);
    // Every condition — (backend, victim, aggressor, count, configuration) — in the order it
    // first appears, with its measured samples, in one pass over the file.
    type Condition<'a> = (&'a str, &'a WorkloadRecord, &'a str, u32, Config);
    let mut conditions: Vec<(Condition, Vec<&RunRecord>)> = Vec::new();
    let mut place: HashMap<Condition, usize> = HashMap::new();
    // The victims' completed measured samples alone, by (backend, victim).
    let mut alone: HashMap<(&str, &WorkloadRecord), Vec<&RunRecord>> = HashMap::new();
    for r in &results.runs {
        let Some(n) = &r.neighbours else { continue };
        if n.count == 0 && !r.warmup && r.outcome == Outcome::Completed {
            alone
                .entry((r.backend.as_str(), &r.workload))
                .or_default()
                .push(r);
        }
        let Some(a) = &n.aggressor else { continue };
        let c = (
            r.backend.as_str(),
            &r.workload,
            a.as_str(),
            n.count,
            n.config,
        );
        let i = *place.entry(c).or_insert_with(|| {
            conditions.push((c, Vec::new()));
            conditions.len() - 1
        });
        if !r.warmup {
            conditions[i].1.push(r);
        }
    }
    let rank: HashMap<&str, usize> = results
        .backend_names()
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    let aggressor_rank =
        |a: &str| isolab_results::Aggressor::from_name(a).map_or(usize::MAX, |a| a as usize);
    // A stable sort: conditions that tie keep the order they first appeared in.
    let rank_of = |b: &str| rank.get(b).copied().unwrap_or(usize::MAX);
    conditions.sort_by(|(x, _), (y, _)| {
        (
            rank_of(x.0),
            aggressor_rank(x.2),
            x.1.kernel.as_str(),
            x.3,
            x.4,
        )
            .cmp(&(
                rank_of(y.0),
                aggressor_rank(y.2),
                y.1.kernel.as_str(),
                y.3,
                y.4,
            ))
    });
    // What a victim alone is paired with, per (backend, victim, configuration), and the
    // checksums it computes alone, per (backend, victim): built once, shared by every condition
    // of it.
    let mut pairings: HashMap<(&str, &WorkloadRecord, Config), Pairing<Option<AloneKey>>> =
        HashMap::new();
    let mut checksums: HashMap<(&str, &WorkloadRecord), HashSet<&str>> = HashMap::new();
    let none: Vec<&RunRecord> = Vec::new();
    let mut rows = Vec::new();
    for ((backend, victim, aggressor, count, config), measured) in conditions {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let done: Vec<&RunRecord> = measured
            .iter()
            .copied()
            .filter(|r| r.outcome == Outcome::Completed)
            .collect();
        let alone_runs = alone.get(&(backend, victim)).unwrap_or(&none);
        // The checksum the victim computes alone (any round: it does not vary).
        let sums = checksums.entry((backend, victim)).or_insert_with(|| {
            alone_runs
                .iter()
                .filter_map(|r| r.output.as_ref().map(|o| o.checksum.as_str()))
                .collect()
        });
        let wrong = done
            .iter()
            .filter(|r| {
                let sum = r.output.as_ref().map(|o| o.checksum.as_str());
                !sums.is_empty() && !sum.is_some_and(|s| sums.contains(s))
            })
            .count();
        let pairing = pairings
            .entry((backend, victim, config))
            .or_insert_with(|| {
                Pairing::of(
                    alone_runs
                        .iter()
                        .copied()
                        .filter(|r| r.neighbours.as_ref().is_some_and(|n| n.config == config)),
                    alone_key,
                    time,
                )
            });
        let slowdown = Summary::of(&pairing.ratios(done.iter().copied(), alone_key, time));
        let mut stability = Stability::default();
        let mut signals = HashSet::new();
        for r in &measured {
            if let Some(n) = &r.neighbours {
                stability.add(n, &mut signals);
            }
        }
        rows.push(InterferenceRow {
            label: backends::label(results, backend),
            n: measured.len(),
            failed: measured.len() - done.len(),
            wrong,
            slowdown,
            stability,
            backend: backend.to_string(),
            victim: victim.clone(),
            aggressor: aggressor.to_string(),
            count,
            config,
        });
    }
    rows
}

/// The victims' times alone, per backend, workload and configuration, for the tables: what
/// every slowdown is measured against.
pub fn interference_alone(
    results: &Results,
) -> Vec<(String, String, WorkloadRecord, Config, Summary)> {
    let mut out = Vec::new();
    for backend in results.backend_names() {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let label = backends::label(results, backend);
        // The backend's (workload, configuration)s alone, in the order they first appear, each
        // with its times: one pass over its samples.
        let mut seen: Vec<((&WorkloadRecord, Config), Vec<f64>)> = Vec::new();
        let mut place: HashMap<(&WorkloadRecord, Config), usize> = HashMap::new();
        for r in completed(results, backend) {
            let Some(n) = &r.neighbours else { continue };
            if n.count != 0 {
                continue;
            }
            let i = *place.entry((&r.workload, n.config)).or_insert_with(|| {
                seen.push(((&r.workload, n.config), Vec::new()));
                seen.len() - 1
            });
            seen[i].1.extend(r.work_ns.map(|n| n as f64));
        }
        // Stable: workloads of one kernel and configuration keep their first-seen order.
        seen.sort_by(|a, b| {
            (a.0 .0.kernel.as_str(), a.0 .1).cmp(&(b.0 .0.kernel.as_str(), b.0 .1))
        });
        for ((w, config), times) in seen {
            if let Some(s) = Summary::of(&times) {
                out.push((backend.clone(), label.clone(), w.clone(), config, s));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Images

/// The image a backend starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// Its family.
    pub family: Family,
    /// The OS it boots, if it said (what an emulated machine is, for the images claim).
    pub guest_os: Option<GuestOs>,
    /// Size in bytes (fact `image_bytes`).
    pub bytes: u64,
    /// What it consists of (fact `image`).
    pub what: Option<String>,
}

/// The image of every backend that reported one, over all `files`, each backend once (the
/// first report wins), in table order (by family, then name).
pub fn images(files: &[&Results]) -> Vec<ImageRow> {
    let mut rows: Vec<ImageRow> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for results in files {
        for r in &results.runs {
            let Some(bytes) = r.facts.image_bytes else {
                continue;
            };
            if !seen.insert(&r.backend) {
                continue;
            }
            rows.push(ImageRow {
                backend: r.backend.clone(),
                label: backends::label(results, &r.backend),
                family: r.family,
                guest_os: r.facts.guest_os,
                bytes,
                what: r.facts.image.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (a.family, &a.backend).cmp(&(b.family, &b.backend)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::fixtures::Fixture;

    #[test]
    fn ratios_pair_samples_of_the_same_round() {
        // process: 1 ms in round 0, 2 ms in round 1; container: 3 ms, 4 ms.
        let mut f = Fixture::new("startup");
        f.startup("process", 0, 1_000_000);
        f.startup("process", 1, 2_000_000);
        f.startup("container", 0, 3_000_000);
        f.startup("container", 1, 4_000_000);
        let r = f.results();
        let mut ratios = paired_ratios(
            &r,
            "container",
            "process",
            |_| true,
            |r| r.startup_ns.map(|n| n as f64),
        );
        ratios.sort_by(f64::total_cmp);
        assert_eq!(ratios, vec![2.0, 3.0]);
    }

    #[test]
    fn startup_rows_leave_out_warmup_and_failures() {
        let mut f = Fixture::new("startup");
        f.startup("process", 0, 1_000_000);
        f.push(fixtures::warmup(fixtures::startup_run(
            "process", 0, 50_000_000,
        )));
        let mut bad = fixtures::startup_run("process", 1, 9_000_000);
        bad.outcome = Outcome::Failed {
            reason: "test".into(),
        };
        f.push(bad);
        let rows = startup(&f.results());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].samples_ns, vec![1_000_000.0]);
        assert_eq!(rows[0].failed, 1);
        assert_eq!(
            rows[0]
                .phases
                .iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>(),
            ["cgroup", "fork", "ready"]
        );
    }

    #[test]
    fn memory_splits_fixed_cost_from_what_the_workload_touched() {
        let mut f = Fixture::new("memory");
        f.memory("container", 0, 16, 1 << 20, 17 << 20);
        f.memory("container", 1, 16, 1 << 20, 17 << 20);
        let rows = memory(&f.results());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fixed.unwrap().median, (1 << 20) as f64);
        assert_eq!(rows[0].touched.unwrap().median, (16 << 20) as f64);
    }

    #[test]
    fn throughput_is_relative_to_the_process_of_the_same_round() {
        let mut f = Fixture::new("throughput");
        for round in 0..4 {
            f.work("process", round, "cpu", 1000, 1_000_000, "0x01");
            f.work("container", round, "cpu", 1000, 2_000_000, "0x01");
        }
        let r = f.results();
        let rows = throughput(&r);
        let c = rows.iter().find(|x| x.backend == "container").unwrap();
        assert_eq!(c.vs_process.unwrap().median, 0.5);
        assert_eq!(c.rate.unwrap().median, 500_000.0);
        assert!(checksum_mismatches(&r).is_empty());
        f.work("vm", 0, "cpu", 1000, 1_000_000, "0x02");
        let m = checksum_mismatches(&f.results());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].workload, "cpu ×1000");
    }

    #[test]
    fn density_counts_the_marginal_cost_of_each_instance() {
        let mut f = Fixture::new("density");
        // 1 MiB shared once, then 2 MiB per instance.
        f.density_step("container", 1, 1, 3 << 20);
        f.density_step("container", 5, 4, 11 << 20);
        f.density_step("container", 9, 4, 19 << 20);
        let d = density(&f.results());
        assert_eq!(d[0].per_instance.unwrap().median, (2 << 20) as f64);
        assert_eq!(d[0].max_n(), 9);
        assert_eq!(d[0].projected_fit(1 << 30), Some(512.0));
    }

    #[test]
    fn isolation_marks_facts_shared_with_the_host() {
        let mut f = Fixture::new("isolation");
        f.probe(
            "process",
            &[("kernel_release", "6.1"), ("hostname", "host")],
        );
        f.probe(
            "container",
            &[("kernel_release", "6.1"), ("hostname", "box")],
        );
        f.probe(
            "vm-linux",
            &[("kernel_release", "6.6"), ("hostname", "guest")],
        );
        let iso = isolation(&f.results()).unwrap();
        assert_eq!(iso.shared_with_host("container"), Some(1));
        assert_eq!(iso.shared_with_host("vm-linux"), Some(0));
        assert_eq!(iso.value("vm-linux", "hostname"), Some("guest"));
    }

    #[test]
    fn what_an_instance_may_do_is_never_counted_as_the_hosts_view() {
        let mut f = Fixture::new("isolation-calls");
        let allowed = [("unshare_flags", "user:ok mnt:ok"), ("keyctl", "ok")];
        f.probe("process", &allowed);
        f.probe("vm-linux", &allowed);
        f.probe(
            "container",
            &[
                ("unshare_flags", "user:EPERM mnt:EPERM"),
                ("keyctl", "EPERM"),
            ],
        );
        let iso = isolation(&f.results()).unwrap();
        // The guest may make namespaces in its own kernel: that is no view of the host's.
        assert_eq!(iso.shared_with_host("vm-linux"), Some(0));
        assert_eq!(iso.value("container", "keyctl"), Some("EPERM"));
    }
}
