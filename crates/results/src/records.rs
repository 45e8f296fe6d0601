//! The schema: one type per kind of record a results file holds, field names carrying their
//! unit.

use crate::{Facts, Family};
use isolab_host::clock::now_ns;
use isolab_host::memory::ProcessMemory;
use isolab_resources::cgroup::MemoryReading;
use serde::{Deserialize, Serialize};

/// A named instant on the host's monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// Phase name (`spawn`, `cgroup`, `namespaces`, ..., `ready`, `done`, `exited`).
    pub name: String,
    /// `CLOCK_MONOTONIC` nanoseconds at the end of the phase.
    pub t_ns: u64,
}

/// The phases of one run, in the order they happened. Serialised as a plain list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline {
    /// Phase edges.
    pub phases: Vec<Phase>,
}

impl Timeline {
    /// A timeline whose first edge, `spawn`, is now: the moment the launch was requested.
    pub fn start() -> Timeline {
        let mut t = Timeline::default();
        t.mark("spawn");
        t
    }

    /// Record the end of phase `name` now.
    pub fn mark(&mut self, name: &str) {
        self.push(name, now_ns());
    }

    /// Record the end of phase `name` at `t_ns`.
    pub fn push(&mut self, name: &str, t_ns: u64) {
        self.phases.push(Phase {
            name: name.to_string(),
            t_ns,
        });
    }

    /// When phase `name` ended.
    pub fn at(&self, name: &str) -> Option<u64> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.t_ns)
    }

    /// Nanoseconds from `from` to `to`.
    pub fn between(&self, from: &str, to: &str) -> Option<u64> {
        self.at(to)?.checked_sub(self.at(from)?)
    }

    /// Start-up time: launch requested → first instruction of the workload.
    pub fn startup_ns(&self) -> Option<u64> {
        self.between("spawn", "ready")
    }

    /// Time of the kernel's measured part: `start` (after its set-up) or else `ready`, to `done`.
    pub fn work_ns(&self) -> Option<u64> {
        let from = if self.at("start").is_some() {
            "start"
        } else {
            "ready"
        };
        self.between(from, "done")
    }

    /// Each phase's duration: from the previous edge to this one, in time order.
    pub fn durations(&self) -> Vec<(String, u64)> {
        let mut sorted = self.phases.clone();
        // Edges stamped by different processes arrive out of order; time orders them.
        sorted.sort_by_key(|p| p.t_ns);
        sorted
            .windows(2)
            .map(|w| (w[1].name.clone(), w[1].t_ns - w[0].t_ns))
            .collect()
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// The workload reported `done` and exited normally.
    Completed,
    /// The kernel's OOM killer killed the instance: it went over its memory limit.
    OomKilled,
    /// The instance was stopped by the lab (density teardown, Ctrl-C).
    Stopped,
    /// Anything else, with the reason.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// Memory of an instance at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySample {
    /// The cgroup's counters.
    pub cgroup: Option<MemoryReading>,
    /// The processes' RSS/PSS/USS.
    pub processes: ProcessMemory,
}

impl MemorySample {
    /// What this instance holds that another instance would not share, counted exactly: the
    /// cgroup's kernel memory (namespaces, page tables, KVM structures; a page counter) plus the
    /// anonymous memory of its processes (heaps, stacks, guest RAM; their `Pss_Anon`). The
    /// program's code is left out: it is page cache that every instance of the same program
    /// shares. The cgroup's charge counters are not used because they are rounded up by per-CPU
    /// batching (see [`MemoryReading`]).
    pub fn instance_bytes(&self) -> u64 {
        self.cgroup.and_then(|c| c.kernel_bytes).unwrap_or(0) + self.processes.anon_pss_bytes
    }
}

/// How [`Environment::cgroup`] begins when the lab had no usable cgroups: then no run of the
/// file has memory figures (its reason follows).
pub const CGROUP_UNAVAILABLE: &str = "unavailable: ";

/// The workload of a run, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// Kernel name (`ready`, `cpu`, ...).
    pub kernel: String,
    /// Working set in MiB.
    pub mib: u64,
    /// Iterations.
    pub iters: u64,
    /// Seed of the kernel's random numbers.
    pub seed: u64,
}

