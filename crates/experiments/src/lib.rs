//! Experiments: the measurement method every experiment shares.
//!
//! An experiment is a list of **cases** (a backend and a workload). It runs them in **rounds**:
//! in each round every case runs once, in an order shuffled afresh for the round, so that slow
//! drift of the machine (a warming CPU, a growing page cache, a background job) spreads evenly
//! over all backends instead of favouring whichever runs first. The first rounds are warm-up
//! (caches, page tables, lazily loaded kernel modules) and are recorded but flagged and left out
//! of the statistics.
//!
//! Every sample is appended to the results file as soon as it completes; an interrupted
//! experiment (Ctrl-C, SIGTERM, SIGHUP: see [`isolab_host::interrupt`]) stops at once, tears down the
//! instance it was waiting for and keeps every completed sample.

pub mod density;
pub mod interference;
pub mod isolation;
pub mod memory;
pub mod plan;
pub mod progress;
pub mod restore;
pub mod startup;
pub mod throughput;
pub mod validate;

use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Backend, BackendError, Limits, Outcome};
use isolab_kernels::rng::Rng;
use isolab_payload::{Kernel, Spec};
use isolab_results::{Header, Record, ResultsError, Skipped, Writer, SCHEMA};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// True once the lab was asked to stop (see [`isolab_host::interrupt`]).
pub fn interrupted() -> bool {
    isolab_host::interrupt::requested().is_some()
}

/// Errors of experiments. [`ExperimentError::is_usage`] tells the user's mistakes (exit status 2)
/// from failures of the machine.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A backend name that does not exist.
    #[error("unknown backend '{name}' (known: {known})")]
    UnknownBackend {
        /// The name given.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// A backend that was asked for cannot run here.
    #[error("backend '{backend}' cannot run here: {reason}")]
    Unavailable {
        /// The backend.
        backend: String,
        /// Why, with a hint.
        reason: String,
    },
    /// Nothing could run.
    #[error("no backend can run on this machine (run `lab doctor` to see why)")]
    NoBackends,
    /// The results directory is unusable.
    #[error("cannot write results under {dir}: {source} (choose another directory with --out)")]
    Output {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: ResultsError,
    },
    /// Writing results failed mid-way.
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// A kernel name that the experiment does not run.
    #[error("unknown kernel '{name}' (known: {known})")]
    UnknownKernel {
        /// The name given.
        name: String,
        /// The names it runs.
        known: String,
    },
    /// An aggressor name that the interference experiment does not know.
    #[error("unknown aggressor '{name}' (known: {known})")]
    UnknownAggressor {
        /// The name given.
        name: String,
        /// The names it knows.
        known: String,
    },
    /// A limit that cannot be.
    #[error("{0}")]
    BadLimit(String),
    /// Limits asked of a backend that applies none.
    #[error(
        "{backend} applies no limits (it makes no cgroup: it is a floor for start-up times); \
         drop --memory-limit/--pids-limit/--cpu-limit/--io-limit or choose another backend"
    )]
    LimitsIgnored {
        /// The backend.
        backend: String,
    },
    /// Something that needs cgroups, asked of a lab that cannot use them.
    #[error("{what} needs cgroups, which this lab cannot use: {why}")]
    NeedsCgroups {
        /// What was asked.
        what: String,
        /// Why the lab has no cgroups, and the command that fixes it.
        why: String,
    },
    /// `--hold` with a kernel that ends by itself.
    #[error("--hold keeps a `sleep` workload alive; the other kernels end by themselves")]
    HoldNeedsSleep,
    /// The disks the disk kernels need cannot be made.
    #[error(transparent)]
    Disk(#[from] isolab_resources::disks::DiskError),
    /// The network kernels cannot have the lab's network here.
    #[error(
        "the network kernels need CAP_NET_ADMIN for the lab's own network namespaces and links \
         (run the lab as root; `lab doctor` says what runs without it)"
    )]
    NetworkNeedsRoot,
    /// The images experiment could not prepare the image or KSM.
    #[error("{0}")]
    Images(String),
    /// No backend of the selection can run a kernel asked for.
    #[error("no backend here can run {kernel}: {why}")]
    KernelUnsupported {
        /// The kernel.
        kernel: String,
        /// Each backend's reason.
        why: String,
    },
    /// An instance could not be run (`lab exec`).
    #[error(transparent)]
    Instance(#[from] BackendError),
    /// The field's tools are not installed.
    #[error(transparent)]
    Tools(#[from] isolab_resources::tools::ToolsError),
    /// `lab validate` could not set up or record its runs.
    #[error("{0}")]
    Validate(String),
    /// Every sample of a backend failed; the first error says why.
    #[error("every {backend} run failed; the first failure: {first}")]
    AllFailed {
        /// The backend.
        backend: String,
        /// The first error.
        first: String,
    },
}

impl ExperimentError {
    /// True for mistakes in what the user asked (bad input): exit status 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ExperimentError::UnknownBackend { .. }
                | ExperimentError::UnknownKernel { .. }
                | ExperimentError::UnknownAggressor { .. }
                | ExperimentError::BadLimit(_)
                | ExperimentError::LimitsIgnored { .. }
                | ExperimentError::NeedsCgroups { .. }
                | ExperimentError::HoldNeedsSleep
                | ExperimentError::NetworkNeedsRoot
                | ExperimentError::KernelUnsupported { .. }
                | ExperimentError::Unavailable { .. }
                | ExperimentError::NoBackends
                | ExperimentError::Output { .. }
        ) || matches!(self, ExperimentError::Disk(e) if e.is_usage())
            || matches!(self, ExperimentError::Tools(e) if e.is_usage())
    }
}

