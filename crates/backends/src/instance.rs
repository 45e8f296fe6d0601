//! One running instance, whatever the backend, and what it leaves behind: a [`Run`].
//!
//! Every backend ends in the same shape — some host processes in one cgroup, writing marker lines
//! to a pipe — so one type handles waiting, memory sampling, reaping and teardown for all of
//! them. A backend builds an [`Instance`] with [`Instance::new`] right after its processes exist.
//!
//! Teardown is the [`Drop`] of this type (and of the [`Cgroup`] inside it): whatever happens —
//! a workload that crashes, a marker that never comes, an error in the lab, Ctrl-C — dropping the
//! instance kills its processes, reaps them, removes its cgroup and runs the backend's own
//! clean-up. Nothing a run creates outlives it.
//!
//! An instance counts as started only once its limits are seen to hold: at `ready`, each of its
//! processes — in its cgroup, below its main process, or found by the backend (Docker's
//! container) — is looked up in its own `/proc/PID/cgroup`, and every limit the lab records
//! must be in force there ([`isolab_resources::cgroup::in_force`]); what was read is recorded with the
//! run.
//!
//! While waiting, an instance watches three things at once with `poll(2)`: its marker pipe, a
//! *pidfd* of its main process (Linux 5.3; readable the moment that process ends) and the lab's
//! stop request ([`isolab_host::interrupt`]). The pidfd is what notices a runtime that died — an OCI
//! runtime killed by the OOM killer or by hand — at once: its container's processes, which still
//! hold the marker pipe open, are then killed with the instance's cgroup, instead of the lab
//! waiting out its timeout for an end of file that would never come.

use isolab_host::clock::now_ns;
use isolab_host::memory::ProcessMemory;
use isolab_payload::{Event, Output, Spec};
use isolab_resources::cgroup::{BlockDevice, Cgroup, Limits};
use isolab_results::{Facts, Family};
pub use isolab_results::{MemorySample, Outcome, Phase, Timeline};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the processes left in an instance's cgroup may keep its marker pipe open after the
/// instance's main process has ended (a console relay finishing its last lines), before they are
/// killed.
const AFTER_MAIN: Duration = Duration::from_secs(1);

use crate::BackendError;
use isolab_spawn::child::ParentEnds;

/// Everything one finished instance produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Backend name.
    pub backend: String,
    /// What ran.
    pub spec: Spec,
    /// Phase edges on the host clock.
    pub timeline: Timeline,
    /// How it ended.
    pub outcome: Outcome,
    /// The kernel's result, if it finished.
    pub output: Option<Output>,
    /// Memory while held at `ready` (only when the spec asked to hold).
    pub memory_at_ready: Option<MemorySample>,
    /// Memory while held at `done` (only when the spec asked to hold).
    pub memory_at_done: Option<MemorySample>,
    /// The cgroup's peak charge over the whole run.
    pub cgroup_peak_bytes: Option<u64>,
    /// CPU time the instance used, where the cgroup reports it.
    pub cpu_ns: Option<u64>,
    /// Facts from the `probe` kernel, in the order reported.
    pub probe: Vec<(String, String)>,
    /// Facts the backend's runtime reported (guest RAM size, exit counts, ...).
    pub info: BTreeMap<String, String>,
}

impl Run {
    /// Start-up time in nanoseconds.
    pub fn startup_ns(&self) -> Option<u64> {
        self.timeline.startup_ns()
    }

    /// The results record of this run, by a backend of the `declared` family: the facts
    /// reported as text become typed [`Facts`], and the run's family follows from both
    /// ([`Family::of_run`]).
    pub fn record(
        &self,
        declared: Family,
        round: u32,
        order: u32,
        warmup: bool,
    ) -> isolab_results::RunRecord {
        let facts = Facts::from_wire(&self.info);
        isolab_results::RunRecord {
            backend: self.backend.clone(),
            family: Family::of_run(declared, &facts),
            round,
            order,
            warmup,
            workload: (&self.spec).into(),
            outcome: self.outcome.clone(),
            startup_ns: self.startup_ns(),
            work_ns: self.work_ns(),
            phases: self.timeline.clone(),
            output: self.output.as_ref().map(Into::into),
            memory_at_ready: self.memory_at_ready,
            memory_at_done: self.memory_at_done,
            cgroup_peak_bytes: self.cgroup_peak_bytes,
            cpu_ns: self.cpu_ns,
            probe: self.probe.clone(),
            facts,
            neighbours: None,
            traced: None,
            children_cpu_ns: None,
        }
    }