impl From<&isolab_payload::Spec> for WorkloadRecord {
    fn from(s: &isolab_payload::Spec) -> Self {
        WorkloadRecord {
            kernel: s.kernel.name().to_string(),
            mib: s.mib,
            iters: s.iters,
            seed: s.seed,
        }
    }
}

/// A kernel's result, as recorded. The checksum is hexadecimal text: JSON numbers lose
/// precision above 2^53 in many readers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The kernel's checksum, `0x` and 16 hex digits.
    pub checksum: String,
    /// Operations performed.
    pub ops: u64,
    /// Bytes moved.
    pub bytes: u64,
}

impl From<&isolab_payload::Output> for OutputRecord {
    fn from(o: &isolab_payload::Output) -> Self {
        OutputRecord {
            checksum: format!("{:#018x}", o.checksum),
            ops: o.ops,
            bytes: o.bytes,
        }
    }
}

/// One sample: one instance, start to finish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Backend name.
    pub backend: String,
    /// The run's isolation family ([`Family::of_run`]).
    pub family: Family,
    /// Round number (warm-up rounds are numbered separately and flagged).
    pub round: u32,
    /// Position of this backend within its round (rounds are shuffled).
    pub order: u32,
    /// A warm-up sample, excluded from statistics.
    pub warmup: bool,
    /// What ran.
    pub workload: WorkloadRecord,
    /// How it ended.
    pub outcome: Outcome,
    /// Launch requested → workload `ready`.
    pub startup_ns: Option<u64>,
    /// The kernel's measured part: `start` (or `ready`) → `done`.
    pub work_ns: Option<u64>,
    /// Phase edges on the host's monotonic clock.
    pub phases: Timeline,
    /// The kernel's result.
    pub output: Option<OutputRecord>,
    /// Memory while held at `ready` (memory experiment).
    pub memory_at_ready: Option<MemorySample>,
    /// Memory while held at `done` (memory experiment).
    pub memory_at_done: Option<MemorySample>,
    /// The cgroup's peak charge over the run.
    pub cgroup_peak_bytes: Option<u64>,
    /// CPU time used, where the cgroup reports it.
    pub cpu_ns: Option<u64>,
    /// Probe facts (isolation experiment), in the order reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe: Vec<(String, String)>,
    /// What the run reported about itself.
    #[serde(default, skip_serializing_if = "Facts::is_empty")]
    pub facts: Facts,
    /// `lab run interference`: the instances that ran beside this one (the victim), and how
    /// they ended. Absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbours: Option<Neighbours>,
}

/// The two configurations of `lab run interference`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Config {
    /// No limits but the lab's safety limits on a fork bomb and a memory hog.
    Unlimited,
    /// Every instance under the same CPU, memory, pids and I/O limits.
    Limited,
}

impl Config {
    /// Both, in the order reports show them.
    pub const ALL: [Config; 2] = [Config::Unlimited, Config::Limited];

    /// The configuration's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Config::Unlimited => "unlimited",
            Config::Limited => "limited",
        }
    }
}

/// What a bad neighbour does in `lab run interference` (what it runs is the experiment's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggressor {
    /// Burns CPU: the `cpu` kernel, endless.
    Cpu,
    /// Streams through memory: the `mem` kernel's triad, endless.
    Mem,
    /// Writes to its disk: `disk-seq`, pass after pass.
    Disk,
    /// A fork bomb.
    Fork,
    /// A memory hog that grows until it is stopped.
    Oom,
}

impl Aggressor {
    /// Every aggressor, in the order reports list them.
    pub const ALL: [Aggressor; 5] = [
        Aggressor::Cpu,
        Aggressor::Mem,
        Aggressor::Disk,
        Aggressor::Fork,
        Aggressor::Oom,
    ];

