//! The tables of `lab run restore`: cold starts against restored ones, the first run after a
//! restore, the snapshots, and what N restored instances cost the host.
//!
//! A restored run is recorded under its backend's name with `/restored` (or
//! `/restored+prefault`) appended and the fact `start=restored`: every row says which kind of
//! start it is, and each restored row is divided by the cold row of its own backend. Ratios are
//! of medians (the samples of one round are not paired here: `lab report`'s ledger pairs them).

use crate::backends;
use crate::format;
use crate::table::Table;
use isolab_host::stats::median;
use isolab_results::{Family, Outcome, Results, RunRecord, StartKind};

/// The experiment's name in results files.
pub const EXPERIMENT: &str = "restore";

/// The backend a row's runs belong to: its name up to the `/` a restored run's name adds.
fn base(backend: &str) -> &str {
    backend.split_once('/').map_or(backend, |(b, _)| b)
}

fn measured<'a>(results: &'a Results, backend: &'a str) -> impl Iterator<Item = &'a RunRecord> {
    results
        .runs_of(backend)
        .filter(|r| !r.warmup && r.outcome == Outcome::Completed)
}

fn median_of(
    results: &Results,
    backend: &str,
    get: impl Fn(&RunRecord) -> Option<u64>,
) -> Option<f64> {
    let samples: Vec<f64> = measured(results, backend)
        .filter_map(|r| get(r).map(|n| n as f64))
        .collect();
    median(&samples)
}

fn kind(results: &Results, backend: &str) -> String {
    let start = results
        .runs_of(backend)
        .map(|r| r.facts.start_kind())
        .max()
        .unwrap_or_default();
    let prefault = results
        .runs_of(backend)
        .any(|r| r.facts.prefault.as_deref() == Some("yes"));
    match (start, prefault) {
        (StartKind::Restored, true) => "restored, prefaulted".into(),
        (k, _) => k.name().into(),
    }
}

