//! `lab clean`: reap every dead lab and say what was removed.

use crate::output::Failure;
use std::io::Write;
use std::process::ExitCode;

/// `lab clean`: reap every dead lab and say what was removed.
pub fn clean() -> Result<ExitCode, Failure> {
    let registry = isolab_resources::ownership::registry_dir();
    let sweep = isolab_resources::ownership::reap(&registry);
    let pid = |p: Option<u32>| p.map_or(String::new(), |p| format!(" (pid {p} in its namespace)"));
    let mut failed = false;
    for lab in &sweep.reaped {
        say!("lab {}{} had ended:", lab.lab, pid(lab.pid))?;
        if lab.removed.is_empty() && lab.failed.is_empty() {
            say!("  nothing of it was left")?;
        }
        for what in &lab.removed {
            say!("  {what}")?;
        }
        for what in &lab.failed {
            say!("  could not remove: {what}")?;
            failed = true;
        }
    }
    for lab in &sweep.live {
        say!("lab {}{} is running: left alone", lab.id, pid(lab.pid))?;
    }
    if sweep.reaped.is_empty() && sweep.live.is_empty() {
        say!(
            "nothing to clean: no lab has left anything in {}",
            registry.display()
        )?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
