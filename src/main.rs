//! `lab`, the command-line front of isolab. Thin: parse, call the library, print, and map
//! failures to exit statuses — 2 for a mistake in what was asked, 1 for a failure of the
//! machine (or an instance that did not complete), 128 + the signal's number after SIGINT (130),
//! SIGTERM (143) or SIGHUP (129), 141 when the reader of standard output went away.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, CommonArgs, ExecArgs, Experiment, GuestArgs, KernelCommand};
use isolab::backend::{self, Availability};
use isolab::experiment::{self, ExperimentError};
use isolab::interrupt;
use isolab::lab::Lab;
use isolab::report;
use isolab::results::Results;
use isolab::workload::Kernel;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A failure, and whether it was the user's input (exit 2), the machine (exit 1), or standard
/// output that can no longer be written.
enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
    Output(std::io::Error),
}

/// `println!` that does not panic: a write error on standard output ends the command through
/// [`Failure::Output`] (`println!` panics on a closed pipe or a full disk).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(Failure::Output)
    };
}

/// `print!` that does not panic, as [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {
        write!(std::io::stdout(), $($arg)*).map_err(Failure::Output)
    };
}

/// `eprintln!` that does not panic: with standard error gone there is nobody to tell.
macro_rules! tell {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let e = e.into();
        let is_usage = e
            .downcast_ref::<ExperimentError>()
            .is_some_and(ExperimentError::is_usage)
            || e.downcast_ref::<isolab::labs::LabsError>()
                .is_some_and(isolab::labs::LabsError::is_usage);
        if is_usage {
            Failure::Usage(e)
        } else {
            Failure::Runtime(e)
        }
    }
}

/// The error and its causes on one line, each cause once: many of isolab's errors already
/// quote their cause in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !msg.contains(&cause) {
            msg.push_str(": ");
            msg.push_str(&cause);
        }
    }
    msg.replace('\n', " ")
}

fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Usage(e.into())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, not clap's three: the first line of its message and a pointer to help.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            tell!("{first} (see lab --help)");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = interrupt::install() {
        tell!("warning: cannot catch Ctrl-C ({e}): an interrupted run leaves its clean-up to the next lab");
    }
    raise_fd_limit();
    // What is still buffered must reach the reader too, or the command did not work.
    let result = run(cli).and_then(|code| {
        std::io::stdout().flush().map_err(Failure::Output)?;
        Ok(code)
    });
    // A stop signal decides the status: whatever else happened, the run ended because it was
    // asked to, and everything it made is gone by now.
    if let Some(sig) = interrupt::requested() {
        if let Err(Failure::Usage(e) | Failure::Runtime(e)) = &result {
            // "Interrupted" is what the line below says; any other error is worth its own.
            if !interrupted(e) {
                tell!("error: {}", one_line(e));
            }
        }
        if interrupt::cleans_up() {
            tell!(
                "stopped by {}: every completed sample is kept, everything the run made is removed",
                interrupt::name(sig)
            );
        } else {
            // A report, an export or a check that made nothing on the host: nothing to remove.
            tell!("stopped by {}", interrupt::name(sig));
        }
        return ExitCode::from(interrupt::exit_status(sig));
    }
    match result {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            tell!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            tell!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
        // The reader went away (`lab backends | head -1`): what a program killed by SIGPIPE
        // would report, 128 + 13, without a word — the reader asked for no more.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(141)
        }
        Err(Failure::Output(e)) => {
            tell!("error: cannot write to standard output: {e}");
            ExitCode::from(1)
        }
    }
}