    /// Time of the kernel's measured part: `start` (or `ready`) → `done`.
    pub fn work_ns(&self) -> Option<u64> {
        self.timeline.work_ns()
    }
}

/// What a backend hands over to make an [`Instance`].
pub struct Parts {
    /// Backend name.
    pub backend: String,
    /// What is running.
    pub spec: Spec,
    /// The process whose end is the instance's end.
    pub main: Pid,
    /// Other children of the lab to reap (launch helpers).
    pub helpers: Vec<Pid>,
    /// The instance's cgroup.
    pub cgroup: Option<Cgroup>,
    /// The lab's ends of the instance's pipes.
    pub ends: ParentEnds,
    /// Phases the lab stamped so far (at least `spawn`).
    pub timeline: Timeline,
    /// How long to wait for each marker.
    pub timeout: Duration,
    /// Backend clean-up to run after the processes are gone (remove a bundle, delete a runtime's
    /// state, ...).
    pub cleanup: Vec<Box<dyn FnOnce() + Send>>,
}

/// Facts to collect when an instance has ended, as (key, value) pairs of the wire protocol.
pub type EndNote = Box<dyn FnOnce() -> Vec<(String, String)> + Send>;

/// A running instance.
pub struct Instance {
    backend: String,
    spec: Spec,
    main: Pid,
    helpers: Vec<Pid>,
    cgroup: Option<Cgroup>,
    timeline: Timeline,
    timeout: Duration,
    cleanup: Vec<Box<dyn FnOnce() + Send>>,
    /// Facts to collect once the instance has ended (what the lab's peer received from it).
    at_end: Vec<EndNote>,
    control: Option<File>,
    lines: LineReader,
    stderr: File,
    stderr_seen: Vec<u8>,
    output: Option<Output>,
    error: Option<(String, String)>,
    probe: Vec<(String, String)>,
    info: BTreeMap<String, String>,
    memory_at_ready: Option<MemorySample>,
    memory_at_done: Option<MemorySample>,
    ready: bool,
    done: bool,
    status: Option<WaitStatus>,
    stopped: bool,
    own_clock: bool,
    /// Restored from a checkpoint: the workload said `ready` before it was saved, so its first
    /// marker after the restore is the restored instance's `ready` ([`Instance::restored`]):
    /// the moment it was let go.
    restored: Option<u64>,
    /// A pidfd of `main`, while it runs.
    pidfd: Option<OwnedFd>,
    /// When `main` ended and the pipe was still open: the moment to kill what is left.
    orphans_deadline: Option<Instant>,
    /// The limits the instance's processes must be under, checked once at `ready`, and the
    /// disk an I/O limit is on (see [`Instance::expect_limits`]).
    expected: Option<(Limits, Option<BlockDevice>)>,
    /// The main process is a client outside the instance (Docker's CLI): not one of its
    /// processes.
    main_outside: bool,
    /// The most refusals at the pids limit counted so far ([`Instance::pids_hits`]).
    pids_hits: u64,
    /// How to find the instance's processes that neither its cgroup nor `main`'s process tree
    /// holds (a daemon's container).
    find: Option<Box<dyn Fn() -> Vec<Pid> + Send>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("backend", &self.backend)
            .field("main", &self.main)
            .finish()
    }
}

impl Instance {
    /// Take charge of a launched instance.
    pub fn new(parts: Parts) -> Instance {
        let Parts {
            backend,
            spec,
            main,
            helpers,
            cgroup,
            ends,
            timeline,
            timeout,
            cleanup,
        } = parts;
        let expected = cgroup.as_ref().map(|c| {
            let (limits, disk) = c.limits();
            (limits, disk.cloned())
        });
        Instance {
            expected,
            main_outside: false,
            pids_hits: 0,
            find: None,
            backend,
            spec,
            main,
            helpers,
            cgroup,
            timeline,
            timeout,
            cleanup,
            at_end: Vec::new(),
            control: Some(ends.control),
            lines: LineReader::new(ends.report),
            stderr: ends.stderr,
            stderr_seen: Vec::new(),
            output: None,
            error: None,
            probe: Vec::new(),
            info: BTreeMap::new(),
            memory_at_ready: None,
            memory_at_done: None,
            ready: false,
            done: false,
            status: None,
            stopped: false,
            own_clock: false,
            restored: None,
            pidfd: pidfd_open(main),
            orphans_deadline: None,
        }
    }

