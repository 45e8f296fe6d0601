//! Start-up: how long from launch to the workload's first instruction, and each phase on the way.

use super::*;

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
