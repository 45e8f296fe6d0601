//! `lab run EXPERIMENT`: run one experiment (or all of them) and print what it found.

use super::{lab_for, print_tables};
use crate::cli::Experiment;
use crate::output::Failure;
use isolab_experiments as experiment;
use isolab_report as report;
use isolab_results::Results;
use std::io::Write;
use std::process::ExitCode;

/// Run one experiment (or all of them) and print what it found.
pub fn run_experiment(experiment: Experiment) -> Result<ExitCode, Failure> {
    let (request, common) = experiment.request()?;
    let lab = lab_for(&common)?;
    let ran = experiment::plan::run(&lab, &request)?;
    let mut code = ExitCode::SUCCESS;
    for done in &ran.finished {
        let results = Results::read(&done.results)?;
        for s in &results.header.skipped {
            say!("skipped {}: {}", s.backend, s.reason)?;
        }
        print_tables(&results)?;
        say!("results: {}", done.results.display())?;
        if let Some((backend, error)) = done.failures.first() {
            tell!(
                "{} samples failed; the first: {backend}: {error}",
                done.failures.len()
            );
            code = ExitCode::from(1);
        }
    }
    // One HTML report for the run: the experiment's directory, or the directory of `all`.
    let Some(run_dir) = ran.dir else {
        return Ok(code);
    };
    let files = Results::read_all(&run_dir)?;
    let index = report::render(&files, &report::default_out_dir(&[run_dir.as_path()])?)?;
    say!("report: {}", index.display())?;
    Ok(code)
}
