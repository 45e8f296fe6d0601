//! SIGINT, SIGTERM and SIGHUP: the first stops the run at once, the lab removes everything it
//! made, keeps every completed sample and exits with 128 + the signal's number; more signals
//! during that teardown change nothing.

mod common;

use common::{serial, temp_dir, HostState};
use isolab_results::{Outcome, Results};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// A lab run in the background, killed if the test fails half-way.
struct Lab(Option<Child>);

impl Lab {
    fn start(temp: &Path, args: &[&str]) -> Lab {
        Lab(Some(
            Command::new(LAB)
                .args(args)
                .env("TMPDIR", temp)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.0.as_ref().unwrap().id() as i32), sig).unwrap();
    }

    /// Wait for the lab to end, at most `limit`: its status code and its stderr.
    fn end_within(mut self, limit: Duration) -> (Option<i32>, String) {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the lab did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let o = child.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait until `done` holds (at most a minute).
fn until(done: impl FnMut() -> bool) {
    assert!(
        common::eventually(Duration::from_secs(60), done),
        "not within a minute"
    );
}

/// Some process of a lab whose work directory is in `temp` is in an instance cgroup.
fn instance_running(temp: &Path) -> bool {
    !common::instances_of(&common::lab_ids(temp)).is_empty()
}

/// `lab exec` of a kernel that would run for hours on each `(backend, signal)`: each signal
/// ends it within seconds, with its own status, and nothing is left.
fn stop_signals_end_exec(name: &str, cases: &[(&str, Signal, i32)]) {
    let _serial = serial();
    let temp = temp_dir(name);
    let before = HostState::now(&temp);
    for &(backend, sig, code) in cases {
        let lab = Lab::start(
            &temp,
            &[
                "exec",
                "--backend",
                backend,
                "--kernel",
                "cpu",
                "--iters",
                "100000000000",
            ],
        );
        until(|| instance_running(&temp));
        lab.signal(sig);
        let (status, stderr) = lab.end_within(Duration::from_secs(15));
        assert_eq!(status, Some(code), "{backend}, {sig}: {stderr}");
        assert!(stderr.contains(&format!("stopped by {sig}")), "{stderr}");
        assert_eq!(HostState::now(&temp), before, "{backend}, {sig}");
    }
    std::fs::remove_dir_all(temp).unwrap();
}

/// On a container, a runtime's container and a plain process, SIGINT, SIGTERM and SIGHUP each
/// end `lab exec` at once. (Before, SIGTERM killed the lab without clean-up and the first SIGINT
/// was ignored.)
#[test]
fn a_stop_signal_ends_exec_at_once_with_its_status_and_leaves_nothing() {
    stop_signals_end_exec(
        "sig-exec",
        &[
            ("container", Signal::SIGINT, 130),
            ("oci:runc", Signal::SIGTERM, 143),
            ("process", Signal::SIGHUP, 129),
        ],
    );
}

/// The same for a microVM.
#[test]
#[ignore = "needs /dev/kvm (CI runs it)"]
fn a_stop_signal_ends_a_microvm_exec() {
    common::needs_kvm();
    stop_signals_end_exec("sig-exec-vm", &[("vm", Signal::SIGTERM, 143)]);
}

/// `lab exec --kernel sleep` is meaningful: it sleeps for `--hold` seconds and ends well, or until
/// a stop signal. `--hold` with a kernel that ends by itself is a mistake.
#[test]
fn exec_sleep_lasts_for_hold_or_until_a_signal() {
    let _serial = serial();
    let temp = temp_dir("sig-sleep");
    let before = HostState::now(&temp);
    let started = Instant::now();
    let lab = Lab::start(
        &temp,
        &[
            "exec",
            "--backend",
            "process",
            "--kernel",
            "sleep",
            "--hold",
            "1",
        ],
    );
    let (status, stderr) = lab.end_within(Duration::from_secs(30));
    assert_eq!(status, Some(0), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(1));

    let lab = Lab::start(
        &temp,
        &["exec", "--backend", "container", "--kernel", "sleep"],
    );
    until(|| instance_running(&temp));
    lab.signal(Signal::SIGINT);
    let (status, stderr) = lab.end_within(Duration::from_secs(15));
    assert_eq!(status, Some(130), "{stderr}");

    let o = Command::new(LAB)
        .args(["exec", "--kernel", "cpu", "--hold", "1"])
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}

fn results_file(out: &Path) -> Option<PathBuf> {
    let dir = std::fs::read_dir(out).ok()?.flatten().next()?.path();
    Some(dir.join("results.jsonl")).filter(|p| p.exists())
}

fn lines(path: &Option<PathBuf>) -> usize {
    path.as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map_or(0, |t| t.lines().count())
}

/// A stop signal in the density experiment's idle window (here 5 s) ends it at once;
/// the steps measured so far are kept, and the ladder's end says why it stopped. A second,
/// third and fourth signal during the teardown of the live instances change nothing.
#[test]
fn stop_signals_end_the_density_idle_window_and_more_signals_leak_nothing() {
    let _serial = serial();
    let temp = temp_dir("sig-density");
    let before = HostState::now(&temp);
    for (backend, repeat) in [("process", false), ("container", true)] {
        let out = temp.join(format!("out-{backend}"));
        let lab = Lab::start(
            &temp,
            &[
                "run",
                "density",
                "--backends",
                backend,
                "--max",
                "16",
                "--idle-window-ms",
                "5000",
                "--no-progress",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        // The environment line, then the first step (N = 1, after its 5 s window); then N = 2
        // starts in moments and its window begins.
        until(|| lines(&results_file(&out)) >= 2);
        std::thread::sleep(Duration::from_millis(500));
        let signalled = Instant::now();
        lab.signal(Signal::SIGTERM);
        if repeat {
            for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                std::thread::sleep(Duration::from_millis(2));
                let _ = kill(Pid::from_raw(lab.0.as_ref().unwrap().id() as i32), sig);
            }
        }
        let (status, stderr) = lab.end_within(Duration::from_secs(30));
        assert_eq!(status, Some(143), "the first signal decides: {stderr}");
        assert!(
            signalled.elapsed() < Duration::from_secs(4),
            "the window was cut short: {:?}",
            signalled.elapsed()
        );
        let results = Results::read(&results_file(&out).unwrap()).unwrap();
        assert!(!results.density.is_empty(), "the first step is kept");
        let end = &results.density_ends[0];
        assert!(end.reason.contains("interrupted"), "{}", end.reason);
        let mut after = HostState::now(&temp);
        after.temp_entries.retain(|e| !e.starts_with("out-"));
        assert_eq!(after, before, "{backend}");
    }
    std::fs::remove_dir_all(temp).unwrap();
}

/// SIGTERM and SIGHUP stop an experiment between samples like Ctrl-C does (see tests/cli.rs):
/// the samples taken are kept, and none is half-written.
#[test]
fn sigterm_and_sighup_stop_an_experiment_and_keep_its_samples() {
    let _serial = serial();
    let temp = temp_dir("sig-startup");
    let before = HostState::now(&temp);
    for (sig, code) in [(Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        let out = temp.join(format!("out-{code}"));
        let lab = Lab::start(
            &temp,
            &[
                "run",
                "startup",
                "--backends",
                "process,oci:runc",
                "--runs",
                "100000",
                "--no-progress",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        until(|| lines(&results_file(&out)) >= 8);
        lab.signal(sig);
        let (status, stderr) = lab.end_within(Duration::from_secs(30));
        assert_eq!(status, Some(code), "{stderr}");
        let results = Results::read(&results_file(&out).unwrap()).unwrap();
        assert!(results.runs.len() >= 7);
        assert!(results.runs.iter().all(|r| r.outcome == Outcome::Completed));
        let mut after = HostState::now(&temp);
        after.temp_entries.retain(|e| !e.starts_with("out-"));
        assert_eq!(after, before, "{sig}");
    }
    std::fs::remove_dir_all(temp).unwrap();
}
