//! Figures computed from results: what the tables and plots show.

use crate::measure::stats::Summary;
use crate::results::{Outcome, Results, RunRecord};
use std::collections::BTreeMap;

/// Phases after `ready` are not part of start-up.
const AFTER_READY: [&str; 3] = ["start", "done", "exited"];

/// Start-up figures of one backend.
#[derive(Clone, Debug, PartialEq)]
pub struct StartupRow {
    /// Backend name.
    pub backend: String,
    /// Start-up time summary, in nanoseconds.
    pub startup: Option<Summary>,
    /// Ratio to `process` in the same round, summarised over rounds (when `process` ran).
    pub vs_process: Option<Summary>,
    /// Median duration of each start-up phase, in the order the phases happen, in nanoseconds.
    pub phases: Vec<(String, f64)>,
    /// Samples that did not complete.
    pub failed: usize,
}

/// Start-up figures of every backend in `results`, in the order backends first appear.
pub fn startup(results: &Results) -> Vec<StartupRow> {
    let baseline: BTreeMap<u32, f64> = completed(results, "process")
        .filter_map(|r| Some((r.round, r.startup_ns? as f64)))
        .collect();
    results
        .backends()
        .into_iter()
        .map(|backend| {
            let runs: Vec<&RunRecord> = completed(results, &backend).collect();
            let startups: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.startup_ns)
                .map(|n| n as f64)
                .collect();
            // Ratios pair each sample with the baseline sample of the same round: both ran within
            // moments of each other, so slow drift of the machine cancels out.
            let ratios: Vec<f64> = runs
                .iter()
                .filter_map(|r| Some(r.startup_ns? as f64 / baseline.get(&r.round)?))
                .collect();
            StartupRow {
                phases: median_phases(&runs),
                startup: Summary::of(&startups),
                vs_process: if backend == "process" {
                    None
                } else {
                    Summary::of(&ratios)
                },
                failed: results
                    .measured(&backend)
                    .filter(|r| r.outcome != Outcome::Completed)
                    .count(),
                backend,
            }
        })
        .collect()
}

fn completed<'a>(
    results: &'a Results,
    backend: &'a str,
) -> impl Iterator<Item = &'a RunRecord> + 'a {
    results
        .measured(backend)
        .filter(|r| r.outcome == Outcome::Completed)
}

/// The median duration of each phase up to `ready`, ordered by when the phase typically ends.
fn median_phases(runs: &[&RunRecord]) -> Vec<(String, f64)> {
    let mut durations: Vec<(String, Vec<f64>)> = Vec::new();
    for run in runs {
        for (name, ns) in run.phases.durations() {
            if AFTER_READY.contains(&name.as_str()) {
                continue;
            }
            match durations.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(ns as f64),
                None => durations.push((name, vec![ns as f64])),
            }
        }
    }
    durations
        .into_iter()
        .filter_map(|(name, v)| Some((name, Summary::of(&v)?.median)))
        .collect()
}