    /// The name on the command line and in results.
    pub const fn name(self) -> &'static str {
        match self {
            Aggressor::Cpu => "cpu",
            Aggressor::Mem => "mem",
            Aggressor::Disk => "disk",
            Aggressor::Fork => "fork",
            Aggressor::Oom => "oom",
        }
    }

    /// The aggressor called `name`.
    pub fn from_name(name: &str) -> Option<Aggressor> {
        Aggressor::ALL.into_iter().find(|a| a.name() == name)
    }

    /// What it is, in words.
    pub const fn describe(self) -> &'static str {
        match self {
            Aggressor::Cpu => "a CPU hog (the cpu kernel, endless)",
            Aggressor::Mem => "a memory-bandwidth streamer (the mem kernel's triad, endless)",
            Aggressor::Disk => "a disk writer (disk-seq, pass after pass, O_DIRECT)",
            Aggressor::Fork => "a fork bomb (fork until the kernel refuses, retry)",
            Aggressor::Oom => "a memory hog (touch memory until the OOM killer strikes)",
        }
    }

    /// True for a neighbour's failure (rather than its load): the question is whether the
    /// victim survives it.
    pub const fn is_failure(self) -> bool {
        matches!(self, Aggressor::Fork | Aggressor::Oom)
    }
}

/// The tasks every fork bomb may have, even unlimited: a classic bomb without a limit stops
/// only at the host's `pid_max` or when memory runs out, and takes every other process of the
/// host down with it. Its instance's `pids.max` is this many *above* what the runtime itself
/// holds there — the pids controller counts every task of the cgroup, and a sandbox's own
/// threads (gVisor's Sentry and gofer: 31 here) or a shim count as much as the bomb's — so the
/// bomb has room to fork on every backend. The workload's limit on a bomb inside a Linux guest
/// is the same number (`FORK_LIMIT_IN_GUEST` in `workload/src/neighbour.rs`).
pub const SAFETY_PIDS: u64 = 128;

/// The memory every memory hog's instance may have above what the runtime itself holds there,
/// even unlimited: without a limit the hog grows until the *host's* OOM killer chooses a victim
/// among all the host's processes. Above a
/// Linux guest's RAM (256 MiB for the hog), so in a VM the guest's own OOM killer acts first
/// and this is a backstop.
pub const SAFETY_MEMORY_BYTES: u64 = 512 << 20;

/// What ran beside a victim of `lab run interference`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    /// With or without limits.
    pub config: Config,
    /// The aggressor (`cpu`, `mem`, `disk`, `fork`, `oom`); absent when the victim ran alone,
    /// the sample its slowdowns are measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggressor: Option<String>,
    /// How many aggressors ran beside it (0: alone).
    pub count: u32,
    /// The victim's limits.
    pub limits: isolab_resources::cgroup::Limits,
    /// The aggressors' limits: the configuration's, with the lab's safety limits on a fork bomb
    /// (pids) and a memory hog (memory) whatever the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggressor_limits: Option<isolab_resources::cgroup::Limits>,
    /// Each aggressor, as it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggressors: Vec<AggressorRecord>,
    /// Set when an aggressor did not do its work beside the victim (a bomb that never forked,
    /// a hog that never allocated, an instance that had ended before the victim started): why.
    /// Such a sample is *not measured*: the victim's time says nothing about its neighbours, so
    /// no slowdown and no verdict on survival is drawn from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_measured: Option<String>,
}

/// What an aggressor's own cgroup and processes showed of its work, read back while its victim
/// ran: what decides whether it did its work at all (see `Neighbours::not_measured`). Absent
/// fields were not read (files written before the lab read them, or a cgroup without them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkEvidence {
    /// Tasks an idle instance of the same backend held (the runtime's own — a sandbox's threads,
    /// a shim — and the workload's): what the bomb's `pids.max` was sized above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_tasks: Option<u64>,
    /// Its instance had ended (its main process or its workload) when the victim started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_before_victim_started: Option<bool>,
    /// Its instance had ended by the time the victim was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_before_victim_done: Option<bool>,
    /// Tasks in its cgroup when the victim started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_at_victim_start: Option<u64>,
    /// Tasks in its cgroup when the victim was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_at_victim_done: Option<u64>,
    /// The most tasks its cgroup held at once (`pids.peak`), read before it was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_peak: Option<u64>,
    /// How long the victim ran beside it: from the first reading to the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub victim_window_ns: Option<u64>,
    /// CPU time its processes used in that window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns_beside_victim: Option<u64>,
    /// Bytes its processes wrote to storage in that window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_bytes_beside_victim: Option<u64>,
}