/// Before anything starts: can the lab give `specs` what they need — disks that fit, on a disk
/// that does direct I/O; its own network, which needs CAP_NET_ADMIN? A refusal is the user's to
/// fix, and says how.
pub fn check_provisions(lab: &Lab, specs: &[Spec]) -> Result<(), ExperimentError> {
    if let Some(bytes) = specs.iter().map(Spec::disk_bytes).max().filter(|b| *b > 0) {
        isolab_resources::disks::check(&lab.settings.disk_parent, bytes)?;
    }
    if specs.iter().any(|s| s.kernel.needs_network()) && !nix::unistd::geteuid().is_root() {
        return Err(ExperimentError::NetworkNeedsRoot);
    }
    Ok(())
}

/// The backends an experiment will use, and those it could not.
pub struct Selection {
    /// Backends to run.
    pub backends: Vec<Box<dyn Backend>>,
    /// Backends left out, and why.
    pub skipped: Vec<Skipped>,
}

impl Selection {
    /// Every backend left out and why, in one line: what a run that can run nothing says.
    pub fn why_skipped(&self) -> String {
        self.skipped
            .iter()
            .map(|s| format!("{}: {}", s.backend, s.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keep only the backends that can run `kernels` ([`Backend::supports`]): a backend that
    /// refuses one of them skips that one, and one that refuses them all is left out, each
    /// refusal recorded with its reason. Refused when no backend is left for one of them.
    pub fn keep_able(&mut self, lab: &Lab, kernels: &[Kernel]) -> Result<(), ExperimentError> {
        let mut kept = Vec::new();
        for backend in std::mem::take(&mut self.backends) {
            let mut refused = 0;
            for &kernel in kernels {
                if let Err(why) = backend.supports(lab, kernel) {
                    refused += 1;
                    self.skipped.push(Skipped {
                        backend: backend.name().to_string(),
                        reason: format!("{kernel}: {why}"),
                    });
                }
            }
            if refused < kernels.len() {
                kept.push(backend);
            }
        }
        self.backends = kept;
        for &kernel in kernels {
            if !self
                .backends
                .iter()
                .any(|b| b.supports(lab, kernel).is_ok())
            {
                return Err(ExperimentError::KernelUnsupported {
                    kernel: kernel.to_string(),
                    why: self.why_skipped(),
                });
            }
        }
        Ok(())
    }
}

/// Refuse `what` when the lab has no usable cgroups (see [`Lab::cgroup_problem`]): memory
/// figures and limits come from cgroups, and a run without them would show zeros or run
/// unlimited. The error says why there are none and the command that fixes it.
pub fn require_cgroups(lab: &Lab, what: &str) -> Result<(), ExperimentError> {
    match lab.cgroup_problem() {
        Some(why) => Err(ExperimentError::NeedsCgroups {
            what: what.to_string(),
            why: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// Pick backends for instances under `limits`. With `names`, exactly those (an unknown or
/// unavailable one is an error, and so is one that cannot apply the limits). Without, every
/// default backend that can run here; the others are listed as skipped.
pub fn select(
    lab: &Lab,
    names: Option<&[String]>,
    limits: &Limits,
) -> Result<Selection, ExperimentError> {
    if limits.any() {
        require_cgroups(lab, "--memory-limit/--pids-limit/--cpu-limit/--io-limit")?;
    }
    if limits.io_bps.is_some() {
        lab.io_disk()
            .map_err(|why| ExperimentError::BadLimit(format!("--io-limit: {why}")))?;
    }
    let mut selection = Selection {
        backends: Vec::new(),
        skipped: Vec::new(),
    };
    match names {
        Some(names) => {
            for name in names {
                let backend =
                    backend::by_name(name).ok_or_else(|| ExperimentError::UnknownBackend {
                        name: name.clone(),
                        known: backend::names().join(", "),
                    })?;
                if limits.any() && !backend.applies_limits() {
                    return Err(ExperimentError::LimitsIgnored {
                        backend: name.clone(),
                    });
                }
                match backend.availability(lab) {
                    // --force: run it anyway; the run reports where it stops.
                    Availability::Unavailable(_) if lab.settings.force => {}
                    Availability::Unavailable(reason) => {
                        return Err(ExperimentError::Unavailable {
                            backend: name.clone(),
                            reason,
                        })
                    }
                    Availability::Available => {}
                }
                if !selection.backends.iter().any(|b| b.name() == name) {
                    selection.backends.push(backend);
                }
            }
        }
        None => {
            // Every backend the lab knows is either run or named with why not: a reader of the
            // results must never wonder whether a model was forgotten.
            for backend in backend::registry() {
                let unavailable = match backend.availability(lab) {
                    Availability::Available => None,
                    Availability::Unavailable(reason) => Some(reason),
                };
                // Of two reasons, what stops it here comes first: it is the one to fix.
                let reason = unavailable.or_else(|| backend.left_out_by_default());
                let reason = reason.or_else(|| {
                    (limits.any() && !backend.applies_limits()).then(|| "applies no limits".into())
                });
                match reason {
                    None => selection.backends.push(backend),
                    Some(reason) => selection.skipped.push(Skipped {
                        backend: backend.name().to_string(),
                        reason,
                    }),
                }
            }
        }
    }
    if selection.backends.is_empty() {
        return Err(ExperimentError::NoBackends);
    }
    Ok(selection)
}

pub use plan::Sampling;

/// How many samples, and where they go.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Measured rounds.
    pub runs: u32,
    /// Warm-up rounds.
    pub warmup: u32,
    /// Seed of the round shuffles: the order in which each round runs its cases (`--seed`).
    /// Recorded as `shuffle_seed`, so that no reader takes it for the workload's own `seed=`
    /// (the seed of the kernels' random data, part of every workload) nor for the report's
    /// bootstrap seed. Files written before it had that name call it `seed`.
    #[serde(rename = "shuffle_seed")]
    pub seed: u64,
    /// Limits of every instance.
    pub limits: Limits,
    /// Directory under which the results directory is made.
    #[serde(skip)]
    pub out: PathBuf,
    /// Show progress: a bar on a terminal, a line per finished round elsewhere
    /// ([`progress::Progress`]).
    #[serde(skip)]
    pub progress: bool,
}

/// One backend running one workload.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Index into [`Selection::backends`].
    pub backend: usize,
    /// The workload.
    pub spec: Spec,
}

/// What a campaign produced.
#[derive(Debug)]
pub struct Campaign {
    /// The results file.
    pub results: PathBuf,
    /// Samples recorded (warm-up included).
    pub samples: usize,
    /// Failed samples: backend and error.
    pub failures: Vec<(String, String)>,
    /// Stopped early by a signal.
    pub interrupted: bool,
}

/// Run `cases` in shuffled rounds, appending every sample to a new results file under
/// `settings.out`.
pub fn campaign(
    lab: &Lab,
    experiment: &str,
    selection: &Selection,
    cases: &[Case],
    settings: &Settings,
    extra_settings: serde_json::Value,
) -> Result<Campaign, ExperimentError> {
    campaign_by(
        lab,
        experiment,
        selection,
        cases,
        settings,
        extra_settings,
        |case| (case.backend, case.spec.kernel.to_string()),
        |case| {
            let backend = &selection.backends[case.backend];
            Sample {
                spec: case.spec,
                result: backend.run(lab, &case.spec, &settings.limits),
                neighbours: None,
            }
        },
    )
}

/// One sample of a campaign: the workload that was measured, its run (or why there is none),
/// and — in the interference experiment — what ran beside it.
pub struct Sample {
    /// The workload measured.
    pub spec: Spec,
    /// Its run.
    pub result: Result<isolab_backends::Run, BackendError>,
    /// The instances beside it.
    pub neighbours: Option<isolab_results::Neighbours>,
}

/// [`campaign`] for cases of any kind: `describe` says which backend a case runs on (an index
/// into the selection) and how the progress bar names it, `sample` measures it once.
#[allow(clippy::too_many_arguments)]
pub fn campaign_by<C>(
    lab: &Lab,
    experiment: &str,
    selection: &Selection,
    cases: &[C],
    settings: &Settings,
    extra_settings: serde_json::Value,
    describe: impl Fn(&C) -> (usize, String),
    mut sample: impl FnMut(&C) -> Sample,
) -> Result<Campaign, ExperimentError> {
    let mut settings_json = serde_json::to_value(settings).expect("settings serialise");
    if let (Some(obj), serde_json::Value::Object(extra)) =
        (settings_json.as_object_mut(), extra_settings)
    {
        obj.extend(extra);
    }
    let mut writer = open_results(lab, experiment, selection, settings_json, &settings.out)?;

    let rounds = settings.warmup + settings.runs;
    let mut progress = progress::Progress::new(
        settings.progress,
        experiment,
        rounds as u64 * cases.len() as u64,
    );
    progress.begin(&format!(
        "{} case{} on {} in {rounds} round{} ({} warm-up): {} samples",
        cases.len(),
        if cases.len() == 1 { "" } else { "s" },
        selection
            .backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", "),
        if rounds == 1 { "" } else { "s" },
        settings.warmup,
        rounds as usize * cases.len(),
    ));
    let mut rng = Rng::new(settings.seed);
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let mut outcome = Campaign {
        results: writer.path().to_path_buf(),
        samples: 0,
        failures: Vec::new(),
        interrupted: false,
    };
    let mut succeeded = vec![false; selection.backends.len()];
    'rounds: for round in 0..rounds {
        let warmup = round < settings.warmup;
        rng.shuffle(&mut order);
        for (position, &i) in order.iter().enumerate() {
            if interrupted() {
                outcome.interrupted = true;
                break 'rounds;
            }
            let case = &cases[i];
            let (index, label) = describe(case);
            let backend = &selection.backends[index];
            let message = format!(
                "{}{} {label}",
                if warmup { "warm-up " } else { "" },
                backend.name(),
            );
            progress.running(&message);
            let Sample {
                spec,
                result,
                neighbours,
            } = sample(case);
            // A sample cut short by Ctrl-C is not a sample.
            if interrupted() {
                outcome.interrupted = true;
                break 'rounds;
            }
            let completed = matches!(&result, Ok(run) if run.outcome == Outcome::Completed);
            let mut record = match result {
                Ok(run) => {
                    if run.outcome == Outcome::Completed {
                        succeeded[index] = true;
                    } else {
                        let why = match &run.outcome {
                            Outcome::Failed { reason } => reason.clone(),
                            Outcome::OomKilled => "killed by the OOM killer".into(),
                            other => format!("{other:?}"),
                        };
                        outcome.failures.push((backend.name().to_string(), why));
                    }
                    run.record(backend.family(), round, position as u32, warmup)
                }
                Err(e @ BackendError::LimitsNotInForce { .. }) => {
                    // Every sample after this one would claim limits that do not hold: the
                    // experiment stops here, saying which.
                    let mut record =
                        failed_record(backend.as_ref(), &spec, &e, round, position, warmup);
                    record.neighbours = neighbours;
                    writer.append(&Record::Run(Box::new(record)))?;
                    progress.finish();
                    return Err(ExperimentError::Instance(e));
                }
                Err(e) => {
                    outcome
                        .failures
                        .push((backend.name().to_string(), e.to_string()));
                    failed_record(backend.as_ref(), &spec, &e, round, position, warmup)
                }
            };
            record.neighbours = neighbours;
            writer.append(&Record::Run(Box::new(record)))?;
            outcome.samples += 1;
            progress.sample(&message, completed);
        }
        progress.step_done(&format!(
            "round {}/{rounds}{}",
            round + 1,
            if warmup { " (warm-up)" } else { "" }
        ));
    }
    progress.finish();
    // A backend that never once worked is an error worth stopping on, not a table of failures.
    if !outcome.interrupted {
        for (i, ok) in succeeded.iter().enumerate() {
            let name = selection.backends[i].name();
            if !ok {
                if let Some((_, first)) = outcome.failures.iter().find(|(b, _)| b == name) {
                    return Err(ExperimentError::AllFailed {
                        backend: name.to_string(),
                        first: first.clone(),
                    });
                }
            }
        }
    }
    Ok(outcome)
}

/// Run every workload of `specs` on every selected backend (see [`select`]), in shuffled rounds;
/// `skipped` — what was left out before — goes into the results with what this leaves out.
pub fn every_backend(
    lab: &Lab,
    backends: Option<&[String]>,
    experiment: &str,
    specs: &[Spec],
    settings: &Settings,
    extra_settings: serde_json::Value,
    skipped: Vec<Skipped>,
) -> Result<Campaign, ExperimentError> {
    check_provisions(lab, specs)?;
    let mut selection = select(lab, backends, &settings.limits)?;
    selection.skipped.extend(skipped);
    // A backend that cannot run a kernel (a bare guest has no disk) skips it, and says why.
    let kernels: Vec<Kernel> = specs.iter().map(|s| s.kernel).collect();
    selection.keep_able(lab, &kernels)?;
    let cases: Vec<Case> = (0..selection.backends.len())
        .flat_map(|backend| specs.iter().map(move |&spec| Case { backend, spec }))
        .filter(|c| {
            selection.backends[c.backend]
                .supports(lab, c.spec.kernel)
                .is_ok()
        })
        .collect();
    campaign(
        lab,
        experiment,
        &selection,
        &cases,
        settings,
        extra_settings,
    )
}

/// Start a new results directory under `out` with the environment record of `experiment`.
pub fn open_results(
    lab: &Lab,
    experiment: &str,
    selection: &Selection,
    settings: serde_json::Value,
    out: &Path,
) -> Result<Writer, ExperimentError> {
    let header = Header {
        schema: SCHEMA.to_string(),
        experiment: experiment.to_string(),
        environment: isolab_results::Environment::capture(&match lab.cgroup_problem() {
            None => lab.cgroups().map_or("?", |h| h.description()).to_string(),
            Some(why) => format!("{}{why}", isolab_results::CGROUP_UNAVAILABLE),
        }),
        settings,
        skipped: selection.skipped.clone(),
    };
    Writer::new_dir(out, experiment)
        .and_then(|dir| Writer::create(&dir, &header))
        .map_err(|source| ExperimentError::Output {
            dir: out.to_path_buf(),
            source,
        })
}

/// The record of a sample whose launch failed.
fn failed_record(
    backend: &dyn Backend,
    spec: &Spec,
    error: &BackendError,
    round: u32,
    order: usize,
    warmup: bool,
) -> isolab_results::RunRecord {
    isolab_results::RunRecord {
        backend: backend.name().to_string(),
        family: backend.family(),
        round,
        order: order as u32,
        warmup,
        workload: spec.into(),
        outcome: Outcome::Failed {
            reason: error.to_string(),
        },
        startup_ns: None,
        work_ns: None,
        phases: Default::default(),
        output: None,
        memory_at_ready: None,
        memory_at_done: None,
        cgroup_peak_bytes: None,
        cpu_ns: None,
        probe: Vec::new(),
        facts: Default::default(),
        neighbours: None,
    }
}

/// The directory results go to when `--out` is not given.
pub fn default_out() -> &'static Path {
    Path::new("reports")
}
