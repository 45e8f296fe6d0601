//! `lab report` as a user meets it: results files in, tables and an HTML report out.
//!
//! The results files are written here from the schema's own types, so these tests need no
//! privileges and run nothing but the `lab` binary.

use isolab_results::{
    Facts, Header, Outcome, OutputRecord, Record, RunRecord, Timeline, WorkloadRecord, Writer,
};
mod common;

use common::{made_up_header, temp_dir as temp};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn header(experiment: &str) -> Header {
    made_up_header(experiment, serde_json::json!({"runs": 4}))
}

fn run(backend: &str, round: u32, startup_ns: u64) -> RunRecord {
    let mut phases = Timeline::default();
    let t0 = 1_000_000_000 * u64::from(round + 1);
    phases.push("spawn", t0);
    phases.push("cgroup", t0 + startup_ns / 4);
    phases.push("ready", t0 + startup_ns);
    phases.push("done", t0 + startup_ns + 100);
    RunRecord {
        backend: backend.into(),
        // What the lab's own backend of this name declares, as `lab run` records it.
        family: isolab_backends::by_name(backend).unwrap().family(),
        round,
        order: 0,
        warmup: false,
        workload: WorkloadRecord {
            kernel: "ready".into(),
            mib: 0,
            iters: 0,
            seed: 1,
        },
        outcome: Outcome::Completed,
        startup_ns: Some(startup_ns),
        work_ns: Some(100),
        phases,
        output: Some(OutputRecord {
            checksum: "0x01".into(),
            ops: 0,
            bytes: 0,
        }),
        memory_at_ready: None,
        memory_at_done: None,
        cgroup_peak_bytes: None,
        cpu_ns: None,
        probe: vec![],
        facts: Facts::default(),
        neighbours: None,
        traced: None,
        children_cpu_ns: None,
    }
}

/// A startup results file where the container starts in 2 ms and the Linux VM in 20 ms.
fn startup_file(dir: &Path) -> PathBuf {
    let mut w = Writer::create(dir, &header("startup")).unwrap();
    for round in 0..8 {
        for (b, ns) in [
            ("process", 700_000),
            ("container", 2_000_000),
            ("vm-linux", 20_000_000),
        ] {
            let r = run(b, round, ns + u64::from(round) * 1000);
            w.append(&Record::Run(Box::new(r))).unwrap();
        }
    }
    w.path().to_path_buf()
}

fn lab(cwd: &Path, args: &[&str]) -> Output {
    Command::new(LAB)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_results_directory_becomes_tables_and_a_report_beside_it() {
    let root = temp("dir");
    startup_file(&root.join("run/startup"));
    let o = lab(&root, &["report", "run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("p50 ms") && out.contains("container"), "{out}");
    assert!(
        out.contains("  supported     A container starts faster than a virtual machine.")
            && out.contains("guest OS (vm-linux): container ÷ vm-linux 0.100×"),
        "the claims this file judges: {out}"
    );
    let index = root.join("run/report/index.html");
    assert!(
        out.contains(&format!("report: {}", index.display())),
        "{out}"
    );
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(html.contains("<svg") && html.contains("Claims ledger"));
    assert!(root.join("run/report/startup-waterfall.svg").exists());
    assert!(root.join("run/report/tables.md").exists());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn out_chooses_the_directory_and_no_path_means_the_newest_run() {
    let root = temp("out");
    let file = startup_file(&root.join("reports/20260101-000000-startup"));
    let o = lab(
        &root,
        &["report", file.to_str().unwrap(), "--out", "elsewhere"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(root.join("elsewhere/index.html").exists());
    // Without paths: the newest results directory under ./reports.
    startup_file(&root.join("reports/20260102-000000-startup"));
    let o = lab(&root, &["report"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(root
        .join("reports/20260102-000000-startup/report/index.html")
        .exists());
    assert!(!root.join("reports/20260101-000000-startup/report").exists());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn what_is_not_results_is_refused_with_exit_status_2() {
    let root = temp("refuse");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    for args in [&["report", "empty"][..], &["report"][..]] {
        let o = lab(&root, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert!(!root.join("empty/report").exists());
    std::fs::remove_dir_all(root).unwrap();
}
