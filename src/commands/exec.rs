//! `lab exec`: one instance of one backend, its phases, figures and facts.

use super::{apply_guest_args, new_lab};
use crate::cli::ExecArgs;
use crate::output::Failure;
use isolab_experiments as experiment;
use isolab_payload::Kernel;
use std::io::Write;
use std::process::ExitCode;

pub fn exec(args: &ExecArgs) -> Result<ExitCode, Failure> {
    let mut lab = new_lab()?;
    lab.settings.timeout = std::time::Duration::from_secs(args.timeout);
    apply_guest_args(&mut lab.settings, &args.guest);
    let limits = args.limits.checked()?;
    let hold = args.hold.map(std::time::Duration::from_secs);
    if args.kernel == Kernel::Sleep.name() {
        match args.hold {
            Some(s) => tell!("{} sleeps for {s} s (Ctrl-C ends it sooner)", args.backend),
            None => tell!(
                "{} sleeps until Ctrl-C or SIGTERM (--hold SECONDS ends it by itself)",
                args.backend
            ),
        }
    }
    let run = experiment::plan::once(
        &lab,
        &args.backend,
        &args.kernel,
        args.mib,
        args.iters,
        &limits,
        hold,
    )?;
    say!("{} running {}", run.backend, run.spec)?;
    let spawn = run.timeline.at("spawn").unwrap_or(0);
    for p in &run.timeline.phases {
        say!(
            "  {:>10.3} ms  {}",
            p.t_ns.saturating_sub(spawn) as f64 / 1e6,
            p.name
        )?;
    }
    say!("outcome: {:?}", run.outcome)?;
    let failed = match &run.outcome {
        isolab_results::Outcome::Completed => None,
        isolab_results::Outcome::Failed { reason } => Some(reason.clone()),
        isolab_results::Outcome::OomKilled => {
            Some("killed by the OOM killer (over its memory limit)".into())
        }
        // A `sleep` the lab let go (after --hold, or on a stop signal) ended as asked.
        isolab_results::Outcome::Stopped if run.spec.kernel == Kernel::Sleep => None,
        isolab_results::Outcome::Stopped => Some("stopped before it was done".into()),
    };
    if let Some(o) = run.output {
        say!(
            "checksum {:#018x}, ops {}, bytes {}",
            o.checksum,
            o.ops,
            o.bytes
        )?;
    }
    for (k, v) in &run.probe {
        say!("  {k:<16} {v}")?;
    }
    match (run.cgroup_peak_bytes, lab.cgroup_problem()) {
        (Some(peak), _) => say!("cgroup peak: {} KiB", peak / 1024)?,
        (None, Some(why)) => say!("memory: not measured, no usable cgroups ({why})")?,
        (None, None) => {}
    }
    for (k, v) in &run.info {
        say!("  {k:<24} {v}")?;
    }
    if let Some(reason) = failed {
        tell!("error: {}: {reason}", run.backend);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
