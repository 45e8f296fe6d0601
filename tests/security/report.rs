//! `lab report` and `lab export` of hostile results files.
//!
//! Root runs `lab report` on results files any user can write. A file of 19 MB naming 30,000
//! backends (one sample each) kept it busy for many minutes — every question about a backend
//! scanned every sample of the file, the list of backends was de-duplicated by comparing each
//! name with every other, then sorted with a key that scanned every sample again — and it did
//! not stop for SIGINT or SIGTERM there: "already stopping; it ends in a moment", then nothing,
//! for 24 minutes (a debug build on a busy machine). A release build took 5 minutes to make the
//! whole report here, 34 on a busy machine.
//!
//! Now a report costs what its file is long (times a log): a terminal table shows its first
//! rows, a plot of thousands of rows is not drawn, the claims ledger leaves out a file naming
//! more backends than it compares pair by pair, and a stop request ends the work at every stage
//! — reading, statistics, the ledger, tables, plots, the page, the CSV text — with the status a
//! shell expects (130, 143) and without writing half a report.
//!
//! How fast it is now is measured by `cargo bench --bench report`; these tests check what it
//! does, with bounds generous enough for a debug build on a busy machine.

use crate::common::{made_up_header, temp_dir};
use isolab_results::{
    Facts, Family, Header, Outcome, OutputRecord, Record, RunRecord, Timeline, WorkloadRecord,
    Writer,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// How long a whole report of the hostile file may take before the test gives up: far more
/// than it needs (about 10 s in a debug build here), far less than it took before.
const GUARD: Duration = Duration::from_secs(300);

/// How long after a stop signal the lab must have ended.
const STOPS_WITHIN: Duration = Duration::from_secs(5);

/// The backends of the hostile file.
const BACKENDS: usize = 30_000;

fn header(experiment: &str) -> Header {
    made_up_header(experiment, serde_json::json!({"runs": 1}))
}

/// A sample of `backend` as a process's start-up records it: its seven phase edges, its
/// checksum, its cgroup's peak. About 650 bytes as a line.
fn run(backend: &str, family: Family, round: u32) -> RunRecord {
    let mut phases = Timeline::default();
    let t0 = 507_553_078_175 + u64::from(round) * 1_000_000;
    for (name, at) in [
        ("spawn", 0),
        ("cgroup", 134_880),
        ("fork", 296_230),
        ("exec", 301_979),
        ("ready", 927_455),
        ("done", 956_689),
        ("exited", 1_340_134),
    ] {
        phases.push(name, t0 + at);
    }
    RunRecord {
        backend: backend.into(),
        family,
        round,
        order: 0,
        warmup: false,
        workload: WorkloadRecord {
            kernel: "ready".into(),
            mib: 0,
            iters: 0,
            seed: 1_513_679_373_964_673_025,
        },
        outcome: Outcome::Completed,
        startup_ns: Some(927_455 + u64::from(round % 1000)),
        work_ns: Some(29_234),
        phases,
        output: Some(OutputRecord {
            checksum: "0xc0ffee1501ab0001".into(),
            ops: 0,
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

/// Write `runs` as the results file of a `startup` experiment in `dir`.
fn results_file(dir: &Path, runs: impl Iterator<Item = RunRecord>) -> PathBuf {
    let mut w = Writer::create(dir, &header("startup")).unwrap();
    for r in runs {
        w.append(&Record::Run(Box::new(r))).unwrap();
    }
    w.path().to_path_buf()
}

/// The hostile file: [`BACKENDS`] samples, each of a backend of its own (19 MB).
fn many_backends(dir: &Path) -> PathBuf {
    let path = results_file(
        dir,
        (0..BACKENDS).map(|i| run(&format!("b{i:05}"), Family::Process, i as u32)),
    );
    let size = std::fs::metadata(&path).unwrap().len();
    assert!((17 << 20..22 << 20).contains(&size), "{size} bytes");
    path
}

/// A `lab` in the background, its output drained as it comes (a full pipe would stop it).
struct Lab {
    child: Child,
    started: Instant,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
    /// The first byte of its standard output came (the first table).
    printed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How a `lab` ended.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// From its start to its end.
    took: Duration,
}

impl Lab {
    fn start(temp: &Path, args: &[&str]) -> Lab {
        let mut child = Command::new(LAB)
            .args(args)
            .env("TMPDIR", temp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let printed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = printed.clone();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n @ 1..) = out.read(&mut chunk) {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                text.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Lab {
            child,
            started: Instant::now(),
            stdout,
            stderr,
            printed,
        }
    }

    /// Still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Wait for the end, at most `limit` from now; past it, kill the lab and fail with `what`.
    fn end_within(mut self, limit: Duration, what: &str) -> Ended {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{what}: the lab did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ended {
            took: self.started.elapsed(),
            code: status.code(),
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }
}

/// The files in `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `lab report` of a file naming 30,000 backends makes the whole report: every backend in
/// its tables, the terminal's table cut to its first rows, no plot of 30,000 rows, the ledger
/// saying why it leaves the file out. A release build took 5 minutes before.
#[test]
fn a_report_naming_30000_backends_is_made_whole() {
    let temp = temp_dir("report-many-backends");
    let file = many_backends(&temp.join("results"));
    let out = temp.join("out");
    let o = Lab::start(
        &temp,
        &[
            "report",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .end_within(GUARD, "a whole report");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("… and 29000 more rows"),
        "{}",
        &o.stdout[..o.stdout.len().min(2000)]
    );
    assert!(o.stdout.contains("report: "), "{}", o.stdout);
    let tables = std::fs::read_to_string(out.join("tables.md")).unwrap();
    let rows = tables
        .lines()
        .filter(|l| {
            l.strip_prefix("| b")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    assert_eq!(rows, BACKENDS, "every backend has its row in tables.md");
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("Not plotted: 30000 backends"));
    assert!(page.contains("names 30000 backends, more than the ledger compares pair by pair"));
    let mut files = entries(&out);
    files.sort();
    assert_eq!(files, ["index.html", "tables.md"], "no plots, no leftovers");
    eprintln!("the whole report took {:?}", o.took);
    std::fs::remove_dir_all(temp).unwrap();
}

/// SIGTERM or SIGINT at any moment of that report — reading the file, computing the terminal's
/// tables, printing them, the page's statistics, the ledger, rendering the page — ends the lab
/// within seconds, with 143 or 130 and "stopped by SIGTERM" (SIGINT), and no report written:
/// the report directory stays empty. The moments are spread over the time a whole report takes
/// here, measured first.
#[test]
fn sigterm_and_sigint_stop_that_report_at_every_stage() {
    let temp = temp_dir("report-stops");
    let file = many_backends(&temp.join("results"));
    let out = temp.join("out");
    let args = |out: &Path| -> Vec<String> {
        vec![
            "report".into(),
            file.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let start = |out: &Path| {
        let a = args(out);
        Lab::start(&temp, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let whole = start(&out).end_within(GUARD, "a whole report");
    assert_eq!(whole.code, Some(0), "{}", whole.stderr);
    let fractions = [0.02, 0.08, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75];
    let mut stopped = 0;
    for (i, f) in fractions.into_iter().enumerate() {
        let sig = if i % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        let out = temp.join(format!("out-{i}"));
        let mut lab = start(&out);
        let at = whole.took.mul_f64(f);
        while lab.started.elapsed() < at && lab.running() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !lab.running() {
            // Faster this time than the whole report was: nothing to stop.
            let o = lab.end_within(GUARD, "a report");
            assert_eq!(o.code, Some(0), "{}", o.stderr);
            continue;
        }
        let stage = if lab.printed.load(std::sync::atomic::Ordering::SeqCst) {
            "after the terminal's first table"
        } else {
            "before the first table"
        };
        let sent = Instant::now();
        lab.signal(sig);
        let what = format!("{sig} at {f} of the report ({stage})");
        let o = lab.end_within(STOPS_WITHIN, &what);
        eprintln!("{what}: ended {:?} after the signal", sent.elapsed());
        assert_eq!(o.code, Some(128 + sig as i32), "{what}: {}", o.stderr);
        assert_eq!(o.stderr.trim_end(), format!("stopped by {sig}"), "{what}");
        assert!(
            !o.stdout.contains("report: "),
            "{what}: the report was finished"
        );
        assert_eq!(entries(&out), Vec::<String>::new(), "{what}: half a report");
        stopped += 1;
    }
    assert!(
        stopped >= fractions.len() / 2,
        "only {stopped} runs were still running when signalled"
    );
    std::fs::remove_dir_all(temp).unwrap();
}

/// `lab export --csv` of the same file writes a row per sample; SIGTERM or SIGINT while it
/// reads the file or makes the CSV text ends it with 143 or 130 and no CSV file.
#[test]
fn an_export_of_that_file_is_whole_or_stopped() {
    let temp = temp_dir("export-stops");
    let file = many_backends(&temp.join("results"));
    let export = |out: &Path| {
        std::fs::create_dir_all(out).unwrap();
        Lab::start(
            &temp,
            &[
                "export",
                "--csv",
                "--out",
                out.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        )
    };
    let out = temp.join("out");
    let whole = export(&out).end_within(GUARD, "a whole export");
    assert_eq!(whole.code, Some(0), "{}", whole.stderr);
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        BACKENDS + 1,
        "a header and a row per sample"
    );
    let mut stopped = 0;
    for (i, f) in [0.1, 0.4, 0.7].into_iter().enumerate() {
        let sig = if i % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        let out = temp.join(format!("out-{i}"));
        let mut lab = export(&out);
        while lab.started.elapsed() < whole.took.mul_f64(f) && lab.running() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !lab.running() {
            continue;
        }
        lab.signal(sig);
        let what = format!("{sig} at {f} of the export");
        let o = lab.end_within(STOPS_WITHIN, &what);
        assert_eq!(o.code, Some(128 + sig as i32), "{what}: {}", o.stderr);
        assert_eq!(o.stderr.trim_end(), format!("stopped by {sig}"), "{what}");
        assert_eq!(entries(&out), Vec::<String>::new(), "{what}: a CSV file");
        stopped += 1;
    }
    assert!(stopped >= 1, "no export was still running when signalled");
    std::fs::remove_dir_all(temp).unwrap();
}

/// Every phase name of a file becomes a column of `runs.csv` and every sample a row: a file
/// naming a new phase on each line would make a table of lines × lines cells (30,000 lines:
/// 900 million). `lab export` refuses a file of more phase names than it has columns for, in
/// one line, with status 2, and writes nothing.
#[test]
fn an_export_of_more_phases_than_columns_is_refused_in_one_line() {
    let temp = temp_dir("export-phases");
    let file = results_file(
        &temp.join("results"),
        (0..300u32).map(|i| {
            let mut r = run("process", Family::Process, i);
            r.phases.push(&format!("phase{i}"), 507_553_078_175);
            r
        }),
    );
    let out = temp.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = Lab::start(
        &temp,
        &[
            "export",
            "--csv",
            "--out",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    )
    .end_within(GUARD, "an export");
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert_eq!(o.stderr.trim_end().lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("its runs name 307 phases") && o.stderr.contains("at most 256"),
        "{}",
        o.stderr
    );
    assert_eq!(entries(&out), Vec::<String>::new());
    std::fs::remove_dir_all(temp).unwrap();
}

/// The ledger compares every container with every VM of a file, so a file naming thousands of
/// each would make a ledger of millions of comparisons: it is left out of the ledger, which
/// says so. The isolation table has a row per fact the probe reported and a column per
/// backend: facts beyond what the probe reports are counted, not shown.
#[test]
fn a_report_bounds_what_grows_with_the_square_of_a_file() {
    let temp = temp_dir("report-squares");
    let families = [Family::Container, Family::VmNoOs, Family::Sandbox];
    let ledger = results_file(
        &temp.join("ledger"),
        (0..3000u32).map(|i| {
            let family = families[i as usize % 3];
            run(&format!("{}-{i}", family.id()), family, i % 10)
        }),
    );
    let mut probe = run("container", Family::Container, 0);
    probe.workload.kernel = "probe".into();
    probe.probe = (0..2000)
        .map(|k| (format!("fact{k}"), "x".to_string()))
        .collect();
    let mut w = Writer::create(&temp.join("isolation"), &header("isolation")).unwrap();
    w.append(&Record::Run(Box::new(probe))).unwrap();
    let isolation = w.path().to_path_buf();
    drop(w);
    let out = temp.join("out");
    let o = Lab::start(
        &temp,
        &[
            "report",
            ledger.to_str().unwrap(),
            isolation.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .end_within(GUARD, "a report");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        page.contains(
            "ledger names 3000 backends, more than the ledger compares pair by pair (32)"
        ),
        "the ledger says why the file is left out"
    );
    let tables = std::fs::read_to_string(out.join("tables.md")).unwrap();
    assert!(
        tables.contains("1936 more facts the runs reported are left out"),
        "the isolation table counts what it leaves out"
    );
    let shown = tables
        .lines()
        .filter(|l| {
            l.strip_prefix("| fact")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    assert_eq!(shown, 64, "the facts shown beyond the probe's own");
    std::fs::remove_dir_all(temp).unwrap();
}
