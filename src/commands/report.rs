//! `lab report`: the terminal tables of every file, then one HTML report of them all.

use super::output_dir;
use crate::output::{usage, Failure};
use isolab_host::interrupt;
use isolab_report as report;
use isolab_results::Results;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `lab report`: the terminal tables of every file, then one HTML report of them all.
pub fn report(paths: Vec<PathBuf>, out: Option<PathBuf>, open: bool) -> Result<ExitCode, Failure> {
    let paths = if paths.is_empty() {
        let latest = report::latest_results(Path::new("reports")).ok_or_else(|| {
            usage(anyhow::anyhow!(
                "no results under reports/ (run an experiment, or name results files)"
            ))
        })?;
        vec![latest]
    } else {
        paths
    };
    let mut files = Vec::new();
    for path in &paths {
        files.extend(Results::read_all(path).map_err(usage)?);
    }
    for results in &files {
        let text = report::terminal(results);
        // A stop request cut the tables' statistics short: they are not worth printing.
        if interrupt::work_stopped() {
            return Err(usage(report::ReportError::Interrupted));
        }
        say_raw!("{text}")?;
    }
    let out = match out {
        Some(out) => out,
        None => report::default_out_dir(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())
            .map_err(usage)?,
    };
    output_dir(&out, "the report")?;
    let index = report::render(&files, &out).map_err(|e| {
        if e.is_usage() {
            usage(e)
        } else {
            Failure::Runtime(e.into())
        }
    })?;
    say!("report: {}", index.display())?;
    if open {
        // xdg-open hands the file to the desktop's browser and returns.
        match std::process::Command::new("xdg-open").arg(&index).status() {
            Ok(s) if s.success() => {}
            _ => say!(
                "no browser could be started: open {} yourself",
                index.display()
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
