//! One file per command of `lab`; this one dispatches and holds what several commands share
//! (the lab they run in, where they write).

mod backends;
mod check;
mod clean;
mod doctor;
mod exec;
mod experiment;
mod export;
mod kernel;
mod report;
mod validate;

use crate::cli::{Cli, Command, CommonArgs, GuestArgs};
use crate::output::{usage, Failure};
use anyhow::Context;
use isolab_backends::lab::{Lab, Settings};
use isolab_host::interrupt;
use isolab_results::Results;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Run the command `cli` names.
pub fn run(cli: Cli) -> Result<ExitCode, Failure> {
    // Whatever the command, first remove what dead labs left (`lab clean` does it itself, to
    // say what it removed).
    if !matches!(cli.command, Command::Clean) {
        isolab_resources::ownership::reap(&isolab_resources::ownership::registry_dir());
    }
    // Commands that only read and compute drop their work on a stop request: half a report
    // is worth nothing, and a large results file can keep them busy for a minute.
    if matches!(
        cli.command,
        Command::Report { .. } | Command::Export { .. } | Command::Check(_)
    ) {
        interrupt::cut_work_short();
    }
    match cli.command {
        Command::Clean => clean::clean(),
        Command::Run { experiment } => experiment::run_experiment(experiment),
        Command::Report { paths, out, open } => report::report(paths, out, open),
        Command::Doctor => doctor::doctor(),
        Command::Backends => backends::backends(),
        Command::Exec(args) => exec::exec(&args),
        Command::Kernel { command } => kernel::kernel(command),
        Command::Check(args) => check::check(&args),
        Command::Validate(args) => validate::validate(&args),
        Command::Export { csv: _, out, paths } => export::export(out, paths),
    }
}

/// Make `dir` for output (`--out`, or a default beside the results). A path that cannot be a
/// directory — an existing file, a missing parent, no permission, a symbolic link (the lab
/// does not write through links: see [`isolab_host::files::OutDir`]) — is the user's to change
/// (exit 2); a full disk or an I/O error is the machine's (exit 1).
pub fn output_dir(dir: &Path, what: &str) -> Result<(), Failure> {
    isolab_host::files::OutDir::open_or_create(dir)
        .map(drop)
        .map_err(|e| {
            let msg = anyhow::anyhow!(
                "cannot make {} the directory for {what}: {e} (choose another with --out)",
                dir.display()
            );
            if e.is_usage() {
                usage(msg)
            } else {
                Failure::Runtime(msg)
            }
        })
}

pub fn lab_for(common: &CommonArgs) -> Result<Lab, Failure> {
    let mut lab = new_lab()?;
    lab.settings.timeout = std::time::Duration::from_secs(common.timeout);
    apply_guest_args(&mut lab.settings, &common.guest);
    Ok(lab)
}

/// The settings `--guest-kernel`, `--force`, `--disk-dir`, `--shared-disk`, `--image` and
/// `--profile` ask for.
pub fn apply_guest_args(settings: &mut Settings, guest: &GuestArgs) {
    settings.guest_kernel = guest.guest_kernel.clone();
    settings.force = guest.force;
    settings.disk_parent = guest.disk_dir.clone();
    settings.shared_image_disk = guest.shared_disk;
    settings.image_spec = (guest.image == "layered").then(|| isolab_resources::image::ImageSpec {
        lib_mib: guest.image_mib,
        ..Default::default()
    });
    // clap accepts only the names of profiles.
    settings.profile =
        isolab_container::profile::Profile::from_name(&guest.profile).unwrap_or_default();
}

pub fn new_lab() -> Result<Lab, Failure> {
    Lab::new()
        .context("cannot prepare the lab's work directory (set TMPDIR to a writable directory)")
        .map_err(Failure::Usage)
}

pub fn read_results(path: &Path) -> Result<Vec<Results>, Failure> {
    Results::read_all(path).map_err(usage)
}

pub fn print_tables(results: &Results) -> Result<(), Failure> {
    say_raw!("{}", isolab_report::terminal(results))
}