impl WorkEvidence {
    /// True when nothing was read.
    pub fn is_empty(&self) -> bool {
        *self == WorkEvidence::default()
    }
}

/// One aggressor of a victim's sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggressorRecord {
    /// What it ran.
    pub workload: WorkloadRecord,
    /// How it ended: `stopped` by the lab, `completed` when it reported and ended itself when
    /// told, `oom-killed` when the OOM killer killed a process of its cgroup, `failed`.
    pub outcome: Outcome,
    /// CPU time its cgroup used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    /// Its cgroup's peak memory charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_peak_bytes: Option<u64>,
    /// What it and its runtime reported (forks refused, OOM kills, the signal that ended its
    /// child).
    #[serde(default, skip_serializing_if = "Facts::is_empty")]
    pub facts: Facts,
    /// What its cgroup showed of its work while the victim ran.
    #[serde(default, skip_serializing_if = "WorkEvidence::is_empty")]
    pub evidence: WorkEvidence,
}

/// A backend that was asked for (or would have run by default) but could not run here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Backend name.
    pub backend: String,
    /// Why, with a hint.
    pub reason: String,
}

/// One step of the density experiment: `n` idle instances of one backend alive at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityStep {
    /// Backend name.
    pub backend: String,
    /// The instances' isolation family (recorded at every step, so a ladder cut short still
    /// says what it measured).
    pub family: Family,
    /// Instances alive after this step.
    pub n: u32,
    /// Instances started in this step.
    pub added: u32,
    /// Wall time to start the added instances, each until its `ready`.
    pub launch_ns: u64,
    /// Sum of what each instance holds unshared ([`MemorySample::instance_bytes`]: kernel memory
    /// plus anonymous PSS).
    #[serde(default)]
    pub instance_bytes: u64,
    /// Sum of the instances' cgroup charges (anon + file + kernel from `memory.stat`).
    pub charged_bytes: u64,
    /// Sum of the instances' kernel memory alone.
    pub kernel_bytes: u64,
    /// Sum of the PSS of the instances' processes.
    pub pss_bytes: u64,
    /// How much the host's MemAvailable dropped since before the first instance.
    pub mem_available_drop_bytes: i64,
    /// CPU time all instances used together while idle, over `idle_window_ns`.
    pub idle_cpu_ns: u64,
    /// Length of the idle window.
    pub idle_window_ns: u64,
    /// On the lab's layered image: what sharing it saves (`lab run images`).
    #[serde(flatten)]
    pub image: ImageFigures,
}

/// What a density step on the lab's layered image measures besides the ladder's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageFigures {
    /// On the lab's layered image (`lab run images`): the image's bytes in the host's page
    /// cache, counted once however many instances read them (`mincore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_cache_bytes: Option<u64>,
    /// On the image: what the instances cost the host together — their cgroups' anonymous and
    /// kernel memory, the image's page cache once, less what KSM merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_bytes: Option<u64>,
    /// On the image: the median time the added instances took from launch to their libraries
    /// loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ns: Option<u64>,
    /// On the image, first rung only: the first instance's start, its image dropped from the
    /// page cache before (a cold start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_ns: Option<u64>,
    /// With KSM on: the pages it saved (`pages_sharing`) once merging settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm_pages_sharing: Option<u64>,
    /// With KSM on: how long merging took to settle after this rung's launches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm_settle_ns: Option<u64>,
}

/// The end of one backend's density ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityEnd {
    /// Backend name.
    pub backend: String,
    /// The instances' isolation family.
    pub family: Family,
    /// Instances alive at the end.
    pub n: u32,
    /// Why the ladder stopped (maximum reached, memory budget, a launch failed, Ctrl-C).
    pub reason: String,
    /// Wall time to stop and clean up all `n` instances.
    pub teardown_ns: u64,
    /// Facts the backend's runtime reported for its instances.
    #[serde(default, skip_serializing_if = "Facts::is_empty")]
    pub facts: Facts,
}

