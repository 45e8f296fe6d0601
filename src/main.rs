//! `lab`, the command-line front of isolab. Thin: parse, call the library, print, and map
//! failures to exit statuses — 2 for a mistake in what was asked, 1 for a failure of the
//! machine, 130 after Ctrl-C.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, ExecArgs, Experiment, LimitArgs, RunArgs};
use isolab::backend::{self, Availability, Limits};
use isolab::experiment::{self, ExperimentError, Settings, INTERRUPTED};
use isolab::lab::Lab;
use isolab::report;
use isolab::results::Results;
use isolab::workload::{Kernel, Spec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// A failure, and whether it was the user's input (exit 2) or the machine (exit 1).
enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let e = e.into();
        match e.downcast_ref::<ExperimentError>() {
            Some(x) if x.is_usage() => Failure::Usage(e),
            _ => Failure::Runtime(e),
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
            eprintln!("{first} (see lab --help)");
            return ExitCode::from(2);
        }
    };
    install_sigint_handler();
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Run { experiment } => match experiment {
            Experiment::Startup(args) => run_experiment(&args, |lab, settings| {
                experiment::startup::run(lab, args.backends.as_deref(), settings)
            }),
        },
        Command::Report { paths, out, open } => report(paths, out, open),
        Command::Doctor => {
            let lab = new_lab()?;
            let checks = isolab::doctor::checks(&lab);
            print!("{}", isolab::doctor::render(&checks));
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
                println!("{:<10} {}\n           {state}", b.name(), b.describe());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec(args) => exec(&args),
    }
}

fn new_lab() -> Result<Lab, Failure> {
    Lab::new()
        .context("cannot prepare the lab's work directory (set TMPDIR to a writable directory)")
        .map_err(Failure::Usage)
}

fn limits(args: &LimitArgs) -> Result<Limits, Failure> {
    if let Some(c) = args.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(usage(anyhow::anyhow!(
                "--cpu-limit must be a positive number of cores"
            )));
        }
    }
    Ok(Limits {
        memory_bytes: args.memory_mib.map(|m| m << 20),
        pids: args.pids,
        cpus: args.cpus,
    })
}

fn run_experiment(
    args: &RunArgs,
    go: impl FnOnce(&Lab, &Settings) -> Result<experiment::Campaign, ExperimentError>,
) -> Result<ExitCode, Failure> {
    let mut lab = new_lab()?;
    lab.timeout = std::time::Duration::from_secs(args.timeout);
    let settings = Settings {
        runs: args.runs,
        warmup: args.warmup,
        seed: args.seed,
        limits: limits(&args.limits)?,
        out: args.out.clone(),
        progress: !args.no_progress,
    };
    let campaign = go(&lab, &settings)?;
    let results = Results::read(&campaign.results)?;
    for s in &results.header.skipped {
        println!("skipped {}: {}", s.backend, s.reason);
    }
    print_tables(&results);
    println!("results: {}", campaign.results.display());
    if campaign.interrupted {
        eprintln!("interrupted: {} samples kept", campaign.samples);
        return Ok(ExitCode::from(130));
    }
    if !campaign.failures.is_empty() {
        eprintln!(
            "{} samples failed; the first: {}: {}",
            campaign.failures.len(),
            campaign.failures[0].0,
            campaign.failures[0].1
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
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
        print_tables(results);
    }
    let out = match out {
        Some(out) => out,
        None => report::default_out_dir(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())
            .map_err(usage)?,
    };
    let index = report::render(&files, &out).map_err(|e| {
        if e.is_usage() {
            usage(e)
        } else {
            Failure::Runtime(e.into())
        }
    })?;
    println!("report: {}", index.display());
    if open {
        // xdg-open hands the file to the desktop's browser and returns.
        match std::process::Command::new("xdg-open").arg(&index).status() {
            Ok(s) if s.success() => {}
            _ => println!(
                "no browser could be started: open {} yourself",
                index.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tables(results: &Results) {
    print!("{}", report::terminal(results));
}

fn exec(args: &ExecArgs) -> Result<ExitCode, Failure> {
    let kernel = Kernel::from_name(args.kernel.as_bytes()).ok_or_else(|| {
        usage(anyhow::anyhow!(
            "unknown kernel '{}' (known: ready, cpu, mem, random, syscall, io, sleep, probe)",
            args.kernel
        ))
    })?;
    let lab = new_lab()?;
    let selection = experiment::select(&lab, Some(std::slice::from_ref(&args.backend)))?;
    let mut spec = Spec::default_for(kernel);
    spec.mib = args.mib.unwrap_or(spec.mib);
    spec.iters = args.iters.unwrap_or(spec.iters);
    let run = selection.backends[0]
        .run(&lab, &spec, &limits(&args.limits)?)
        .map_err(|e| Failure::Runtime(e.into()))?;
    println!("{} running {spec}", run.backend);
    let spawn = run.timeline.at("spawn").unwrap_or(0);
    for p in &run.timeline.phases {
        println!("  {:>10.3} ms  {}", (p.t_ns - spawn) as f64 / 1e6, p.name);
    }
    println!("outcome: {:?}", run.outcome);
    if let Some(o) = run.output {
        println!(
            "checksum {:#018x}, ops {}, bytes {}",
            o.checksum, o.ops, o.bytes
        );
    }
    for (k, v) in &run.probe {
        println!("  {k:<16} {v}");
    }
    if let Some(peak) = run.cgroup_peak_bytes {
        println!("cgroup peak: {} KiB", peak / 1024);
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C sets [`INTERRUPTED`]: experiments stop between samples and keep what they have. A
/// second Ctrl-C ends the lab at once.
fn install_sigint_handler() {
    extern "C" fn on_sigint(_: libc::c_int) {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigint),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, &action) };
}
