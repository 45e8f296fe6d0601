//! `lab validate` for real: fio, netperf and iperf3 beside the lab's kernels, on `process` and
//! `container`, with short settings. What is checked is behaviour, never a speed: the table
//! names every figure with both values, the results file holds one record per figure whose
//! verdict follows from its ratio, and the exit status is 0 exactly when every figure agrees.

mod common;

use common::{lab_mounts, serial, temp_dir};
use isolab_results::{Results, RESULTS_FILE};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn lab(temp: &Path, args: &[&str]) -> Output {
    Command::new(LAB)
        .args(args)
        .env("TMPDIR", temp)
        .output()
        .unwrap()
}

/// The one `*-validate` results directory under `out`.
fn validation_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(RESULTS_FILE).exists())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

const FIGURES: [(&str, &str); 7] = [
    ("disk-seq", "write bandwidth"),
    ("disk-seq", "read bandwidth"),
    ("disk-rand", "IOPS"),
    ("disk-rand", "p50 latency"),
    ("net-rr", "transactions/s"),
    ("net-rr", "p50 latency"),
    ("net-stream", "bandwidth"),
];

#[test]
#[ignore = "needs fio, netperf (Debian's non-free component) and iperf3: apt-get install -y fio netperf iperf3 (CI runs it)"]
fn validate_holds_every_kernel_against_its_tool_and_its_exit_status_says_whether_all_agree() {
    let _serial = serial();
    let temp = temp_dir("validate");
    let out = temp.join("reports");
    let mounts_before = lab_mounts("/proc/self/mountinfo", &temp);
    let o = lab(
        &temp,
        &[
            "validate",
            "--rounds",
            "2",
            "--disk-mib",
            "16",
            "--reads",
            "500",
            "--round-trips",
            "1000",
            "--stream-mib",
            "32",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let code = o.status.code();
    assert!(
        matches!(code, Some(0) | Some(1)),
        "{code:?}\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // One record per backend and figure, both values present, and the verdict its ratio's.
    let dir = validation_dir(&out);
    let results = Results::read(&dir.join(RESULTS_FILE)).unwrap();
    assert_eq!(results.header.experiment, "validate");
    assert_eq!(results.validations.len(), 2 * FIGURES.len(), "{stdout}");
    for backend in ["process", "container"] {
        for (kernel, figure) in FIGURES {
            let r = results
                .validations
                .iter()
                .find(|r| r.backend == backend && r.kernel == kernel && r.figure == figure)
                .unwrap_or_else(|| panic!("no {backend} {kernel} {figure}:\n{stdout}"));
            assert!(
                r.failures.is_empty(),
                "{backend} {kernel}: {:?}",
                r.failures
            );
            assert_eq!(r.tool_values.len(), 2, "{r:?}");
            assert_eq!(r.lab_values.len(), 2, "{r:?}");
            assert_eq!(r.round_ratios.len(), 2, "{r:?}");
            let ratio = r.ratio.unwrap();
            assert_eq!(r.within, (ratio - 1.0).abs() <= r.tolerance + 1e-9, "{r:?}");
            // The table's row: the backend, the kernel, the figure, and its verdict.
            let row = stdout
                .lines()
                .find(|l| l.contains(backend) && l.contains(kernel) && l.contains(figure))
                .unwrap_or_else(|| panic!("no row for {backend} {kernel} {figure}:\n{stdout}"));
            assert!(
                row.contains(&format!("{ratio:.3}")),
                "{ratio:.3} not in {row}"
            );
            let verdict = if r.within { "yes" } else { "NO" };
            assert!(row.contains(verdict), "{verdict} not in {row}");
        }
    }
    let all_agree = results.validations.iter().all(|r| r.within);
    assert_eq!(code == Some(0), all_agree, "{stdout}\n{stderr}");
    if !all_agree {
        assert!(stderr.contains("validation failed"), "{stderr}");
    }
    // What each tool printed is kept, one file per run.
    let kept = std::fs::read_dir(dir.join("tools")).unwrap().count();
    assert_eq!(kept, 2 * 3 * 2, "two backends, three tools, two rounds");
    // The tools' servers and the instances are gone, and so are their mounts.
    assert_eq!(lab_mounts("/proc/self/mountinfo", &temp), mounts_before);
    let _ = std::fs::remove_dir_all(&temp);
}

#[test]
fn validate_refuses_what_it_cannot_do_in_one_line_with_exit_status_2() {
    let _serial = serial();
    let temp = temp_dir("validate-bad");
    let out = temp.join("reports");
    let out = out.to_str().unwrap();
    for (args, expect) in [
        (
            vec!["validate", "--backends", "vm", "--out", out],
            "carries fio, netperf and iperf3 into process and container",
        ),
        (
            vec!["validate", "--tolerance", "150", "--out", out],
            "--tolerance",
        ),
        (vec!["validate", "--rounds", "0", "--out", out], "--rounds"),
    ] {
        let o = lab(&temp, &args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{expect:?} not in {stderr:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Nothing measured, nothing written.
    assert!(!Path::new(out).exists() || std::fs::read_dir(out).unwrap().count() == 0);
    let _ = std::fs::remove_dir_all(&temp);
}