/// The machine a results file was measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Host name.
    pub hostname: String,
    /// CPU model.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Total memory.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel_release: String,
    /// How /dev/kvm is implemented.
    pub kvm: isolab_host::facts::KvmKind,
    /// What this machine itself runs on, when it is a virtual machine or an emulated one: then
    /// its KVM is nested, or its hardware virtualization software (absent on bare metal).
    #[serde(
        default,
        skip_serializing_if = "isolab_host::facts::Underneath::is_bare_metal"
    )]
    pub underneath: isolab_host::facts::Underneath,
    /// cgroup interface and controllers, e.g. "v1 hybrid (controllers: memory, pids)", or
    /// [`CGROUP_UNAVAILABLE`] and why.
    pub cgroup: String,
    /// Effective uid of the lab.
    pub uid: u32,
    /// isolab version.
    pub lab_version: String,
    /// Git commit isolab was built from.
    pub commit: String,
    /// When the file was started (RFC 3339, UTC).
    pub date: String,
    /// Which machine and boot wrote it (absent from files of older labs).
    #[serde(
        default,
        skip_serializing_if = "isolab_host::facts::MachineId::is_empty"
    )]
    pub machine: isolab_host::facts::MachineId,
}

impl Environment {
    /// Why the runs of this file have no memory figures, when the lab had no cgroups.
    pub fn memory_unavailable(&self) -> Option<&str> {
        self.cgroup.strip_prefix(CGROUP_UNAVAILABLE)
    }

    /// Describe this machine now.
    pub fn capture(cgroup: &str) -> Environment {
        Environment {
            hostname: isolab_host::facts::hostname(),
            cpu_model: isolab_host::facts::cpu_model(),
            cpus: isolab_host::facts::cpu_count(),
            memory_bytes: isolab_host::facts::meminfo().0,
            kernel_release: isolab_host::facts::kernel_release(),
            kvm: isolab_host::facts::KvmKind::detect(),
            underneath: isolab_host::facts::Underneath::detect(),
            cgroup: cgroup.to_string(),
            uid: nix::unistd::geteuid().as_raw(),
            lab_version: env!("CARGO_PKG_VERSION").to_string(),
            commit: isolab_host::facts::commit().to_string(),
            date: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
            machine: isolab_host::facts::MachineId::here(),
        }
    }
}

/// The first line of a results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`SCHEMA`] for files this version writes.
    pub schema: String,
    /// Experiment name (`startup`, ...).
    pub experiment: String,
    /// The machine.
    pub environment: Environment,
    /// The experiment's settings (runs, warm-up, workload, limits, seed, ...).
    pub settings: serde_json::Value,
    /// Backends that could not run, and why.
    pub skipped: Vec<Skipped>,
}

/// One line of a results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    /// The first line.
    Environment(Box<Header>),
    /// One sample.
    Run(Box<RunRecord>),
    /// One density step.
    DensityStep(Box<DensityStep>),
    /// The end of a density ladder.
    DensityEnd(Box<DensityEnd>),
    /// The lab's layered image: its layers, and Docker's builds of it (`lab run images`).
    Image(Box<ImageRecord>),
    /// One figure of a lab kernel held against the field's tool (`lab validate`).
    Validation(Box<ValidationRecord>),
    /// A snapshot (or checkpoint) one backend took of a started instance (`lab run restore`).
    Snapshot(Box<SnapshotRecord>),
    /// `n` instances restored from one snapshot alive at once, and what they cost the host
    /// (`lab run restore`).
    RestoreStep(Box<RestoreStep>),
}

/// How a run's instance came to be: started from nothing (booted, exec'd) or restored from a
/// snapshot of one that had already started. Recorded as the run's fact `start`; a run without
/// it (every file written before `lab run restore`) was a cold start.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StartKind {
    /// Started from nothing: a VM booted, a container's process exec'd.
    #[default]
    Cold,
    /// Restored from a snapshot taken after an earlier instance reached `ready`: the restored
    /// workload's first marker ends its start-up.
    Restored,
}

impl StartKind {
    /// Its name in results and tables.
    pub fn name(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Restored => "restored",
        }
    }
}

