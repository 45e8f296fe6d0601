//! What a lab owns lives exactly as long as the lab: not shorter (another lab, in whatever PID
//! namespace, never touches it) and not longer (a killed lab's processes, cgroups, runtime state
//! and work directory go with it).

mod common;

use common::{serial, temp_dir, HostState};
use isolab::results::{Outcome, Results};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// `lab ARGS` in a new PID namespace with its own /proc, where it is PID 1 — as in a container.
fn in_pid_namespace(temp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", LAB])
        .args(args)
        .env("TMPDIR", temp);
    cmd
}

fn results_in(dir: &Path) -> Results {
    let mut files = Results::read_all(dir).unwrap();
    assert_eq!(files.len(), 1);
    files.remove(0)
}

/// Kills a child lab if the test fails half-way.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two labs, each PID 1 of its own PID namespace, run beside a lab on the host while a fourth,
/// in yet another namespace, starts again and again and cleans up. With PIDs as names the
/// namespaced labs would both be lab "1", and a lab that cannot see another's PID would take it
/// for dead and delete its work directory: with ids and locks, every lab completes every sample
/// and nobody removes anything of anybody's.
#[test]
fn labs_in_different_pid_namespaces_never_touch_each_other() {
    let _serial = serial();
    let temp = temp_dir("pidns");
    let before = HostState::now(&temp);
    let run = |out: &Path| -> Vec<String> {
        [
            "run",
            "startup",
            "--backends",
            "process,container",
            "--runs",
            "250",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let outs: Vec<PathBuf> = ["host", "ns-a", "ns-b"].map(|n| temp.join(n)).to_vec();
    let args: Vec<Vec<String>> = outs.iter().map(|o| run(o)).collect();
    fn refs(a: &[String]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    let quiet = |mut c: Command| {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let mut host = Command::new(LAB);
    host.args(&args[0]).env("TMPDIR", &temp);
    let mut labs = Reap(vec![
        quiet(host),
        quiet(in_pid_namespace(&temp, &refs(&args[1]))),
        quiet(in_pid_namespace(&temp, &refs(&args[2]))),
    ]);

    // Meanwhile: labs in fresh PID namespaces (PID 1 each, like the two above), each reaping as
    // it starts; `lab clean` says what it would remove.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut others = 0;
    while labs.0.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        assert!(Instant::now() < deadline, "the labs did not finish");
        let clean = in_pid_namespace(&temp, &["clean"]).output().unwrap();
        let text = String::from_utf8_lossy(&clean.stdout);
        assert!(clean.status.success(), "{text}");
        assert!(
            !text.contains("removed"),
            "a live lab's resources were removed: {text}"
        );
        let exec = in_pid_namespace(
            &temp,
            &["exec", "--backend", "process", "--kernel", "ready"],
        )
        .output()
        .unwrap();
        assert!(
            exec.status.success(),
            "{}",
            String::from_utf8_lossy(&exec.stderr)
        );
        others += 2;
    }
    assert!(others >= 2, "the other labs ran while the three did");
    for (child, out) in std::mem::take(&mut labs.0).into_iter().zip(&outs) {
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            out.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let results = results_in(out);
        assert_eq!(results.runs.len(), 500, "{}", out.display());
        let failed: Vec<_> = results
            .runs
            .iter()
            .filter(|r| r.outcome != Outcome::Completed)
            .collect();
        assert!(failed.is_empty(), "{}: {failed:?}", out.display());
    }
    let mut after = HostState::now(&temp);
    for name in ["host", "ns-a", "ns-b"] {
        after.temp_entries.remove(name);
    }
    assert_eq!(after, before);
    std::fs::remove_dir_all(temp).unwrap();
}
