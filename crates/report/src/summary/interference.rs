//! Interference: what a neighbour's load or failure does to a victim.

use super::*;

/// A victim of `lab run interference` in one condition: on a backend, beside `count`
/// aggressors of one kind, in one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct InterferenceRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// The victim's workload.
    pub victim: WorkloadRecord,
    /// The aggressor (`cpu`, `mem`, `disk`, `fork`, `oom`).
    pub aggressor: String,
    /// How many ran beside the victim.
    pub count: u32,
    /// With or without limits.
    pub config: Config,
    /// The victim's time (`start` or `ready` → `done`) beside them over its time alone in the
    /// same round and configuration: above 1 is slower.
    pub slowdown: Option<Summary>,
    /// Measured samples of the victim.
    pub n: usize,
    /// Of those, samples whose victim did not complete.
    pub failed: usize,
    /// Completed samples whose checksum is not the one the victim computes alone.
    pub wrong: usize,
    /// What happened to the aggressors (over every sample, measured or not).
    pub stability: Stability,
    /// Samples left out because an aggressor did not do its work, by reason (in the order
    /// first seen) with how many: no slowdown and no survival is drawn from them.
    pub not_measured: Vec<(String, usize)>,
}

impl InterferenceRow {
    /// True when every measured victim completed with the checksum it computes alone.
    pub fn survived(&self) -> bool {
        self.n > 0 && self.failed == 0 && self.wrong == 0
    }

    /// True when no sample of the condition was measured: every one had an aggressor that did
    /// not do its work.
    pub fn is_not_measured(&self) -> bool {
        self.n == 0 && !self.not_measured.is_empty()
    }

    /// Why samples were not measured, in one line: "1 of 1 not measured: fork aggressor 1: …".
    pub fn not_measured_text(&self) -> Option<String> {
        if self.not_measured.is_empty() {
            return None;
        }
        let left: usize = self.not_measured.iter().map(|(_, k)| k).sum();
        let reasons: Vec<&str> = self.not_measured.iter().map(|(r, _)| r.as_str()).collect();
        Some(format!(
            "{left} of {} sample{} not measured: {}",
            left + self.n,
            plural((left + self.n) as u64),
            reasons.join("; ")
        ))
    }
}

/// What the aggressors of one condition did and suffered, over its measured samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stability {
    /// Aggressor instances, over all samples.
    pub aggressors: usize,
    /// How they ended, and how often (`stopped`, `completed`, `oom-killed`, `failed`).
    pub outcomes: BTreeMap<String, usize>,
    /// OOM kills the host counted in the aggressors' cgroups.
    pub oom_kills: u64,
    /// OOM kills guests counted inside (VMs).
    pub guest_oom_kills: u64,
    /// Memory hogs killed (and started again), by the workload's count.
    pub hog_kills: u64,
    /// The most memory one hog touched.
    pub hog_bytes: u64,
    /// Forks the aggressors' cgroups refused at `pids.max` (the host's count).
    pub pids_max_refused: u64,
    /// Forks the bombs' processes saw refused (their own count: in a guest, the only one).
    pub forks_refused: u64,
    /// The most processes one bomb made.
    pub forks: u64,
    /// A bomb's limit inside a guest, when one ran there.
    pub fork_limit: Option<u64>,
    /// The loosest `pids.max` in force for a bomb's processes, read back at `ready`.
    pub pids_in_force: Option<u64>,
    /// The most tasks one aggressor's cgroup held (`pids.peak`), and what its runtime held
    /// idle: a bomb's processes are the difference, even when it could not report them.
    pub tasks_peak: Option<u64>,
    /// See [`Stability::tasks_peak`].
    pub runtime_tasks: Option<u64>,
    /// The highest memory charge of one aggressor's cgroup: how far a hog got, even when it
    /// could not report it.
    pub cgroup_peak_bytes: u64,
    /// Signals that ended an aggressor's child.
    pub signals: Vec<String>,
    /// Why aggressors failed, the first few.
    pub failures: Vec<String>,
}