/// True when `e` says only that the work stopped because a stop was requested.
fn interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref(),
            Some(backend::BackendError::Interrupted { .. })
        ) || matches!(
            c.downcast_ref(),
            Some(ExperimentError::Instance(
                backend::BackendError::Interrupted { .. }
            ))
        ) || c
            .downcast_ref::<report::ReportError>()
            .is_some_and(report::ReportError::is_interrupted)
            || matches!(
                c.downcast_ref(),
                Some(isolab::results::ResultsError::Interrupted(_))
            )
            || matches!(
                c.downcast_ref(),
                Some(isolab::files::FilesError::Interrupted { .. })
            )
            || matches!(
                c.downcast_ref(),
                Some(isolab::export::ExportError::Interrupted)
            )
            || c.downcast_ref::<isolab::labs::LabsError>()
                .is_some_and(isolab::labs::LabsError::is_interrupted)
    })
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    // Whatever the command, first remove what dead labs left (`lab clean` does it itself, to
    // say what it removed).
    if !matches!(cli.command, Command::Clean) {
        isolab::ownership::reap(&isolab::ownership::registry_dir());
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
        Command::Clean => clean(),
        Command::Run { experiment } => run_experiment(experiment),
        Command::Report { paths, out, open } => report(paths, out, open),
        Command::Doctor => {
            let lab = new_lab()?;
            let checks = isolab::doctor::checks(&lab);
            say_raw!("{}", isolab::doctor::render(&checks))?;
            let failed = checks
                .iter()
                .any(|c| c.status == isolab::doctor::Status::Fail);
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Backends => {
            let lab = new_lab()?;
            for b in backend::registry() {
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
        Command::Exec(args) => exec(&args),
        Command::Kernel { command } => kernel(command),
        Command::Check(args) => check(&args),
        Command::Export { csv: _, out, paths } => {
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
                    let written = isolab::export::csv(&results, &dir).map_err(|e| match e {
                        isolab::export::ExportError::Files(_) if e.is_usage() => {
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
    }
}

/// `lab check`: one exercise's tests and score, or the progress table.
fn check(args: &cli::CheckArgs) -> Result<ExitCode, Failure> {
    let done = isolab::labs::command(
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

/// Make `dir` for output (`--out`, or a default beside the results). A path that cannot be a
/// directory — an existing file, a missing parent, no permission, a symbolic link (the lab
/// does not write through links: see [`isolab::files::OutDir`]) — is the user's to change
/// (exit 2); a full disk or an I/O error is the machine's (exit 1).
fn output_dir(dir: &Path, what: &str) -> Result<(), Failure> {
    isolab::files::OutDir::open_or_create(dir)
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

/// `lab clean`: reap every dead lab and say what was removed.
fn clean() -> Result<ExitCode, Failure> {
    let registry = isolab::ownership::registry_dir();
    let sweep = isolab::ownership::reap(&registry);
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

/// Run one experiment (or all of them) and print what it found.
fn run_experiment(experiment: Experiment) -> Result<ExitCode, Failure> {
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

fn lab_for(common: &CommonArgs) -> Result<Lab, Failure> {
    let mut lab = new_lab()?;
    lab.timeout = std::time::Duration::from_secs(common.timeout);
    apply_guest_args(&mut lab, &common.guest);
    Ok(lab)
}

fn apply_guest_args(lab: &mut Lab, guest: &GuestArgs) {
    lab.guest_kernel = guest.guest_kernel.clone();
    lab.force = guest.force;
    lab.disk_parent = guest.disk_dir.clone();
    lab.shared_image_disk = guest.shared_disk;
    lab.image_spec = (guest.image == "layered").then(|| isolab::image::ImageSpec {
        lib_mib: guest.image_mib,
        ..Default::default()
    });
    // clap accepts only the names of profiles.
    lab.profile =
        backend::container::profile::Profile::from_name(&guest.profile).unwrap_or_default();
}

/// `lab kernel show|build`.
fn kernel(command: KernelCommand) -> Result<ExitCode, Failure> {
    use isolab::linux_guest::{build, kernel};
    match command {
        KernelCommand::Show { path } => {
            let image = kernel::find(path.as_deref()).map_err(usage)?;
            say!("{}", image.describe())?;
            if let Some(v) = &image.version {
                say!("version: {v}")?;
            }
            // What the kernel has for a guest's disk and network card.
            for line in isolab::linux_guest::devices::inspect(&image).describe() {
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

fn new_lab() -> Result<Lab, Failure> {
    Lab::new()
        .context("cannot prepare the lab's work directory (set TMPDIR to a writable directory)")
        .map_err(Failure::Usage)
}

fn read_results(path: &Path) -> Result<Vec<Results>, Failure> {
    Results::read_all(path).map_err(usage)
}

/// `lab report`: the terminal tables of every file, then one HTML report of them all.
fn report(paths: Vec<PathBuf>, out: Option<PathBuf>, open: bool) -> Result<ExitCode, Failure> {
    let paths = if paths.is_empty() {
        let latest = report::latest_results(Path::new("reports")).ok_or_else(|| {
            usage(anyhow::anyhow!(
                "no results under reports/ (run an experiment, or name results files)"
            ))
        })?;
        vec![latest]
    } else {
        paths
    };
    let mut files = Vec::new();
    for path in &paths {
        files.extend(Results::read_all(path).map_err(usage)?);
    }
    for results in &files {
        let text = report::terminal(results);
        // A stop request cut the tables' statistics short: they are not worth printing.
        if interrupt::work_stopped() {
            return Err(usage(report::ReportError::Interrupted));
        }
        say_raw!("{text}")?;
    }
    let out = match out {
        Some(out) => out,
        None => report::default_out_dir(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())
            .map_err(usage)?,
    };
    output_dir(&out, "the report")?;
    let index = report::render(&files, &out).map_err(|e| {
        if e.is_usage() {
            usage(e)
        } else {
            Failure::Runtime(e.into())
        }
    })?;
    say!("report: {}", index.display())?;
    if open {
        // xdg-open hands the file to the desktop's browser and returns.
        match std::process::Command::new("xdg-open").arg(&index).status() {
            Ok(s) if s.success() => {}
            _ => say!(
                "no browser could be started: open {} yourself",
                index.display()
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tables(results: &Results) -> Result<(), Failure> {
    say_raw!("{}", report::terminal(results))
}

fn exec(args: &ExecArgs) -> Result<ExitCode, Failure> {
    let mut lab = new_lab()?;
    lab.timeout = std::time::Duration::from_secs(args.timeout);
    apply_guest_args(&mut lab, &args.guest);
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
        isolab::results::Outcome::Completed => None,
        isolab::results::Outcome::Failed { reason } => Some(reason.clone()),
        isolab::results::Outcome::OomKilled => {
            Some("killed by the OOM killer (over its memory limit)".into())
        }
        // A `sleep` the lab let go (after --hold, or on a stop signal) ended as asked.
        isolab::results::Outcome::Stopped if run.spec.kernel == Kernel::Sleep => None,
        isolab::results::Outcome::Stopped => Some("stopped before it was done".into()),
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

/// Each live instance holds three pipes in the lab, and the density experiment keeps hundreds
/// alive: raise the soft limit on open files to the hard limit (the soft default is often 1024).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
