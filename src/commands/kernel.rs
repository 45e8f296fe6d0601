//! `lab kernel show|build`: the Linux kernel a guest boots.

use crate::cli::KernelCommand;
use crate::output::{usage, Failure};
use std::io::Write;
use std::process::ExitCode;

/// `lab kernel show|build`.
pub fn kernel(command: KernelCommand) -> Result<ExitCode, Failure> {
    use isolab_linux_guest::{build, guest_kernel};
    match command {
        KernelCommand::Show { path } => {
            let image = guest_kernel::find(path.as_deref()).map_err(usage)?;
            say!("{}", image.describe())?;
            if let Some(v) = &image.version {
                say!("version: {v}")?;
            }
            // What the kernel has for a guest's disk and network card.
            for line in isolab_linux_guest::devices::inspect(&image).describe() {
                say!("{line}")?;
            }
            if let Some(b) = build::last_build() {
                say!("last `lab kernel build`:\n{b}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        KernelCommand::Build {
            source,
            jobs,
            keep_tree,
        } => {
            let opts = build::BuildOptions {
                source,
                jobs: jobs.map(|j| j as usize),
                keep_tree,
            };
            let built = build::build(&opts, &mut |msg| {
                let _ = writeln!(std::io::stdout(), "{msg}");
            })
            .map_err(|e| match e {
                build::BuildError::NoSource
                | build::BuildError::BadSource(_)
                | build::BuildError::MissingTool { .. } => usage(e),
                other => Failure::Runtime(other.into()),
            })?;
            say_raw!("{}", build::describe(&built))?;
            say!(
                "built {} in {:.0} s into {}",
                built.release,
                built.total().as_secs_f64(),
                built.dir.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
