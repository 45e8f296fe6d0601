//! `lab run interference`: does one instance's load, or its failure, reach its neighbours?
//!
//! One source says a VM's isolation "ensures that the performance and stability of one VM do
//! not affect others running on the same host"; another, that containers "give more granular
//! control over resources". This experiment puts a **victim** instance beside 0, 1, …, k
//! **aggressor** instances of the *same* backend and measures the victim's slowdown against
//! running alone, paired by round, and whether it survives at all:
//!
//! | aggressor | what it does                                  | victim (by default) |
//! |-----------|-----------------------------------------------|---------------------|
//! | `cpu`     | the `cpu` kernel, endless: a CPU hog          | `cpu`               |
//! | `mem`     | the `mem` kernel, endless: a memory-bandwidth streamer | `mem`      |
//! | `disk`    | `disk-seq`, pass after pass: a disk writer    | `disk-rand`         |
//! | `fork`    | `fork-bomb`: fork until the kernel refuses    | `syscall`           |
//! | `oom`     | `mem-hog`: grow until the OOM killer strikes  | `mem`               |
//!
//! It runs everything twice: **unlimited** (no limits, as `docker run` gives by default) and
//! **limited** (every instance under the same CPU, memory, pids and I/O limits: the user's, or
//! defaults the lab chooses and records), so a student sees what a cgroup buys — a CPU share, a
//! memory wall, a process count, a disk budget — and what it does not: memory bandwidth and the
//! CPU's caches have no limit at all.
//!
//! **Safe by construction.** A fork bomb always runs under a pids limit the lab chose, and a
//! memory hog under a memory limit the lab chose, even in the unlimited configuration (in a VM
//! these are backstops: the guest's own limits act first). A limit written is not yet a limit
//! in force — a runtime may put its container where the lab's cgroup does not reach — so
//! before the first aggressor starts, an idle instance of every backend under every set of
//! limits the experiment uses is read back ([`preflight`]), and every instance is again at its
//! `ready`; the experiment stops where one does not hold. Every aggressor is bounded in time,
//! is stopped the moment its victim is done, and is an ordinary instance: its `Drop` kills and
//! removes it, and the lab's ledger and guardian remove it if the lab itself is killed.

use crate::{
    campaign_by, check_provisions, interrupted, require_cgroups, select, Campaign, ExperimentError,
    Sample, Sampling, Settings,
};
use isolab_backends::lab::Lab;
use isolab_backends::{Backend, BackendError, Instance, Limits, Run};
use isolab_payload::{Kernel, Spec};
use isolab_resources::cgroup::{Activity, MIN_CPUS};
pub use isolab_results::{Aggressor, SAFETY_MEMORY_BYTES, SAFETY_PIDS};
use isolab_results::{AggressorRecord, Config, Facts, Neighbours, Skipped, WorkEvidence};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Iterations or passes that no aggressor finishes before the lab stops it.
const ENDLESS: u64 = 1 << 40;

/// What each aggressor runs in this experiment, and the victim it is measured against.
pub trait AggressorWork {
    /// The workload an aggressor runs; `bound_ms` bounds the two that end themselves.
    fn spec(self, bound_ms: u64) -> Spec;

    /// The victim each aggressor is measured against unless `--kernels` says otherwise: the
    /// kernel that needs what the aggressor takes. A fork bomb's retries are system calls that
    /// fail late in the kernel; the victim's own system calls share that kernel.
    fn victim(self) -> Kernel;

    /// True when its kernel marks `start` once it is at work (after its set-up): the victim
    /// starts only then.
    fn marks_start(self) -> bool;

    /// Whether it did its work beside the victim, judged from what its own cgroup and
    /// processes showed ([`WorkEvidence`]) and what it reported; `Err`: why not, in words. A
    /// sample whose aggressor did not is *not measured*: the victim ran beside nothing.
    fn at_work(self, record: &AggressorRecord, limits: &Limits) -> Result<(), String>;
}

/// The least CPU time a CPU hog or a memory streamer must use while its victim runs, as a
/// fraction of that time, to count as at work: a tenth of one CPU. Beside a victim on a shared
/// machine, under the limited configuration's CPU share, it gets far more than that; an
/// aggressor under this is stalled, throttled to nothing or gone.
const LEAST_CPU_SHARE: f64 = 0.1;

impl AggressorWork for Aggressor {
    fn spec(self, bound_ms: u64) -> Spec {
        match self {
            Aggressor::Cpu => Spec::new(Kernel::Cpu, 0, ENDLESS),
            Aggressor::Mem => Spec::new(Kernel::Mem, 64, ENDLESS),
            Aggressor::Disk => Spec::new(Kernel::DiskSeq, 64, ENDLESS),
            Aggressor::Fork => Spec::new(Kernel::ForkBomb, 0, bound_ms),
            Aggressor::Oom => Spec {
                iters: bound_ms,
                ..Spec::default_for(Kernel::MemHog)
            },
        }
    }

