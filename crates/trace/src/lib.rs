//! # isolab-trace
//!
//! The phases of programs the lab did not write, from the kernel's own events. A runtime such as
//! runc reports nothing about its own start-up: from outside it is one bar from "launch" to
//! "ready". But every step it takes is a system call or a scheduler event the kernel can record:
//! the CLI's `execve`, the re-execution of `runc init`, the `unshare` into new namespaces, the
//! move into a cgroup, the `pivot_root`, the workload's `execve`. With those events recorded on
//! the lab's clock, the one bar becomes a waterfall.
//!
//! * [`Tracer`] records the events of the lab's own process tree in the lab's trace instance
//!   ([`isolab_resources::tracefs`]), one sample at a time;
//! * [`events`] reads the kernel's text back into events;
//! * [`phases`] is the table — program, event → named phase — for each runtime and VMM, and the
//!   cross-check of isolab's own phases against the kernel's.

pub mod events;
pub mod phases;

use isolab_resources::ownership::Ledger;
pub use isolab_resources::tracefs::TraceError;
use isolab_resources::tracefs::{self, Instance};
use isolab_results::TracedPhase;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The tracepoints recorded, `system/event`, and a filter where one keeps the volume down.
/// The scheduler's three are required (no phase without them); the others are used where the
/// kernel has them (system call tracepoints need `CONFIG_FTRACE_SYSCALLS`; KVM's, the module).
pub const EVENTS: &[(&str, Option<&str>)] = &[
    ("sched/sched_process_fork", None),
    ("sched/sched_process_exec", None),
    ("sched/sched_process_exit", None),
    ("task/task_rename", None),
    ("cgroup/cgroup_attach_task", None),
    ("syscalls/sys_enter_clone", None),
    ("syscalls/sys_enter_clone3", None),
    ("syscalls/sys_enter_unshare", None),
    ("syscalls/sys_enter_setns", None),
    ("syscalls/sys_enter_pivot_root", None),
    ("syscalls/sys_enter_mount", None),
    ("syscalls/sys_enter_seccomp", None),
    ("syscalls/sys_enter_execve", None),
    // Only KVM's set-up requests and KVM_RUN, not every ioctl of every program (a filter is
    // evaluated in the kernel, before the event is written to the buffer).
    (
        "syscalls/sys_enter_ioctl",
        Some("cmd == 0xae01 || cmd == 0xae41 || cmd == 0x4020ae46 || cmd == 0xae80"),
    ),
    ("kvm/kvm_entry", None),
];

/// The trigger that turns `kvm_entry` off after its first hit: a VM enters its guest on every
/// return from an exit, thousands of times a second; only the first entry is a phase.
const KVM_ENTRY_ONCE: &str = "disable_event:kvm:kvm_entry:1";

/// Per-CPU buffer: a Docker start-up records a few thousand events of ~100 bytes.
const BUFFER_KIB: u32 = 4096;

/// The lab's tracer: its trace instance, set up for start-up phases.
#[derive(Debug)]
pub struct Tracer {
    instance: Instance,
    /// Events this kernel lacks (said once, when the tracer is opened).
    pub missing: Vec<String>,
    kvm_entry: bool,
    /// The cross-checks of the samples so far ([`Tracer::check`]), by backend.
    checks: Mutex<Vec<(String, phases::Check)>>,
}

impl Tracer {
    /// Make the lab's trace instance (mounting tracefs at `private_mount` if the host has none
    /// mounted) and switch on [`EVENTS`].
    pub fn open(ledger: &Arc<Ledger>, private_mount: &Path) -> Result<Tracer, TraceError> {
        let instance = Instance::open(ledger, private_mount)?;
        instance.buffer_kib(BUFFER_KIB)?;
        let mut missing = Vec::new();
        for (i, (event, filter)) in EVENTS.iter().enumerate() {
            if let Err(e) = instance.enable(event, *filter) {
                if i < 3 {
                    return Err(e);
                }
                missing.push(event.to_string());
            }
        }
        let kvm_entry = !missing.iter().any(|m| m == "kvm/kvm_entry");
        Ok(Tracer {
            instance,
            missing,
            kvm_entry,
            checks: Mutex::new(Vec::new()),
        })
    }

