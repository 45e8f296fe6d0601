//! The command line, one enum variant per command.

use clap::{Args, Parser, Subcommand};
use isolab_experiments::plan::{DensityOptions, Which};
use isolab_experiments::{interference, plan, throughput, ExperimentError};
use isolab_resources::cgroup;
use std::path::PathBuf;

/// The largest size in MiB any option takes (1 TiB): sizes are turned into bytes, and a number
/// of MiB near 2^64 would not fit.
const MAX_MIB: u64 = cgroup::MAX_MEMORY_MIB;

/// The longest `--timeout`, in seconds (a day): a deadline is the current time plus the timeout,
/// and a deadline beyond the clock's range cannot be represented.
const MAX_TIMEOUT_S: u64 = 86_400;

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
    /// Remove what labs that were killed left behind (every lab also does this as it starts),
    /// say what was removed, and leave running labs alone.
    Clean,
    /// Run one workload once on one backend and show what happened, phase by phase.
    Exec(ExecArgs),
    /// Linux guest kernels: which one the lab boots, and building a minimal one.
    Kernel {
        /// What to do.
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Run fio, netperf and iperf3 beside the lab's disk and network kernels, in the same
    /// instances, and compare: exit status 0 only when every figure agrees within the
    /// tolerance.
    Validate(ValidateArgs),
    /// Check an exercise of labs/ on this machine: one line per test, a score, exit status 0
    /// only when all pass. Without an exercise: the progress table of all of them.
    Check(CheckArgs),
    /// Export results as CSV files (runs.csv, and density.csv when there are density steps).
    Export {
        /// Write CSV (the only format).
        #[arg(long, required = true)]
        csv: bool,
        /// Directory for the CSV files (default: beside each results file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Results files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// `lab kernel ...`.
#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Say which kernel Linux guests boot, and why.
    Show {
        /// A kernel file to inspect instead of the one the lab would find.
        path: Option<PathBuf>,
    },
    /// Build a minimal microVM kernel (allnoconfig + the lab's microvm.config) into the cache
    /// ($XDG_CACHE_HOME/isolab or ~/.cache/isolab); Linux guests boot it from then on.
    Build {
        /// A kernel source tree or tarball (default: the newest /usr/src/linux-source-*).
        #[arg(long)]
        source: Option<PathBuf>,
        /// Parallel compile jobs (default: the number of CPUs).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        jobs: Option<u32>,
        /// Keep the extracted source and object tree under the cache's kernel-build/.
        #[arg(long)]
        keep_tree: bool,
    },
}

/// The experiments.
#[derive(Debug, Subcommand)]
pub enum Experiment {
    /// Start-up time: launch requested → first instruction of the workload, with its phases.
    Startup(RunArgs),
    /// What one instance costs in memory: its fixed cost, and what its workload touched.
    Memory {
        #[command(flatten)]
        run: RunArgs,
        /// Working-set sizes to touch, in MiB, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64", value_parser = clap::value_parser!(u64).range(1..=4096))]
        sizes: Vec<u64>,
    },
    /// Speed of the compute, disk and network kernels, relative to a plain process.
    Throughput {
        #[command(flatten)]
        run: RunArgs,
        /// Kernels to run, comma-separated (default: cpu, mem, random, syscall, io, disk-seq,
        /// disk-rand, and net-stream, net-rr where the lab may build its network: as root).
        #[arg(long, value_delimiter = ',')]
        kernels: Option<Vec<String>>,
        /// Size of each instance's disk for disk-seq and disk-rand, in MiB (default: 64).
        #[arg(long = "disk-mib", value_parser = clap::value_parser!(u64).range(1..=MAX_MIB))]
        disk_mib: Option<u64>,
        /// MiB net-stream sends to the peer per run (default: 256).
        #[arg(long = "stream-mib", value_parser = clap::value_parser!(u64).range(1..=MAX_MIB))]
        stream_mib: Option<u64>,
        /// Requests per run of disk-rand (4 KiB reads) and net-rr (round trips) (default:
        /// 20000). Fewer fit a slow machine's timeout; the results record what each run did.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        requests: Option<u64>,
    },
    /// How many idle instances fit, what each costs, how fast they start and stop.
    Density(DensityArgs),
    /// What N instances of one layered image cost: the host memory each more one adds (its page
    /// cache counted once), cold and warm start-up, KSM for VMs, and Docker's layer cache.
    Images(ImagesArgs),
    /// What the workload can see: kernel, PIDs, host name, mounts, network, users, capabilities.
    Isolation(RunArgs),
    /// Whether one instance's load or failure reaches its neighbours: a victim beside 0, 1, …
    /// k aggressors of the same backend, unlimited and under limits.
    Interference(InterferenceArgs),
    /// Cold starts against starts restored from a snapshot taken at `ready` (a VM's RAM and
    /// registers; a container's processes by CRIU): start-up, the first run after a restore,
    /// the snapshot's size and cost, and host memory for 1, 2, 4 restored instances.
    Restore {
        #[command(flatten)]
        run: RunArgs,
        /// How many restored instances to keep alive together for the memory figures,
        /// comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = clap::value_parser!(u32).range(1..=64))]
        counts: Vec<u32>,
    },
    /// Every experiment, into one results directory.
    All {
        #[command(flatten)]
        run: RunArgs,
        /// The top of the density ladder.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max: u32,
    },
}

/// Options every experiment takes.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Backends to compare, comma-separated (default: every backend available here).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Measured rounds; each round runs every case once, in shuffled order
    /// (default: startup 30, memory 10, throughput 10, interference 6, isolation 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: Option<u32>,
    /// Warm-up rounds, recorded but left out of the statistics (default: 3; interference 1;
    /// isolation 0).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub warmup: Option<u32>,
    /// Seed of the round shuffles: the order of the backends in each round (recorded as
    /// `shuffle_seed`; the workloads' data seed is their own `seed=`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `lab run interference`.
#[derive(Debug, Args)]
pub struct InterferenceArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Aggressors, comma-separated: cpu (a CPU hog), mem (a memory-bandwidth streamer), disk (a
    /// disk writer), fork (a fork bomb), oom (a memory hog) (default: all).
    #[arg(long, value_delimiter = ',')]
    pub aggressors: Option<Vec<String>>,
    /// Victim kernels to run beside every aggressor, comma-separated (default: each aggressor's
    /// own: cpu for cpu, mem for mem and oom, disk-rand for disk, syscall for fork).
    #[arg(long, value_delimiter = ',')]
    pub kernels: Option<Vec<String>>,
    /// The most aggressors beside one victim: 1, 2, 4, … up to this many.
    #[arg(long = "max-aggressors", default_value_t = isolab_experiments::interference::DEFAULT_MAX_AGGRESSORS, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_aggressors: u32,
}

/// `lab run density`.
#[derive(Debug, Args)]
pub struct DensityArgs {
    /// Backends to climb the ladder with, one after the other (default: every backend here).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// The top of the ladder: N = 1, 2, 4, ... up to this many live instances.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max: u32,
    /// Stop before the host's available memory would fall below this many MiB
    /// (default: a tenth of the host's memory, at least 1024).
    #[arg(long = "reserve-mib", value_parser = clap::value_parser!(u64).range(0..=MAX_MIB))]
    pub reserve_mib: Option<u64>,
    /// How long to watch the idle instances' CPU use at each step, in ms.
    #[arg(long = "idle-window-ms", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub idle_window_ms: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `lab run images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Backends to climb the ladder with, one after the other (default: every backend here).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// The top of the ladder: N = 1, 2, 4, ... up to this many instances of the image.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max: u32,
    /// Turn KSM on for the VMs' ladders (the host's setting comes back after) and record what it
    /// merges.
    #[arg(long)]
    pub ksm: bool,
    /// How long to watch the idle instances' CPU use at each step, in ms.
    #[arg(long = "idle-window-ms", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub idle_window_ms: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options of every command that runs instances.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Directory under which the results directory is created.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Seconds to wait for an instance to reach each marker (at most a day).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_S))]
    pub timeout: u64,
    /// Show no progress: neither the bar drawn on a terminal nor, when standard error is not
    /// a terminal, the line written per finished round or rung.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Options of Linux guests and of backends that cannot run here.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// How containers are configured beyond their namespaces: `docker` adds Docker's masked and
    /// read-only /proc paths and its seccomp profile to `minimal` (namespaces, a private root,
    /// Docker's capabilities, no_new_privs); `podman` is `docker` with Podman's seccomp profile,
    /// which lets containers make namespaces and mounts. Applies to `container` and the OCI
    /// bundles.
    #[arg(long, default_value = "docker", value_parser = ["minimal", "docker", "podman"])]
    pub profile: String,
    /// The Linux kernel guests boot: a bzImage or a vmlinux (default: see `lab kernel show`).
    /// Not `--kernel`, which names the workload's kernel (cpu, mem, ...).
    #[arg(long, value_name = "PATH")]
    pub guest_kernel: Option<PathBuf>,
    /// Run the named backends even where they cannot run here (e.g. vm-linux on nested PVM), to
    /// see how far they get.
    #[arg(long)]
    pub force: bool,
    /// Where the disk kernels' disks go: a directory on a disk (not a tmpfs) that no other user
    /// may change (root's or yours, and sticky where others may write, as /var/tmp is).
    #[arg(long = "disk-dir", value_name = "DIR", default_value = isolab_resources::disks::DEFAULT_PARENT)]
    pub disk_dir: PathBuf,
    /// What instances run on: `minimal` (a root holding only the workload) or `layered` (the
    /// lab's two-layer image with libraries the workload loads at start; see lab run images).
    #[arg(long, default_value = "minimal", value_parser = ["minimal", "layered"])]
    pub image: String,
    /// MiB of libraries in the layered image's base layer.
    #[arg(long = "image-mib", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16_384))]
    pub image_mib: u64,
    /// VMs on the layered image share one read-only disk of it instead of a copy each (each
    /// guest still reads it into its own memory).
    #[arg(long = "shared-disk")]
    pub shared_disk: bool,
}

/// Resource limits of every instance. Like `docker run`, isolab sets none unless asked: every
/// instance still gets a cgroup, for accounting.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Memory limit per instance, in MiB (4 to 1048576).
    #[arg(long = "memory-limit", value_parser = |s: &str| number(s).and_then(cgroup::check_memory_mib))]
    pub memory_mib: Option<u64>,
    /// Maximum processes per instance (1 to 4194304).
    #[arg(long = "pids-limit", value_parser = |s: &str| number(s).and_then(cgroup::check_pids))]
    pub pids: Option<u64>,
    /// CPU bandwidth per instance, in cores (e.g. 0.5; 0.01 to the number of CPUs).
    #[arg(long = "cpu-limit", value_parser = |s: &str| {
        s.parse::<f64>()
            .map_err(|e| format!("{e}"))
            .and_then(|c| cgroup::check_cpus(c, isolab_host::facts::cpu_count()))
    })]
    pub cpus: Option<f64>,
    /// Disk bandwidth per instance, in MiB/s for reads and for writes each, on the disk that
    /// holds --disk-dir (1 to 1048576).
    #[arg(long = "io-limit", value_name = "MIB_PER_S", value_parser = |s: &str| number(s).and_then(cgroup::check_io_mib))]
    pub io_mib: Option<u64>,
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
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_MIB))]
    pub mib: Option<u64>,
    /// Iterations (cpu, mem, random, syscall).
    #[arg(long)]
    pub iters: Option<u64>,
    /// Keep a `sleep` workload alive this many seconds, then let it go (without it: until
    /// Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=MAX_TIMEOUT_S))]
    pub hold: Option<u64>,
    /// Seconds to wait for the instance to reach each marker (at most a day).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_S))]
    pub timeout: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// `lab validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Backends to validate on, comma-separated: process and container, the backends the lab
    /// carries the tools into (default: both).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Measured rounds; each runs every kernel and every tool once per backend, shuffled.
    #[arg(long, default_value_t = isolab_experiments::validate::DEFAULT_ROUNDS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// MiB of each disk: disk-seq writes and reads it all, disk-rand and fio read it at random
    /// (default: as lab run throughput).
    #[arg(long = "disk-mib", value_parser = clap::value_parser!(u64).range(1..=MAX_MIB))]
    pub disk_mib: Option<u64>,
    /// Random 4 KiB reads of disk-rand and fio (default: as lab run throughput).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub reads: Option<u64>,
    /// Round trips of net-rr and transactions of netperf's TCP_RR (default: as lab run
    /// throughput).
    #[arg(long = "round-trips", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub round_trips: Option<u64>,
    /// MiB that net-stream and iperf3 send (default: as lab run throughput).
    #[arg(long = "stream-mib", value_parser = clap::value_parser!(u64).range(1..=MAX_MIB))]
    pub stream_mib: Option<u64>,
    /// How far the lab's figure may be from the tool's, in percent.
    #[arg(long, default_value_t = 15.0, value_parser = |s: &str| {
        s.parse::<f64>()
            .map_err(|e| e.to_string())
            .and_then(|p| if (0.0..100.0).contains(&p) { Ok(p) } else { Err("a percentage from 0 to 100".into()) })
    })]
    pub tolerance: f64,
    /// Seed of the round shuffles.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory under which the results directory is created.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Seconds to wait for an instance to reach each marker (at most a day).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_S))]
    pub timeout: u64,
    /// Where the disks go (see lab run --help).
    #[arg(long = "disk-dir", value_name = "DIR", default_value = isolab_resources::disks::DEFAULT_PARENT)]
    pub disk_dir: PathBuf,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `lab check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The exercise: startup, memory, isolation, boundary, density, container-1 … container-7,
    /// container-compare, vmm-1 … vmm-5, vmm-compare.
    pub exercise: Option<String>,
    /// Also write the results as an Exercism-style JSON file (for instructors).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The exercises' directory.
    #[arg(long, default_value = "labs")]
    pub labs: PathBuf,
    /// Check this crate instead of the step's own (e.g. a student's copy).
    #[arg(long = "crate", value_name = "DIR")]
    pub crate_dir: Option<PathBuf>,
    /// Check this program, already built (e.g. on a machine with cargo, for one without),
    /// instead of building the step's crate. Needs no labs directory; records no progress.
    #[arg(long, value_name = "FILE", conflicts_with = "crate_dir")]
    pub program: Option<PathBuf>,
    /// Read these answers instead of labs/answers/EXERCISE.toml.
    #[arg(long, value_name = "FILE")]
    pub answers: Option<PathBuf>,
    /// Seconds to wait for an instance to reach each marker.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// A whole number, or clap's kind of message (the range is the caller's to say).
fn number(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|e| format!("{e}"))
}

impl Experiment {
    /// What the library is asked to run, and the options of the lab that runs it.
    pub fn request(self) -> Result<(plan::Request, CommonArgs), ExperimentError> {
        let (which, run) = match self {
            Experiment::Startup(run) => (Which::Startup, run),
            Experiment::Memory { run, sizes } => (Which::Memory { sizes }, run),
            Experiment::Throughput {
                run,
                kernels,
                disk_mib,
                stream_mib,
                requests,
            } => {
                let kernels = kernels
                    .map(|names| throughput::kernels_named(&names))
                    .transpose()?;
                let sizes = throughput::Sizes {
                    disk_mib,
                    stream_mib,
                    requests,
                };
                (Which::Throughput { kernels, sizes }, run)
            }
            Experiment::Isolation(run) => (Which::Isolation, run),
            Experiment::Restore { run, counts } => (Which::Restore { counts }, run),
            Experiment::Interference(i) => {
                let defaults = interference::Options::default();
                let options = interference::Options {
                    aggressors: match &i.aggressors {
                        Some(names) => interference::aggressors_named(names)?,
                        None => defaults.aggressors,
                    },
                    kernels: i
                        .kernels
                        .as_deref()
                        .map(interference::victims_named)
                        .transpose()?,
                    max_aggressors: i.max_aggressors,
                };
                (Which::Interference(options), i.run)
            }
            Experiment::Images(i) => {
                let which = Which::Density(DensityOptions {
                    max: i.max,
                    reserve_bytes: None,
                    idle_window: std::time::Duration::from_millis(i.idle_window_ms),
                    images: Some(isolab_experiments::density::ImagesOptions { ksm: i.ksm }),
                });
                let mut common = i.common;
                // The experiment is about the layered image, whatever --image says.
                common.guest.image = "layered".into();
                let run = RunArgs {
                    backends: i.backends,
                    runs: None,
                    warmup: None,
                    seed: 1,
                    common,
                };
                (which, run)
            }
            Experiment::All { run, max } => (Which::All { max }, run),
            Experiment::Density(d) => {
                let which = Which::Density(DensityOptions {
                    max: d.max,
                    reserve_bytes: d.reserve_mib.map(|m| m << 20),
                    idle_window: std::time::Duration::from_millis(d.idle_window_ms),
                    images: None,
                });
                let run = RunArgs {
                    backends: d.backends,
                    runs: None,
                    warmup: None,
                    seed: 1,
                    common: d.common,
                };
                (which, run)
            }
        };
        let request = plan::Request {
            which,
            backends: run.backends,
            runs: run.runs,
            warmup: run.warmup,
            seed: run.seed,
            limits: run.common.limits.checked()?,
            out: run.common.out.clone(),
            progress: !run.common.no_progress,
        };
        Ok((request, run.common))
    }
}

impl CheckArgs {
    /// Where the exercises are and how to check them.
    pub fn options(&self) -> isolab_exercises::Options {
        isolab_exercises::Options {
            crate_dir: self.crate_dir.clone(),
            program: self.program.clone(),
            answers: self.answers.clone(),
            timeout: std::time::Duration::from_secs(self.timeout),
            ..isolab_exercises::Options::new(self.labs.clone())
        }
    }
}

impl LimitArgs {
    /// The limits, checked.
    pub fn checked(&self) -> Result<isolab_backends::Limits, ExperimentError> {
        plan::limits(self.memory_mib, self.pids, self.cpus, self.io_mib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use isolab_experiments::{interference, isolation, memory, startup, throughput};

    #[test]
    fn the_help_states_each_experiments_own_defaults() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("run")
            .and_then(|r| r.find_subcommand_mut("startup"))
            .expect("lab run startup")
            .render_long_help()
            .to_string()
            .replace('\n', " ");
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for (name, s) in [
            ("startup", startup::SAMPLING),
            ("memory", memory::SAMPLING),
            ("throughput", throughput::SAMPLING),
            ("isolation", isolation::SAMPLING),
            ("interference", interference::SAMPLING),
        ] {
            assert!(
                help.contains(&format!("{name} {}", s.runs)),
                "{name}: {help}"
            );
        }
        for s in [startup::SAMPLING, memory::SAMPLING, throughput::SAMPLING] {
            assert!(help.contains(&format!("default: {};", s.warmup)), "{help}");
        }
        assert!(help.contains(&format!("isolation {})", isolation::SAMPLING.warmup)));
        assert!(help.contains(&format!("interference {};", interference::SAMPLING.warmup)));
    }
}
