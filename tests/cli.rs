//! The `lab` binary as a user meets it: real runs, real errors, nothing left behind.

mod common;

use common::{serial, temp_dir, HostState, User};
use isolab_backends::Backend;
use isolab_payload::{Kernel, Spec};
use isolab_results::{Outcome, Results};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// A temp dir for one test, usable by any user (some tests run lab unprivileged).
fn world_writable(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn lab(temp: &Path, args: &[&str]) -> Output {
    Command::new(LAB)
        .args(args)
        .env("TMPDIR", temp)
        .output()
        .unwrap()
}

fn results_files(out: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("results.jsonl"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn run_startup_prints_the_table_and_writes_every_run() {
    let _serial = serial();
    let temp = temp_dir("cli-startup");
    let out = temp.join("reports");
    let run = lab(
        &temp,
        &[
            "run",
            "startup",
            "--backends",
            "process,container",
            "--runs",
            "30",
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for text in [
        "p50 ms",
        "process",
        "container",
        "namespaces",
        "rootfs",
        "results:",
    ] {
        assert!(stdout.contains(text), "missing {text:?} in:\n{stdout}");
    }
    let files = results_files(&out);
    assert_eq!(files.len(), 1);
    let results = Results::read(&files[0]).unwrap();
    assert_eq!(results.header.experiment, "startup");
    assert_eq!(
        results.runs.len(),
        (3 + 30) * 2,
        "warm-up and measured rounds, both backends"
    );
    assert_eq!(results.runs.iter().filter(|r| !r.warmup).count(), 60);
    let native =
        isolab_kernels::run(&Spec::default_for(Kernel::Ready), &mut NoShim, &mut []).unwrap();
    for r in &results.runs {
        assert_eq!(r.outcome, Outcome::Completed);
        for phase in ["spawn", "cgroup", "ready", "done", "exited"] {
            assert!(r.phases.at(phase).is_some(), "{phase} missing in {r:?}");
        }
        assert!(r.startup_ns.unwrap() > 0);
        assert_eq!(
            r.output.as_ref().unwrap().checksum,
            format!("{:#018x}", native.checksum)
        );
    }
    // Each round ran both backends.
    for round in 0..33 {
        let mut backends: Vec<&str> = results
            .runs
            .iter()
            .filter(|r| r.round == round)
            .map(|r| r.backend.as_str())
            .collect();
        backends.sort();
        assert_eq!(backends, ["container", "process"]);
    }
    std::fs::remove_dir_all(temp).unwrap();
}

struct NoShim;
impl isolab_kernels::Shim for NoShim {
    fn enter_kernel(&mut self, x: u64) -> u64 {
        x
    }
}

/// The standard output of a command that must have succeeded (else both its outputs).
fn succeeded(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// Bad input gives exit status 2, one line on stderr, and leaves nothing behind.
fn assert_refused(temp: &Path, output: &Output, expect: &str, before: &HostState) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line, not: {stderr}"
    );
    assert!(stderr.contains(expect), "{expect:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(&HostState::now(temp), before);
}

#[test]
fn bad_input_is_refused_in_one_line_with_exit_status_2() {
    let _serial = serial();
    let temp = temp_dir("cli-bad");
    let out = temp.join("reports");
    let out = out.to_str().unwrap();
    std::fs::create_dir_all(out).unwrap();
    let before = HostState::now(&temp);

    let o = lab(
        &temp,
        &["run", "startup", "--backends", "process,nope", "--out", out],
    );
    assert_refused(&temp, &o, "unknown backend 'nope'", &before);
    let o = lab(&temp, &["run", "startup", "--runs", "0", "--out", out]);
    assert_refused(&temp, &o, "--runs", &before);
    let o = lab(&temp, &["run", "startup", "--out", "/proc/isolab-results"]);
    assert_refused(&temp, &o, "choose another directory with --out", &before);
    let o = lab(&temp, &["exec", "--kernel", "nope"]);
    assert_refused(&temp, &o, "unknown kernel", &before);
    let o = lab(&temp, &["report", "/etc/hostname"]);
    assert_refused(&temp, &o, "not an isolab results file", &before);
    let o = lab(&temp, &["check", "startup", "--program", "/bin/true"]);
    assert_refused(&temp, &o, "--program is for the building steps", &before);
    let o = lab(&temp, &["check", "vmm-1", "--program", "/nonexistent/vmm"]);
    assert_refused(&temp, &o, "no such program", &before);
    assert!(
        results_files(Path::new(out)).is_empty(),
        "no results directory for refused runs"
    );
    std::fs::remove_dir_all(temp).unwrap();
}

/// A machine without cgroups (none mounted): what needs none runs, says memory figures are
/// unavailable and why; memory and limits are refused with the fix.
#[test]
fn without_cgroups_startup_runs_and_memory_is_refused() {
    let _serial = serial();
    let temp = temp_dir("cli-nocgroup");
    let out = temp.join("reports");
    let before = HostState::now(&temp);
    // In a private mount namespace, unmount every cgroup file system: as on a machine without
    // them. The host's mounts are untouched.
    let without_cgroups = |args: &[&str]| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"umount -R /sys/fs/cgroup && exec "$@""#)
            .arg("sh")
            .arg(LAB)
            .args(args)
            .env("TMPDIR", &temp)
            .output()
            .unwrap()
    };
    let out_s = out.to_str().unwrap();
    let o = without_cgroups(&[
        "run",
        "startup",
        "--backends",
        "process",
        "--runs",
        "3",
        "--warmup",
        "0",
        "--out",
        out_s,
        "--no-progress",
    ]);
    let stdout = succeeded(&o);
    assert!(stdout.contains("p50 ms"), "{stdout}");
    assert!(
        stdout.contains("memory figures: not measured — the lab had no usable cgroups")
            && stdout.contains("fix: mount cgroup2"),
        "{stdout}"
    );
    let results = Results::read(&results_files(&out)[0]).unwrap();
    assert!(results.header.environment.memory_unavailable().is_some());
    assert!(results.runs.iter().all(|r| r.cgroup_peak_bytes.is_none()));
    std::fs::remove_dir_all(&out).unwrap();
    let o = without_cgroups(&["run", "memory", "--out", out_s]);
    assert_refused(&temp, &o, "lab run memory needs cgroups", &before);
    let o = without_cgroups(&["exec", "--backend", "process", "--memory-limit", "64"]);
    assert_refused(&temp, &o, "fix: mount cgroup2", &before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// `lab args` as `user`, in `dir`.
fn lab_as(user: &User, dir: &Path, args: &[&str]) -> Output {
    user.command(LAB, dir).args(args).output().unwrap()
}

/// As an ordinary user without a cgroup of their own (on v1 nothing can be delegated; on v2 this
/// user, made by `useradd`, has no delegated subtree) and not in the kvm group: start-up runs with its figures and says memory figures are unavailable and why;
/// `lab run memory` is refused with the fix; every backend `lab backends` calls available runs,
/// and `lab doctor` agrees with `lab backends`.
#[test]
fn an_ordinary_user_runs_what_needs_no_cgroups() {
    let _serial = serial();
    let temp = world_writable("cli-student");
    let before = HostState::now(&temp);
    let user = User::new("isolab-s");
    let out = temp.join("reports");
    let out_s = out.to_str().unwrap();
    let o = lab_as(
        &user,
        &temp,
        &[
            "run",
            "startup",
            "--backends",
            "process,container",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--out",
            out_s,
            "--no-progress",
        ],
    );
    let stdout = succeeded(&o);
    for text in ["process", "container", "namespaces", "p50 ms"] {
        assert!(stdout.contains(text), "{text:?} in {stdout}");
    }
    assert!(
        stdout.contains("memory figures: not measured — the lab had no usable cgroups")
            && stdout.contains("fix: "),
        "{stdout}"
    );
    let results = Results::read(&results_files(&out)[0]).unwrap();
    assert_eq!(results.runs.len(), 12);
    assert!(results.runs.iter().all(|r| r.outcome == Outcome::Completed
        && r.startup_ns.is_some()
        && r.memory_at_ready.is_none()
        && r.cgroup_peak_bytes.is_none()));

    let o = lab_as(
        &user,
        &temp,
        &["run", "memory", "--out", out_s, "--no-progress"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("lab run memory needs cgroups") && stderr.contains("(fix: "),
        "{stderr}"
    );

    // `lab backends` and `lab doctor` agree, and what they call available runs.
    let listed = String::from_utf8_lossy(&lab_as(&user, &temp, &["backends"]).stdout).into_owned();
    let doctor = String::from_utf8_lossy(&lab_as(&user, &temp, &["doctor"]).stdout).into_owned();
    let lines: Vec<&str> = listed.lines().collect();
    let mut available = Vec::new();
    for pair in lines.chunks(2) {
        let name = pair[0].split_whitespace().next().unwrap();
        let state = pair[1].trim();
        let said = if state == "available" {
            available.push(name.to_string());
            format!("backend    {name}: available")
        } else {
            format!("backend    {name}: {state}")
        };
        assert!(
            doctor.contains(&said),
            "doctor does not say {said:?}:\n{doctor}"
        );
    }
    assert!(
        available.contains(&"process".to_string()) && available.contains(&"container".to_string()),
        "{listed}"
    );
    for backend in &available {
        let o = lab_as(
            &user,
            &temp,
            &["exec", "--backend", backend, "--kernel", "ready"],
        );
        assert!(
            o.status.success(),
            "{backend} is listed available but fails: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    drop(user);
    std::fs::remove_dir_all(&out).unwrap();
    let mut after = HostState::now(&temp);
    // The user's lab registry (XDG_RUNTIME_DIR/isolab) holds no lab.
    after.temp_entries.remove("isolab");
    assert!(isolab_resources::ownership::census(&temp.join("isolab/labs")).is_empty());
    assert_eq!(after, before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// Run `lab args` as an ordinary user (65534) inside a user namespace whose limit on further
/// user namespaces is 0: a user who may not create containers, as under Ubuntu's AppArmor
/// restriction or Debian's `unprivileged_userns_clone=0`. The limit is per namespace (and the
/// kernel checks it at every level above a new namespace), so the host is unaffected. This is
/// how the tests make `clone(CLONE_NEWUSER)` fail for real on a machine that allows it: the
/// kernel refuses with ENOSPC, and the lab must name the restriction.
fn as_user_without_userns(temp: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        // The second `sh` is exec'd after the uid map exists: only then is it root in the new
        // namespace, with the capabilities that come with that (an exec by an unmapped user
        // drops them all).
        .arg(r#"read go; exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces || exit 99; exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"' sh "$@""#)
        .arg("sh")
        .arg(LAB)
        .args(args)
        .env("TMPDIR", temp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: unshare(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    // Map 64Ki ids one to one, so that 65534 exists inside (writing a map this wide is allowed
    // to the parent namespace's root).
    std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536\n").unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536\n").unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn no_privilege_for_namespaces_is_refused_with_a_hint() {
    let _serial = serial();
    let temp = world_writable("cli-nouserns");
    let before = HostState::now(&temp);
    let out = format!("{}/reports", temp.display());
    let o = as_user_without_userns(
        &temp,
        &[
            "run",
            "startup",
            "--backends",
            "container",
            "--out",
            &out,
            "--no-progress",
        ],
    );
    assert_refused(&temp, &o, "user namespaces are restricted", &before);
    // `lab doctor` says the same, with the command that lifts it.
    let o = as_user_without_userns(&temp, &["doctor"]);
    let doctor = String::from_utf8_lossy(&o.stdout);
    assert!(
        doctor.contains("not root and user.max_user_namespaces is 0")
            && doctor.contains("fix: sudo sysctl -w user.max_user_namespaces="),
        "{doctor}"
    );
    // Forced past the check, the container itself meets the kernel's refusal, and its error
    // names the restriction and the fix instead of a bare errno.
    let o = as_user_without_userns(
        &temp,
        &[
            "exec",
            "--backend",
            "container",
            "--kernel",
            "ready",
            "--force",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the kernel refused its user namespace at clone (ENOSPC")
            && stderr.contains("user.max_user_namespaces is 0")
            && stderr.contains("fix: sudo sysctl"),
        "{stderr}"
    );
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn ctrl_c_stops_between_samples_and_keeps_them() {
    let _serial = serial();
    let temp = temp_dir("cli-interrupt");
    let out = temp.join("reports");
    let before = HostState::now(&temp);
    let child = Command::new(LAB)
        .args([
            "run",
            "startup",
            "--backends",
            "process,container",
            "--runs",
            "100000",
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ])
        .env("TMPDIR", &temp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // If this test fails half-way, do not leave a lab running 100000 rounds behind.
    struct KillOnPanic(u32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.0 as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _guard = KillOnPanic(child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = || {
        results_files(&out).first().map_or(0, |f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .count()
        })
    };
    while lines() < 20 {
        assert!(Instant::now() < deadline, "no samples within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let results = Results::read(&results_files(&out)[0]).unwrap();
    assert!(
        results.runs.len() >= 19,
        "samples kept: {}",
        results.runs.len()
    );
    assert!(
        results.runs.iter().all(|r| r.outcome == Outcome::Completed),
        "no half sample recorded"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("p50 ms"),
        "the table of what was kept"
    );
    // The results directory is the only new thing.
    let mut after = HostState::now(&temp);
    after.temp_entries.remove("reports");
    assert_eq!(after, before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// Numbers at the edge of their type are refused like any bad input, not a panic (exit 101).
#[test]
fn huge_numbers_are_refused_not_a_panic() {
    let _serial = serial();
    let temp = temp_dir("cli-huge");
    let out = temp.join("reports");
    let out = out.to_str().unwrap();
    let before = HostState::now(&temp);
    let max = u64::MAX.to_string();
    for (args, expect) in [
        (
            vec!["run", "startup", "--timeout", &max, "--out", out],
            "--timeout",
        ),
        (
            vec!["run", "density", "--reserve-mib", &max, "--out", out],
            "--reserve-mib",
        ),
        (
            vec!["run", "startup", "--memory-limit", &max, "--out", out],
            "--memory-limit",
        ),
        (vec!["exec", "--mib", &max], "--mib"),
        (
            vec!["run", "density", "--idle-window-ms", &max, "--out", out],
            "--idle-window-ms",
        ),
    ] {
        let o = lab(&temp, &args);
        assert_refused(&temp, &o, expect, &before);
    }
    std::fs::remove_dir_all(temp).unwrap();
}

/// Every limit and size the kernel would refuse (or that would overflow on the way to it) is
/// refused by the lab before anything starts: exit 2, one line naming the accepted range.
#[test]
fn limits_out_of_the_kernels_range_are_refused_before_anything_starts() {
    let _serial = serial();
    let temp = temp_dir("cli-limits");
    let out = temp.join("reports");
    let out = out.to_str().unwrap();
    let before = HostState::now(&temp);
    let cpus = isolab_host::facts::cpu_count();
    let too_many_cpus = (cpus + 1).to_string();
    let cpu_range = format!("out of range: 0.01 to {cpus} cores");
    let exec = |extra: &[&'static str]| -> Vec<String> {
        ["exec", "--backend", "process", "--kernel", "ready"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    #[rustfmt::skip]
    let table: Vec<(Vec<String>, &str)> = vec![
        // Below the scheduler's 1 ms quota per 100 ms period.
        (exec(&["--cpu-limit", "0.0005"]), &cpu_range),
        (exec(&["--cpu-limit", "0"]), &cpu_range),
        (exec(&["--cpu-limit=-1"]), &cpu_range),
        (exec(&["--cpu-limit", "nan"]), &cpu_range),
        (exec(&["--cpu-limit", "inf"]), &cpu_range),
        (exec(&["--cpu-limit", "1e300"]), &cpu_range),
        // More cores than the machine has limits nothing.
        ([exec(&[]), vec!["--cpu-limit".into(), too_many_cpus.clone()]].concat(), &cpu_range),
        // Above PID_MAX_LIMIT, and zero.
        (exec(&["--pids-limit", "4194305"]), "out of range: 1 to 4194304"),
        (exec(&["--pids-limit", "0"]), "out of range: 1 to 4194304"),
        (exec(&["--pids-limit", "18446744073709551616"]), "--pids-limit"),
        // MiB → bytes would overflow 64 bits (and wrap to a 1 MiB limit).
        (exec(&["--memory-limit", "17592186044417"]), "out of range: 4 to 1048576 MiB"),
        (exec(&["--memory-limit", "3"]), "out of range: 4 to 1048576 MiB"),
        // The workload's size, in MiB, likewise.
        (exec(&["--mib", "17592186044417"]), "0..=1048576"),
        (vec!["run".into(), "memory".into(), "--sizes".into(), "1,4097".into(), "--out".into(), out.into()], "1..=4096"),
        (vec!["run".into(), "density".into(), "--reserve-mib".into(), "17592186044417".into(), "--out".into(), out.into()], "0..=1048576"),
        // ns-floor makes no cgroup: limits are refused, not silently ignored.
        (vec!["exec".into(), "--backend".into(), "ns-floor".into(), "--kernel".into(), "ready".into(), "--memory-limit".into(), "64".into()], "ns-floor applies no limits"),
        (vec!["run".into(), "startup".into(), "--backends".into(), "ns-floor".into(), "--pids-limit".into(), "10".into(), "--out".into(), out.into()], "ns-floor applies no limits"),
        (vec!["run".into(), "startup".into(), "--backends".into(), "process,ns-floor".into(), "--cpu-limit".into(), "0.5".into(), "--out".into(), out.into()], "ns-floor applies no limits"),
        // Disk bandwidth: zero would mean "no limit" to v1's throttle files.
        (exec(&["--io-limit", "0"]), "out of range: 1 to 1048576 MiB/s"),
        (exec(&["--io-limit", "1048577"]), "out of range: 1 to 1048576 MiB/s"),
        // A disk directory in memory has no disk to throttle.
        (exec(&["--io-limit", "8", "--disk-dir", "/dev/shm"]), "--io-limit: /dev/shm is on device"),
        // The interference experiment's own words.
        (vec!["run".into(), "interference".into(), "--aggressors".into(), "cpu,meltdown".into(), "--out".into(), out.into()], "unknown aggressor 'meltdown' (known: cpu, mem, disk, fork, oom)"),
        (vec!["run".into(), "interference".into(), "--kernels".into(), "sleep".into(), "--out".into(), out.into()], "unknown kernel 'sleep'"),
        (vec!["run".into(), "interference".into(), "--max-aggressors".into(), "0".into(), "--out".into(), out.into()], "1..=64"),
        // A bomb never runs on a backend that cannot take the lab's limit on it.
        (vec!["exec".into(), "--backend".into(), "ns-floor".into(), "--kernel".into(), "fork-bomb".into()], "ns-floor applies no limits"),
    ];
    for (args, expect) in &table {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = lab(&temp, &args);
        assert_refused(&temp, &o, expect, &before);
    }
    assert!(results_files(Path::new(out)).is_empty(), "nothing ran");
    // At the edges of the ranges, the kernel takes them.
    let o = lab(
        &temp,
        &exec(&[
            "--cpu-limit",
            "0.01",
            "--pids-limit",
            "4194304",
            "--memory-limit",
            "4",
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// A library user may ask for any timeout: a deadline past the clock's range is "never".
#[test]
fn a_timeout_of_u64_max_seconds_runs() {
    let _serial = serial();
    let temp = temp_dir("lib-huge-timeout");
    let mut lab = isolab_backends::lab::Lab::in_dir(&temp).unwrap();
    lab.settings.timeout = Duration::MAX;
    let run = isolab_backends::process::Process
        .run(&lab, &Spec::default_for(Kernel::Ready), &Default::default())
        .unwrap();
    assert_eq!(run.outcome, Outcome::Completed);
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

/// `lab backends | head -1`: the reader goes away; the lab stops quietly with the status of a
/// program ended by SIGPIPE (141), and a full disk is one line and status 1 — never a panic.
#[test]
fn a_closed_pipe_or_a_full_disk_on_stdout_is_not_a_panic() {
    let _serial = serial();
    let temp = temp_dir("cli-epipe");
    let mut child = Command::new(LAB)
        .arg("backends")
        .env("TMPDIR", &temp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the lab writes anything.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(141), "stderr: {stderr}");
    assert!(stderr.is_empty(), "quietly: {stderr}");

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(LAB)
        .arg("backends")
        .env("TMPDIR", &temp)
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output") && !stderr.contains("panicked"),
        "{stderr}"
    );
    std::fs::remove_dir_all(temp).unwrap();
}

/// `lab exec` says 0 only when the workload completed; the user's output paths that cannot be
/// used are the user's to fix (2, one line); a complete results line that is not a record is an
/// error, not silently dropped.
#[test]
fn exit_statuses_tell_the_truth() {
    let _serial = serial();
    let temp = temp_dir("cli-status");
    let before = HostState::now(&temp);
    let oom = lab(
        &temp,
        &[
            "exec",
            "--backend",
            "process",
            "--kernel",
            "mem",
            "--mib",
            "64",
            "--memory-limit",
            "16",
        ],
    );
    assert_eq!(oom.status.code(), Some(1), "OOM-killed is not success");
    assert!(String::from_utf8_lossy(&oom.stdout).contains("OomKilled"));
    let hung = lab(
        &temp,
        &[
            "exec",
            "--backend",
            "container",
            "--kernel",
            "cpu",
            "--iters",
            "100000000000",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(hung.status.code(), Some(1), "a timeout is a failure");
    let ok = lab(
        &temp,
        &["exec", "--backend", "process", "--kernel", "ready"],
    );
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(HostState::now(&temp), before);

    // A results file: two good records, then a complete but invalid last line.
    let out = temp.join("reports");
    let run = lab(
        &temp,
        &[
            "run",
            "startup",
            "--backends",
            "process",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(run.status.success());
    let file = &results_files(&out)[0];
    let file_s = file.to_str().unwrap();
    let a_file = temp.join("a-file");
    std::fs::write(&a_file, "").unwrap();
    for args in [
        vec!["report", file_s, "--out", a_file.to_str().unwrap()],
        vec!["export", "--csv", "--out", a_file.to_str().unwrap(), file_s],
    ] {
        let o = lab(&temp, &args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("a-file") && stderr.contains("choose another"),
            "{stderr}"
        );
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(b"{\"record\":\"run\",\"backend\":\"process\"}\n")
        .unwrap();
    drop(f);
    let o = lab(&temp, &["report", file_s]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    std::fs::remove_dir_all(temp).unwrap();
}

/// Peak resident memory of a finished child, from wait4(2).
fn run_measured(temp: &Path, args: &[&str]) -> (Option<i32>, String, u64, Duration) {
    let started = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, for its rusage
    let child = Command::new(LAB)
        .args(args)
        .env("TMPDIR", temp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, into valid out-parameters.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.unwrap(), &mut stderr).unwrap();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (
        code,
        stderr,
        usage.ru_maxrss as u64 * 1024,
        started.elapsed(),
    )
}

/// What the lab reads and did not write, it reads with bounds: `lab report /dev/zero` once grew
/// to 3.3 GB in 6 s (a line was read whole); a FIFO given as a file blocked until a writer came.
#[test]
fn files_the_lab_did_not_write_are_read_with_bounds() {
    let _serial = serial();
    let temp = temp_dir("cli-bounds");
    let fifo = temp.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let long = temp.join("long.jsonl");
    std::fs::write(&long, vec![b'x'; 8 << 20]).unwrap();
    let looped = temp.join("looped");
    std::fs::create_dir(&looped).unwrap();
    std::os::unix::fs::symlink("..", looped.join("up")).unwrap();
    for (args, expect) in [
        (vec!["report", "/dev/zero"], "not a regular file"),
        (vec!["report", fifo.to_str().unwrap()], "not a regular file"),
        (vec!["report", long.to_str().unwrap()], "longer than"),
        (
            vec!["report", looped.to_str().unwrap()],
            "not an isolab results",
        ),
        (
            vec!["kernel", "show", fifo.to_str().unwrap()],
            "not a regular file",
        ),
    ] {
        let (code, stderr, peak, took) = run_measured(&temp, &args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(peak < 64 << 20, "{args:?}: {} MiB", peak >> 20);
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
    std::fs::remove_dir_all(temp).unwrap();
}

/// A guest kernel that is a truncated bzImage cannot boot: `lab exec` says so with a non-zero
/// status (it used to print the failure and exit 0). A FIFO given as the kernel is refused at
/// once instead of waiting for a writer.
#[test]
#[ignore = "needs qemu-system-x86 and a /boot kernel (CI runs it)"]
fn a_guest_kernel_that_cannot_boot_is_a_failure() {
    common::needs_qemu();
    let _serial = serial();
    let temp = temp_dir("cli-kernel");
    let image = isolab_linux_guest::guest_kernel::find(None).unwrap();
    let bytes = std::fs::read(&image.path).unwrap();
    let truncated = temp.join("truncated-bzImage");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let o = lab(
        &temp,
        &[
            "exec",
            "--backend",
            "qemu",
            "--kernel",
            "ready",
            "--timeout",
            "60",
            "--guest-kernel",
            truncated.to_str().unwrap(),
        ],
    );
    assert_ne!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let fifo = temp.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (code, stderr, _, took) = run_measured(
        &temp,
        &[
            "run",
            "startup",
            "--backends",
            "qemu",
            "--guest-kernel",
            fifo.to_str().unwrap(),
            "--out",
            temp.join("reports").to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(took < Duration::from_secs(10));
    std::fs::remove_dir_all(temp).unwrap();
}

/// A VMM the exercises installed from step 2 runs no workload (it loads the lab's guest from
/// step 5): a run that names it measures the others, prints their table, exits 0, and says which
/// step it needs — it does not end with "every student:vmm run failed" and no table.
#[test]
fn an_unfinished_student_vmm_is_left_out_and_the_others_are_measured() {
    common::needs_kvm();
    let _serial = serial();
    let temp = temp_dir("cli-student-step");
    // What `lab check vmm-2` installs, relative to where `lab` runs: the program (any runnable
    // file: it is never started) and the step it passed.
    let bin = temp.join("labs/.lab/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/true", bin.join("vmm")).unwrap();
    std::fs::write(bin.join("vmm.step"), "2\n").unwrap();
    let out = temp.join("reports");
    let o = Command::new(LAB)
        .args(["run", "startup", "--backends", "process,student:vmm"])
        .args(["--runs", "3", "--warmup", "0", "--no-progress", "--out"])
        .arg(&out)
        .current_dir(&temp)
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    let stdout = succeeded(&o);
    let all = format!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        all.contains(
            "student:vmm: ready: your VMM passed step 2 of 5; it runs the lab's workload from \
             step 5 (`lab check vmm-5`)"
        ),
        "{all}"
    );
    assert!(stdout.contains("│ process "), "the others' table: {stdout}");
    let files = results_files(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    let results = Results::read(&files[0]).unwrap();
    assert_eq!(results.backend_names(), ["process"]);
    assert!(
        results
            .header
            .skipped
            .iter()
            .any(|s| s.backend == "student:vmm" && s.reason.contains("step 5")),
        "{:?}",
        results.header.skipped
    );
    std::fs::remove_dir_all(temp).unwrap();
}
