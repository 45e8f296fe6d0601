//! Throughput: rates and latencies of the compute, disk and network kernels, and the checksums that prove the work.

use super::*;

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
    // disk-seq times its requests alone (`write_ns`, `read_ns`): its run also makes and checks
    // its data, which is the kernel's arithmetic, not the disk path.
    let requests_ns = match kernel_of(&r.workload) {
        Some(Kernel::DiskSeq) => r.facts.write_ns.zip(r.facts.read_ns).map(|(w, rd)| w + rd),
        _ => None,
    };
    let secs = requests_ns.or(r.work_ns)? as f64 / 1e9;
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
pub(super) fn workloads(
    results: &Results,
) -> (Vec<&WorkloadRecord>, HashMap<&WorkloadRecord, usize>) {
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
pub(super) fn by_workload_and_backend<'a>(
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
pub(super) fn checked_sum(r: &RunRecord) -> Option<String> {
    let out = r.output.as_ref()?;
    let sent = match kernel_of(&r.workload) {
        Some(Kernel::NetStream) => Some(out.bytes),
        // One byte per round trip reaches the echo, the warm-up's too.
        Some(Kernel::NetRr) => Some(out.ops + isolab_payload::warm_up_round_trips(out.ops)),
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