/// One backend's (or its restored runs') figures in a `lab run restore` file.
#[derive(Clone, Debug, PartialEq)]
pub struct StartRow {
    /// The backend as recorded (`vm`, `vm/restored`, `vm/restored+prefault`).
    pub backend: String,
    /// `cold`, `restored` or `restored, prefaulted`.
    pub kind: String,
    /// Completed measured samples.
    pub n: usize,
    /// Median start-up.
    pub start_ns: Option<f64>,
    /// A restored row: its median start-up over its backend's cold one.
    pub over_cold: Option<f64>,
    /// Its median start-up over the cold container's (absent for that container itself).
    pub over_container: Option<f64>,
    /// Median time of the kernel's measured part: the first run after the start.
    pub run_ns: Option<f64>,
    /// A restored row: that over its backend's cold run.
    pub run_over_cold: Option<f64>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The cold container the others are held against: isolab's own, else the first container.
pub fn reference_container(results: &Results) -> Option<String> {
    results
        .backend_names()
        .iter()
        .filter(|b| results.family(b) == Family::Container && !b.contains('/'))
        .min_by_key(|b| b.as_str() != "container")
        .cloned()
}

/// Every backend's row, in the file's order.
pub fn starts(results: &Results) -> Vec<StartRow> {
    let startup = |r: &RunRecord| r.startup_ns;
    let work = |r: &RunRecord| r.work_ns;
    let container = reference_container(results);
    let container_start = container
        .as_deref()
        .and_then(|c| median_of(results, c, startup));
    results
        .backend_names()
        .iter()
        .map(|backend| {
            let cold = base(backend);
            let restored = cold != backend.as_str();
            let start_ns = median_of(results, backend, startup);
            let run_ns = median_of(results, backend, work);
            StartRow {
                backend: backend.clone(),
                kind: kind(results, backend),
                n: measured(results, backend).count(),
                start_ns,
                over_cold: restored
                    .then(|| ratio(start_ns, median_of(results, cold, startup)))
                    .flatten(),
                over_container: (Some(backend) != container.as_ref())
                    .then(|| ratio(start_ns, container_start))
                    .flatten(),
                run_ns,
                run_over_cold: restored
                    .then(|| ratio(run_ns, median_of(results, cold, work)))
                    .flatten(),
            }
        })
        .collect()
}

/// What each more restored instance of `backend` adds to the host between its last two counts
/// alive (bytes): the last row's `MiB per more instance`.
pub fn per_more_instance(results: &Results, backend: &str) -> Option<f64> {
    let steps: Vec<_> = results
        .restore_steps
        .iter()
        .filter(|s| s.backend == backend)
        .collect();
    let (first, last) = match steps.as_slice() {
        [.., a, b] => (a, b),
        _ => return None,
    };
    (last.n > first.n).then(|| {
        last.host_bytes.saturating_sub(first.host_bytes) as f64 / f64::from(last.n - first.n)
    })
}

/// The tables of a `lab run restore` file (none for another experiment's).
pub fn tables(results: &Results) -> Vec<Table> {
    if results.header.experiment != EXPERIMENT {
        return Vec::new();
    }
    let container = reference_container(results);
    let mut table = Table::new(
        &[
            "backend",
            "start",
            "n",
            "start-up p50",
            "÷ its cold start",
            "÷ cold container start",
            "first run p50",
            "÷ its cold run",
        ],
        &[2, 3, 4, 5, 6, 7],
    );
    let x = |r: Option<f64>| r.map_or(format::NONE.into(), |r| format!("{r:.2}×"));
    let d = |ns: Option<f64>| ns.map_or(format::NONE.into(), format::duration);
    for row in starts(results) {
        table.push(vec![
            backends::label(results, &row.backend).into(),
            row.kind.into(),
            row.n.to_string().into(),
            d(row.start_ns).into(),
            x(row.over_cold).into(),
            x(row.over_container).into(),
            d(row.run_ns).into(),
            x(row.run_over_cold).into(),
        ]);
    }
    table.notes.push(
        "start-up: launch (or restore) requested → the workload's first marker, `ready`; for a \
         restored instance, sent by the restored workload itself. first run: the mem kernel's \
         measured part, the first run after the start: a restored guest's memory comes in page \
         by page on first touch. Ratios are of medians."
            .into(),
    );
    if let Some(c) = &container {
        table
            .notes
            .push(format!("÷ cold container start: over {c}'s cold start-up."));
    }
    // Where each kind of start goes, phase by phase (medians): the VMM's own stamps for a
    // VM (`snapshot_read`, `memory_mapped`, `state_loaded` for a restore), CRIU's for a
    // container.
    let mut phases = Table::new(&["backend", "start", "phases up to ready (p50 each)"], &[]);
    for backend in results.backend_names() {
        let runs: Vec<&RunRecord> = measured(results, backend).collect();
        let each = crate::summary::median_phases(&runs);
        if each.is_empty() {
            continue;
        }
        phases.push(vec![
            backends::label(results, backend).into(),
            kind(results, backend).into(),
            each.iter()
                .map(|(name, ns)| format!("{name} {}", format::duration(*ns)))
                .collect::<Vec<_>>()
                .join(" · ")
                .into(),
        ]);
    }
    let mut out = vec![table, phases];
    if !results.snapshots.is_empty() {
        let mut t = Table::new(&["backend", "snapshot", "taken in", "steps"], &[1, 2]);
        for s in &results.snapshots {
            t.push(vec![
                s.backend.as_str().into(),
                format::bytes(s.bytes as f64).into(),
                format::duration(s.take_ns as f64).into(),
                s.phases
                    .iter()
                    .map(|(name, ns)| format!("{name} {}", format::duration(*ns as f64)))
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into(),
            ]);
        }
        t.notes.push(
            "snapshot: bytes on disk (allocated: RAM pages that were never written are holes). \
             taken in: from the instance at ready to the snapshot complete."
                .into(),
        );
        out.push(t);
    }
    if !results.restore_steps.is_empty() {
        let mut t = Table::new(
            &[
                "backend",
                "restored alive",
                "host MiB",
                "snapshot's pages, once (MiB)",
                "instances' own (MiB)",
                "MiB per more instance",
            ],
            &[1, 2, 3, 4, 5],
        );
        let mut previous: Option<(&str, u32, u64)> = None;
        for s in &results.restore_steps {
            let more = match previous {
                Some((b, n, bytes)) if b == s.backend && s.n > n => {
                    format::mib(s.host_bytes.saturating_sub(bytes) as f64 / f64::from(s.n - n))
                }
                _ => format::NONE.into(),
            };
            t.push(vec![
                s.backend.as_str().into(),
                s.n.to_string().into(),
                format::mib(s.host_bytes as f64).into(),
                format::mib(s.shared_bytes as f64).into(),
                format::mib(s.private_bytes as f64).into(),
                more.into(),
            ]);
            previous = Some((&s.backend, s.n, s.host_bytes));
        }
        t.notes.push(
            "N instances restored from one snapshot, all held at done: their cgroups' anonymous \
             and kernel memory, plus the snapshot's pages in the page cache counted once (`vm`'s \
             instances map it MAP_PRIVATE and share every page none of them wrote; QEMU and \
             CRIU copy it into each instance's own memory)."
                .into(),
        );
        out.push(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;
    use isolab_results::{info, RestoreStep};

    /// A restore file: a cold container at 2 ms, a cold vm at 4 ms, restored at 1 ms.
    fn file() -> Results {
        let mut f = Fixture::new(EXPERIMENT);
        f.family("vm/restored", Family::VmNoOs);
        for round in 0..6 {
            f.startup("container", round, 2_000_000)
                .startup("vm", round, 4_000_000)
                .startup("vm/restored", round, 1_000_000);
        }
        f.note("vm/restored", info::START, "restored");
        let mut r = f.results();
        r.restore_steps = [(1, 70), (2, 135), (4, 265)]
            .map(|(n, mib)| RestoreStep {
                backend: "vm".into(),
                family: Family::VmNoOs,
                n,
                prefault: false,
                host_bytes: mib << 20,
                shared_bytes: 2 << 20,
                private_bytes: (mib - 2) << 20,
            })
            .to_vec();
        r
    }

    #[test]
    fn restored_rows_are_held_against_their_cold_row_and_the_cold_container() {
        let r = file();
        let rows = starts(&r);
        let row = |b: &str| rows.iter().find(|x| x.backend == b).unwrap();
        assert_eq!(row("vm/restored").kind, "restored");
        assert_eq!(row("vm").kind, "cold");
        assert_eq!(row("vm/restored").over_cold, Some(0.25));
        assert_eq!(row("vm/restored").over_container, Some(0.5));
        assert_eq!(
            row("vm").over_cold,
            None,
            "a cold row has no cold row over it"
        );
        assert_eq!(row("container").over_container, None);
        assert_eq!(row("vm").over_container, Some(2.0));
        // The last step: (265 - 135) / 2.
        assert_eq!(per_more_instance(&r, "vm"), Some(65.0 * 1024.0 * 1024.0));
        let tables = tables(&r);
        assert_eq!(
            tables.len(),
            3,
            "starts, phases, memory (no snapshot record)"
        );
        let text = tables[0].terminal();
        assert!(text.contains("0.25×") && text.contains("0.50×"), "{text}");
        assert!(tables[2].terminal().contains("65.00"));
        // Another experiment's file has none.
        assert!(super::tables(&Fixture::new("startup").results()).is_empty());
    }

    #[test]
    fn the_startup_claim_reads_restore_files_and_names_each_kind_of_start() {
        let r = file();
        let ledger = crate::claims::ledger(&[&r]);
        let startup = ledger.iter().find(|a| a.claim.id == "startup").unwrap();
        let figures = startup.figures.join("\n");
        assert!(
            figures.contains("vm/restored (VM, no OS), restored start"),
            "{figures}"
        );
        assert!(figures.contains("vm (VM, no OS), cold start"), "{figures}");
        assert!(figures.contains("container, cold start"), "{figures}");
    }
}
