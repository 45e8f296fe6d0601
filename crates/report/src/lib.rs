//! Reports: tables, plots, a claims ledger and one HTML page, rendered from results files only.
//!
//! Nothing here runs an instance or looks at a backend: a report is a pure function of results
//! files, so it can be rendered again, later, on another machine, and gives the same bytes for
//! the same files (no time of rendering is written, orders are stable, the bootstrap is seeded).
//!
//! ```no_run
//! use isolab_report as report;
//! use isolab_results::Results;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = Results::read_all("reports/20261123-091953-startup".as_ref())?;
//! print!("{}", report::terminal(&files[0]));            // what `lab run` prints
//! let out = report::default_out_dir(&["reports/20261123-091953-startup".as_ref()])?;
//! let index = report::render(&files, &out)?;              // report/index.html, SVGs, tables.md
//! println!("report: {}", index.display());
//! # Ok(()) }
//! ```
//!
//! The pieces:
//!
//! * [`summary`] — figures from one results file (medians, CIs, paired ratios);
//! * [`claims`] — the claims ledger: each claim of Docker introductions, judged by written rules;
//! * [`table`] — the figures as tables, for the terminal, Markdown and HTML;
//! * [`plot`] — the figures as SVG plots;
//! * [`html`] — the page that holds them all;
//! * [`backends`] — which backend names are containers, VMs, the baseline;
//! * [`validation`] — `lab validate`'s figures, and the latest validation beside the results.

pub mod backends;
pub mod claims;
pub mod export;
pub use isolab_host::format;
pub mod html;
pub mod plot;
pub mod restore;
pub mod summary;
pub mod table;
pub mod validation;

#[cfg(test)]
pub(crate) mod fixtures;

use isolab_results::{Results, ResultsError};
use std::path::{Path, PathBuf};

/// Errors of rendering a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A results file could not be read.
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// Nothing to report on.
    #[error("no results files given")]
    NoResults,
    /// The report directory could not be chosen.
    #[error("the results are in unrelated places ({0}); choose where the report goes with --out")]
    NoCommonDir(String),
    /// The report's directory could not be used, or a file of it could not be written.
    #[error(transparent)]
    Files(#[from] isolab_host::files::FilesError),
    /// A stop was requested while the report was being made
    /// ([`isolab_host::interrupt::work_stopped`]).
    #[error("stopped before the report was done")]
    Interrupted,
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// The HTML template failed.
    #[error(transparent)]
    Html(#[from] html::HtmlError),
}

impl ReportError {
    /// True for mistakes in what the user asked (exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            ReportError::Results(e) => e.is_usage(),
            ReportError::Files(e) => e.is_usage(),
            ReportError::NoResults | ReportError::NoCommonDir(_) => true,
            ReportError::Plot(_) | ReportError::Html(_) | ReportError::Interrupted => false,
        }
    }

    /// True when the report stopped because a stop was requested.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            ReportError::Interrupted
                | ReportError::Plot(plot::PlotError::Interrupted)
                | ReportError::Results(ResultsError::Interrupted(_))
                | ReportError::Files(isolab_host::files::FilesError::Interrupted { .. })
        )
    }
}

/// `Err(Interrupted)` once a stop was requested (`lab report` stops within a moment): asked
/// between files, sections and plots, whose work is then discarded.
fn stop_point() -> Result<(), ReportError> {
    if isolab_host::interrupt::work_stopped() {
        Err(ReportError::Interrupted)
    } else {
        Ok(())
    }
}

/// Render the report of `files` into `out_dir` (created if needed): `index.html`, one SVG per
/// plot and `tables.md`. Returns the path of `index.html`.
///
/// `out_dir` is often a directory of the user whose results these are, while the lab runs as
/// root: it is opened as an [`OutDir`](isolab_host::files::OutDir), so a symbolic link in place of the
/// directory is refused and one in place of a file is replaced, never written through.
///
/// Files from several machines are grouped by host and every figure says which host it is from;
/// figures of different hosts are never combined.
pub fn render(files: &[Results], out_dir: &Path) -> Result<PathBuf, ReportError> {
    if files.is_empty() {
        return Err(ReportError::NoResults);
    }
    // The method section shows how this machine's disk and network kernels compare with the
    // field's tools: a validation among the files, or the latest one found beside them.
    let beside = validation::latest_beside(files);
    if beside.is_empty() {
        return html::render(files, out_dir);
    }
    let mut all = files.to_vec();
    all.extend(beside);
    html::render(&all, out_dir)
}

