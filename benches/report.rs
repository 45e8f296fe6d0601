//! `cargo bench --bench report`: how long `lab report` takes as its results file grows.
//!
//! A report must cost what its file is long (times a log), whatever the file's shape: doubling
//! the samples should roughly double every time below. Three shapes, each at three sizes:
//!
//! * `rounds` — what `lab run startup` writes: five backends, a sample of each per round;
//! * `backends` — a hostile file: every sample names a backend of its own (30,000 of them once
//!   kept `lab report` busy for 5 minutes in a release build);
//! * `workloads` — a hostile throughput file: every pair of samples (a process's and a
//!   container's, same round) runs a workload of its own.
//!
//! Two figures for each: `first-table`, reading the file and making the terminal's tables (what
//! `lab report` prints first), and `whole`, that and the HTML report written to a directory.
//! The files are written once, into a temporary directory, before the measurements.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use isolab_host::facts::KvmKind;
use isolab_report as report;
use isolab_results::{
    Environment, Facts, Family, Header, Outcome, OutputRecord, Record, Results, RunRecord,
    Timeline, WorkloadRecord, Writer, SCHEMA,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Samples in the files measured.
const SIZES: [usize; 3] = [2_500, 5_000, 10_000];

fn header(experiment: &str) -> Header {
    Header {
        schema: SCHEMA.into(),
        experiment: experiment.into(),
        environment: Environment {
            hostname: "benchhost".into(),
            cpu_model: "Bench CPU".into(),
            cpus: 2,
            memory_bytes: 8 << 30,
            kernel_release: "6.1.0-bench".into(),
            kvm: KvmKind::HardwareVtx,
            underneath: Default::default(),
            cgroup: "v2".into(),
            uid: 0,
            lab_version: "0.1.0".into(),
            commit: "bench".into(),
            date: "2026-01-01T00:00:00Z".into(),
            machine: Default::default(),
        },
        settings: serde_json::json!({"runs": 1}),
        skipped: vec![],
    }
}

/// A completed sample of `backend` in `round`, with a process's seven phase edges; `i` varies
/// its times, so no two samples are alike.
fn run(backend: &str, family: Family, round: u32, i: usize, workload: WorkloadRecord) -> RunRecord {
    let mut phases = Timeline::default();
    let t0 = 1_000_000_000 + i as u64 * 10_000_000;
    let jitter = (i as u64 * 7919) % 100_000;
    for (name, at) in [
        ("spawn", 0),
        ("cgroup", 134_880),
        ("fork", 296_230),
        ("exec", 301_979),
        ("ready", 927_455 + jitter),
        ("done", 956_689 + 2 * jitter),
        ("exited", 1_340_134 + 2 * jitter),
    ] {
        phases.push(name, t0 + at);
    }
    RunRecord {
        backend: backend.into(),
        family,
        round,
        order: 0,
        warmup: false,
        workload,
        outcome: Outcome::Completed,
        startup_ns: Some(927_455 + jitter),
        work_ns: Some(29_234 + jitter),
        phases,
        output: Some(OutputRecord {
            checksum: "0xc0ffee1501ab0001".into(),
            ops: 1000,
            bytes: 0,
        }),
        memory_at_ready: None,
        memory_at_done: None,
        cgroup_peak_bytes: Some(524_288),
        cpu_ns: None,
        probe: vec![],
        facts: Facts::default(),
        neighbours: None,
        traced: None,
        children_cpu_ns: None,
    }
}

fn ready() -> WorkloadRecord {
    WorkloadRecord {
        kernel: "ready".into(),
        mib: 0,
        iters: 0,
        seed: 1,
    }
}

/// The results file of `shape` with `n` samples, written into `dir`.
fn file(dir: &Path, shape: &str, n: usize) -> PathBuf {
    let five = [
        ("process", Family::Process),
        ("container", Family::Container),
        ("oci:runc", Family::Container),
        ("vm", Family::VmNoOs),
        ("vm-linux", Family::VmGuestOs),
    ];
    let runs: Vec<RunRecord> = match shape {
        "rounds" => (0..n)
            .map(|i| {
                let (name, family) = five[i % 5];
                run(name, family, (i / 5) as u32, i, ready())
            })
            .collect(),
        "backends" => (0..n)
            .map(|i| run(&format!("b{i:05}"), Family::Process, 0, i, ready()))
            .collect(),
        "workloads" => (0..n)
            .map(|i| {
                let (name, family) = five[i % 2];
                let workload = WorkloadRecord {
                    kernel: "cpu".into(),
                    mib: 0,
                    iters: 1000 + (i / 2) as u64,
                    seed: 1,
                };
                run(name, family, 0, i, workload)
            })
            .collect(),
        other => unreachable!("no shape {other}"),
    };
    let experiment = if shape == "workloads" {
        "throughput"
    } else {
        "startup"
    };
    let dir = dir.join(format!("{shape}-{n}"));
    let mut w = Writer::create(&dir, &header(experiment)).expect("a results file");
    for r in runs {
        w.append(&Record::Run(Box::new(r))).expect("a line");
    }
    w.path().to_path_buf()
}

fn bench(c: &mut Criterion) {
    let temp = std::env::temp_dir().join(format!("isolab-bench-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    let mut g = c.benchmark_group("report");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for shape in ["rounds", "backends", "workloads"] {
        for n in SIZES {
            let path = file(&temp, shape, n);
            let out = temp.join(format!("report-{shape}-{n}"));
            g.bench_with_input(
                BenchmarkId::new(format!("{shape}/first-table"), n),
                &path,
                |b, path| {
                    b.iter(|| {
                        let r = Results::read(path).expect("the file reads back");
                        report::terminal(&r)
                    })
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("{shape}/whole"), n),
                &path,
                |b, path| {
                    b.iter(|| {
                        let r = Results::read(path).expect("the file reads back");
                        let text = report::terminal(&r);
                        report::render(&[r], &out).expect("a report");
                        text
                    })
                },
            );
        }
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&temp);
}

criterion_group!(benches, bench);
criterion_main!(benches);
