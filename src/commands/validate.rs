//! `lab validate`: fio, netperf and iperf3 beside the lab's disk and network kernels.

use super::{new_lab, print_tables, read_results};
use crate::cli::ValidateArgs;
use crate::output::Failure;
use isolab_experiments::validate::{self, Options};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

pub fn validate(args: &ValidateArgs) -> Result<ExitCode, Failure> {
    let mut lab = new_lab()?;
    lab.settings.timeout = std::time::Duration::from_secs(args.timeout);
    lab.settings.disk_parent = args.disk_dir.clone();
    let defaults = Options::default();
    let options = Options {
        backends: args.backends.clone(),
        rounds: args.rounds,
        disk_mib: args.disk_mib.unwrap_or(defaults.disk_mib),
        reads: args.reads.unwrap_or(defaults.reads),
        round_trips: args.round_trips.unwrap_or(defaults.round_trips),
        stream_mib: args.stream_mib.unwrap_or(defaults.stream_mib),
        tolerance: args.tolerance / 100.0,
        seed: args.seed,
        out: args.out.clone(),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let done = validate::run(&lab, &options)?;
    drop(lab);
    for results in read_results(&done.results)? {
        print_tables(&results)?;
    }
    say!("results: {}", done.results.display())?;
    if done.interrupted {
        return Ok(ExitCode::from(130));
    }
    let disagree = done.records.iter().filter(|r| !r.within).count();
    if disagree > 0 {
        tell!(
            "validation failed: {disagree} of {} figures are outside ±{}% of their tool's",
            done.records.len(),
            args.tolerance
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
