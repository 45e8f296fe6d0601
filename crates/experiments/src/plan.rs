//! `lab run …` as one request: which experiments, and the options they share.
//!
//! Each experiment owns its sampling defaults ([`Sampling`]: `startup::SAMPLING`,
//! `memory::SAMPLING`, …), because what each measures needs that many rounds: start-up times
//! are noisy and cheap, so 30 rounds after 3 warm-up ones; what a workload sees does not vary,
//! so one round. `lab run all` is the same experiments, one after the other, into one
//! directory. The command line only fills a [`Request`]; [`run`] does the rest.

use crate::density::DensitySettings;
use crate::{density, interrupted, ExperimentError, Settings};
use isolab_backends::lab::Lab;
use isolab_backends::{Limits, Run};
use isolab_payload::{Kernel, Spec};
use isolab_results::Writer;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many rounds an experiment runs, after how many warm-up rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    /// Measured rounds.
    pub runs: u32,
    /// Warm-up rounds, recorded and left out of the statistics.
    pub warmup: u32,
}

/// The density experiment's own options.
#[derive(Clone, Debug, PartialEq)]
pub struct DensityOptions {
    /// The top of the ladder.
    pub max: u32,
    /// Memory to leave the host, in bytes (default: [`density::default_reserve_bytes`]).
    pub reserve_bytes: Option<u64>,
    /// How long to watch the idle instances' CPU use at each step.
    pub idle_window: Duration,
    /// Climb on the lab's layered image and measure what sharing it saves (`lab run images`).
    pub images: Option<density::ImagesOptions>,
}

impl DensityOptions {
    /// The options `lab run all` climbs the ladder with.
    pub fn up_to(max: u32) -> DensityOptions {
        DensityOptions {
            max,
            reserve_bytes: None,
            idle_window: density::DEFAULT_IDLE_WINDOW,
            images: None,
        }
    }
}

/// Which experiment(s) to run.
#[derive(Clone, Debug, PartialEq)]
pub enum Which {
    /// Start-up time.
    Startup,
    /// Memory per instance, for these working-set sizes (MiB).
    Memory {
        /// Sizes in MiB.
        sizes: Vec<u64>,
    },
    /// Throughput of these kernels.
    Throughput {
        /// The kernels (`None`: every one this lab can provide for).
        kernels: Option<Vec<Kernel>>,
        /// The device kernels' sizes, where not their defaults.
        sizes: crate::throughput::Sizes,
    },
    /// What the workload can see.
    Isolation,
    /// Whether one instance's load or failure reaches its neighbours.
    Interference(crate::interference::Options),
    /// How many idle instances fit.
    Density(DensityOptions),
    /// Cold starts against restored ones, with N restored instances alive together for each
    /// of these counts.
    Restore {
        /// The counts.
        counts: Vec<u32>,
    },
    /// Every experiment, into one directory; the density ladder up to `max`.
    All {
        /// The top of the density ladder.
        max: u32,
    },
}

/// One `lab run`.
#[derive(Clone, Debug)]
pub struct Request {
    /// What to run.
    pub which: Which,
    /// Backends to compare (`None`: every default backend available here).
    pub backends: Option<Vec<String>>,
    /// Measured rounds, when not each experiment's own.
    pub runs: Option<u32>,
    /// Warm-up rounds, when not each experiment's own.
    pub warmup: Option<u32>,
    /// Seed of the round shuffles.
    pub seed: u64,
    /// Limits of every instance.
    pub limits: Limits,
    /// Directory under which results directories are made.
    pub out: PathBuf,
    /// Show progress: a bar on a terminal, a line per finished step elsewhere.
    pub progress: bool,
}

/// What one experiment left: its results file, its failed samples, whether Ctrl-C cut it short.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The results file.
    pub results: PathBuf,
    /// Samples that failed: backend and error.
    pub failures: Vec<(String, String)>,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
}

