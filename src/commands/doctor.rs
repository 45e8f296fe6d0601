//! `lab doctor`: what this machine can and cannot do, and how to fix it.

use super::new_lab;
use crate::doctor::{checks, render, Status};
use crate::output::Failure;
use std::io::Write;
use std::process::ExitCode;

/// Every check, printed; exit 1 when one failed.
pub fn doctor() -> Result<ExitCode, Failure> {
    let lab = new_lab()?;
    let checks = checks(&lab);
    say_raw!("{}", render(&checks))?;
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