    /// The instance's directory in tracefs.
    pub fn dir(&self) -> &Path {
        self.instance.dir()
    }

    /// Start recording a sample: the lab's own threads, `also` (daemons the sample will ask for
    /// work, such as dockerd and containerd) and everything they fork from now on.
    pub fn begin(&self, also: &[u32]) -> Result<(), TraceError> {
        if self.kvm_entry {
            // Re-arm "first entry only": the last sample's trigger has switched the event off.
            let _ = self.instance.write(
                "events/kvm/kvm_entry/trigger",
                &format!("!{KVM_ENTRY_ONCE}"),
            );
            let _ = self.instance.write("events/kvm/kvm_entry/enable", "1");
            let _ = self
                .instance
                .write("events/kvm/kvm_entry/trigger", KVM_ENTRY_ONCE);
        }
        let mut tasks = tracefs::own_tasks();
        tasks.extend_from_slice(also);
        self.instance.start(&tasks)
    }

    /// Stop recording and name the phases of a sample of `backend` from `since_ns` on
    /// ([`phases::phases`]).
    pub fn end(&self, backend: &str, since_ns: u64) -> Result<Vec<TracedPhase>, TraceError> {
        let text = self.instance.stop()?;
        Ok(phases::phases(backend, &events::parse(&text), since_ns))
    }
}

impl Tracer {
    /// Cross-check a traced sample of `backend`: its `reported` phases (name, ns) against its
    /// `traced` ones ([`phases::cross_check`]), kept for [`Tracer::check_summary`].
    pub fn check(&self, backend: &str, reported: &[(String, u64)], traced: &[TracedPhase]) {
        let checks = phases::cross_check(backend, reported, traced);
        let mut all = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        all.extend(checks.into_iter().map(|c| (backend.to_string(), c)));
    }

    /// One line per pair checked: how many samples, the median and the largest difference, and
    /// whether they agree: the median within [`phases::TOLERANCE_NS`] (one sample preempted on
    /// a busy machine may be further; that is counted, not hidden).
    pub fn check_summary(&self) -> Vec<String> {
        let all = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let mut pairs: Vec<(&str, &str, &str)> = Vec::new();
        for (b, c) in all.iter() {
            if !pairs.contains(&(b.as_str(), c.reported, c.traced)) {
                pairs.push((b.as_str(), c.reported, c.traced));
            }
        }
        pairs
            .into_iter()
            .map(|(b, r, t)| {
                let of: Vec<&phases::Check> = all
                    .iter()
                    .filter(|(b2, c)| b2 == b && c.reported == r && c.traced == t)
                    .map(|(_, c)| c)
                    .collect();
                let worst = of.iter().map(|c| c.delta_ns.unsigned_abs()).max().unwrap_or(0);
                let bad = of.iter().filter(|c| !c.agrees()).count();
                let median = phases::median_abs_delta_ns(of.iter().copied()).unwrap_or(0);
                let tolerance = phases::TOLERANCE_NS / 1_000_000;
                format!(
                    "{b}: `{r}` (the lab's) vs `{t}` (the kernel's): {} sample{}, median difference \
                     {:.3} ms, largest {:.3} ms: {}{}",
                    of.len(),
                    if of.len() == 1 { "" } else { "s" },
                    median as f64 / 1e6,
                    worst as f64 / 1e6,
                    if median <= phases::TOLERANCE_NS {
                        format!("agree (median within {tolerance} ms)")
                    } else {
                        format!("DISAGREE (median beyond {tolerance} ms)")
                    },
                    if bad > 0 {
                        format!("; {bad} sample{} beyond it", if bad == 1 { "" } else { "s" })
                    } else {
                        String::new()
                    }
                )
            })
            .collect()
    }
}

/// The task ids of every process named one of `names` (`/proc/*/comm`), all their threads.
/// Docker's start-up happens mostly in daemons the lab did not start: they are followed too.
pub fn tasks_of(names: &[&str]) -> Vec<u32> {
    use isolab_host::procfs::numbered;
    numbered("/proc")
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            names.contains(&comm.trim_end())
        })
        .flat_map(|pid| numbered(format!("/proc/{pid}/task")))
        .map(|tid| tid as u32)
        .collect()
}