impl From<crate::Campaign> for Finished {
    fn from(c: crate::Campaign) -> Self {
        Finished {
            results: c.results,
            failures: c.failures,
            interrupted: c.interrupted,
        }
    }
}

impl From<density::DensityOutcome> for Finished {
    fn from(d: density::DensityOutcome) -> Self {
        // A ladder that could not start even its first instance measured nothing: that is a
        // failure of the run (exit status 1), not a density figure. One that stopped higher up
        // found where the host (or the backend) gives out, which is what it is there to find.
        let failures = d
            .ends
            .iter()
            .filter(|e| e.n == 0 && e.reason != density::INTERRUPTED_REASON)
            .map(|e| (e.backend.clone(), e.reason.clone()))
            .collect();
        Finished {
            results: d.results,
            failures,
            interrupted: d.interrupted,
        }
    }
}

/// What a `lab run` left: each experiment's results, and the directory to render one report of.
#[derive(Clone, Debug)]
pub struct Ran {
    /// Each experiment, in the order it ran.
    pub finished: Vec<Finished>,
    /// The run's directory: the experiment's, or the one `all` made for all of them.
    pub dir: Option<PathBuf>,
}

impl Request {
    /// The sampling settings of an experiment whose own defaults are `own`.
    fn settings(&self, own: Sampling, out: &Path) -> Settings {
        Settings {
            runs: self.runs.unwrap_or(own.runs),
            warmup: self.warmup.unwrap_or(own.warmup),
            seed: self.seed,
            limits: self.limits,
            out: out.to_path_buf(),
            progress: self.progress,
        }
    }

    fn density(&self, options: &DensityOptions, out: &Path) -> DensitySettings {
        DensitySettings {
            max: options.max,
            reserve_bytes: options
                .reserve_bytes
                .unwrap_or_else(density::default_reserve_bytes),
            idle_window: options.idle_window,
            images: options.images,
            limits: self.limits,
            out: out.to_path_buf(),
            progress: self.progress,
        }
    }
}

/// Limits from the command line's figures (`--memory-limit` MiB, `--pids-limit`,
/// `--cpu-limit` cores, `--io-limit` MiB/s), checked against the kernel's ranges on this
/// machine (see [`Limits::checked`]).
pub fn limits(
    memory_mib: Option<u64>,
    pids: Option<u64>,
    cpus: Option<f64>,
    io_mib: Option<u64>,
) -> Result<Limits, ExperimentError> {
    Limits::checked(
        memory_mib,
        pids,
        cpus,
        io_mib,
        isolab_host::facts::cpu_count(),
    )
    .map_err(ExperimentError::BadLimit)
}

/// `lab exec`: one instance of `kernel` (with `mib` and `iters` where given) on `backend`.
///
/// The `sleep` kernel idles until the host lets it go: after `hold`, or — without one — when
/// the lab is asked to stop (Ctrl-C, SIGTERM; see [`isolab_host::interrupt`]).
pub fn once(
    lab: &Lab,
    backend: &str,
    kernel: &str,
    mib: Option<u64>,
    iters: Option<u64>,
    limits: &Limits,
    hold: Option<Duration>,
) -> Result<Run, ExperimentError> {
    let kernel =
        Kernel::from_name(kernel.as_bytes()).ok_or_else(|| ExperimentError::UnknownKernel {
            name: kernel.to_string(),
            known: Kernel::ALL.map(Kernel::name).join(", "),
        })?;
    if hold.is_some() && kernel != Kernel::Sleep {
        return Err(ExperimentError::HoldNeedsSleep);
    }
    let mut spec = Spec::default_for(kernel);
    spec.mib = mib.unwrap_or(spec.mib);
    spec.iters = iters.unwrap_or(spec.iters);
    // A fork bomb or a memory hog never runs without the lab's limits on it (and so never on
    // a backend that applies none).
    let limits = &crate::interference::safe_for(&spec, limits);
    let selection = crate::select(lab, Some(&[backend.to_string()]), limits)?;
    let backend = &selection.backends[0];
    if let Err(why) = backend.supports(lab, kernel) {
        return Err(ExperimentError::KernelUnsupported {
            kernel: kernel.to_string(),
            why: format!("{}: {why}", backend.name()),
        });
    }
    crate::check_provisions(lab, &[spec])?;
    if kernel != Kernel::Sleep {
        return Ok(backend.run(lab, &spec, limits)?);
    }
    let mut instance = backend.start(lab, &spec, limits)?;
    instance.wait_ready()?;
    match hold {
        Some(d) => {
            isolab_host::interrupt::sleep(d);
        }
        None => {
            isolab_host::interrupt::wait();
        }
    }
    Ok(instance.stop()?)
}

