//! `lab check`: one exercise's tests and score, or the progress table.

use crate::cli;
use crate::output::Failure;
use std::io::Write;
use std::process::ExitCode;

/// `lab check`: one exercise's tests and score, or the progress table.
pub fn check(args: &cli::CheckArgs) -> Result<ExitCode, Failure> {
    let done = isolab_exercises::command(
        args.exercise.as_deref(),
        &args.options(),
        args.json.as_deref(),
        &mut |m| tell!("{m}"),
    )?;
    say_raw!("{}", done.text)?;
    Ok(if done.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