    fn victim(self) -> Kernel {
        match self {
            Aggressor::Cpu => Kernel::Cpu,
            Aggressor::Mem | Aggressor::Oom => Kernel::Mem,
            Aggressor::Disk => Kernel::DiskRand,
            Aggressor::Fork => Kernel::Syscall,
        }
    }

    fn marks_start(self) -> bool {
        !matches!(self, Aggressor::Cpu)
    }

    fn at_work(self, record: &AggressorRecord, limits: &Limits) -> Result<(), String> {
        let e = &record.evidence;
        let f = &record.facts;
        let how = || outcome_text(&record.outcome);
        // First: was it there at all while the victim ran? An instance whose cgroup holds no
        // task has ended — a sandbox the host's OOM killer killed, a runtime that gave up.
        if e.ended_before_victim_started == Some(true) || e.tasks_at_victim_start == Some(0) {
            return Err(format!(
                "its instance had ended before the victim started ({}{})",
                how(),
                what_it_did(self, record)
            ));
        }
        // A load (CPU, memory bandwidth, disk) must last as long as the victim; a failure (a
        // bomb, a hog) may end in it — its instance killed at its limit is what it is for.
        let ended = e.ended_before_victim_done == Some(true) || e.tasks_at_victim_done == Some(0);
        if ended && !self.is_failure() {
            return Err(format!(
                "its instance ended while the victim ran ({}{})",
                how(),
                what_it_did(self, record)
            ));
        }
        match self {
            Aggressor::Fork => {
                let beyond = bomb_tasks(e).unwrap_or(0);
                if f.forks.unwrap_or(0) == 0 && beyond <= 1 {
                    return Err(format!(
                        "the bomb never forked (it reported {} forks; its cgroup held at most {} \
                         tasks, the runtime's own {}; pids.max {})",
                        f.forks.unwrap_or(0),
                        opt(e.tasks_peak),
                        opt(e.runtime_tasks),
                        opt(limits.pids)
                    ));
                }
                Ok(())
            }
            Aggressor::Oom => {
                let peak = record.cgroup_peak_bytes.unwrap_or(0);
                let filled = limits.memory_bytes.is_some_and(|m| peak >= m / 2);
                let grew =
                    f.hog_bytes.unwrap_or(0) > 0 || f.guest_oom_kills.unwrap_or(0) > 0 || filled;
                if !grew {
                    return Err(format!(
                        "the hog never allocated (it reported {}; its cgroup's peak {} of a {} limit)",
                        f.hog_bytes.map_or("nothing".into(), mib),
                        mib(peak),
                        limits.memory_bytes.map_or("no".into(), mib),
                    ));
                }
                Ok(())
            }
            Aggressor::Disk => match e.written_bytes_beside_victim {
                Some(0) => {
                    Err("the disk writer wrote nothing to storage while the victim ran".into())
                }
                None => Err("the disk writer's writes could not be read back".into()),
                Some(_) => Ok(()),
            },
            Aggressor::Cpu | Aggressor::Mem => {
                let (Some(cpu), Some(window)) = (e.cpu_ns_beside_victim, e.victim_window_ns) else {
                    return Err("its CPU time beside the victim could not be read back".into());
                };
                if (cpu as f64) < LEAST_CPU_SHARE * window as f64 {
                    return Err(format!(
                        "it used {:.0} ms of CPU time in the victim's {:.0} ms: nothing measurable",
                        cpu as f64 / 1e6,
                        window as f64 / 1e6
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The tasks a bomb's instance held beyond the runtime's own, at its most.
fn bomb_tasks(e: &WorkEvidence) -> Option<u64> {
    Some(e.tasks_peak?.saturating_sub(e.runtime_tasks?))
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "unknown".into(), |n| n.to_string())
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn outcome_text(o: &isolab_results::Outcome) -> String {
    use isolab_results::Outcome;
    match o {
        Outcome::Completed => "it completed".into(),
        Outcome::OomKilled => "the OOM killer killed it".into(),
        Outcome::Stopped => "stopped by the lab".into(),
        Outcome::Failed { reason } => reason.clone(),
    }
}

/// What a bomb or a hog did before its instance ended, as its cgroup showed it: a sandbox that
/// dies of its own bomb still forked.
fn what_it_did(a: Aggressor, r: &AggressorRecord) -> String {
    let e = &r.evidence;
    match a {
        Aggressor::Fork => match (e.tasks_peak, e.runtime_tasks) {
            (Some(peak), Some(own)) => format!(
                "; its cgroup reached {peak} tasks, the runtime's own {own}{}",
                r.facts
                    .pids_max_refused
                    .map_or(String::new(), |n| format!(", pids.max refused {n}"))
            ),
            _ => String::new(),
        },
        Aggressor::Oom => r.cgroup_peak_bytes.map_or(String::new(), |p| {
            format!(
                "; its cgroup peaked at {}{}",
                mib(p),
                r.facts
                    .oom_kills
                    .map_or(String::new(), |n| format!(", {n} OOM kill(s) in it"))
            )
        }),
        _ => String::new(),
    }
}

/// A victim's workload: its kernel's default, run longer where that is short. A victim must
/// span many of the scheduler's time slices (a few ms) and several periods of a CPU limit
/// (100 ms), or a share or a throttle would not show in its time: the `cpu` kernel runs 10×
/// its iterations (a third of a second natively), `mem` 16× its passes, `syscall` 50× its
/// calls (a seventh of a second natively; a bare guest's calls are VM exits, 60 µs each under
/// nested virtualization, so about a minute there — `syscall` is no bare VM's victim by
/// default). The others already take a few hundred milliseconds.
pub fn victim_spec(kernel: Kernel) -> Spec {
    let mut spec = Spec::default_for(kernel);
    spec.iters = spec.iters.saturating_mul(match kernel {
        Kernel::Cpu => 10,
        Kernel::Mem => 16,
        Kernel::Syscall => 50,
        _ => 1,
    });
    spec
}

/// 6 measured rounds — the fewest from which the claims ledger calls a difference — after one
/// warm-up round. Each round runs every victim alone and beside every count of every
/// aggressor, in both configurations.
pub const SAMPLING: Sampling = Sampling { runs: 6, warmup: 1 };

/// The most aggressors beside a victim unless `--max-aggressors` says otherwise.
pub const DEFAULT_MAX_AGGRESSORS: u32 = 2;

/// The limited configuration's defaults when no limit is given: a memory limit above a Linux
/// guest's RAM with the victims' working sets, room for a bomb's processes, and a disk budget
/// well below what a disk writer takes unlimited. The CPU limit is the machine's CPUs shared
/// out among a victim and its aggressors ([`default_limited`]).
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// See [`DEFAULT_MEMORY_MIB`].
pub const DEFAULT_PIDS: u64 = 64;
/// See [`DEFAULT_MEMORY_MIB`].
pub const DEFAULT_IO_MIB: u64 = 32;

/// How long aggressors work before the victim starts, once they have reached their `start`:
/// the bomb fills its limit in milliseconds, the hog grows for a while before it is killed.
const SETTLE: Duration = Duration::from_millis(250);

/// How long an aggressor that listens for the host (the bomb, the hog) may take to stop its
/// child and report; a guest must also stop its machine.
const GRACE: Duration = Duration::from_secs(10);

/// What to run besides the common options.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The aggressors.
    pub aggressors: Vec<Aggressor>,
    /// Victims to run against every aggressor; `None`: each aggressor's own
    /// ([`Aggressor::victim`]).
    pub kernels: Option<Vec<Kernel>>,
    /// The most aggressors beside one victim.
    pub max_aggressors: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            aggressors: Aggressor::ALL.to_vec(),
            kernels: None,
            max_aggressors: DEFAULT_MAX_AGGRESSORS,
        }
    }
}

/// The aggressors called `names`; an unknown one is the user's mistake.
pub fn aggressors_named(names: &[String]) -> Result<Vec<Aggressor>, ExperimentError> {
    let mut out = Vec::new();
    for n in names {
        let a = Aggressor::from_name(n).ok_or_else(|| ExperimentError::UnknownAggressor {
            name: n.clone(),
            known: Aggressor::ALL.map(Aggressor::name).join(", "),
        })?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// The victims called `names`: kernels that measure a speed.
pub fn victims_named(names: &[String]) -> Result<Vec<Kernel>, ExperimentError> {
    let known = || {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.resource().is_some())
            .map(Kernel::name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    names
        .iter()
        .map(|n| {
            Kernel::from_name(n.as_bytes())
                .filter(|k| k.resource().is_some())
                .ok_or_else(|| ExperimentError::UnknownKernel {
                    name: n.clone(),
                    known: known(),
                })
        })
        .collect()
}

/// The numbers of aggressors beside a victim: 1, 2, 4, … up to `max`, and `max` itself.
pub fn counts(max: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut n = 1;
    while n < max {
        out.push(n);
        n *= 2;
    }
    out.push(max.max(1));
    out
}

/// The limited configuration when the user gave no limit: `host_cpus` shared out evenly among
/// a victim, `max_aggressors` aggressors and one more share for the host itself (the lab, the
/// system), [`DEFAULT_MEMORY_MIB`], [`DEFAULT_PIDS`], and [`DEFAULT_IO_MIB`] when there is a
/// disk to limit (`io_disk`).
///
/// Why a share for the host: a CPU limit is a ceiling, not a floor. CFS bandwidth control gives
/// each cgroup a quota of CPU time per 100 ms period and throttles it — takes it off the CPU
/// until the next period — once the quota is spent; nothing reserves that time for it. Limits
/// that add up to the whole machine leave the victim to compete for its own quota with
/// everything else that runs there, and a victim that cannot use its quota early in a period
/// cannot save it for later.
pub fn default_limited(host_cpus: usize, max_aggressors: u32, io_disk: bool) -> Limits {
    let share = host_cpus as f64 / f64::from(max_aggressors + 2);
    // Two decimals: what a student would type.
    let cpus = ((share * 100.0).floor() / 100.0).max(MIN_CPUS);
    Limits {
        memory_bytes: Some(DEFAULT_MEMORY_MIB << 20),
        pids: Some(DEFAULT_PIDS),
        cpus: Some(cpus),
        io_bps: io_disk.then_some(DEFAULT_IO_MIB << 20),
    }
}

/// What the runtime itself holds in an idle instance of one backend — tasks (gVisor's Sentry
/// and gofer threads, a shim that stays in the cgroup, a VMM's threads) and memory — read back
/// from that instance's cgroup before any aggressor starts. The safety limits are sized above
/// it: a `pids.max` of 128 leaves a bomb no room at all in a sandbox whose own threads take
/// most of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Tasks at their most while an idle instance started and settled (`pids.peak`), the
    /// workload's own process included.
    pub tasks: u64,
    /// The idle instance's memory charge at its most.
    pub bytes: u64,
}

/// An aggressor's limits under `limits` (a configuration's) on a backend whose runtime holds
/// `runtime`: the same, with the lab's safety limits on a fork bomb and a memory hog — never
/// looser than [`SAFETY_PIDS`] tasks and [`SAFETY_MEMORY_BYTES`] above the runtime's own.
pub fn aggressor_limits(a: Aggressor, limits: &Limits, runtime: &Footprint) -> Limits {
    let mut l = *limits;
    match a {
        Aggressor::Fork => {
            let safety = runtime.tasks + SAFETY_PIDS;
            l.pids = Some(l.pids.map_or(safety, |p| p.min(safety)));
        }
        Aggressor::Oom => {
            let safety = runtime.bytes + SAFETY_MEMORY_BYTES;
            l.memory_bytes = Some(l.memory_bytes.map_or(safety, |m| m.min(safety)));
        }
        _ => {}
    }
    l
}

/// The limits of every instance of a configuration on a backend whose runtime holds `runtime`.
/// Unlimited: none. Limited: the user's, as given; or the lab's defaults, whose pids limit is
/// [`DEFAULT_PIDS`] *above* the runtime's own tasks, so that the same default means the same
/// room for the workload on every backend.
pub fn config_limits(
    config: Config,
    limited: &Limits,
    by_lab: bool,
    runtime: &Footprint,
) -> Limits {
    match config {
        Config::Unlimited => Limits::default(),
        Config::Limited if by_lab => Limits {
            pids: limited.pids.map(|p| p + runtime.tasks),
            ..*limited
        },
        Config::Limited => *limited,
    }
}

/// `limits` with the lab's safety limits when `spec` runs a fork bomb or a memory hog: what
/// `lab exec` applies, so that no bomb ever runs without a limit. (`lab exec` does not measure
/// the runtime first: its bomb's room is what is left of [`SAFETY_PIDS`].)
pub fn safe_for(spec: &Spec, limits: &Limits) -> Limits {
    let none = Footprint::default();
    match spec.kernel {
        Kernel::ForkBomb => aggressor_limits(Aggressor::Fork, limits, &none),
        Kernel::MemHog => aggressor_limits(Aggressor::Oom, limits, &none),
        _ => *limits,
    }
}

/// One sample to take: a victim on a backend, alone or beside `count` aggressors, in one
/// configuration.
#[derive(Clone, Copy, Debug)]
struct Case {
    backend: usize,
    victim: Spec,
    aggressor: Option<(Aggressor, u32)>,
    config: Config,
}

/// What was run, as the results' settings record it.
#[derive(Serialize)]
struct Recorded<'a> {
    aggressors: Vec<&'static str>,
    victims: Vec<(&'static str, &'static str)>,
    max_aggressors: u32,
    counts: &'a [u32],
    limited: Limits,
    limited_chosen_by: &'static str,
    safety_pids: u64,
    safety_memory_bytes: u64,
    /// What each backend's runtime held idle, which the safety limits (and the lab's default
    /// pids limit) are sized above.
    runtime_footprint: std::collections::BTreeMap<&'a str, Footprint>,
    io_disk: Option<String>,
}

/// Run the experiment on `backends` (or every default backend here).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    options: &Options,
    settings: &Settings,
) -> Result<Campaign, ExperimentError> {
    require_cgroups(lab, "lab run interference")?;
    let io_disk = lab.io_disk().ok();
    let (limited, chosen_by) = if settings.limits.any() {
        (settings.limits, "user")
    } else {
        (
            default_limited(
                isolab_host::facts::cpu_count(),
                options.max_aggressors,
                io_disk.is_some(),
            ),
            "lab",
        )
    };
    // Every instance must be able to take the limits; `select` refuses a backend that cannot.
    let mut selection = select(lab, backends, &limited)?;
    // (victim, aggressor) pairs.
    let pairs: Vec<(Kernel, Aggressor)> = match &options.kernels {
        Some(victims) => victims
            .iter()
            .flat_map(|v| options.aggressors.iter().map(move |a| (*v, *a)))
            .collect(),
        None => options
            .aggressors
            .iter()
            .map(|a| (a.victim(), *a))
            .collect(),
    };
    let mut victims: Vec<Kernel> = Vec::new();
    for (v, _) in &pairs {
        if !victims.contains(v) {
            victims.push(*v);
        }
    }
    let bound_ms = (lab.settings.timeout.as_millis() as u64).saturating_mul(3);
    let mut specs: Vec<Spec> = victims.iter().map(|k| victim_spec(*k)).collect();
    specs.extend(options.aggressors.iter().map(|a| a.spec(bound_ms)));
    check_provisions(lab, &specs)?;
    let counts = counts(options.max_aggressors);

    // The cases each backend can run; what it cannot, and why, goes into the results.
    let mut kept = Vec::new();
    let mut cases = Vec::new();
    for backend in std::mem::take(&mut selection.backends) {
        let index = kept.len();
        let mut mine = Vec::new();
        let refuses = |k: Kernel| backend.supports(lab, k).err();
        for (v, a) in &pairs {
            let why = refuses(*v).map(|w| format!("victim {v}: {w}")).or_else(|| {
                refuses(a.spec(0).kernel).map(|w| format!("aggressor {}: {w}", a.name()))
            });
            if let Some(reason) = why {
                let reason = format!("{} beside {}: {reason}", v, a.name());
                if !selection
                    .skipped
                    .iter()
                    .any(|s| s.backend == backend.name() && s.reason == reason)
                {
                    selection.skipped.push(Skipped {
                        backend: backend.name().to_string(),
                        reason,
                    });
                }
                continue;
            }
            for config in Config::ALL {
                for &n in &counts {
                    mine.push(Case {
                        backend: index,
                        victim: victim_spec(*v),
                        aggressor: Some((*a, n)),
                        config,
                    });
                }
            }
        }
        if mine.is_empty() {
            continue;
        }
        // Each victim alone, once per configuration: the sample its slowdowns are paired with.
        let mut alone: Vec<Kernel> = Vec::new();
        for c in &mine {
            if !alone.contains(&c.victim.kernel) {
                alone.push(c.victim.kernel);
            }
        }
        for v in alone {
            for config in Config::ALL {
                mine.push(Case {
                    backend: index,
                    victim: victim_spec(v),
                    aggressor: None,
                    config,
                });
            }
        }
        cases.extend(mine);
        kept.push(backend);
    }
    selection.backends = kept;
    if selection.backends.is_empty() {
        return Err(ExperimentError::KernelUnsupported {
            kernel: "any victim beside these aggressors".into(),
            why: selection.why_skipped(),
        });
    }
    let by_lab = chosen_by == "lab";
    let footprints = preflight(
        lab,
        &selection.backends,
        &limited,
        by_lab,
        &options.aggressors,
    )?;
    let recorded = Recorded {
        aggressors: options.aggressors.iter().map(|a| a.name()).collect(),
        victims: pairs.iter().map(|(v, a)| (v.name(), a.name())).collect(),
        max_aggressors: options.max_aggressors,
        counts: &counts,
        limited,
        limited_chosen_by: chosen_by,
        safety_pids: SAFETY_PIDS,
        safety_memory_bytes: SAFETY_MEMORY_BYTES,
        runtime_footprint: selection
            .backends
            .iter()
            .zip(&footprints)
            .map(|(b, f)| (b.name(), *f))
            .collect(),
        io_disk: io_disk.map(|d| d.to_string()),
    };
    let extra = serde_json::to_value(&recorded).expect("settings serialise");
    drop(recorded);
    let selection = &selection;
    campaign_by(
        lab,
        "interference",
        selection,
        &cases,
        settings,
        extra,
        |c| {
            let beside = match c.aggressor {
                Some((a, n)) => format!(" + {n}×{}", a.name()),
                None => " alone".into(),
            };
            (
                c.backend,
                format!("{}{beside} ({})", c.victim.kernel, c.config.name()),
            )
        },
        |c| {
            let backend = selection.backends[c.backend].as_ref();
            let runtime = &footprints[c.backend];
            let limits = config_limits(c.config, &limited, by_lab, runtime);
            sample(lab, backend, c, &limits, runtime, bound_ms)
        },
    )
}

/// How many tasks an idle instance may hold while the lab counts them: a pids limit it never
/// reaches, set only so that the pids controller counts (on v1 an instance joins it only under
/// a limit).
const COUNTING_PIDS: u64 = 4096;

/// How long an idle instance settles after `ready` before its tasks are counted: a runtime's
/// threads (Go's garbage collector and scheduler in gVisor's Sentry) start lazily.
const IDLE_SETTLE: Duration = Duration::from_millis(300);

/// Before any aggressor starts, on each backend: first one idle instance (`sleep`) whose
/// cgroup says what the runtime itself holds ([`Footprint`]); then one idle instance under each
/// set of limits the experiment will use — the limited configuration's, and each aggressor's in
/// both configurations (the lab's safety limits on a bomb and a hog, sized above the
/// footprint) — whose processes must be found under them ([`Instance::wait_ready`] reads them
/// back). A backend whose runtime puts its container out of the lab's reach would otherwise let
/// a fork bomb run under no limit while the results record one: the experiment stops first,
/// with the reason. Returns each backend's footprint, in order.
pub fn preflight(
    lab: &Lab,
    backends: &[Box<dyn Backend>],
    limited: &Limits,
    by_lab: bool,
    aggressors: &[Aggressor],
) -> Result<Vec<Footprint>, ExperimentError> {
    let idle = Spec::new(Kernel::Sleep, 0, 0);
    let stops = |e: BackendError| -> Result<(), ExperimentError> {
        match e {
            e @ BackendError::LimitsNotInForce { .. } => Err(e.into()),
            BackendError::Interrupted { signal } => {
                Err(BackendError::Interrupted { signal }.into())
            }
            // Any other failure is the samples' to record, each where it happens.
            _ => Ok(()),
        }
    };
    let mut footprints = Vec::new();
    for backend in backends {
        if backend.supports(lab, Kernel::Sleep).is_err() {
            footprints.push(Footprint::default());
            continue;
        }
        let counting = Limits {
            pids: Some(COUNTING_PIDS),
            ..Limits::default()
        };
        let measured = backend.start(lab, &idle, &counting).and_then(|mut i| {
            i.wait_ready()?;
            isolab_host::interrupt::sleep(IDLE_SETTLE);
            let cg = i.cgroup();
            let tasks = cg.and_then(|c| c.tasks_peak().max(c.tasks())).unwrap_or(0);
            let bytes = cg
                .and_then(|c| c.memory())
                .map_or(0, |m| m.peak_bytes.unwrap_or(m.current_bytes));
            i.stop()?;
            Ok(Footprint { tasks, bytes })
        });
        let footprint = match measured {
            Ok(f) => f,
            Err(e) => {
                stops(e)?;
                Footprint::default()
            }
        };
        footprints.push(footprint);
        let mut sets: Vec<Limits> = Vec::new();
        for config in Config::ALL {
            let base = config_limits(config, limited, by_lab, &footprint);
            for l in std::iter::once(base).chain(
                aggressors
                    .iter()
                    .map(|a| aggressor_limits(*a, &base, &footprint)),
            ) {
                if l.any() && !sets.contains(&l) {
                    sets.push(l);
                }
            }
        }
        for limits in &sets {
            if let Err(e) = backend
                .start(lab, &idle, limits)
                .and_then(|mut i| i.wait_ready().and_then(|()| i.stop()))
            {
                stops(e)?;
            }
        }
    }
    Ok(footprints)
}

/// Take one sample: start the aggressors, let them reach full force, run the victim, stop the
/// aggressors whatever happened to it, and record all of it — with what each aggressor's cgroup
/// showed of its work while the victim ran, and, when one did not do its work, why the sample
/// is not measured.
fn sample(
    lab: &Lab,
    backend: &dyn Backend,
    c: &Case,
    victim_limits: &Limits,
    runtime: &Footprint,
    bound_ms: u64,
) -> Sample {
    let limits = c
        .aggressor
        .map(|(a, _)| aggressor_limits(a, victim_limits, runtime));
    let mut neighbours = Neighbours {
        config: c.config,
        aggressor: c.aggressor.map(|(a, _)| a.name().to_string()),
        count: c.aggressor.map_or(0, |(_, n)| n),
        limits: *victim_limits,
        aggressor_limits: limits,
        aggressors: Vec::new(),
        not_measured: None,
    };
    let mut aggressors: Vec<Instance> = Vec::new();
    // Each aggressor's activity when the victim starts and when it is done.
    let mut before: Vec<(Option<Activity>, bool)> = Vec::new();
    let mut after: Vec<(Option<Activity>, Option<u64>, bool)> = Vec::new();
    let mut window = None;
    let result = (|| {
        if let Some((a, n)) = c.aggressor {
            let spec = a.spec(bound_ms);
            let limits = aggressor_limits(a, victim_limits, runtime);
            let failed = |e: BackendError| match e {
                // Not one sample's failure: the experiment stops on it.
                e @ BackendError::LimitsNotInForce { .. } => e,
                e => BackendError::Instance {
                    step: format!("aggressor {}", a.name()),
                    detail: e.to_string(),
                },
            };
            for _ in 0..n {
                aggressors.push(backend.start(lab, &spec, &limits).map_err(failed)?);
            }
            for inst in &mut aggressors {
                inst.wait_ready().map_err(failed)?;
                if a.marks_start() {
                    inst.wait_phase("start").map_err(failed)?;
                }
            }
            if !isolab_host::interrupt::sleep(SETTLE) {
                return Err(BackendError::Interrupted {
                    signal: isolab_host::interrupt::requested()
                        .map_or_else(|| "a signal".into(), isolab_host::interrupt::name),
                });
            }
        }
        before = aggressors
            .iter()
            .map(|i| (activity(i), i.has_ended()))
            .collect();
        let started = Instant::now();
        let run = victim(lab, backend, &c.victim, victim_limits);
        window = Some(started.elapsed());
        after = aggressors
            .iter()
            .map(|i| {
                let peak = i.cgroup().and_then(|c| c.tasks_peak());
                (activity(i), peak, i.has_ended())
            })
            .collect();
        run
    })();
    // The aggressors go whatever happened to the victim (and at once after Ctrl-C: their
    // `Drop` kills them).
    let grace = match c.aggressor {
        Some((a, _)) if a.spec(0).kernel.stops_when_told() && !interrupted() => GRACE,
        _ => Duration::ZERO,
    };
    for (k, inst) in aggressors.into_iter().enumerate() {
        let workload = (&a_spec(c, bound_ms)).into();
        let mut record = match inst.stop_within(grace) {
            Ok(run) => aggressor_record(run),
            Err(e) => AggressorRecord {
                workload,
                outcome: isolab_results::Outcome::Failed {
                    reason: e.to_string(),
                },
                cpu_ns: None,
                cgroup_peak_bytes: None,
                facts: Facts::default(),
                evidence: WorkEvidence::default(),
            },
        };
        let (start, ended_at_start) = match before.get(k) {
            Some((a, ended)) => (*a, Some(*ended)),
            None => (None, None),
        };
        let (done, peak, ended_at_done) = match after.get(k) {
            Some((a, peak, ended)) => (*a, *peak, Some(*ended)),
            None => (None, None, None),
        };
        let delta = |f: fn(&Activity) -> Option<u64>| {
            Some(f(done.as_ref()?)?.saturating_sub(f(start.as_ref()?)?))
        };
        record.evidence = WorkEvidence {
            runtime_tasks: (runtime.tasks > 0).then_some(runtime.tasks),
            ended_before_victim_started: ended_at_start,
            ended_before_victim_done: ended_at_done,
            tasks_at_victim_start: start.map(|a| a.tasks.unwrap_or(a.processes)),
            tasks_at_victim_done: done.map(|a| a.tasks.unwrap_or(a.processes)),
            tasks_peak: peak,
            victim_window_ns: window.map(|w| w.as_nanos() as u64),
            cpu_ns_beside_victim: delta(|a| a.cpu_ns),
            written_bytes_beside_victim: delta(|a| a.written_bytes),
        };
        neighbours.aggressors.push(record);
    }
    if let Some((a, _)) = c.aggressor {
        neighbours.not_measured = match &result {
            // The aggressors never got to work: the victim did not even start.
            Err(e) if before.is_empty() && !interrupted() => {
                Some(format!("the {} aggressor did not start: {e}", a.name()))
            }
            _ => neighbours.aggressors.iter().enumerate().find_map(|(k, r)| {
                let limits = neighbours.aggressor_limits.unwrap_or_default();
                a.at_work(r, &limits)
                    .err()
                    .map(|why| format!("{} aggressor {}: {why}", a.name(), k + 1))
            }),
        };
    }
    Sample {
        traced: None,
        children_cpu_ns: None,
        spec: c.victim,
        result,
        neighbours: Some(neighbours),
    }
}

/// What an instance's cgroup shows of its work now; `None` without a cgroup.
fn activity(i: &Instance) -> Option<Activity> {
    i.cgroup().map(|c| c.activity())
}

fn a_spec(c: &Case, bound_ms: u64) -> Spec {
    c.aggressor.map_or(c.victim, |(a, _)| a.spec(bound_ms))
}

/// Run the victim to its end, at most the lab's timeout for each marker: a victim that its
/// neighbours starve is recorded as failed, not waited for forever.
fn victim(
    lab: &Lab,
    backend: &dyn Backend,
    spec: &Spec,
    limits: &Limits,
) -> Result<Run, BackendError> {
    let mut v = backend.start(lab, spec, limits)?;
    let result = v
        .wait_ready()
        .and_then(|()| v.wait_done_by(Instant::now() + lab.settings.timeout));
    match result {
        Ok(()) | Err(BackendError::Exited { .. }) => v.finish(),
        Err(e) => Err(e),
    }
}

fn aggressor_record(run: Run) -> AggressorRecord {
    AggressorRecord {
        evidence: WorkEvidence::default(),
        workload: (&run.spec).into(),
        facts: Facts::from_wire(&run.info),
        outcome: run.outcome,
        cpu_ns: run.cpu_ns,
        cgroup_peak_bytes: run.cgroup_peak_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_double_up_to_the_top() {
        assert_eq!(counts(1), [1]);
        assert_eq!(counts(2), [1, 2]);
        assert_eq!(counts(3), [1, 2, 3]);
        assert_eq!(counts(8), [1, 2, 4, 8]);
    }

    #[test]
    fn a_bomb_and_a_hog_always_have_a_limit_and_never_a_looser_one() {
        let none = Limits::default();
        let bare = Footprint::default();
        assert_eq!(
            aggressor_limits(Aggressor::Fork, &none, &bare).pids,
            Some(SAFETY_PIDS)
        );
        assert_eq!(
            aggressor_limits(Aggressor::Oom, &none, &bare).memory_bytes,
            Some(SAFETY_MEMORY_BYTES)
        );
        assert_eq!(aggressor_limits(Aggressor::Cpu, &none, &bare), none);
        let loose = Limits {
            pids: Some(1 << 20),
            memory_bytes: Some(1 << 40),
            ..Limits::default()
        };
        assert_eq!(
            aggressor_limits(Aggressor::Fork, &loose, &bare).pids,
            Some(SAFETY_PIDS)
        );
        assert_eq!(
            aggressor_limits(Aggressor::Oom, &loose, &bare).memory_bytes,
            Some(SAFETY_MEMORY_BYTES)
        );
        let tight = Limits {
            pids: Some(16),
            ..Limits::default()
        };
        assert_eq!(
            aggressor_limits(Aggressor::Fork, &tight, &bare).pids,
            Some(16)
        );
        let bomb = Spec::default_for(Kernel::ForkBomb);
        assert_eq!(safe_for(&bomb, &none).pids, Some(SAFETY_PIDS));
        let cpu = Spec::default_for(Kernel::Cpu);
        assert_eq!(safe_for(&cpu, &none), none);
    }

    #[test]
    fn the_safety_limits_leave_a_bomb_and_a_hog_room_above_the_runtime_s_own() {
        // gVisor's sandbox: 33 tasks and 30 MiB of its own before the workload does anything.
        let sandbox = Footprint {
            tasks: 33,
            bytes: 30 << 20,
        };
        let none = Limits::default();
        assert_eq!(
            aggressor_limits(Aggressor::Fork, &none, &sandbox).pids,
            Some(33 + SAFETY_PIDS)
        );
        assert_eq!(
            aggressor_limits(Aggressor::Oom, &none, &sandbox).memory_bytes,
            Some((30 << 20) + SAFETY_MEMORY_BYTES)
        );
        // The lab's default limited configuration gives every backend the same room above its
        // runtime; the user's limits are the user's.
        let limited = default_limited(2, 1, false);
        let by_lab = config_limits(Config::Limited, &limited, true, &sandbox);
        assert_eq!(by_lab.pids, Some(DEFAULT_PIDS + 33));
        assert_eq!(
            config_limits(Config::Limited, &limited, false, &sandbox).pids,
            Some(DEFAULT_PIDS)
        );
        assert_eq!(
            config_limits(Config::Unlimited, &limited, true, &sandbox),
            Limits::default()
        );
        assert_eq!(
            aggressor_limits(Aggressor::Fork, &by_lab, &sandbox).pids,
            Some(DEFAULT_PIDS + 33)
        );
    }

    #[test]
    fn the_default_limits_share_the_machine_out() {
        let l = default_limited(2, 2, true);
        assert_eq!(l.cpus, Some(0.5));
        assert_eq!(default_limited(4, 1, true).cpus, Some(1.33));
        assert_eq!(l.memory_bytes, Some(512 << 20));
        assert_eq!(l.io_bps, Some(32 << 20));
        assert_eq!(default_limited(2, 2, false).io_bps, None);
        assert_eq!(default_limited(1, 200, false).cpus, Some(MIN_CPUS));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            aggressors_named(&["cpu".into(), "oom".into(), "cpu".into()]).unwrap(),
            [Aggressor::Cpu, Aggressor::Oom]
        );
        let e = aggressors_named(&["meltdown".into()]).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("cpu, mem, disk, fork, oom"),
            "{e}"
        );
        assert!(victims_named(&["sleep".into()]).unwrap_err().is_usage());
        assert_eq!(victims_named(&["net-rr".into()]).unwrap(), [Kernel::NetRr]);
    }

    #[test]
    fn every_aggressor_kernel_is_bounded_or_stopped_by_the_lab() {
        for a in Aggressor::ALL {
            let spec = a.spec(1000);
            if a.is_failure() {
                assert!(spec.kernel.stops_when_told(), "{a:?}");
                assert_eq!(spec.iters, 1000, "{a:?}");
            } else {
                assert_eq!(spec.iters, ENDLESS, "{a:?}: the lab kills it");
            }
        }
    }
}
