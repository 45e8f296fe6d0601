//! Start-up phases from the kernel's own events (`lab run startup --trace`, `crates/trace`): real
//! traced runs name the steps of isolab's container and of runc between `spawn` and `ready`; the
//! lab's trace instance is its own — another lab's is left as it was — and it does not outlive
//! the lab, not even one killed with SIGKILL.
//!
//! As root, on a kernel with tracefs (every test here); runc installed for the runc test.

mod common;

use common::{eventually, lab_ids, serial, temp_dir};
use isolab_backends::lab::Lab;
use isolab_backends::Limits;
use isolab_experiments as experiment;
use isolab_experiments::Settings;
use isolab_resources::tracefs;
use isolab_results::Results;
use isolab_trace::phases::{cross_check, median_abs_delta_ns, TOLERANCE_NS};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// A view of tracefs for the test: the host's, or one mounted in `temp` (unmounted on drop).
struct View {
    root: PathBuf,
    mounted: bool,
}

impl View {
    fn new(temp: &Path) -> View {
        if let Some(root) = tracefs::find_mount() {
            return View {
                root,
                mounted: false,
            };
        }
        let root = temp.join("tracefs-view");
        fs::create_dir_all(&root).unwrap();
        nix::mount::mount(
            Some("tracefs"),
            &root,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount tracefs (as root, on a kernel with tracing)");
        View {
            root,
            mounted: true,
        }
    }

    fn instance(&self, id: &str) -> PathBuf {
        self.root.join("instances").join(tracefs::instance_name(id))
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(&self.root);
        }
    }
}

fn settings(out: &Path, runs: u32) -> Settings {
    Settings {
        runs,
        warmup: 0,
        seed: 29,
        limits: Limits::default(),
        out: out.to_path_buf(),
        progress: false,
    }
}

#[test]
fn traced_startups_of_container_and_runc_name_three_phases_before_ready() {
    let _serial = serial();
    let temp = temp_dir("trace-phases");
    let view = View::new(&temp);
    let lab = Lab::in_dir(&temp).unwrap();
    let instance = view.instance(lab.ledger().id());
    let backends = ["container".to_string(), "oci:runc".to_string()];
    // Six rounds: the first, third and fifth traced, the others not (the overhead's
    // comparison); three traced samples give a median for the cross-check.
    let startup =
        experiment::startup::run(&lab, Some(&backends), &settings(&temp, 6), true).unwrap();
    assert!(
        !instance.exists(),
        "the trace instance is removed when the traced experiment ends"
    );
    let results = Results::read(&startup.results).unwrap();
    for name in &backends {
        let runs: Vec<_> = results.runs_of(name).collect();
        assert_eq!(
            runs.len(),
            6,
            "{name}: three traced and three untraced samples"
        );
        for r in &runs {
            assert_eq!(
                r.traced.is_some(),
                r.round % 2 == 0,
                "{name}: even rounds are traced"
            );
        }
        let mut checks = Vec::new();
        for run in runs.iter().filter(|r| r.traced.is_some()) {
            let reported: Vec<(String, u64)> = run
                .phases
                .phases
                .iter()
                .map(|p| (p.name.clone(), p.t_ns))
                .collect();
            checks.extend(cross_check(name, &reported, run.traced.as_ref().unwrap()));
        }
        // The lab's own stamps and the kernel's events agree, pair by pair, in the median.
        assert!(!checks.is_empty(), "{name}: something to cross-check");
        let mut pairs: Vec<&str> = checks.iter().map(|c| c.reported).collect();
        pairs.sort_unstable();
        pairs.dedup();
        for pair in pairs {
            let median = median_abs_delta_ns(checks.iter().filter(|c| c.reported == pair));
            assert!(
                median.is_some_and(|m| m <= TOLERANCE_NS),
                "{name}: `{pair}` and its kernel event differ by {median:?} ns in the median \
                 (tolerance {TOLERANCE_NS}): {checks:?}"
            );
        }
        let run = runs[0];
        let traced = run.traced.as_ref().expect("round 0 is traced");
        let spawn = run.phases.at("spawn").unwrap();
        let ready = run.phases.at("ready").unwrap();
        let between: Vec<_> = traced
            .iter()
            .filter(|p| (spawn..=ready).contains(&p.t_ns))
            .collect();
        let names: Vec<&str> = between.iter().map(|p| p.name.as_str()).collect();
        assert!(
            between.len() >= 3,
            "{name}: at least three named phases between spawn and ready: {names:?}"
        );
        assert!(between.iter().all(|p| !p.program.is_empty() && p.pid > 0));
        assert!(
            names.contains(&"workload: execve"),
            "{name}: the workload's execve is seen: {names:?}"
        );
    }
}

#[test]
fn another_labs_trace_instance_is_left_as_it_was() {
    let _serial = serial();
    let temp = temp_dir("trace-other");
    let view = View::new(&temp);
    // Another lab's instance (a made-up id: no lab of that id runs, so no lab reaps it), in the
    // middle of recording with settings of its own.
    let other = view.root.join("instances").join("isolab-0123456789ab");
    let _ = fs::remove_dir(&other);
    fs::create_dir(&other).unwrap();
    let write = |file: &str, value: &str| fs::write(other.join(file), value).unwrap();
    write("trace_clock", "global");
    write("buffer_size_kb", "64");
    write("events/sched/sched_process_exit/enable", "1");
    write("set_event_pid", &std::process::id().to_string());
    write("tracing_on", "1");
    let settings_of = |dir: &Path| -> Vec<String> {
        [
            "trace_clock",
            "buffer_size_kb",
            "set_event",
            "set_event_pid",
            "tracing_on",
            "options/event-fork",
        ]
        .iter()
        .map(|f| fs::read_to_string(dir.join(f)).unwrap())
        .collect()
    };
    let before = settings_of(&other);
    let top_before = settings_of(&view.root);
    {
        let lab = Lab::in_dir(&temp).unwrap();
        experiment::startup::run(
            &lab,
            Some(&["process".to_string()]),
            &settings(&temp, 1),
            true,
        )
        .unwrap();
    }
    let after = settings_of(&other);
    let top_after = settings_of(&view.root);
    fs::write(other.join("tracing_on"), "0").unwrap();
    fs::remove_dir(&other).unwrap();
    assert_eq!(before, after, "another lab's instance was changed");
    assert_eq!(
        top_before, top_after,
        "the machine's own buffer was changed"
    );
}

#[test]
fn a_killed_lab_leaves_no_trace_instance() {
    let _serial = serial();
    let temp = temp_dir("trace-killed");
    let view = View::new(&temp);
    let mut child = Command::new(LAB)
        .env("TMPDIR", &temp)
        .args([
            "run",
            "startup",
            "--trace",
            "--backends",
            "process",
            "--runs",
            "100000",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
        ])
        .arg(temp.join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut id = None;
    assert!(
        eventually(Duration::from_secs(60), || {
            id = lab_ids(&temp).into_iter().next();
            id.as_ref().is_some_and(|id| view.instance(id).is_dir())
        }),
        "the lab made its trace instance"
    );
    let instance = view.instance(&id.unwrap());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || !instance.exists()),
        "{} outlived its lab",
        instance.display()
    );
}