/// The terminal tables of one results file, whatever its experiment, with loud warnings (failed
/// samples, checksum mismatches) and the claims this file alone can judge, each with the caveats
/// the HTML report gives it. What `lab run` prints at its end and `lab report` prints for each
/// file. Text from the file is made [`format::printable`]: a results file cannot drive the
/// reader's terminal.
pub fn terminal(results: &Results) -> String {
    let env = &results.header.environment;
    let mut out = format::printable(&format!(
        "{} on {} ({}, kernel {}, KVM: {}, cgroup {})\n",
        results.header.experiment,
        env.hostname,
        env.cpu_model,
        env.kernel_release,
        env.underneath.short().map_or_else(
            || env.kvm.label().to_string(),
            |under| format!("{}, {under}", env.kvm.label())
        ),
        if env.memory_unavailable().is_some() {
            "none"
        } else {
            &env.cgroup
        },
    ));
    if let Some(why) = env.memory_unavailable() {
        out.push_str(&format::printable(&format!(
            "memory figures: not measured — the lab had no usable cgroups ({why})\n"
        )));
    }
    if let Some(line) = settings_line(results) {
        out.push_str(&format::printable(&line));
    }
    let mut tables: Vec<table::Table> = Vec::new();
    let memory = summary::memory(results);
    let throughput = summary::throughput(results);
    let mismatches = summary::checksum_mismatches(results);
    let density = summary::density(results);
    let isolation = summary::isolation(results);
    if !memory.is_empty() {
        tables.push(table::memory(&memory));
    }
    if !throughput.is_empty() {
        tables.push(table::throughput(&throughput, &mismatches));
    }
    let latency = summary::latency(results);
    if !latency.is_empty() {
        tables.push(table::latency(&latency));
    }
    if !density.is_empty() {
        tables.push(table::density(&density));
    }
    if !results.validations.is_empty() {
        tables.push(validation::table(&results.validations));
    }
    tables.extend(restore::tables(results));
    if let Some(image) = &results.image {
        tables.push(table::image_layers(image));
    }
    if density.iter().any(|d| d.per_instance_on_image.is_some()) {
        tables.push(table::shared_image(&density));
    }
    if let Some(iso) = &isolation {
        tables.push(table::isolation(iso, false, Some(28)));
    }
    let interference = summary::interference(results);
    if !interference.is_empty() {
        tables.push(table::interference_alone(&summary::interference_alone(
            results,
        )));
        tables.push(table::interference(&interference));
        let stability = table::stability(&interference);
        if !stability.is_empty() {
            tables.push(stability);
        }
    }
    // Every experiment launches instances, so every file has start-up times; they are the
    // point of the startup experiment only, or of a file that has nothing else.
    if results.header.experiment == "startup" || tables.is_empty() {
        tables.insert(0, table::startup(&summary::startup(results)));
    }
    for t in &tables {
        out.push_str(&t.terminal());
        out.push('\n');
    }
    if throughput.is_empty() {
        for line in table::mismatch_lines(&mismatches) {
            out.push_str(&format::printable(&line));
            out.push('\n');
        }
    }
    // The claims made for this file's experiment, verdict or not (a *no data* says which
    // command gives the data), and those whose figures it records without being their
    // experiment (image sizes): a reader must not take those figures for the answer.
    let judged: Vec<claims::Assessment> = claims::ledger(&[results])
        .into_iter()
        .filter(|a| a.claim.bears_on(results))
        .collect();
    if !judged.is_empty() {
        out.push_str("claims this file bears on:\n");
        for a in &judged {
            out.push_str(&format!(
                "  {:<13} {}\n",
                a.verdict.label(),
                a.claim.statement
            ));
            let mut text = wrap(&a.why, CLAIM_INDENT);
            for p in &a.parts {
                text.push_str(&wrap(
                    &format!("{}: {}", p.verdict.label(), p.why),
                    CLAIM_INDENT,
                ));
            }
            for c in &a.caveats {
                text.push_str(&wrap(&format!("caveat: {c}"), CLAIM_INDENT));
            }
            out.push_str(&format::printable(&text));
        }
    }
    out
}

