//! The lab on a student's machine: AMD-V and cgroup v2, emulated here (see `tests/hosts/`).
//!
//! Every VM figure the lab's own CI can measure comes from nested PVM. This test boots an
//! emulated machine with AMD-V (QEMU TCG, `-cpu qemu64,+svm,+npt`, Debian's kernel with
//! `kvm-amd`) and runs the lab inside it as a student would: `lab doctor`; the bare `vm` with the
//! `cpu` and `syscall` kernels, checked against the checksums computed right here; a Linux guest
//! in the lab's own VMM (`vm-linux`) and under QEMU with KVM (`qemu`); `lab run startup` and
//! `lab run memory` over every backend; and finally, that nothing is left behind.
//!
//! A second boot checks the exercises there: the solutions of the VMM track and of the
//! container track (built here: the emulated machine has no cargo) pass every step's
//! `lab check` (`--program`) — long mode in ring 3 the AMD way, the bare guest's checksums, the
//! memory limit's OOM kill on cgroup v2 — and run as `student:vmm` and `student:container`.
//!
//! Each takes several minutes (everything is emulated), so they are ignored by a plain
//! `cargo test`; `.ci/run` runs them. Built for release, its lab is the one students run:
//!
//! ```text
//! cargo test [--release] --test emulated_host -- --include-ignored --nocapture
//! ```
//!
//! Its figures are printed (and kept in `$TMPDIR/isolab-emulated-host-*/summary.txt`, with the
//! whole console): absolute times under emulation mean little, ratios between backends something.

mod common;
mod hosts;