/// A snapshot (a VM's) or checkpoint (a container's, by CRIU) of one instance held at `ready`:
/// what it cost to take and how large it is. Its bytes are the lab's own (an unnamed file or a
/// directory in the lab's 0700 work directory) and are gone with the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Backend name.
    pub backend: String,
    /// The backend's isolation family.
    pub family: Family,
    /// What the snapshotted instance runs.
    pub workload: WorkloadRecord,
    /// Bytes the snapshot holds on the host's file system (allocated blocks, not the apparent
    /// size: a sparse guest RAM file costs only what was written).
    pub bytes: u64,
    /// From the instance held at `ready` to the snapshot complete on the file system.
    pub take_ns: u64,
    /// The steps of taking it and how long each took (e.g. `registers`, `memory`; CRIU's
    /// `dump` stages), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<(String, u64)>,
}

/// `lab run restore`: `n` instances restored from one snapshot, all held at `done` together, and
/// what they cost the host. Pages the instances share — the snapshot's, in the page cache,
/// mapped copy-on-write by every restored VM — are counted once, as `lab run images` counts an
/// image's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreStep {
    /// Backend name.
    pub backend: String,
    /// The backend's isolation family.
    pub family: Family,
    /// Instances alive together.
    pub n: u32,
    /// Whether the restores touched every page at once (`--prefault`).
    pub prefault: bool,
    /// What the instances cost together: each one's unshared memory (its cgroup's anonymous
    /// and kernel memory) summed, plus [`RestoreStep::shared_bytes`] once.
    pub host_bytes: u64,
    /// The snapshot's pages in the host's page cache, shared by all `n` (`mincore`).
    pub shared_bytes: u64,
    /// Sum of the instances' unshared memory alone.
    pub private_bytes: u64,
}

/// What a [`ValidationRecord`]'s values count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationUnit {
    /// Operations (I/O requests, transactions) per second.
    OpsPerS,
    /// Bytes per second.
    BytesPerS,
    /// Nanoseconds (a latency).
    Ns,
}

/// One figure of `lab validate`: what a lab kernel measured and what the field's tool measured
/// in the same instance kind, on a disk of the same size in the same directory or over the same
/// kind of link, round by round (the two back to back); their medians, and the median of the
/// rounds' lab ÷ tool, which is judged against the tolerance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    /// The backend both ran on.
    pub backend: String,
    /// Its isolation family.
    pub family: Family,
    /// The lab's kernel (`disk-rand`, …).
    pub kernel: String,
    /// Which of its figures (`IOPS`, `p50 latency`, …).
    pub figure: String,
    /// What the values count.
    pub unit: ValidationUnit,
    /// The tool and how it was run (`fio randread 4 KiB, iodepth 1, O_DIRECT, psync`).
    pub tool: String,
    /// The tool's version, in its own words.
    pub tool_version: String,
    /// The tool's figure in each round, parsed from its own output.
    pub tool_values: Vec<f64>,
    /// The lab kernel's figure in each round.
    pub lab_values: Vec<f64>,
    /// The median of `tool_values`.
    pub tool_median: Option<f64>,
    /// The median of `lab_values`.
    pub lab_median: Option<f64>,
    /// Each round's lab figure over its tool's, where both gave one: the two ran back to back.
    #[serde(default)]
    pub round_ratios: Vec<f64>,
    /// The median of `round_ratios`: what is judged.
    pub ratio: Option<f64>,
    /// How far from 1 the ratio may be (0.15: ±15%).
    pub tolerance: f64,
    /// The ratio is within the tolerance.
    pub within: bool,
    /// Runs that gave no figure, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Why the two differ, where that is known: what the lab's kernel does that the tool does
    /// not, or the other way round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The lab's layered image as `lab run images` built it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Each layer, lowest first: name and bytes.
    pub layers: Vec<(String, u64)>,
    /// MiB of libraries in the base layer.
    pub lib_mib: u64,
    /// VMs shared one read-only disk of the image (`--shared-disk`) instead of a copy each.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vm_disk_shared: bool,
    /// Docker's build of the layers, then its rebuild after only the top layer changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerBuilds>,
}

/// Two `docker build`s of the lab's image: the first, and one after the app layer changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerBuilds {
    /// The first build (the layer cache may already hold a base layer of an earlier lab).
    pub first: isolab_resources::image::docker::Build,
    /// The build after the top layer changed.
    pub rebuild: isolab_resources::image::docker::Build,
}