/// A file's sampling settings in one line, each seed named by what it seeds: `settings: 10
/// rounds after 3 warm-up; shuffle seed 1 (--seed: the order of the backends in each round);
/// data seed 1513679373964673025 (the workloads' seed=: their random data, the same on every
/// backend so that checksums compare)`. `None` when the settings name none of them.
fn settings_line(results: &Results) -> Option<String> {
    let rounds = |n: u64| format!("{n} round{}", if n == 1 { "" } else { "s" });
    let settings = &results.header.settings;
    let mut parts: Vec<String> = Vec::new();
    let number = |k: &str| settings.get(k).and_then(serde_json::Value::as_u64);
    match (number("runs"), number("warmup")) {
        (Some(r), Some(w)) => parts.push(format!("{} after {w} warm-up", rounds(r))),
        (Some(r), None) => parts.push(rounds(r)),
        _ => {}
    }
    // Files written before the shuffle seed had its name call it `seed`.
    if let Some(seed) = number("shuffle_seed").or_else(|| number("seed")) {
        parts.push(format!(
            "shuffle seed {seed} (--seed: the order of the backends in each round)"
        ));
    }
    // The seeds the samples' workloads ran with, as their records say.
    let data: std::collections::BTreeSet<u64> =
        results.runs.iter().map(|r| r.workload.seed).collect();
    if !data.is_empty() {
        let seeds: Vec<String> = data.iter().map(u64::to_string).collect();
        parts.push(format!(
            "data seed {} (the workloads' seed=: their random data, the same on every backend \
             so that checksums compare)",
            seeds.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| format!("settings: {}\n", parts.join("; ")))
}

/// Where a claim's explanation starts on a terminal line, under its statement.
const CLAIM_INDENT: usize = 16;
/// How wide a claim's explanation may get: a sentence a student can read, not one line.
const CLAIM_WIDTH: usize = 100;

/// `text` broken into lines of at most [`CLAIM_WIDTH`] characters (a longer word gets a line of
/// its own), each indented by `indent`. A command in backticks stays on one line, so that it
/// can be copied.
fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut line = String::new();
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for word in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_string()),
        }
        open ^= word.matches('`').count() % 2 == 1;
    }
    for word in &words {
        if !line.is_empty()
            && line.chars().count() + 1 + word.chars().count() > CLAIM_WIDTH - indent
        {
            out.push_str(&format!("{pad}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{pad}{line}\n"));
    }
    out
}

/// Where a report of the results at `paths` goes by default: a `report/` directory next to
/// them — in the results directory for one, in the closest directory they share for several.
pub fn default_out_dir(paths: &[&Path]) -> Result<PathBuf, ReportError> {
    let dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            if p.is_dir() {
                p
            } else {
                p.parent().map_or(p.clone(), Path::to_path_buf)
            }
        })
        .collect();
    let Some(first) = dirs.first() else {
        return Err(ReportError::NoResults);
    };
    let mut common = first.clone();
    for d in &dirs[1..] {
        while !d.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    if common.parent().is_none() {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(ReportError::NoCommonDir(list.join(", ")));
    }
    Ok(common.join("report"))
}

/// The newest results directory under `dir` (`lab run` names them `<UTC time>-<experiment>`,
/// so the greatest name is the newest), for `lab report` without arguments.
pub fn latest_results(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
                && Results::read_all(p).is_ok()
        })
        .collect();
    names.sort();
    names.pop()
}

#[cfg(test)]
mod tests;
