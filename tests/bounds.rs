//! The lab itself must not open a way out. Root runs it; an ordinary user owns the files it
//! reads and the directories it writes into. So:
//!
//! * what it writes (`lab report`, `lab export`) never follows a symbolic link the user planted:
//!   a link at a file's name is replaced, a link in place of the output directory is refused;
//! * what it reads and did not write (answers, results) is bounded: `/dev/zero`, a FIFO and a
//!   file over the limit of its kind are refused in one line, with exit status 2, before they
//!   are read;
//! * `lab report` and `lab check`, busy reading, computing or building, stop on SIGTERM at once.
//!
//! Every `lab` here runs with a 4 GiB address-space limit and under a 30 s guard: a regression
//! that reads `/dev/zero` whole fails its allocation instead of waking the OOM killer, and one
//! that ignores a signal fails the test instead of hanging it.

mod common;

use common::temp_dir;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// The time a `lab` may take before the guard kills it: far more than any of these needs.
const GUARD: Duration = Duration::from_secs(30);

/// A `lab` started with `args` in the checkout (where `labs/` is), its address space limited to
/// 4 GiB, its output piped.
fn start(temp: &Path, args: &[&str]) -> Child {
    command(temp, args).spawn().unwrap()
}

/// The command [`start`] runs.
fn command(temp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(LAB);
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TMPDIR", temp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe and
    // touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// How a `lab` ended.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Wait for `child` (at most [`GUARD`]; then kill it and fail) and collect its output.
fn finish(mut child: Child) -> Ended {
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = pipe(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = pipe(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lab did not end within {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ended {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn lab(temp: &Path, args: &[&str]) -> Ended {
    finish(start(temp, args))
}

/// Exit status 2 and one line on stderr that says `expect`, no panic.
fn assert_refused(o: &Ended, expect: &str) {
    assert_eq!(o.code, Some(2), "stderr: {}", o.stderr);
    assert_eq!(
        o.stderr.trim_end().lines().count(),
        1,
        "one line: {}",
        o.stderr
    );
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert!(o.stderr.contains(expect), "{expect:?} not in {}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}

/// A results directory holding a copy of the sample start-up file, its run lines repeated
/// `times` times (one copy: 165 lines, 160 KiB).
fn results_dir(temp: &Path, name: &str, times: usize) -> PathBuf {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("reports/sample/20261123-113014-startup/results.jsonl");
    let text = std::fs::read_to_string(sample).unwrap();
    let (header, runs) = text.split_once('\n').unwrap();
    let dir = temp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = String::with_capacity(text.len() * times);
    out.push_str(header);
    out.push('\n');
    for _ in 0..times {
        out.push_str(runs);
    }
    std::fs::write(dir.join("results.jsonl"), out).unwrap();
    dir
}

/// `lab check startup --answers /dev/zero` read until the machine's memory was gone (22 GB
/// before the OOM killer); a sparse 2 GiB file, the same in 2 GiB steps. Both are refused from
/// what fstat(2) says, before a byte is read.
#[test]
fn answers_that_are_not_a_small_file_are_refused_in_one_line() {
    let temp = temp_dir("bounds-answers");
    let o = lab(&temp, &["check", "startup", "--answers", "/dev/zero"]);
    assert_refused(&o, "answers file /dev/zero is not a regular file");

    let sparse = temp.join("answers.toml");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let o = lab(
        &temp,
        &["check", "startup", "--answers", sparse.to_str().unwrap()],
    );
    assert_refused(&o, "is 2 GiB; the limit is 1 MiB");

    let fifo = temp.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let o = lab(
        &temp,
        &["check", "startup", "--answers", fifo.to_str().unwrap()],
    );
    assert_refused(&o, "not a regular file");
    std::fs::remove_dir_all(temp).unwrap();
}

/// A results file over the size limit, valid line after line, is refused from its size before
/// it is read, by `lab report` and `lab export` alike. (A gigabyte of them once kept `lab
/// report` busy for minutes at 2 GB of memory.)
#[test]
fn a_results_file_over_the_limit_is_refused_from_its_size() {
    let temp = temp_dir("bounds-results");
    // 157 KiB a copy: some 70 MB of samples.
    let copies = (isolab_results::MAX_FILE / (150 << 10)) as usize + 1;
    let dir = results_dir(&temp, "huge", copies);
    let file = dir.join("results.jsonl");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > isolab_results::MAX_FILE);
    let o = lab(&temp, &["report", dir.to_str().unwrap()]);
    assert_refused(&o, "MiB; the limit is 64 MiB");
    assert!(
        o.stderr.contains(&file.display().to_string()),
        "{}",
        o.stderr
    );
    assert!(!dir.join("report").exists(), "nothing rendered");
    let o = lab(&temp, &["export", "--csv", file.to_str().unwrap()]);
    assert_refused(&o, "MiB; the limit is 64 MiB");
    std::fs::remove_dir_all(temp).unwrap();
}

/// Root renders the report of a results directory whose `report/index.html` and
/// `report/tables.md` the user made links to a file of root's (here a stand-in, `victim`), and
/// a plot's name a link to where a new file would appear: the links are replaced by the
/// report's files, and what they pointed to is untouched.
#[test]
fn a_report_replaces_links_planted_in_its_directory() {
    let temp = temp_dir("bounds-links");
    let victim = temp.join("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    let dir = results_dir(&temp, "results", 1);
    let report = dir.join("report");
    std::fs::create_dir(&report).unwrap();
    symlink(&victim, report.join("index.html")).unwrap();
    symlink(&victim, report.join("tables.md")).unwrap();
    symlink(
        temp.join("made-through-a-link"),
        report.join("startup-waterfall.svg"),
    )
    .unwrap();

    let o = lab(&temp, &["report", dir.to_str().unwrap()]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("report: "), "{}", o.stdout);

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n");
    assert!(!temp.join("made-through-a-link").exists());
    for name in ["index.html", "tables.md", "startup-waterfall.svg"] {
        let meta = std::fs::symlink_metadata(report.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is a regular file now");
    }
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
    // Nothing but the report's own files: no temporary file is left.
    assert!(std::fs::read_dir(&report).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));

    // `lab export` the same: a link planted as runs.csv is replaced.
    symlink(&victim, dir.join("runs.csv")).unwrap();
    let o = lab(
        &temp,
        &[
            "export",
            "--csv",
            dir.join("results.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n");
    assert!(std::fs::symlink_metadata(dir.join("runs.csv"))
        .unwrap()
        .file_type()
        .is_file());
    std::fs::remove_dir_all(temp).unwrap();
}

/// A `report` directory that is a link to a directory of root's (a stand-in here) is refused in
/// one line, and nothing is written where it points — nor through a dangling link.
#[test]
fn a_report_directory_that_is_a_link_is_refused() {
    let temp = temp_dir("bounds-linkdir");
    let victim_dir = temp.join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("index.html"), "root's page\n").unwrap();
    let dir = results_dir(&temp, "results", 1);
    symlink(&victim_dir, dir.join("report")).unwrap();

    let o = lab(&temp, &["report", dir.to_str().unwrap()]);
    assert_refused(&o, "is a symbolic link");
    assert!(o.stderr.contains(&dir.join("report").display().to_string()));
    let entries: Vec<_> = std::fs::read_dir(&victim_dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "nothing added");
    assert_eq!(
        std::fs::read_to_string(victim_dir.join("index.html")).unwrap(),
        "root's page\n"
    );

    std::fs::remove_file(dir.join("report")).unwrap();
    symlink(temp.join("nowhere"), dir.join("report")).unwrap();
    let out = dir.join("report");
    let o = lab(
        &temp,
        &[
            "report",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_refused(&o, "is a symbolic link");
    assert!(!temp.join("nowhere").exists());
    std::fs::remove_dir_all(temp).unwrap();
}

/// SIGTERM to `lab report` in the middle of a large file's report (within the size limit): it
/// stops with status 143 without finishing the report. It used to ignore the signal, finish
/// every plot, write the page, and only then exit.
#[test]
fn sigterm_stops_a_long_report() {
    let temp = temp_dir("bounds-sigterm");
    // 130 copies: 21 MiB, 21,000 samples — seconds of bootstrap for the terminal's tables,
    // as many again for the page's.
    let dir = results_dir(&temp, "large", 130);
    let mut child = start(&temp, &["report", dir.to_str().unwrap()]);
    // Wait for the first byte of the terminal's tables: then the file is read, the signal
    // handler long in place, and the page's statistics and plots are still to come.
    let mut stdout = child.stdout.take().unwrap();
    let (first, got_first) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        let _ = first.send(stdout.read(&mut byte).unwrap_or(0));
        // Keep reading, so the lab never waits on a full pipe.
        let _ = stdout.read_to_end(&mut Vec::new());
    });
    if got_first.recv_timeout(GUARD) != Ok(1) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no tables within {GUARD:?}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = finish(child);
    drain.join().unwrap();
    assert_eq!(o.code, Some(143), "{}", o.stderr);
    assert_eq!(o.stderr.trim_end(), "stopped by SIGTERM", "{}", o.stderr);
    assert!(
        !dir.join("report/index.html").exists(),
        "the report was finished before the lab stopped"
    );
    std::fs::remove_dir_all(temp).unwrap();
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(") ")?.1.starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Kills the build script of [`sigterm_stops_a_check_during_its_build`] if the test fails.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// SIGTERM while `lab check` builds a student's crate: cargo and the build script it runs are
/// stopped, and the lab ends with 143. It used to wait for cargo whatever came — here for an
/// hour, the build script's sleep.
#[test]
fn sigterm_stops_a_check_during_its_build() {
    use std::os::unix::fs::PermissionsExt;
    let temp = temp_dir("bounds-cargo");
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let krate = temp.join("slow-step");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"slow-step\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    // As cargo makes it: a root lab builds as `nobody`, who may not write one beside the crate.
    std::fs::write(
        krate.join("Cargo.lock"),
        "# This file is automatically @generated by Cargo.\n# It is not intended for manual \
         editing.\nversion = 4\n\n[[package]]\nname = \"slow-step\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(krate.join("src/main.rs"), "fn main() {}\n").unwrap();
    // Where the build script says it runs: a directory its user may write (the build's
    // environment is not the test's, so the path is in its source).
    let drop = temp.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pidfile = drop.join("build-script.pid");
    std::fs::write(
        krate.join("build.rs"),
        format!(
            r#"fn main() {{
    let pid = std::process::id().to_string();
    std::fs::write({:?}, pid).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3600));
}}
"#,
            pidfile.display().to_string()
        ),
    )
    .unwrap();
    // A labs directory of the test's own: the build's directories go there.
    let labs = temp.join("labs");
    std::fs::create_dir(&labs).unwrap();
    std::fs::write(labs.join("README.md"), "# exercises\n").unwrap();
    let mut child = command(
        &temp,
        &[
            "check",
            "container-1",
            "--labs",
            labs.to_str().unwrap(),
            "--crate",
            krate.to_str().unwrap(),
        ],
    )
    .env("CARGO", env!("CARGO"))
    .spawn()
    .unwrap();
    let mut guard = KillOnDrop(None);
    // The build script is running once it has written its pid (compiling it comes first, a
    // few seconds; two minutes on a machine busy with other tests).
    let deadline = Instant::now() + Duration::from_secs(120);
    let script = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
        {
            break pid;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let o = finish(child);
            panic!("the build script never ran: {}{}", o.stdout, o.stderr);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    guard.0 = Some(script);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = finish(child);
    assert_eq!(o.code, Some(143), "{}", o.stderr);
    assert!(o.stderr.contains("stopped by SIGTERM"), "{}", o.stderr);
    assert!(!o.stderr.contains("error:"), "{}", o.stderr);
    // Reparented and reaped by init once cargo is gone: give it a moment.
    assert!(
        common::eventually(Duration::from_secs(10), || !alive(script)),
        "the build script {script} outlived the check"
    );
    std::fs::remove_dir_all(temp).unwrap();
}