use common::native;
use hosts::{Check, CheckResult, EmulatedHost, Report};
use isolab::results::{Outcome, Results, RunRecord};
use isolab::workload::{Kernel, Spec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Backends of the start-up and memory runs: one of each kind.
const BACKENDS: &str = "process,container,vm,vm-linux,qemu";
/// Rounds of `lab run startup`, after one warm-up round.
const STARTUP_RUNS: usize = 10;
/// Rounds of `lab run memory` (one working-set size, no warm-up): the fewest on which the claims
/// ledger calls a verdict (`report::claims::MIN_PAIRS`).
const MEMORY_RUNS: usize = isolab::report::claims::MIN_PAIRS;
/// Lines of a results file are printed with this prefix, to be parsed here.
const RESULT_LINE: &str = "results-line ";

/// A check that runs `command` and prints each line of the results files it wrote under `dir`.
fn run_and_print_results(name: &str, timeout_s: u32, command: &str, dir: &str) -> Check {
    Check::new(
        name,
        timeout_s,
        &format!(
            "{command}\nstatus=$?\nfor f in {dir}/*/results.jsonl; do sed 's/^/{RESULT_LINE}/' \"$f\"; done\nexit $status\n"
        ),
    )
}

fn checks() -> Vec<Check> {
    vec![
        Check::new("doctor", 120, "lab doctor"),
        Check::new("vm-cpu", 120, "lab exec --backend vm --kernel cpu"),
        Check::new("vm-syscall", 120, "lab exec --backend vm --kernel syscall"),
        Check::new(
            "vm-linux-probe",
            240,
            "lab exec --backend vm-linux --kernel probe",
        ),
        Check::new("qemu-cpu", 240, "lab exec --backend qemu --kernel cpu"),
        run_and_print_results(
            "startup",
            1500,
            &format!(
                "lab run startup --runs {STARTUP_RUNS} --warmup 1 --backends {BACKENDS} \
                 --no-progress --out /tmp/startup"
            ),
            "/tmp/startup",
        ),
        run_and_print_results(
            "memory",
            900,
            &format!(
                "lab run memory --sizes 16 --runs {MEMORY_RUNS} --warmup 0 --backends {BACKENDS} \
                 --no-progress --out /tmp/memory"
            ),
            "/tmp/memory",
        ),
        left_behind(),
    ]
}

/// Nothing of the lab outlives its runs: no process, no instance cgroup, no mount, no work
/// directory. Each line printed is something left behind.
fn left_behind() -> Check {
    Check::new(
        "left-behind",
        60,
        r#"ps -o pid,comm | grep -E 'lab|qemu|isolab|solution' | grep -v grep
find /sys/fs/cgroup -mindepth 2 -type d -path '*isolab*'
grep -E 'isolab|/tmp/' /proc/mounts
ls -d /tmp/isolab* /tmp/.isolab* 2>/dev/null
true"#,
    )
}

#[test]
#[ignore = "boots an emulated AMD-V machine (QEMU TCG) for about ten minutes; .ci/run runs it"]
fn the_lab_on_an_emulated_amd_v_machine() {
    let work = std::env::temp_dir().join(format!("isolab-emulated-host-{}", std::process::id()));
    let host = EmulatedHost::new(Path::new(env!("CARGO_BIN_EXE_lab")), &work)
        .unwrap_or_else(|e| panic!("this test needs an emulated host: {e}"));
    let report = host
        .run(&checks())
        .unwrap_or_else(|e| panic!("the emulated host did not run: {e}"));
    let summary = summarise(&report, &work);
    eprintln!("{summary}");
    std::fs::write(work.join("summary.txt"), &summary).unwrap();

    let ok = |c: &CheckResult| assert!(c.passed(), "{}", c.explain());

    // lab doctor: hardware virtualization (emulated, and said so), cgroup v2.
    let doctor = report.check("doctor");
    ok(doctor);
    let said = doctor.text();
    assert!(said.contains("hardware (AMD-V)"), "{}", doctor.explain());
    let line = |words: &[&str]| said.lines().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(line(&["cgroups", " v2 ("]), "{}", doctor.explain());
    assert!(
        said.contains("kvm host") && said.contains("emulated by QEMU"),
        "doctor must say KVM runs on an emulated machine: {}",
        doctor.explain()
    );

    // The bare guest on AMD-V, with the native checksums.
    for (check, kernel) in [("vm-cpu", Kernel::Cpu), ("vm-syscall", Kernel::Syscall)] {
        let c = report.check(check);
        ok(c);
        let expected = format!(
            "checksum {:#018x}",
            native(&Spec::default_for(kernel)).checksum
        );
        assert!(c.text().contains(&expected), "{expected}: {}", c.explain());
    }

    // A Linux guest in the lab's own VMM boots to done; under QEMU, on KVM, too.
    let linux = report.check("vm-linux-probe");
    ok(linux);
    assert!(
        linux.text().contains("outcome: Completed") && linux.text().contains("ms  done"),
        "{}",
        linux.explain()
    );
    let qemu = report.check("qemu-cpu");
    ok(qemu);
    let expected = format!(
        "checksum {:#018x}",
        native(&Spec::default_for(Kernel::Cpu)).checksum
    );
    assert!(qemu.text().contains(&expected), "{}", qemu.explain());
    assert!(
        qemu.output
            .iter()
            .any(|l| l.split_whitespace().eq(["accel", "kvm"])),
        "QEMU used KVM: {}",
        qemu.explain()
    );

    // Start-up and memory over every backend: every sample completed.
    for (check, runs) in [("startup", 1 + STARTUP_RUNS), ("memory", MEMORY_RUNS)] {
        let c = report.check(check);
        ok(c);
        all_completed(&results_of(c, &work), BACKENDS, runs, check);
    }

    nothing_left_behind(&report);
    std::fs::remove_dir_all(&work).unwrap();
}

/// Every backend of `backends` has `runs` samples in `results`, each completed.
fn all_completed(results: &Results, backends: &str, runs: usize, check: &str) {
    for backend in backends.split(',') {
        let samples: Vec<&RunRecord> = results
            .runs
            .iter()
            .filter(|r| r.backend == backend)
            .collect();
        assert_eq!(samples.len(), runs, "{check}: {backend} samples");
        for r in samples {
            assert_eq!(r.outcome, Outcome::Completed, "{check}: {backend}: {r:?}");
        }
    }
}

/// The `left-behind` check printed nothing, and the machine powered itself off.
fn nothing_left_behind(report: &Report) {
    let left = report.check("left-behind");
    assert!(left.passed(), "{}", left.explain());
    assert!(
        left.output.iter().all(|l| l.trim().is_empty()),
        "left behind: {}",
        left.explain()
    );
    assert!(report.powered_off, "the emulated host powered itself off");
}

/// The results file a check printed, parsed by the lab's own reader.
fn results_of(check: &CheckResult, work: &Path) -> Results {
    let lines: Vec<&str> = check
        .output
        .iter()
        .filter_map(|l| l.strip_prefix(RESULT_LINE))
        .collect();
    assert!(!lines.is_empty(), "no results printed: {}", check.explain());
    let path: PathBuf = work.join(format!("{}.jsonl", check.name));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    Results::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Median of `values` (empty: NaN).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The boots and each check's status and time, with the lines of its output that `keep` picks.
fn boots_and_checks(report: &Report, title: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut s = format!(
        "{title}: {} boot(s), {} retried; up in {:.0} s; whole run {:.0} s\n",
        report.boots, report.retries, report.boot_s, report.total_s
    );
    for c in &report.checks {
        s.push_str(&format!(
            "  {:<24} status {:?} in {:.0?}\n",
            c.name, c.status, c.took
        ));
        for line in c.output.iter().filter(|l| keep(l)) {
            s.push_str(&format!("  {}| {}\n", c.name, line.trim()));
        }
    }
    s
}

/// The figures of the run, for the log: boots and retries, each check's time, and from the
/// start-up results the medians and the paired ratios of start-up (spawn → ready) and the exits
/// of a Linux boot; the claims the lab printed.
fn summarise(report: &Report, work: &Path) -> String {
    let mut s = boots_and_checks(report, "emulated host", |_| false);
    let Some(startup) = report.checks.iter().find(|c| c.name == "startup") else {
        return s;
    };
    if startup.output.iter().any(|l| l.starts_with(RESULT_LINE)) {
        let results = results_of(startup, work);
        // startup_ns by (round, backend), measured rounds only.
        let mut by_round: BTreeMap<u32, BTreeMap<&str, f64>> = BTreeMap::new();
        for r in results.runs.iter().filter(|r| !r.warmup) {
            if let Some(ns) = r.startup_ns {
                by_round
                    .entry(r.round)
                    .or_default()
                    .insert(r.backend.as_str(), ns as f64 / 1e6);
            }
        }
        for backend in BACKENDS.split(',') {
            let ms: Vec<f64> = by_round
                .values()
                .filter_map(|m| m.get(backend).copied())
                .collect();
            s.push_str(&format!(
                "  start-up {backend:<10} median {:>9.1} ms over {}\n",
                median(ms.clone()),
                ms.len()
            ));
        }
        let ratio = |a: &str, b: &str| {
            median(
                by_round
                    .values()
                    .filter_map(|m| Some(m.get(a)? / m.get(b)?))
                    .collect(),
            )
        };
        s.push_str(&format!(
            "  paired ratios of start-up: vm-linux/qemu {:.2}, container/vm-linux {:.4}, vm/container {:.2}\n",
            ratio("vm-linux", "qemu"),
            ratio("container", "vm-linux"),
            ratio("vm", "container")
        ));
        let exits: Vec<f64> = results
            .runs
            .iter()
            .filter(|r| r.backend == "vm-linux")
            .filter_map(|r| r.facts.exits.get("total").map(|&n| n as f64))
            .collect();
        s.push_str(&format!(
            "  vm-linux exits per boot: median {:.0}\n",
            median(exits)
        ));
    }
    for c in report
        .checks
        .iter()
        .filter(|c| c.name == "startup" || c.name == "memory")
    {
        for line in c.output.iter().filter(|l| !l.starts_with(RESULT_LINE)) {
            s.push_str(&format!("  {}| {line}\n", c.name));
        }
    }
    s
}

/// Where the exercises' solutions are put inside the emulated machine (it has no cargo: they
/// are built here).
const STUDENT_VMM: &str = "/usr/local/bin/vmm-solution";
const STUDENT_CONTAINER: &str = "/usr/local/bin/container-solution";
/// Seconds `lab check` waits for each marker: everything inside is emulated.
const CHECK_MARKER_TIMEOUT_S: u32 = 120;

/// The exercises' checks, on the solutions built on this machine: `lab check --program` for the
/// last step of each track (which runs every earlier step's checks too), then the solutions as
/// `student:vmm` and `student:container` backends, as `lab run` uses them.
fn exercise_checks() -> Vec<Check> {
    vec![
        // A student's machine: an AMD CPU whose KVM is kvm_amd (AMD-V), and pure cgroup v2 —
        // one hierarchy, no v1 controller mounted — with the controllers its root offers.
        Check::new(
            "machine",
            30,
            r#"grep -m1 vendor_id /proc/cpuinfo
ls -d /sys/module/kvm_amd
grep cgroup /proc/mounts
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)""#,
        ),
        Check::new(
            "check-vmm",
            1200,
            &format!(
                "lab check vmm-5 --program {STUDENT_VMM} --timeout {CHECK_MARKER_TIMEOUT_S}"
            ),
        ),
        Check::new(
            "student-vmm-cpu",
            120,
            &format!("ISOLAB_STUDENT_VMM={STUDENT_VMM} lab exec --backend student:vmm --kernel cpu"),
        ),
        Check::new(
            "check-container",
            1200,
            &format!(
                "lab check container-7 --program {STUDENT_CONTAINER} --timeout {CHECK_MARKER_TIMEOUT_S}"
            ),
        ),
        Check::new(
            "student-container-probe",
            120,
            &format!(
                "ISOLAB_STUDENT_CONTAINER={STUDENT_CONTAINER} lab exec --backend student:container --kernel probe"
            ),
        ),
        // The last exercise of each track: yours against the lab's, in one `lab run`.
        run_and_print_results(
            "compare",
            600,
            &format!(
                "ISOLAB_STUDENT_VMM={STUDENT_VMM} ISOLAB_STUDENT_CONTAINER={STUDENT_CONTAINER} \
                 lab run startup --runs {COMPARE_RUNS} --warmup 1 --backends {COMPARE_BACKENDS} \
                 --no-progress --out /tmp/compare"
            ),
            "/tmp/compare",
        ),
        left_behind(),
    ]
}

/// The backends of the comparison run, and its rounds after one warm-up round.
const COMPARE_BACKENDS: &str = "vm,student:vmm,container,student:container";
const COMPARE_RUNS: usize = 5;

#[test]
#[ignore = "boots an emulated AMD-V machine (QEMU TCG) for several minutes; .ci/run runs it"]
fn the_exercises_solutions_pass_their_checks_on_an_emulated_amd_v_machine() {
    let labs = Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
    let built = |track: &str| {
        let dir = labs.join(track).join("solution");
        isolab::labs::cargo::build(&dir, &mut |m| eprintln!("{m}"))
            .unwrap_or_else(|e| panic!("the {track} solution does not build: {e}"))
    };
    let (vmm, container) = (built("vmm"), built("container"));
    let work = std::env::temp_dir().join(format!("isolab-emulated-labs-{}", std::process::id()));
    let host = EmulatedHost::new(Path::new(env!("CARGO_BIN_EXE_lab")), &work)
        .unwrap_or_else(|e| panic!("this test needs an emulated host: {e}"))
        .with_program(&vmm, STUDENT_VMM)
        .with_program(&container, STUDENT_CONTAINER);
    let report = host
        .run(&exercise_checks())
        .unwrap_or_else(|e| panic!("the emulated host did not run: {e}"));
    let mut summary = boots_and_checks(&report, "emulated host (exercises)", |l| {
        [
            "vendor_id",
            "/sys/module",
            "controllers:",
            "score:",
            "checksum",
        ]
        .iter()
        .any(|w| l.starts_with(w))
            || l.contains("measured:")
    });
    let compare = report.check("compare");
    let results = compare
        .output
        .iter()
        .any(|l| l.starts_with(RESULT_LINE))
        .then(|| results_of(compare, &work));
    for backend in COMPARE_BACKENDS.split(',') {
        let ms: Vec<f64> = results
            .iter()
            .flat_map(|r| &r.runs)
            .filter(|r| r.backend == backend && !r.warmup)
            .filter_map(|r| r.startup_ns.map(|ns| ns as f64 / 1e6))
            .collect();
        summary.push_str(&format!(
            "  start-up {backend:<18} median {:>8.1} ms over {}\n",
            median(ms.clone()),
            ms.len()
        ));
    }
    eprintln!("{summary}");
    std::fs::write(work.join("summary.txt"), &summary).unwrap();

    let ok = |c: &CheckResult| assert!(c.passed(), "{}", c.explain());
    let says = |c: &CheckResult, words: &str| {
        assert!(c.text().contains(words), "{words}: {}", c.explain());
    };

    // A student's machine: AMD-V, cgroup v2 only, with the memory controller.
    let machine = report.check("machine");
    ok(machine);
    says(machine, "AuthenticAMD");
    assert!(
        machine
            .output
            .iter()
            .filter(|l| l.contains("/sys/fs/cgroup"))
            .all(|l| l.split_whitespace().nth(2) == Some("cgroup2")),
        "only cgroup2 is mounted: {}",
        machine.explain()
    );
    says(machine, "memory");

    // The VMM track on AMD-V: every step's checks (long mode in ring 3, whose `out` needs the
    // TSS the AMD way; the bare guest's kernels with their native checksums), all passing.
    let vmm = report.check("check-vmm");
    ok(vmm);
    let steps = isolab::backend::student::Kind::Vmm.last_step();
    for step in 1..=steps {
        says(vmm, &format!("pass     {step} · "));
    }
    says(vmm, "pass     4 · the guest runs 64-bit code");
    says(
        vmm,
        "pass     5 · the cpu kernel computes the native checksum in your VMM",
    );
    says(vmm, "— done");
    let exec = report.check("student-vmm-cpu");
    ok(exec);
    says(
        exec,
        &format!(
            "checksum {:#018x}",
            native(&Spec::default_for(Kernel::Cpu)).checksum
        ),
    );

    // The container track on cgroup v2: every step, the memory limit's OOM kill included, and
    // what the probe sees from inside the student's container.
    let container = report.check("check-container");
    ok(container);
    let steps = isolab::backend::student::Kind::Container.last_step();
    for step in 1..=steps {
        says(container, &format!("pass     {step} · "));
    }
    says(
        container,
        "pass     6 · a workload that touches more than the limit is killed by the OOM killer",
    );
    says(container, "— done");
    let probe = report.check("student-container-probe");
    ok(probe);
    let fact = |key: &str| {
        probe
            .output
            .iter()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(key)).then(|| words.collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_else(|| panic!("the probe reports no {key}: {}", probe.explain()))
    };
    assert_eq!(fact("pid"), "1", "{}", probe.explain());
    assert_eq!(fact("interfaces"), "lo", "{}", probe.explain());
    assert_eq!(fact("no_new_privs"), "1", "{}", probe.explain());
    assert!(fact("cgroup").starts_with("0::/"), "{}", probe.explain());
    says(probe, "outcome: Completed");

    // The students' programs as backends of `lab run`: every sample completed.
    ok(compare);
    let results = results.expect("the comparison printed its results");
    all_completed(&results, COMPARE_BACKENDS, 1 + COMPARE_RUNS, "compare");

    nothing_left_behind(&report);
    std::fs::remove_dir_all(&work).unwrap();
}