/// Run what `request` asks, on `lab`.
pub fn run(lab: &Lab, request: &Request) -> Result<Ran, ExperimentError> {
    // Memory figures come from the instances' cgroups: without them these experiments would
    // have nothing to show but zeros. Refused before anything starts.
    match &request.which {
        Which::Memory { .. } => crate::require_cgroups(lab, "lab run memory")?,
        Which::Density(_) => crate::require_cgroups(lab, "lab run density")?,
        Which::Restore { .. } => crate::require_cgroups(lab, "lab run restore")?,
        Which::All { .. } => crate::require_cgroups(lab, "lab run all (memory, density)")?,
        _ => {}
    }
    let backends = request.backends.as_deref();
    let one = |which: &Which, out: &Path| -> Result<Finished, ExperimentError> {
        Ok(match which {
            Which::Startup => crate::startup::run(
                lab,
                backends,
                &request.settings(crate::startup::SAMPLING, out),
            )?
            .into(),
            Which::Memory { sizes } => crate::memory::run(
                lab,
                backends,
                sizes,
                &request.settings(crate::memory::SAMPLING, out),
            )?
            .into(),
            Which::Throughput { kernels, sizes } => {
                let (kernels, skipped) = match kernels {
                    Some(k) => (k.clone(), Vec::new()),
                    None => crate::throughput::default_kernels(lab),
                };
                crate::throughput::run(
                    lab,
                    backends,
                    &kernels,
                    *sizes,
                    skipped,
                    &request.settings(crate::throughput::SAMPLING, out),
                )?
                .into()
            }
            Which::Isolation => crate::isolation::run(
                lab,
                backends,
                &request.settings(crate::isolation::SAMPLING, out),
            )?
            .into(),
            Which::Interference(options) => crate::interference::run(
                lab,
                backends,
                options,
                &request.settings(crate::interference::SAMPLING, out),
            )?
            .into(),
            Which::Density(options) => {
                density::run(lab, backends, &request.density(options, out))?.into()
            }
            Which::Restore { counts } => crate::restore::run(
                lab,
                backends,
                counts,
                &request.settings(crate::restore::SAMPLING, out),
            )?
            .into(),
            Which::All { .. } => unreachable!("`all` is a list of the others"),
        })
    };
    let Which::All { max } = request.which else {
        let finished = one(&request.which, &request.out)?;
        let dir = finished.results.parent().map(Path::to_path_buf);
        return Ok(Ran {
            finished: vec![finished],
            dir,
        });
    };
    // One directory for the whole set, one subdirectory per experiment.
    let dir = Writer::new_dir(&request.out, "all").map_err(|source| ExperimentError::Output {
        dir: request.out.clone(),
        source,
    })?;
    let mut finished = Vec::new();
    for which in [
        Which::Startup,
        Which::Memory {
            sizes: crate::memory::DEFAULT_SIZES_MIB.to_vec(),
        },
        Which::Throughput {
            kernels: None,
            sizes: Default::default(),
        },
        Which::Isolation,
        Which::Density(DensityOptions::up_to(max)),
    ] {
        // After a stop signal, no further experiment starts.
        if interrupted() {
            break;
        }
        finished.push(one(&which, &dir)?);
    }
    Ok(Ran {
        finished,
        dir: Some(dir),
    })
}
