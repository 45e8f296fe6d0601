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
    let judged: Vec<claims::Assessment> = claims::ledger(&[results])
        .into_iter()
        .filter(|a| a.verdict != claims::Verdict::NoData)
        .collect();
    if !judged.is_empty() {
        out.push_str("claims this file can judge:\n");
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

/// Where a claim's explanation starts on a terminal line, under its statement.
const CLAIM_INDENT: usize = 16;
/// How wide a claim's explanation may get: a sentence a student can read, not one line.
const CLAIM_WIDTH: usize = 100;

/// `text` broken into lines of at most [`CLAIM_WIDTH`] characters (a longer word gets a line of
/// its own), each indented by `indent`.
fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
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
