//! `lab export --csv`: results as CSV, for spreadsheets and notebooks.
//!
//! One row per sample in `runs.csv`, one per density step in `density.csv`, each with its
//! backend's isolation family. An interference file's samples also say what ran beside them
//! ([`NEIGHBOUR_COLUMNS`]). Columns carry their unit like the JSON fields do. Phase edges become one `phase_<name>_ns` column per phase name
//! seen in the file, holding the time from `spawn` to that edge.

use isolab_host::files::{FilesError, OutDir};
use isolab_results::{Outcome, Results, RunRecord};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Errors of exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A CSV text could not be made.
    #[error("cannot make {name}: {source}")]
    Csv {
        /// The file's name.
        name: &'static str,
        /// Why.
        source: csv::Error,
    },
    /// The directory could not be used or a file could not be written into it.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The runs name more phases than `runs.csv` gives columns to ([`MAX_PHASE_COLUMNS`]).
    #[error(
        "{path}: its runs name {found} phases; runs.csv has a column for each, and at most \
         {MAX_PHASE_COLUMNS}: not phases the lab records"
    )]
    TooManyPhases {
        /// The results file.
        path: PathBuf,
        /// How many distinct phase names its runs have.
        found: usize,
    },
    /// A stop was requested while the CSV text was made ([`isolab_host::interrupt::work_stopped`]).
    #[error("stopped before the CSV files were made")]
    Interrupted,
}

impl ExportError {
    /// True for what the user can change (exit status 2): a directory that cannot be one, a
    /// symbolic link in its place, no permission.
    pub fn is_usage(&self) -> bool {
        match self {
            ExportError::Csv { .. } | ExportError::Interrupted => false,
            ExportError::TooManyPhases { .. } => true,
            ExportError::Files(e) => e.is_usage(),
        }
    }
}

/// The most phase columns `runs.csv` has. Every distinct phase name of a file's runs becomes
/// a column, and every run a row with a cell in each: a hostile file naming a new phase on
/// each of its lines would make a table of (lines × lines) cells. The lab's backends record a
/// dozen phases each.
pub const MAX_PHASE_COLUMNS: usize = 256;

/// The fixed columns of `runs.csv`.
const RUN_COLUMNS: [&str; 25] = [
    "experiment",
    "host",
    "backend",
    "family",
    "round",
    "order",
    "warmup",
    "kernel",
    "mib",
    "iters",
    "outcome",
    "startup_ns",
    "work_ns",
    "checksum",
    "ops",
    "bytes",
    "cgroup_peak_bytes",
    "ready_charged_bytes",
    "ready_kernel_bytes",
    "ready_pss_bytes",
    "ready_uss_bytes",
    "done_charged_bytes",
    "done_kernel_bytes",
    "done_pss_bytes",
    "done_uss_bytes",
];

/// The columns `runs.csv` adds for `lab run interference`: the configuration, the aggressor,
/// how many ran beside the victim, and what stopped their failures.
pub const NEIGHBOUR_COLUMNS: [&str; 6] = [
    "config",
    "aggressor",
    "aggressors_beside",
    "aggressor_oom_kills",
    "aggressor_pids_max_refused",
    "aggressor_forks_refused",
];

/// Write `runs.csv` (and `density.csv` when there are density steps) into `dir`; returns the
/// files written.
///
/// The CSV text is made in memory and written through an [`OutDir`]: `dir` is often the user's
/// results directory, and a symbolic link planted as `runs.csv` must not make the lab (run as
/// root) write the file it points to.
pub fn csv(results: &Results, dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let out = OutDir::open_or_create(dir)?;
    let csv_err = |name| move |source| ExportError::Csv { name, source };
    let phases = phase_names(&results.runs);
    if phases.len() > MAX_PHASE_COLUMNS {
        return Err(ExportError::TooManyPhases {
            path: results.path.clone(),
            found: phases.len(),
        });
    }
    let runs = runs_csv(results, &phases).map_err(csv_err("runs.csv"))?;
    let density = if results.density.is_empty() {
        None
    } else {
        Some(density_csv(results).map_err(csv_err("density.csv"))?)
    };
    // Both texts are made (or the stop request came first): the files are written together.
    if isolab_host::interrupt::work_stopped() {
        return Err(ExportError::Interrupted);
    }
    let mut written = vec![out.write("runs.csv", &runs)?];
    if let Some(density) = density {
        written.push(out.write("density.csv", &density)?);
    }
    Ok(written)
}

