//! `lab validate`'s figures: the lab's disk and network kernels beside fio, netperf and iperf3.
//!
//! A validation is a results file of its own (experiment `validate`). A report shows the
//! latest validation of the machine its results come from in its method section: one named
//! among its files, or else the newest found beside them — in the directory that holds their
//! results directories (`reports/`), or the one above it — whose machine is the same
//! ([`latest_beside`]). It is a results file like any other, so the report still reads results
//! only, and lists it with them.

use crate::format;
use crate::table::{Cell, Table};
use isolab_results::{Results, ValidationRecord, ValidationUnit, RESULTS_FILE};
use std::path::{Path, PathBuf};

/// The experiment `lab validate` writes.
pub const EXPERIMENT: &str = "validate";

/// A value in the unit people read it in.
fn value(unit: ValidationUnit, v: Option<f64>) -> String {
    match v {
        None => format::NONE.to_string(),
        Some(v) => match unit {
            ValidationUnit::BytesPerS => format!("{}/s", format::bytes(v)),
            ValidationUnit::OpsPerS => format!("{}/s", format::rate(v)),
            ValidationUnit::Ns => format::duration(v),
        },
    }
}

/// The table of a validation: per backend and figure, the tool's median, the lab's, their
/// ratio and whether it is within the tolerance; with each figure's rounds and what failed.
pub fn table(records: &[ValidationRecord]) -> Table {
    let columns = [
        "backend",
        "lab kernel",
        "figure",
        "tool",
        "tool's",
        "lab's",
        "lab ÷ tool",
        "rounds' middle half",
        "agrees",
    ];
    let mut t = Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        numeric: (0..columns.len()).map(|i| (4..=7).contains(&i)).collect(),
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for r in records {
        let tool = r.tool.split(',').next().unwrap_or(&r.tool).to_string();
        let agrees = if r.within {
            Cell {
                text: "yes".into(),
                class: Some("supported"),
            }
        } else {
            Cell {
                text: "NO".into(),
                class: Some("warn"),
            }
        };
        t.rows.push(vec![
            r.backend.as_str().into(),
            r.kernel.as_str().into(),
            r.figure.as_str().into(),
            tool.into(),
            value(r.unit, r.tool_median).into(),
            value(r.unit, r.lab_median).into(),
            r.ratio
                .map_or_else(|| format::NONE.to_string(), |x| format!("{x:.3}"))
                .into(),
            spread(&r.round_ratios).into(),
            agrees,
        ]);
        for f in &r.failures {
            t.notes
                .push(format!("{} {} {}: {f}", r.backend, r.kernel, r.figure));
        }
        if let Some(n) = &r.note {
            let note = format!("{} {}: {n}", r.kernel, r.figure);
            if !t.notes.contains(&note) {
                t.notes.push(note);
            }
        }
    }
    if let Some(first) = records.first() {
        let rounds = records
            .iter()
            .map(|r| r.tool_values.len().min(r.lab_values.len()))
            .max()
            .unwrap_or(0);
        let agree = records.iter().filter(|r| r.within).count();
        let versions: Vec<String> = {
            let mut v: Vec<String> = records.iter().map(|r| r.tool_version.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        t.notes.insert(
            0,
            format!(
                "{rounds} rounds, each kernel and its tool back to back; lab ÷ tool is the \
                 median of the rounds' ratios, and agrees when within ±{:.0}%: {agree} of {} do \
                 ({})",
                first.tolerance * 100.0,
                records.len(),
                versions.join(", ")
            ),
        );
    }
    t
}

/// The middle half (25th to 75th percentile) of the rounds' ratios: how much the machine moved
/// the two figures apart from one round to the next. Wide, and a disagreement may be noise.
fn spread(ratios: &[f64]) -> String {
    if ratios.len() < 4 {
        return format!("n={} too small", ratios.len());
    }
    let mut v = ratios.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("{:.2}–{:.2}", at(0.25), at(0.75))
}

/// The newest validation among `files`, of the machine of `of` (same host, CPU, kernel: what
/// [`same_machine`] compares).
pub fn latest_of<'a>(files: &'a [Results], of: &Results) -> Option<&'a Results> {
    files
        .iter()
        .filter(|r| r.header.experiment == EXPERIMENT && same_machine(r, of))
        .max_by(|a, b| a.header.environment.date.cmp(&b.header.environment.date))
}

/// True when `a` and `b` were measured on one machine.
pub fn same_machine(a: &Results, b: &Results) -> bool {
    let (a, b) = (&a.header.environment, &b.header.environment);
    a.hostname == b.hostname
        && a.cpu_model == b.cpu_model
        && a.cpus == b.cpus
        && a.kernel_release == b.kernel_release
        && a.kvm == b.kvm
}

/// The newest validation of the machine of each of `files` found beside them when none of them
/// is one: in the directory holding their results directories, or the one above it (`lab run
/// all` nests one level deeper). Each is returned once.
pub fn latest_beside(files: &[Results]) -> Vec<Results> {
    if files.iter().any(|r| r.header.experiment == EXPERIMENT) {
        return Vec::new();
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for r in files {
        let results_dir = r.path.parent().unwrap_or(Path::new("."));
        for up in results_dir.ancestors().skip(1).take(2) {
            if !dirs.iter().any(|d| d == up) {
                dirs.push(up.to_path_buf());
            }
        }
    }
    let mut found: Vec<Results> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            // `lab validate` names its directories `<UTC time>-validate`.
            let is_validation = name.ends_with(EXPERIMENT) || name.contains("-validate-");
            if !is_validation || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Ok(r) = Results::read(&e.path().join(RESULTS_FILE)) {
                if r.header.experiment == EXPERIMENT
                    && !found.iter().any(|f| f.path == r.path)
                    && files.iter().any(|f| same_machine(f, &r))
                {
                    found.push(r);
                }
            }
        }
    }
    // One per machine: the newest.
    let mut latest: Vec<Results> = Vec::new();
    for r in found {
        match latest.iter_mut().find(|l| same_machine(l, &r)) {
            Some(l) if l.header.environment.date < r.header.environment.date => *l = r,
            Some(_) => {}
            None => latest.push(r),
        }
    }
    latest
}
