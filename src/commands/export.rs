//! `lab export --csv`: a results file as CSV tables, one file per kind of record.

use super::{output_dir, read_results};
use crate::output::{usage, Failure};
use isolab_report::export::ExportError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The CSV files of every results file under `paths`, into `out` or beside each file.
pub fn export(out: Option<PathBuf>, paths: Vec<PathBuf>) -> Result<ExitCode, Failure> {
    for path in paths {
        for results in read_results(&path)? {
            let dir = out.clone().unwrap_or_else(|| {
                results
                    .path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            });
            output_dir(&dir, "the CSV files")?;
            let written = isolab_report::export::csv(&results, &dir).map_err(|e| match e {
                ExportError::Files(_) if e.is_usage() => {
                    usage(anyhow::Error::from(e).context("choose another --out"))
                }
                e if e.is_usage() => usage(e),
                e => Failure::Runtime(e.into()),
            })?;
            for file in written {
                say!("{}", file.display())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