impl Stability {
    /// Count the aggressors of one sample; `signals` holds the signals already listed.
    fn add(&mut self, n: &isolab_results::Neighbours, signals: &mut HashSet<String>) {
        for a in &n.aggressors {
            self.aggressors += 1;
            let kind = match &a.outcome {
                Outcome::Completed => "completed",
                Outcome::OomKilled => "oom-killed",
                Outcome::Stopped => "stopped",
                Outcome::Failed { reason } => {
                    if self.failures.len() < 3 && !self.failures.contains(reason) {
                        self.failures.push(reason.clone());
                    }
                    "failed"
                }
            };
            *self.outcomes.entry(kind.to_string()).or_default() += 1;
            let f = &a.facts;
            self.oom_kills += f.oom_kills.unwrap_or(0);
            self.guest_oom_kills += f.guest_oom_kills.unwrap_or(0);
            self.hog_kills += f.hog_kills.unwrap_or(0);
            self.hog_bytes = self.hog_bytes.max(f.hog_bytes.unwrap_or(0));
            self.pids_max_refused += f.pids_max_refused.unwrap_or(0);
            self.forks_refused += f.forks_refused.unwrap_or(0);
            self.forks = self.forks.max(f.forks.unwrap_or(0));
            self.fork_limit = self.fork_limit.or(f.fork_limit);
            self.pids_in_force = self.pids_in_force.max(f.pids_limit_in_force);
            self.tasks_peak = self.tasks_peak.max(a.evidence.tasks_peak);
            self.runtime_tasks = self.runtime_tasks.max(a.evidence.runtime_tasks);
            self.cgroup_peak_bytes = self.cgroup_peak_bytes.max(a.cgroup_peak_bytes.unwrap_or(0));
            if let Some(sig) = &f.child_signal {
                if signals.insert(sig.clone()) {
                    self.signals.push(sig.clone());
                }
            }
        }
    }

    /// Who stopped the aggressors' failure, and how, in words: "the OOM killer in its cgroup
    /// (12 kills)", "pids.max of its cgroup (3,410 forks refused)".
    pub fn describe(&self, aggressor: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        if aggressor == "oom" {
            if self.oom_kills > 0 {
                parts.push(format!(
                    "the OOM killer in the hog's own cgroup ({} kill{})",
                    self.oom_kills,
                    plural(self.oom_kills)
                ));
            }
            if self.guest_oom_kills > 0 {
                parts.push(format!(
                    "the guest's OOM killer ({} kill{})",
                    self.guest_oom_kills,
                    plural(self.guest_oom_kills)
                ));
            }
            if parts.is_empty() && self.hog_kills > 0 {
                parts.push(format!(
                    "{} kill{} of the hog ({})",
                    self.hog_kills,
                    plural(self.hog_kills),
                    self.signals.join(", ")
                ));
            }
            if parts.is_empty() {
                parts.push(format!(
                    "nothing: the hog reached {} and was stopped by the lab",
                    crate::format::bytes(self.hog_bytes as f64)
                ));
            } else if self.hog_bytes > 0 {
                parts.push(format!(
                    "a hog reached {}",
                    crate::format::bytes(self.hog_bytes as f64)
                ));
            } else {
                // The hog could not say (its whole instance was killed): its cgroup can.
                parts.push(format!(
                    "the hog reported nothing; its cgroup peaked at {}",
                    crate::format::bytes(self.cgroup_peak_bytes as f64)
                ));
            }
        } else if aggressor == "fork" {
            if self.pids_max_refused > 0 {
                let value = self
                    .pids_in_force
                    .map_or_else(String::new, |p| format!(" ({p}, read back)"));
                parts.push(format!(
                    "pids.max{value} of the bomb's own cgroup ({} forks refused)",
                    self.pids_max_refused
                ));
            } else if let Some(limit) = self.fork_limit {
                parts.push(format!(
                    "the guest's own limit, RLIMIT_NPROC {limit} ({} forks refused)",
                    self.forks_refused
                ));
            } else if self.forks_refused > 0 {
                parts.push(format!("{} forks refused", self.forks_refused));
            }
            match (self.forks, self.tasks_peak, self.runtime_tasks) {
                // The bomb could not say (its whole instance ended): its cgroup can.
                (0, Some(peak), Some(own)) => parts.push(format!(
                    "the bomb reported nothing; its cgroup reached {peak} tasks, the runtime's \
                     own {own}"
                )),
                _ => parts.push(format!("a bomb reached {} processes", self.forks + 1)),
            }
        }
        if !self.failures.is_empty() {
            parts.push(format!("aggressors failed: {}", self.failures.join("; ")));
        }
        parts.join("; ")
    }
}

pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The victim's alone sample a sample is paired with: same backend, round, configuration and
/// workload.
pub(super) type AloneKey = (String, u32, Config, String, u64, u64, u64);

pub(super) fn alone_key(r: &RunRecord) -> Option<AloneKey> {
    let n = r.neighbours.as_ref()?;
    let w = &r.workload;
    Some((
        r.backend.clone(),
        r.round,
        n.config,
        w.kernel.clone(),
        w.mib,
        w.iters,
        w.seed,
    ))
}

/// Every condition of an interference file, by backend (in table order), then victim,
/// aggressor, count and configuration.
pub fn interference(results: &Results) -> Vec<InterferenceRow> {
    let time = |r: &RunRecord| r.work_ns.map(|n| n as f64);
    // Every condition — (backend, victim, aggressor, count, configuration) — in the order it
    // first appears, with its measured samples, in one pass over the file.
    type Condition<'a> = (&'a str, &'a WorkloadRecord, &'a str, u32, Config);
    let mut conditions: Vec<(Condition, Vec<&RunRecord>)> = Vec::new();
    let mut place: HashMap<Condition, usize> = HashMap::new();
    // The victims' completed measured samples alone, by (backend, victim).
    let mut alone: HashMap<(&str, &WorkloadRecord), Vec<&RunRecord>> = HashMap::new();
    for r in &results.runs {
        let Some(n) = &r.neighbours else { continue };
        if n.count == 0 && !r.warmup && r.outcome == Outcome::Completed {
            alone
                .entry((r.backend.as_str(), &r.workload))
                .or_default()
                .push(r);
        }
        let Some(a) = &n.aggressor else { continue };
        let c = (
            r.backend.as_str(),
            &r.workload,
            a.as_str(),
            n.count,
            n.config,
        );
        let i = *place.entry(c).or_insert_with(|| {
            conditions.push((c, Vec::new()));
            conditions.len() - 1
        });
        if !r.warmup {
            conditions[i].1.push(r);
        }
    }
    let rank: HashMap<&str, usize> = results
        .backend_names()
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    let aggressor_rank =
        |a: &str| isolab_results::Aggressor::from_name(a).map_or(usize::MAX, |a| a as usize);
    // A stable sort: conditions that tie keep the order they first appeared in.
    let rank_of = |b: &str| rank.get(b).copied().unwrap_or(usize::MAX);
    conditions.sort_by(|(x, _), (y, _)| {
        (
            rank_of(x.0),
            aggressor_rank(x.2),
            x.1.kernel.as_str(),
            x.3,
            x.4,
        )
            .cmp(&(
                rank_of(y.0),
                aggressor_rank(y.2),
                y.1.kernel.as_str(),
                y.3,
                y.4,
            ))
    });
    // What a victim alone is paired with, per (backend, victim, configuration), and the
    // checksums it computes alone, per (backend, victim): built once, shared by every condition
    // of it.
    let mut pairings: HashMap<(&str, &WorkloadRecord, Config), Pairing<Option<AloneKey>>> =
        HashMap::new();
    let mut checksums: HashMap<(&str, &WorkloadRecord), HashSet<&str>> = HashMap::new();
    let none: Vec<&RunRecord> = Vec::new();
    let mut rows = Vec::new();
    for ((backend, victim, aggressor, count, config), measured) in conditions {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        // A sample whose aggressor did not do its work measures nothing about neighbours.
        let (left_out, measured): (Vec<&RunRecord>, Vec<&RunRecord>) =
            measured.into_iter().partition(|r| {
                r.neighbours
                    .as_ref()
                    .is_some_and(|n| n.not_measured.is_some())
            });
        let mut not_measured: Vec<(String, usize)> = Vec::new();
        for r in &left_out {
            let why = r.neighbours.as_ref().and_then(|n| n.not_measured.clone());
            let why = why.unwrap_or_default();
            match not_measured.iter_mut().find(|(w, _)| *w == why) {
                Some((_, k)) => *k += 1,
                None => not_measured.push((why, 1)),
            }
        }
        let done: Vec<&RunRecord> = measured
            .iter()
            .copied()
            .filter(|r| r.outcome == Outcome::Completed)
            .collect();
        let alone_runs = alone.get(&(backend, victim)).unwrap_or(&none);
        // The checksum the victim computes alone (any round: it does not vary).
        let sums = checksums.entry((backend, victim)).or_insert_with(|| {
            alone_runs
                .iter()
                .filter_map(|r| r.output.as_ref().map(|o| o.checksum.as_str()))
                .collect()
        });
        let wrong = done
            .iter()
            .filter(|r| {
                let sum = r.output.as_ref().map(|o| o.checksum.as_str());
                !sums.is_empty() && !sum.is_some_and(|s| sums.contains(s))
            })
            .count();
        let pairing = pairings
            .entry((backend, victim, config))
            .or_insert_with(|| {
                Pairing::of(
                    alone_runs
                        .iter()
                        .copied()
                        .filter(|r| r.neighbours.as_ref().is_some_and(|n| n.config == config)),
                    alone_key,
                    time,
                )
            });
        let slowdown = Summary::of(&pairing.ratios(done.iter().copied(), alone_key, time));
        let mut stability = Stability::default();
        let mut signals = HashSet::new();
        for r in measured.iter().chain(&left_out) {
            if let Some(n) = &r.neighbours {
                stability.add(n, &mut signals);
            }
        }
        rows.push(InterferenceRow {
            label: backends::label(results, backend),
            n: measured.len(),
            failed: measured.len() - done.len(),
            wrong,
            slowdown,
            stability,
            backend: backend.to_string(),
            victim: victim.clone(),
            aggressor: aggressor.to_string(),
            count,
            config,
            not_measured,
        });
    }
    rows
}

