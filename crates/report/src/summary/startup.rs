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
    /// The phases the kernel's events show (`--trace`): each from its event to the next one
    /// (or to `ready`), median over the traced samples, in time order. Empty when untraced.
    pub traced: Vec<TracedSegment>,
    /// What tracing cost, when the file has traced and untraced samples.
    pub trace_cost: Option<TraceCost>,
    /// The CPU time of a sample: its runtime's or VMM's own and the workload's, from the lab's
    /// children's rusage (`children_cpu_ns`), else the instance cgroup's (`cpu_ns`, older files).
    pub cpu: Option<Summary>,
}

/// One traced phase of a backend: from its kernel event to the next traced one (or `ready`).
#[derive(Clone, Debug, PartialEq)]
pub struct TracedSegment {
    /// The phase's name (`runc: CLI starts (Go runtime)`).
    pub name: String,
    /// The program whose event starts it.
    pub program: String,
    /// Median duration, ns.
    pub median_ns: f64,
}

/// Start-up with tracing and without, in the same run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceCost {
    /// Median start-up of the traced samples, ns.
    pub traced_ns: f64,
    /// Median start-up of the untraced samples, ns.
    pub untraced_ns: f64,
    /// Traced samples.
    pub n_traced: usize,
    /// Untraced samples.
    pub n_untraced: usize,
}

impl TraceCost {
    /// The cost as a fraction of the untraced median (0.05 is 5%).
    pub fn fraction(&self) -> f64 {
        self.traced_ns / self.untraced_ns - 1.0
    }
}

/// The first traced segment: from `spawn` to the first kernel event of the table (the lab's own
/// preparation: its cgroup, the bundle, the fork).
pub const BEFORE_FIRST: &str = "lab: until the first traced event";

/// The rows of `rows` and, after each that was traced, one more of its traced phases (labelled
/// `… · kernel events`), for the waterfall.
pub fn with_traced_rows(rows: &[StartupRow]) -> Vec<StartupRow> {
    let mut out = Vec::new();
    for r in rows {
        out.push(r.clone());
        if !r.traced.is_empty() {
            out.push(StartupRow {
                label: format!("{} · kernel events", r.label),
                phases: r
                    .traced
                    .iter()
                    .map(|s| (s.name.clone(), s.median_ns))
                    .collect(),
                traced: Vec::new(),
                ..r.clone()
            });
        }
    }
    out
}

