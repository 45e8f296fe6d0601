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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;
    use isolab_results::{Family, Record, Writer};

    fn record(backend: &str, figure: &str, ratios: &[f64], tolerance: f64) -> ValidationRecord {
        let mut sorted = ratios.to_vec();
        sorted.sort_by(f64::total_cmp);
        let ratio = isolab_host::stats::median(&sorted);
        ValidationRecord {
            backend: backend.into(),
            family: Family::Process,
            kernel: "net-rr".into(),
            figure: figure.into(),
            unit: ValidationUnit::OpsPerS,
            tool: "netperf TCP_RR, 1 byte each way".into(),
            tool_version: "Netperf version 2.7.0".into(),
            tool_values: ratios.iter().map(|_| 1000.0).collect(),
            lab_values: ratios.iter().map(|r| r * 1000.0).collect(),
            tool_median: Some(1000.0),
            lab_median: ratio.map(|r| r * 1000.0),
            round_ratios: ratios.to_vec(),
            ratio,
            tolerance,
            within: ratio.is_some_and(|r| (r - 1.0).abs() <= tolerance),
            failures: vec![],
            note: Some("P50 in whole µs".into()),
        }
    }

    #[test]
    fn the_table_gives_each_figure_its_ratio_spread_and_verdict() {
        let records = [
            record(
                "process",
                "transactions/s",
                &[0.9, 1.0, 1.1, 1.2, 3.0],
                0.15,
            ),
            record("container", "transactions/s", &[0.5, 0.6, 0.7], 0.15),
        ];
        let t = table(&records);
        assert_eq!(t.rows.len(), 2);
        let text = |row: usize, col: &str| {
            let i = t.columns.iter().position(|c| c == col).unwrap();
            t.rows[row][i].text.clone()
        };
        assert_eq!(text(0, "lab ÷ tool"), "1.100");
        assert_eq!(text(0, "rounds' middle half"), "1.00–1.20");
        assert_eq!(text(0, "agrees"), "yes");
        assert_eq!(text(1, "lab ÷ tool"), "0.600");
        assert_eq!(text(1, "rounds' middle half"), "n=3 too small");
        assert_eq!(text(1, "agrees"), "NO");
        // The summary line first; a note shared by both rows once.
        assert!(t.notes[0].contains("1 of 2 do"), "{:?}", t.notes);
        assert_eq!(t.notes.iter().filter(|n| n.contains("whole µs")).count(), 1);
    }

    #[test]
    fn a_report_finds_the_newest_validation_of_its_machine_beside_its_results() {
        let parent = std::env::temp_dir().join(format!("isolab-validation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let reports = parent.join("reports");
        let startup = Fixture::new("startup").write(&reports.join("20261207-100000-startup"));
        let validation = |dir: &str, date: &str, host: &str| {
            let mut f = Fixture::new(EXPERIMENT);
            f.env(|e| {
                e.date = date.into();
                e.hostname = host.into();
            });
            let dir = reports.join(dir);
            let mut w = Writer::create(&dir, &f.results().header).unwrap();
            w.append(&Record::Validation(Box::new(record(
                "process",
                "transactions/s",
                &[1.0],
                0.15,
            ))))
            .unwrap();
        };
        validation(
            "20261207-090000-validate",
            "2026-12-07T09:00:00Z",
            "testhost",
        );
        validation(
            "20261207-110000-validate",
            "2026-12-07T11:00:00Z",
            "testhost",
        );
        validation(
            "20261207-120000-validate",
            "2026-12-07T12:00:00Z",
            "elsewhere",
        );
        let found = latest_beside(std::slice::from_ref(&startup));
        let _ = std::fs::remove_dir_all(&parent);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].header.environment.date, "2026-12-07T11:00:00Z");
        assert_eq!(found[0].validations.len(), 1);
    }
}