    /// Collect the facts `note` returns once the instance has ended, before its clean-up.
    pub fn at_end(&mut self, note: EndNote) {
        self.at_end.push(note);
    }

    /// Run `cleanup` too once the instance's processes are gone (after the backend's own).
    pub fn clean_up_too(&mut self, cleanup: Box<dyn FnOnce() + Send>) {
        self.cleanup.push(cleanup);
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The host PID of the instance's main process.
    pub fn main_pid(&self) -> Pid {
        self.main
    }

    /// The instance's cgroup.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// The timeline so far.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Change the main process (a launcher learns its instance's PID after [`Instance::new`]).
    pub fn set_main(&mut self, main: Pid) {
        self.helpers.push(self.main);
        self.main = main;
        self.pidfd = pidfd_open(main);
    }

    /// The workload's clock is not the host's: stamp its markers when they arrive instead of
    /// trusting the times they carry. gVisor keeps time for its sandbox itself (the Sentry's
    /// `CLOCK_MONOTONIC` starts near zero), so a workload there cannot read the host's clock.
    pub fn stamp_on_arrival(&mut self) {
        self.own_clock = true;
    }

    /// This instance is a checkpointed one restored (by CRIU): its workload had reported
    /// `ready` and was waiting for the host's go-ahead when it was saved, and it wakes up still
    /// waiting. It is let go now, and the first marker it sends after that — stamped by the
    /// restored workload itself — is taken as its `ready`: the moment restored code did
    /// useful work, not the moment the restoring tool said it was done.
    ///
    /// Lines stamped before that moment are the restoring program's own (its `fork` and `exec`
    /// as the instance's first process): they stay phases of the restore.
    pub fn restored(&mut self) -> Result<(), BackendError> {
        self.restored = Some(now_ns());
        self.note(isolab_results::info::START, "restored");
        self.release()
    }

    /// Record a phase edge the lab learned afterwards (e.g. from a daemon's event log), at
    /// `t_ns` on the host's monotonic clock.
    pub fn push_phase(&mut self, name: &str, t_ns: u64) {
        self.timeline.push(name, t_ns);
    }

    /// Record a fact about the instance known to the lab itself (see [`isolab_results::info`]).
    pub fn note(&mut self, key: &str, value: impl ToString) {
        self.info.insert(key.to_string(), value.to_string());
    }

    /// The facts reported so far, as text (noted by the lab, or sent by the instance).
    pub fn info(&self) -> &BTreeMap<String, String> {
        &self.info
    }

    /// The limits the instance's processes must be under, when they are not those written
    /// into its cgroup: a runtime that applies them itself (Docker, a student's runtime) is
    /// checked against what it was asked for, with the I/O limit on `disk`.
    pub fn expect_limits(&mut self, limits: Limits, disk: Option<BlockDevice>) {
        self.expected = Some((limits, disk));
    }

    /// The main process is a client that stays outside the instance (Docker's CLI): the
    /// instance's processes are found in its cgroup and through `find`.
    pub fn main_is_a_client(&mut self, find: Box<dyn Fn() -> Vec<Pid> + Send>) {
        self.main_outside = true;
        self.find = Some(find);
    }

    /// True once the instance has ended — its main process (a runtime's client, a VMM, the
    /// workload itself) or its workload's marker stream — seen without waiting: its pidfd is
    /// readable the moment the process ends. A sandbox whose own threads were refused by
    /// `pids.max`, or that the OOM killer killed, may leave a few helper processes in its
    /// cgroup; its main process says it is over.
    pub fn has_ended(&self) -> bool {
        if self.status.is_some() || self.lines.eof {
            return true;
        }
        let Some(fd) = &self.pidfd else {
            return false;
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout: poll returns at once.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    /// Every process of the instance the lab can find: those in its cgroup in any hierarchy
    /// (and below it: a runtime's container cgroup), the main process and all it started (a
    /// runtime's container, wherever the runtime put it), and what the backend finds itself.
    pub fn processes(&self) -> Vec<Pid> {
        let mut all: Vec<Pid> = self.cgroup.as_ref().map(Cgroup::pids).unwrap_or_default();
        if !self.main_outside {
            all.extend(isolab_resources::cgroup::in_force::process_tree(self.main));
        }
        if let Some(find) = &self.find {
            all.extend(find());
        }
        all.sort();
        all.dedup();
        all
    }

    /// Check, once, that the limits the lab records for this instance are in force for every
    /// process of it, read back from each process's own cgroups; note what was found (the
    /// facts `*_limit_in_force*`). A limit that is not in force is an error: the run must not
    /// be counted as run under it.
    fn verify_limits(&mut self) -> Result<(), BackendError> {
        let Some((limits, disk)) = self.expected.take() else {
            return Ok(());
        };
        if !limits.any() {
            return Ok(());
        }
        let found =
            isolab_resources::cgroup::in_force::verify(&limits, disk.as_ref(), &self.processes())
                .map_err(|detail| BackendError::LimitsNotInForce {
                backend: self.backend.clone(),
                detail,
            })?;
        use isolab_results::info;
        match found {
            Some(f) => {
                if let Some(b) = f.memory_bytes {
                    self.note(info::MEMORY_LIMIT_IN_FORCE_BYTES, b);
                }
                if let Some(p) = f.pids {
                    self.note(info::PIDS_LIMIT_IN_FORCE, p);
                }
                if let Some(c) = f.cpus {
                    self.note(info::CPU_LIMIT_IN_FORCE, format!("{c:.3}"));
                }
                if let Some(b) = f.io_bps {
                    self.note(info::IO_LIMIT_IN_FORCE_BPS, b);
                }
                self.note(info::LIMITS_READ_FROM, f.read_from);
            }
            None => self.note(
                info::LIMITS_READ_FROM,
                "nothing: the instance's processes had ended by `ready`",
            ),
        }
        Ok(())
    }

    /// Wait until the workload reports `ready`, and check that its limits are in force
    /// ([`Instance::verify_limits`]). With `hold`, also sample memory while the workload
    /// waits, then let it go on.
    pub fn wait_ready(&mut self) -> Result<(), BackendError> {
        self.wait_for("ready", |i| i.ready)?;
        self.verify_limits()?;
        // A restored instance was let go already (its `ready` is a marker sent after that).
        if self.spec.hold && self.restored.is_none() {
            self.memory_at_ready = Some(self.sample_memory());
            self.release()?;
        }
        Ok(())
    }

    /// Wait until the workload reports `done`. With `hold`, also sample memory while the
    /// workload waits, then let it go on.
    pub fn wait_done(&mut self) -> Result<(), BackendError> {
        self.wait_for("done", |i| i.done)?;
        if self.spec.hold {
            self.memory_at_done = Some(self.sample_memory());
            self.release()?;
        }
        Ok(())
    }

    /// [`Instance::wait_done`], giving up at `deadline` ([`BackendError::Timeout`]) instead of
    /// after the instance's own timeout: a victim of the interference experiment that its
    /// neighbours starve is stopped when the experiment's bound is reached.
    pub fn wait_done_by(&mut self, deadline: Instant) -> Result<(), BackendError> {
        self.wait_for_until("done", deadline, |i| i.done)
    }

    /// Stop an instance that may still be running, and collect it: let it go (a kernel that
    /// listens for the host, such as `sleep`, `fork-bomb` or `mem-hog`, ends itself and reports
    /// what it saw), give it `grace` to end, then kill what is left of it. A stop request of the
    /// lab cuts the grace short.
    pub fn stop_within(mut self, grace: Duration) -> Result<Run, BackendError> {
        self.let_go();
        let deadline = Instant::now() + grace;
        while !self.lines.eof && Instant::now() < deadline {
            match self.next_event(deadline, true) {
                Ok(()) => {}
                Err(BackendError::Timeout { .. } | BackendError::Interrupted { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        if !self.lines.eof {
            if self.status.is_none() {
                let _ = kill(self.main, Signal::SIGKILL);
            }
            if let Some(cg) = &self.cgroup {
                let _ = cg.kill_all(Duration::from_secs(5));
            }
        }
        self.finish()
    }

    /// Wait until the workload has marked phase `name` (e.g. `libraries`, after it loaded an
    /// image's libraries).
    pub fn wait_phase(&mut self, name: &'static str) -> Result<(), BackendError> {
        self.wait_for(name, |i| i.timeline.at(name).is_some())
    }

    /// Wait for a fact the runtime reports with an `info` line (e.g. a PID a launcher learns).
    pub fn wait_info(&mut self, key: &'static str) -> Result<String, BackendError> {
        self.wait_for(key, |i| i.info.contains_key(key))?;
        Ok(self.info[key].clone())
    }

    /// Send the workload its go-ahead (it is held, or sleeping).
    pub fn release(&mut self) -> Result<(), BackendError> {
        if let Some(control) = self.control.as_mut() {
            // A workload that has already exited closed its end: EPIPE is not an error here.
            match control.write_all(b"g") {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(BackendError::io("release the instance")(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Memory of the instance now: its cgroup's counters and its processes' PSS/USS.
    pub fn sample_memory(&self) -> MemorySample {
        let cgroup = self.cgroup.as_ref();
        let pids: Vec<i32> = match cgroup {
            Some(cg) => cg.pids().into_iter().map(Pid::as_raw).collect(),
            None => vec![self.main.as_raw()],
        };
        MemorySample {
            cgroup: cgroup.and_then(Cgroup::memory),
            processes: ProcessMemory::of(pids),
        }
    }

    /// Tell an instance that would otherwise run on (a `sleep` workload) to end: close the
    /// control pipe, which its blocking read sees as end of file. [`Instance::finish`] collects it.
    pub fn let_go(&mut self) {
        self.pids_hits();
        self.stopped = true;
        self.control = None;
    }

    /// How many forks the pids limit refused so far. A runtime removes its container's
    /// cgroup, where the kernel counted them, as soon as the container ends (see
    /// [`Cgroup::pids_limit_hits`]), so the count is taken while the workload still runs — when
    /// it is let go, when it reports `done` — and the most seen is kept.
    fn pids_hits(&mut self) -> u64 {
        let now = self.cgroup.as_ref().map_or(0, Cgroup::pids_limit_hits);
        self.pids_hits = self.pids_hits.max(now);
        self.pids_hits
    }

    /// [`Instance::let_go`], then [`Instance::finish`]. A workload that does not end by itself
    /// within the timeout is killed.
    pub fn stop(mut self) -> Result<Run, BackendError> {
        self.let_go();
        self.finish()
    }

    /// Let the workload run to its end, reap every process, remove the cgroup and return the
    /// run. `exited` is stamped once all of that is done.
    ///
    /// When the lab is asked to stop meanwhile, the workload gets a moment to end by itself
    /// (a released `sleep` does), then it is killed: the run is collected either way.
    pub fn finish(mut self) -> Result<Run, BackendError> {
        // Closing our end of the control pipe releases a workload still waiting for the host.
        self.control = None;
        let mut deadline = isolab_host::clock::deadline(self.timeout);
        let mut watch_interrupt = true;
        while !self.lines.eof {
            match self.next_event(deadline, watch_interrupt) {
                Ok(()) => {}
                Err(BackendError::Interrupted { .. }) => {
                    watch_interrupt = false;
                    deadline = deadline.min(Instant::now() + AFTER_MAIN);
                }
                Err(BackendError::Timeout { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        self.reap(deadline);
        let pids_hits = self.pids_hits();
        let cgroup = self.cgroup.take();
        let peak = cgroup
            .as_ref()
            .and_then(Cgroup::memory)
            .and_then(|m| m.peak_bytes);
        let cpu_ns = cgroup.as_ref().and_then(Cgroup::cpu_usage_ns);
        let oom_kills = cgroup.as_ref().map_or(0, Cgroup::oom_kills);
        let oom = oom_kills > 0;
        if oom {
            self.note(isolab_results::info::OOM_KILLS, oom_kills);
        }
        let pids_note = pids_note(pids_hits);
        // Reaching the limit does not always end the instance (a fork that fails may be handled):
        // the run records it either way.
        if pids_hits > 0 {
            self.note(isolab_results::info::PIDS_MAX_REFUSED, pids_hits);
        }
        for note in self.at_end.drain(..) {
            for (key, value) in note() {
                self.info.insert(key, value);
            }
        }
        // The backend's clean-up first: a runtime removes its container (and the cgroups it
        // made, below the instance's) through its own interface; then the cgroup goes.
        for cleanup in self.cleanup.drain(..) {
            cleanup();
        }
        if let Some(cg) = cgroup {
            cg.destroy()?;
        }
        self.timeline.mark("exited");
        let mut outcome = self.outcome(oom);
        if let Outcome::Failed { reason } = &mut outcome {
            reason.push_str(&pids_note);
            reason.push_str(&self.stderr_tail());
        }
        Ok(Run {
            backend: self.backend.clone(),
            spec: self.spec,
            timeline: std::mem::take(&mut self.timeline),
            outcome,
            output: self.output,
            memory_at_ready: self.memory_at_ready,
            memory_at_done: self.memory_at_done,
            cgroup_peak_bytes: peak,
            cpu_ns,
            probe: std::mem::take(&mut self.probe),
            info: std::mem::take(&mut self.info),
        })
    }

    fn outcome(&self, oom: bool) -> Outcome {
        let status = self.status;
        if oom {
            return Outcome::OomKilled;
        }
        if let Some((step, detail)) = &self.error {
            return Outcome::Failed {
                reason: format!("{step}: {detail}"),
            };
        }
        match status {
            Some(WaitStatus::Exited(_, 0)) if self.done => Outcome::Completed,
            // Let go by the lab and ended quietly, or killed by the lab for not ending: stopped.
            // A crash after the lab let go (a SIGSEGV, a runtime's status 139) is still a crash.
            Some(WaitStatus::Exited(_, 0) | WaitStatus::Signaled(_, Signal::SIGKILL, _)) | None
                if self.stopped =>
            {
                Outcome::Stopped
            }
            Some(s) => Outcome::Failed {
                reason: format!(
                    "{}{}",
                    describe_status(s),
                    if self.done { "" } else { " before done" }
                ),
            },
            None => Outcome::Failed {
                reason: "did not exit".into(),
            },
        }
    }

    /// Read events until `reached` holds, the instance ends, the timeout passes or the lab is
    /// asked to stop.
    fn wait_for(
        &mut self,
        what: &'static str,
        reached: impl Fn(&Instance) -> bool,
    ) -> Result<(), BackendError> {
        let deadline = isolab_host::clock::deadline(self.timeout);
        self.wait_for_until(what, deadline, reached)
    }

    /// [`Instance::wait_for`] with a deadline of the caller's.
    fn wait_for_until(
        &mut self,
        what: &'static str,
        deadline: Instant,
        reached: impl Fn(&Instance) -> bool,
    ) -> Result<(), BackendError> {
        while !reached(self) {
            if self.error.is_some() {
                let hits = self.pids_hits();
                let (step, detail) = self.error.clone().unwrap_or_default();
                return Err(BackendError::Instance {
                    step,
                    detail: format!("{detail}{}", pids_note(hits)),
                });
            }
            if self.lines.eof {
                self.reap(Instant::now() + Duration::from_secs(5));
                let oom = self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
                return Err(BackendError::Exited {
                    waiting_for: what,
                    status: match self.status {
                        _ if oom => "killed by the OOM killer (memory limit)".into(),
                        Some(s) => describe_status(s),
                        None => "unknown status".into(),
                    },
                    stderr: self.stderr_tail(),
                });
            }
            match self.next_event(deadline, true) {
                Err(BackendError::Timeout { after, .. }) => {
                    return Err(BackendError::Timeout {
                        waiting_for: what,
                        after,
                    })
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Read and apply one event, or notice the end of the stream, the end of the main process
    /// or a stop request (an error, [`BackendError::Interrupted`], when `watch_interrupt`).
    fn next_event(&mut self, deadline: Instant, watch_interrupt: bool) -> Result<(), BackendError> {
        let wake = match self.orphans_deadline {
            Some(orphans) => deadline.min(orphans),
            None => deadline,
        };
        let interrupt = if watch_interrupt {
            isolab_host::interrupt::fd()
        } else {
            None
        };
        let main = self.pidfd.as_ref().map(|fd| fd.as_fd());
        let line = match self.lines.next(wake, self.timeout, main, interrupt) {
            Ok(Next::Line(line)) => line,
            Ok(Next::Eof) => return Ok(()),
            Ok(Next::Interrupted) => {
                let sig = isolab_host::interrupt::requested().unwrap_or(libc::SIGINT);
                return Err(BackendError::Interrupted {
                    signal: isolab_host::interrupt::name(sig),
                });
            }
            Ok(Next::MainExited) => {
                self.main_exited();
                return Ok(());
            }
            Err(BackendError::Timeout { .. })
                if self.orphans_deadline.is_some_and(|t| Instant::now() >= t) =>
            {
                // The main process is gone but something still holds the marker pipe: the
                // container of a runtime that was killed, say. Nothing of the instance may live
                // on without it.
                self.orphans_deadline = None;
                if let Some(cg) = &self.cgroup {
                    let _ = cg.kill_all(Duration::from_secs(5));
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(event) = Event::parse(&line) else {
            return Ok(());
        };
        let arrived = now_ns();
        let timeline = &mut self.timeline;
        let own_clock = self.own_clock;
        let event = match event {
            _ if !own_clock => event,
            Event::Phase { name, .. } => Event::Phase { name, t_ns: None },
            Event::Ready { .. } => Event::Ready { t_ns: None },
            Event::Start { .. } => Event::Start { t_ns: None },
            Event::Done { output, .. } => Event::Done { t_ns: None, output },
            other => other,
        };
        if let (Some(let_go), false) = (self.restored, self.ready) {
            let t = match &event {
                Event::Phase { t_ns, .. } | Event::Start { t_ns } | Event::Done { t_ns, .. } => {
                    Some(t_ns.unwrap_or(arrived))
                }
                _ => None,
            };
            if let Some(t) = t.filter(|&t| t >= let_go) {
                timeline.push("ready", t);
                self.ready = true;
            }
        }
        // A line without `t=` (a console a host thread reads) is stamped on arrival.
        match event {
            Event::Phase { name, t_ns } => timeline.push(&name, t_ns.unwrap_or(arrived)),
            Event::Ready { t_ns } => {
                timeline.push("ready", t_ns.unwrap_or(arrived));
                self.ready = true;
            }
            Event::Start { t_ns } => timeline.push("start", t_ns.unwrap_or(arrived)),
            Event::Done { t_ns, output } => {
                timeline.push("done", t_ns.unwrap_or(arrived));
                self.output = Some(output);
                self.done = true;
                let hits = self.cgroup.as_ref().map_or(0, Cgroup::pids_limit_hits);
                self.pids_hits = self.pids_hits.max(hits);
            }
            Event::Error { step, errno, msg } => {
                let detail = match (errno, msg) {
                    (Some(e), _) => format!("{} (errno {e})", Errno::from_raw(e).desc()),
                    (None, Some(m)) => m,
                    (None, None) => "failed".into(),
                };
                self.error = Some((step, detail));
            }
            Event::Probe { key, value } => self.probe.push((key, value)),
            Event::Info { key, value } => {
                self.info.insert(key, value);
            }
        }
        Ok(())
    }

    /// The main process has ended (its pidfd became readable): collect its status, and give
    /// whatever else holds the marker pipe a moment before it is killed.
    fn main_exited(&mut self) {
        self.pidfd = None;
        if self.status.is_none() {
            self.status = wait_until(self.main, Instant::now() + Duration::from_secs(1));
        }
        if !self.lines.eof {
            self.orphans_deadline = Some(Instant::now() + AFTER_MAIN);
        }
    }

    /// Wait for the main process and the helpers; kill the main process if it does not end by
    /// `deadline`.
    fn reap(&mut self, deadline: Instant) {
        if self.status.is_none() {
            self.status = wait_until(self.main, deadline).or_else(|| {
                let _ = kill(self.main, Signal::SIGKILL);
                wait_until(self.main, Instant::now() + Duration::from_secs(5))
            });
        }
        for pid in self.helpers.drain(..) {
            if wait_until(pid, Instant::now() + Duration::from_secs(1)).is_none() {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
        }
    }

    /// The last few hundred bytes the instance wrote on stderr, for error messages: for an
    /// external runtime (runc, crun, runsc, docker, qemu), its own reason. What was read is
    /// kept, so the error of a failed wait and the failed record of the run both carry it.
    fn stderr_tail(&mut self) -> String {
        let _ = isolab_spawn::child::set_nonblocking(&self.stderr);
        let mut buf = Vec::new();
        let _ = (&self.stderr).take(64 * 1024).read_to_end(&mut buf);
        self.stderr_seen.extend_from_slice(&buf);
        let keep = self.stderr_seen.len().saturating_sub(4096);
        self.stderr_seen.drain(..keep);
        let text = String::from_utf8_lossy(&self.stderr_seen);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            let start = text.len().saturating_sub(400);
            let start = (start..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            let lines: Vec<&str> = text[start..]
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            format!(" (stderr: {})", lines.join(" | "))
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // An instance that was not finished (an error, Ctrl-C): kill everything, then clean up.
        if self.status.is_none() {
            let _ = kill(self.main, Signal::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(Duration::from_secs(5));
        }
        self.reap(Instant::now() + Duration::from_secs(5));
        self.cgroup.take();
        for cleanup in self.cleanup.drain(..) {
            cleanup();
        }
    }
}

/// waitpid with a deadline. A pidfd (Linux 5.3) becomes readable the moment the process
/// exits, so the lab wakes up exactly then instead of polling; without one, poll with
/// `WNOHANG` and growing pauses.
pub(crate) fn wait_until(pid: Pid, deadline: Instant) -> Option<WaitStatus> {
    let pidfd = pidfd_open(pid);
    let mut pause = Duration::from_micros(20);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Some(status),
            // Not our child (any more): nothing to wait for.
            Err(Errno::ECHILD) => return Some(WaitStatus::Exited(pid, 0)),
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match &pidfd {
            Some(fd) => {
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                );
            }
            None => {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(5));
            }
        }
    }
}

/// When the instance's cgroup refused a fork or a thread at its pids limit: words saying so,
/// for the error of an instance that failed (it saw only EAGAIN).
fn pids_note(hits: u64) -> String {
    match hits {
        0 => String::new(),
        n => format!(
            " (the instance reached its pids limit: pids.max refused {n} fork{})",
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// "exited with status 3", "killed by SIGKILL", ...
pub fn describe_status(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!(
                "killed by {sig}{}",
                if core { " (core dumped)" } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}

/// A pidfd of `pid` (Linux 5.3): a descriptor that becomes readable when the process ends.
/// `None` on older kernels, where the lab falls back to its timeouts.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open with a pid and no flags; the result is checked.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: a new fd that nothing else owns.
    (raw >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) })
}

/// What [`LineReader::next`] woke up for.
enum Next {
    /// A complete line (or the last, unterminated one).
    Line(String),
    /// End of the stream: every writer has closed the pipe.
    Eof,
    /// The main process ended.
    MainExited,
    /// The lab was asked to stop.
    Interrupted,
}

/// Reads lines from a pipe with a deadline.
struct LineReader {
    file: File,
    buf: Vec<u8>,
    eof: bool,
}

impl LineReader {
    fn new(file: File) -> LineReader {
        LineReader {
            file,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The next complete line, the end of the stream, or whichever of `main` (a pidfd) and
    /// `interrupt` becomes readable first.
    fn next(
        &mut self,
        deadline: Instant,
        timeout: Duration,
        main: Option<BorrowedFd>,
        interrupt: Option<BorrowedFd>,
    ) -> Result<Next, BackendError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Ok(Next::Line(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.eof {
                // A last line without a newline still counts.
                if self.buf.is_empty() {
                    return Ok(Next::Eof);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Next::Line(String::from_utf8_lossy(&line).into_owned()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BackendError::Timeout {
                    waiting_for: "a marker",
                    after: timeout,
                });
            }
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let mut fds = vec![PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            if let Some(fd) = interrupt {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            if let Some(fd) = main {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            match poll(
                &mut fds,
                PollTimeout::try_from(ms.max(1)).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(BackendError::sys("poll")(e)),
            }
            let ready = |i: usize| fds.get(i).and_then(|f| f.any()).unwrap_or(false);
            let (pipe_ready, interrupted) = (ready(0), interrupt.is_some() && ready(1));
            let main_ended = main.is_some() && ready(if interrupt.is_some() { 2 } else { 1 });
            drop(fds);
            // A stop request first; then the instance's own words, to the last line, before
            // concluding from its main process's end.
            if interrupted {
                return Ok(Next::Interrupted);
            }
            if !pipe_ready {
                if main_ended {
                    return Ok(Next::MainExited);
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            match self.file.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BackendError::io("read markers")(e)),
            }
        }
    }
}