/// The traced phases of `runs`, each from its event to the next (the last to `ready`), median
/// over the samples that have it, in the order of their median start.
pub fn traced_segments(runs: &[&RunRecord]) -> Vec<TracedSegment> {
    let mut by_name: Vec<(String, String, Vec<f64>, Vec<f64>)> = Vec::new();
    for run in runs {
        let (Some(traced), Some(spawn), Some(ready)) =
            (&run.traced, run.phases.at("spawn"), run.phases.at("ready"))
        else {
            continue;
        };
        let inside: Vec<_> = traced
            .iter()
            .filter(|p| (spawn..=ready).contains(&p.t_ns))
            .collect();
        if let Some(first) = inside.first() {
            let d = (first.t_ns - spawn) as f64;
            match by_name.iter_mut().find(|(n, ..)| n == BEFORE_FIRST) {
                Some((_, _, ds, starts)) => {
                    ds.push(d);
                    starts.push(0.0);
                }
                None => by_name.push((BEFORE_FIRST.into(), "lab".into(), vec![d], vec![0.0])),
            }
        }
        for (i, p) in inside.iter().enumerate() {
            let end = inside.get(i + 1).map_or(ready, |n| n.t_ns);
            let d = (end - p.t_ns) as f64;
            let start = (p.t_ns - spawn) as f64;
            match by_name.iter_mut().find(|(n, ..)| *n == p.name) {
                Some((_, _, ds, starts)) => {
                    ds.push(d);
                    starts.push(start);
                }
                None => by_name.push((p.name.clone(), p.program.clone(), vec![d], vec![start])),
            }
        }
    }
    let mut out: Vec<(f64, TracedSegment)> = by_name
        .into_iter()
        .filter_map(|(name, program, ds, starts)| {
            Some((
                stats::median(&starts)?,
                TracedSegment {
                    name,
                    program,
                    median_ns: stats::median(&ds)?,
                },
            ))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.into_iter().map(|(_, s)| s).collect()
}

/// The `n` largest of `segments` (the lab's own lead-in left out), largest first.
pub fn largest(segments: &[TracedSegment], n: usize) -> Vec<&TracedSegment> {
    let mut v: Vec<&TracedSegment> = segments.iter().filter(|s| s.name != BEFORE_FIRST).collect();
    v.sort_by(|a, b| b.median_ns.total_cmp(&a.median_ns));
    v.truncate(n);
    v
}

fn trace_cost(runs: &[&RunRecord]) -> Option<TraceCost> {
    let of = |traced: bool| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.traced.is_some() == traced)
            .filter_map(|r| r.startup_ns.map(|n| n as f64))
            .collect()
    };
    let (t, u) = (of(true), of(false));
    Some(TraceCost {
        traced_ns: stats::median(&t)?,
        untraced_ns: stats::median(&u)?,
        n_traced: t.len(),
        n_untraced: u.len(),
    })
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
            traced: traced_segments(&runs),
            trace_cost: trace_cost(&runs),
            cpu: Summary::of(
                &runs
                    .iter()
                    .filter_map(|r| r.children_cpu_ns.or(r.cpu_ns).map(|n| n as f64))
                    .collect::<Vec<_>>(),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::startup_run;
    use isolab_results::TracedPhase;

    fn traced(run: &mut RunRecord, at: &[(&str, u64)]) {
        let spawn = run.phases.at("spawn").unwrap();
        run.traced = Some(
            at.iter()
                .map(|&(name, ms)| TracedPhase {
                    name: name.into(),
                    program: "runc".into(),
                    pid: 7,
                    event: "sched_process_exec".into(),
                    t_ns: spawn + ms * 1_000_000,
                })
                .collect(),
        );
    }

    /// Each traced phase lasts until the next event (the last until ready), after the lab's own
    /// lead-in; medians over the traced samples; events after ready are not start-up.
    #[test]
    fn traced_phases_run_from_event_to_event_and_the_largest_come_first() {
        let mut a = startup_run("oci:runc", 0, 50_000_000);
        traced(
            &mut a,
            &[("cli", 5), ("init", 35), ("pivot_root", 40), ("late", 60)],
        );
        let mut b = startup_run("oci:runc", 2, 50_000_000);
        traced(&mut b, &[("cli", 7), ("init", 33), ("pivot_root", 44)]);
        let s = traced_segments(&[&a, &b]);
        let names: Vec<&str> = s.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, [BEFORE_FIRST, "cli", "init", "pivot_root"]);
        let ms = |n: &str| s.iter().find(|x| x.name == n).unwrap().median_ns / 1e6;
        assert_eq!(ms(BEFORE_FIRST), 6.0);
        assert_eq!(ms("cli"), 28.0);
        assert_eq!(ms("init"), 8.0);
        assert_eq!(ms("pivot_root"), 8.0);
        let top: Vec<&str> = largest(&s, 2).iter().map(|x| x.name.as_str()).collect();
        assert_eq!(top[0], "cli");
        assert_eq!(top.len(), 2);
    }

    /// Traced and untraced samples of the same file give the cost of tracing.
    #[test]
    fn the_cost_of_tracing_compares_traced_with_untraced_samples() {
        let mut t = startup_run("oci:runc", 0, 55_000_000);
        traced(&mut t, &[("cli", 5)]);
        let u = startup_run("oci:runc", 1, 50_000_000);
        let c = trace_cost(&[&t, &u]).unwrap();
        assert_eq!((c.n_traced, c.n_untraced), (1, 1));
        assert!((c.fraction() - 0.1).abs() < 1e-9);
        assert_eq!(trace_cost(&[&u]), None, "no traced sample: no cost");
    }

    /// A record written before traced phases and children's CPU existed still loads.
    #[test]
    fn a_record_without_traced_phases_loads() {
        let mut v = serde_json::to_value(startup_run("process", 0, 1_000_000)).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("traced");
        o.remove("children_cpu_ns");
        let r: RunRecord = serde_json::from_value(v).unwrap();
        assert_eq!((r.traced, r.children_cpu_ns), (None, None));
    }
}