/// The victims' times alone, per backend, workload and configuration, for the tables: what
/// every slowdown is measured against.
pub fn interference_alone(
    results: &Results,
) -> Vec<(String, String, WorkloadRecord, Config, Summary)> {
    let mut out = Vec::new();
    for backend in results.backend_names() {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let label = backends::label(results, backend);
        // The backend's (workload, configuration)s alone, in the order they first appear, each
        // with its times: one pass over its samples.
        let mut seen: Vec<((&WorkloadRecord, Config), Vec<f64>)> = Vec::new();
        let mut place: HashMap<(&WorkloadRecord, Config), usize> = HashMap::new();
        for r in completed(results, backend) {
            let Some(n) = &r.neighbours else { continue };
            if n.count != 0 {
                continue;
            }
            let i = *place.entry((&r.workload, n.config)).or_insert_with(|| {
                seen.push(((&r.workload, n.config), Vec::new()));
                seen.len() - 1
            });
            seen[i].1.extend(r.work_ns.map(|n| n as f64));
        }
        // Stable: workloads of one kernel and configuration keep their first-seen order.
        seen.sort_by(|a, b| {
            (a.0 .0.kernel.as_str(), a.0 .1).cmp(&(b.0 .0.kernel.as_str(), b.0 .1))
        });
        for ((w, config), times) in seen {
            if let Some(s) = Summary::of(&times) {
                out.push((backend.clone(), label.clone(), w.clone(), config, s));
            }
        }
    }
    out
}