/// The bytes a CSV writer into memory wrote.
fn into_bytes(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, csv::Error> {
    w.into_inner()
        .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))
}

/// Every phase name of `runs`, in the order first seen.
fn phase_names(runs: &[RunRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for r in runs {
        for p in &r.phases.phases {
            if seen.insert(&p.name) {
                names.push(p.name.clone());
            }
        }
    }
    names
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn runs_csv(results: &Results, phases: &[String]) -> Result<Vec<u8>, csv::Error> {
    let neighbours = results.runs.iter().any(|r| r.neighbours.is_some());
    let mut w = csv::Writer::from_writer(Vec::new());
    let header: Vec<String> = RUN_COLUMNS
        .iter()
        .chain(if neighbours {
            &NEIGHBOUR_COLUMNS[..]
        } else {
            &[]
        })
        .map(|c| c.to_string())
        .chain(phases.iter().map(|p| format!("phase_{p}_ns")))
        .collect();
    w.write_record(&header)?;
    for r in &results.runs {
        // A stop request ends the text here; the caller writes nothing of it.
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let ready = r.memory_at_ready.as_ref();
        let done = r.memory_at_done.as_ref();
        let charged = |m: Option<&isolab_results::MemorySample>| {
            opt(m.and_then(|m| m.cgroup).map(|c| c.charged_bytes()))
        };
        let kernel = |m: Option<&isolab_results::MemorySample>| {
            opt(m.and_then(|m| m.cgroup).and_then(|c| c.kernel_bytes))
        };
        let outcome = match &r.outcome {
            Outcome::Completed => "completed".to_string(),
            Outcome::OomKilled => "oom-killed".to_string(),
            Outcome::Stopped => "stopped".to_string(),
            Outcome::Failed { reason } => format!("failed: {reason}"),
        };
        // The run's edges by name (the first of a name, as `Timeline::at` finds it).
        let mut edges: HashMap<&str, u64> = HashMap::new();
        for p in &r.phases.phases {
            edges.entry(p.name.as_str()).or_insert(p.t_ns);
        }
        let spawn = edges.get("spawn").copied();
        let mut row = vec![
            results.header.experiment.clone(),
            results.header.environment.hostname.clone(),
            r.backend.clone(),
            r.family.id().to_string(),
            r.round.to_string(),
            r.order.to_string(),
            r.warmup.to_string(),
            r.workload.kernel.clone(),
            r.workload.mib.to_string(),
            r.workload.iters.to_string(),
            outcome,
            opt(r.startup_ns),
            opt(r.work_ns),
            opt(r.output.as_ref().map(|o| o.checksum.clone())),
            opt(r.output.as_ref().map(|o| o.ops)),
            opt(r.output.as_ref().map(|o| o.bytes)),
            opt(r.cgroup_peak_bytes),
            charged(ready),
            kernel(ready),
            opt(ready.map(|m| m.processes.pss_bytes)),
            opt(ready.map(|m| m.processes.uss_bytes)),
            charged(done),
            kernel(done),
            opt(done.map(|m| m.processes.pss_bytes)),
            opt(done.map(|m| m.processes.uss_bytes)),
        ];
        if neighbours {
            let n = r.neighbours.as_ref();
            let sum = |f: fn(&isolab_results::Facts) -> Option<u64>| {
                opt(n.map(|n| n.aggressors.iter().filter_map(|a| f(&a.facts)).sum::<u64>()))
            };
            row.extend([
                opt(n.map(|n| n.config.name())),
                opt(n.and_then(|n| n.aggressor.clone())),
                opt(n.map(|n| n.count)),
                sum(|f| f.oom_kills),
                sum(|f| f.pids_max_refused),
                sum(|f| f.forks_refused),
            ]);
        }
        row.extend(phases.iter().map(|p| {
            opt(edges
                .get(p.as_str())
                .zip(spawn)
                .map(|(t, s)| t.saturating_sub(s)))
        }));
        w.write_record(&row)?;
    }
    into_bytes(w)
}

fn density_csv(results: &Results) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "host",
        "backend",
        "family",
        "n",
        "added",
        "launch_ns",
        "instance_bytes",
        "charged_bytes",
        "kernel_bytes",
        "pss_bytes",
        "mem_available_drop_bytes",
        "idle_cpu_ns",
        "idle_window_ns",
    ])?;
    for d in &results.density {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        w.write_record([
            results.header.environment.hostname.clone(),
            d.backend.clone(),
            d.family.id().to_string(),
            d.n.to_string(),
            d.added.to_string(),
            d.launch_ns.to_string(),
            d.instance_bytes.to_string(),
            d.charged_bytes.to_string(),
            d.kernel_bytes.to_string(),
            d.pss_bytes.to_string(),
            d.mem_available_drop_bytes.to_string(),
            d.idle_cpu_ns.to_string(),
            d.idle_window_ns.to_string(),
        ])?;
    }
    into_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_results::{Header, OutputRecord, Timeline, WorkloadRecord, SCHEMA};

    fn results() -> Results {
        let mut phases = Timeline::default();
        phases.push("spawn", 100);
        phases.push("namespaces", 400);
        phases.push("ready", 1100);
        Results::new(
            PathBuf::from("results.jsonl"),
            Header {
                schema: SCHEMA.into(),
                experiment: "startup".into(),
                environment: isolab_results::Environment::capture("v1"),
                settings: serde_json::json!({}),
                skipped: vec![],
            },
            vec![RunRecord {
                backend: "container".into(),
                family: isolab_results::Family::Container,
                round: 3,
                order: 1,
                warmup: false,
                workload: WorkloadRecord {
                    kernel: "ready".into(),
                    mib: 0,
                    iters: 0,
                    seed: 1,
                },
                outcome: Outcome::Failed {
                    reason: "exited with status 1, \"quoted\"".into(),
                },
                startup_ns: Some(1000),
                work_ns: None,
                phases,
                output: Some(OutputRecord {
                    checksum: "0x00000000000000ff".into(),
                    ops: 0,
                    bytes: 0,
                }),
                memory_at_ready: None,
                memory_at_done: None,
                cgroup_peak_bytes: Some(8192),
                cpu_ns: None,
                probe: vec![],
                facts: Default::default(),
                neighbours: None,
                traced: None,
                children_cpu_ns: None,
            }],
            vec![],
            vec![],
            None,
        )
    }

    #[test]
    fn runs_become_rows_with_one_column_per_phase() {
        let dir = std::env::temp_dir().join(format!("isolab-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = csv(&results(), &dir).unwrap();
        assert_eq!(
            files,
            vec![dir.join("runs.csv")],
            "no density.csv without density steps"
        );
        let mut reader = ::csv::Reader::from_path(&files[0]).unwrap();
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        assert!(header.ends_with(&[
            "phase_spawn_ns".to_string(),
            "phase_namespaces_ns".to_string(),
            "phase_ready_ns".to_string()
        ]));
        let row: Vec<String> = reader
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        let col = |name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
        assert_eq!(col("backend"), "container");
        assert_eq!(col("family"), "container");
        assert_eq!(col("startup_ns"), "1000");
        assert_eq!(
            col("phase_namespaces_ns"),
            "300",
            "time from spawn to the edge"
        );
        assert_eq!(
            col("outcome"),
            "failed: exited with status 1, \"quoted\"",
            "commas and quotes survive"
        );
        assert_eq!(col("work_ns"), "", "absent values are empty cells");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_link_planted_as_runs_csv_is_replaced_not_written_through() {
        let dir = std::env::temp_dir().join(format!("isolab-export-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("out/runs.csv")).unwrap();
        csv(&results(), &dir.join("out")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let meta = std::fs::symlink_metadata(dir.join("out/runs.csv")).unwrap();
        assert!(meta.file_type().is_file());
        // A linked output directory is refused, as the user's to change.
        std::os::unix::fs::symlink(dir.join("out"), dir.join("linked")).unwrap();
        let e = csv(&results(), &dir.join("linked")).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("symbolic link"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
