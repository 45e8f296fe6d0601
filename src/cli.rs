//! The command line, one enum variant per command.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// isolab: run one workload as a process, in a container and in a microVM, and measure what
/// each isolation model costs.
#[derive(Debug, Parser)]
#[command(name = "lab", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment and write its results under reports/.
    Run {
        /// Which experiment.
        #[command(subcommand)]
        experiment: Experiment,
    },
    /// Print the tables of results files and render their HTML report (plots, tables, claims
    /// ledger); files from several machines are compared host by host.
    Report {
        /// Results files or directories (default: the newest results directory under reports/).
        paths: Vec<PathBuf>,
        /// Directory to write the report into (default: report/ next to the results).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Open the report in a browser (xdg-open); without one, print where it is.
        #[arg(long)]
        open: bool,
    },
    /// Check what this machine can do, with the command that fixes each problem.
    Doctor,
    /// List the backends and whether each can run here.
    Backends,
    /// Run one workload once on one backend and show what happened, phase by phase.
    Exec(ExecArgs),
}

/// The experiments.
#[derive(Debug, Subcommand)]
pub enum Experiment {
    /// Start-up time: launch requested → first instruction of the workload, with its phases.
    Startup(RunArgs),
}

/// Options every experiment takes.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Backends to compare, comma-separated (default: every backend available here).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Measured rounds; each round runs every backend once, in shuffled order.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Warm-up rounds, recorded but left out of the statistics.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub warmup: u32,
    /// Directory under which the results directory is created.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Seed of the round shuffles (recorded in the results).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Seconds to wait for an instance to reach each marker.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Resource limits of every instance. Like `docker run`, isolab sets none unless asked: every
/// instance still gets a cgroup, for accounting.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Memory limit per instance, in MiB.
    #[arg(long = "memory-limit", value_parser = clap::value_parser!(u64).range(4..))]
    pub memory_mib: Option<u64>,
    /// Maximum processes per instance.
    #[arg(long = "pids-limit", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids: Option<u64>,
    /// CPU bandwidth per instance, in cores (e.g. 0.5).
    #[arg(long = "cpu-limit")]
    pub cpus: Option<f64>,
}

/// `lab exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Backend to run on.
    #[arg(long, default_value = "container")]
    pub backend: String,
    /// Kernel: ready, cpu, mem, random, syscall, io, sleep or probe.
    #[arg(long, default_value = "probe")]
    pub kernel: String,
    /// Working set in MiB (mem, random, io).
    #[arg(long)]
    pub mib: Option<u64>,
    /// Iterations (cpu, mem, random, syscall).
    #[arg(long)]
    pub iters: Option<u64>,
    #[command(flatten)]
    pub limits: LimitArgs,
}
