//! `lab backends`: every backend, its isolation family, and whether it can run here.

use super::new_lab;
use crate::output::Failure;
use isolab_backends::{registry, Availability};
use std::io::Write;
use std::process::ExitCode;

/// One entry per backend of the registry.
pub fn backends() -> Result<ExitCode, Failure> {
    let lab = new_lab()?;
    for b in registry() {
        let state = match b.availability(&lab) {
            Availability::Available => "available".to_string(),
            Availability::Unavailable(why) => format!("unavailable: {why}"),
        };
        say!(
            "{:<10} {} ({})\n           {state}",
            b.name(),
            b.describe(),
            b.family().short()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
