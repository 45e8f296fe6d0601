//! What a lab owns lives exactly as long as the lab: not shorter (another lab, in whatever PID
//! namespace, never touches it) and not longer (a killed lab's processes, cgroups, runtime state
//! and work directory go with it).

mod common;

use common::{
    eventually, instances_of, lab_ids, processes_mentioning, serial, temp_dir, HostState,
};
use isolab_results::{Outcome, Results};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// `lab`, with its work directories under `temp` and its output thrown away, to be given its
/// arguments and started.
fn quiet_lab(temp: &Path) -> Command {
    let mut cmd = Command::new(LAB);
    cmd.env("TMPDIR", temp)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// What `dir` holds (a lab's disks directory: empty once the lab is gone).
fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
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

/// The instance of `backend` that `child` (`lab exec`, whose work directory will be in `temp`)
/// started is running. Labs already there (`others`) do not count.
fn wait_until_running(temp: &Path, backend: &str, child: &mut Child, others: &[String]) {
    let ok = eventually(Duration::from_secs(60), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "lab exec --backend {backend} ended early"
        );
        let new: Vec<String> = lab_ids(temp)
            .into_iter()
            .filter(|id| !others.contains(id))
            .collect();
        !instances_of(&new).is_empty()
    });
    assert!(ok, "{backend}: the workload never ran");
    // Let the runtime finish setting up (runc writes its state as it starts the container).
    std::thread::sleep(Duration::from_millis(300));
}

/// Processes of instances whose lab's work directory was in `temp`, by cgroup or by command line
/// (once their cgroups are gone).
fn leftovers(temp: &Path) -> Vec<(i32, String)> {
    let mut found = processes_mentioning(&temp.to_string_lossy(), false);
    found.retain(|(_, cmd)| !cmd.starts_with(LAB) || cmd.contains("isolab-guard"));
    found.extend(
        instances_of(&lab_ids(temp))
            .into_iter()
            .map(|p| (p, String::new())),
    );
    found
}

fn cpu_forever(temp: &Path, backend: &str) -> Child {
    quiet_lab(temp)
        .args([
            "exec",
            "--backend",
            backend,
            "--kernel",
            "cpu",
            "--iters",
            "100000000000",
        ])
        .spawn()
        .unwrap()
}

/// `lab exec` of an endless `cpu` kernel on each of `backends`, killed with SIGKILL: nothing of
/// it may be left once its guardian is done.
fn killed_labs_leave_nothing(name: &str, backends: &[&str]) {
    let _serial = serial();
    let temp = temp_dir(name);
    // The labs here are child processes, reaped below, and what a killed lab leaves is never
    // this process's: its own descriptors and children belong to the test harness (and to
    // other tests of this binary, such as a runtime's stderr reader waiting for its end of
    // file, or a short-lived helper program), so they are not compared. `leftovers` finds the
    // labs' processes wherever they were re-parented.
    let state = |temp: &Path| HostState {
        fds: 0,
        children: Default::default(),
        ..HostState::now(temp)
    };
    let before = state(&temp);
    for &backend in backends {
        let mut lab = Reap(vec![cpu_forever(&temp, backend)]);
        let child = &mut lab.0[0];
        wait_until_running(&temp, backend, child, &[]);
        let ids = lab_ids(&temp);
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        let _ = child.wait();
        let gone = eventually(Duration::from_secs(20), || {
            state(&temp) == before
                && leftovers(&temp).is_empty()
                && (backend != "docker" || docker_containers(&ids).is_empty())
        });
        assert!(
            gone,
            "{backend}: left behind {:?} (before: {before:?}), processes {:?}",
            state(&temp),
            leftovers(&temp)
        );
    }
    std::fs::remove_dir_all(temp).unwrap();
}

/// The workload under `oci:runc` is runc's child, not the lab's: when the lab was killed it used
/// to run on at 100% CPU, with runc's state and cgroups (one per controller) left behind. Now
/// the lab's guardian removes the container through runc the moment the lab is gone.
#[test]
fn a_killed_lab_leaves_no_workload_runtime_state_or_cgroup() {
    killed_labs_leave_nothing("killed", &["oci:runc", "container", "process"]);
}

/// The Docker containers named for labs `ids`, running or not: the daemon keeps them, not the
/// lab.
fn docker_containers(ids: &[String]) -> Vec<String> {
    common::docker_container_names()
        .into_iter()
        .filter(|n| ids.iter().any(|id| n.starts_with(&format!("isolab-{id}-"))))
        .collect()
}

/// The same for the other runtimes: crun's container and gVisor's sandbox, whose state is
/// under the lab's work directory, and a container Docker's daemon keeps — which no death
/// signal of the lab can reach: the guardian removes it with `docker rm --force`.
#[test]
#[ignore = "needs crun, runsc, docker.io and a running dockerd (CI runs it)"]
fn a_killed_lab_leaves_no_container_of_crun_runsc_or_docker() {
    for program in ["crun", "runsc"] {
        assert!(
            isolab_host::facts::find_program(program).is_some(),
            "this test needs {program} (apt install {program})"
        );
    }
    let daemon = Command::new("docker").arg("version").output();
    assert!(
        daemon.is_ok_and(|o| o.status.success()),
        "this test needs docker.io and a running dockerd"
    );
    killed_labs_leave_nothing("killed-runtimes", &["oci:crun", "oci:runsc", "docker"]);
}

/// The same for a microVM: the VMM, a fork of the lab, dies with it; its cgroup goes too.
#[test]
#[ignore = "needs /dev/kvm (CI runs it)"]
fn a_killed_lab_leaves_no_vmm_or_cgroup() {
    common::needs_kvm();
    killed_labs_leave_nothing("killed-vm", &["vm"]);
}

/// The guardian processes of labs whose environment names `temp` (a fork of the lab keeps its
/// environment).
fn guardians(temp: &Path) -> Vec<i32> {
    let needle = format!("TMPDIR={}", temp.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "isolab-guard")
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A lab and its guardian both killed (as by a power cut of the process tree): the next `lab`
/// command removes what is left — through runc for runc's container — and `lab clean` says so,
/// while it leaves a running lab alone.
#[test]
fn the_next_lab_removes_what_a_dead_one_left_and_clean_says_what() {
    let _serial = serial();
    let temp = temp_dir("clean");
    let before = HostState::now(&temp);
    // A lab that keeps running throughout.
    let mut live = Reap(vec![quiet_lab(&temp)
        .args([
            "exec",
            "--backend",
            "process",
            "--kernel",
            "sleep",
            "--hold",
            "600",
        ])
        .spawn()
        .unwrap()]);
    let live_ids = {
        let child = &mut live.0[0];
        wait_until_running(&temp, "process", child, &[]);
        lab_ids(&temp)
    };
    live.0.push(cpu_forever(&temp, "oci:runc"));
    let victim = &mut live.0[1];
    wait_until_running(&temp, "oci:runc", victim, &live_ids);
    let victim_ids: Vec<String> = lab_ids(&temp)
        .into_iter()
        .filter(|id| !live_ids.contains(id))
        .collect();
    assert!(eventually(Duration::from_secs(10), || guardians(&temp)
        .len()
        == 2));
    let victim_guardian: Vec<i32> = guardians(&temp);
    // Kill both guardians' labs' guardians first, then the victim: the live lab's guardian is
    // killed too, which harms nothing while its lab runs (the next lab would reap it instead).
    for g in &victim_guardian {
        kill(Pid::from_raw(*g), Signal::SIGKILL).unwrap();
    }
    kill(Pid::from_raw(victim.id() as i32), Signal::SIGKILL).unwrap();
    let _ = victim.wait();
    std::thread::sleep(Duration::from_millis(200));
    let left = HostState::now(&temp);
    assert!(
        !left.cgroups.is_empty() && !left.runtime_state.is_empty() && !left.dead_labs.is_empty(),
        "the killed lab left something to clean: {left:?}"
    );
    let o = Command::new(LAB)
        .arg("clean")
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("had ended"), "{text}");
    assert!(
        text.contains("deleted /") && text.contains("container isolab-"),
        "{text}"
    );
    assert!(text.contains("removed cgroup"), "{text}");
    assert!(text.contains("removed /"), "the work directory: {text}");
    assert!(text.contains("is running: left alone"), "{text}");
    // (A killed process is briefly a zombie that still names its cgroup.)
    assert!(
        eventually(Duration::from_secs(5), || instances_of(&victim_ids)
            .is_empty()),
        "the victim's workload is gone"
    );
    assert!(!temp.join(format!("isolab-{}", victim_ids[0])).exists());
    // The live lab is untouched: its work directory is there, and it still ends well.
    let live_child = &mut live.0[0];
    assert!(
        live_child.try_wait().unwrap().is_none(),
        "the live lab runs on"
    );
    kill(Pid::from_raw(live_child.id() as i32), Signal::SIGTERM).unwrap();
    let status = live_child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "ended by SIGTERM, cleanly");
    live.0.clear();
    // Its guardian was killed above, so its registry entry is for the next lab to remove.
    Command::new(LAB)
        .arg("clean")
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// `oci:runc` over its memory limit, and `oci:runc` with runc itself killed under a running
/// container: no cgroup is left in any hierarchy (runc makes one per controller), and the lab
/// notices the dead runtime at once — it used to wait for its 120 s timeout, because the
/// orphaned container still held the marker pipe open.
#[test]
fn an_oci_instance_killed_by_oom_or_by_losing_its_runtime_leaves_no_cgroup() {
    use isolab_backends as backend;
    use isolab_backends::lab::Lab;
    use isolab_backends::Limits;
    use isolab_payload::{Kernel, Spec};
    let _serial = serial();
    let temp = temp_dir("oci-faults");
    let before = HostState::now(&temp);
    let lab = Lab::in_dir(&temp).unwrap();
    let oci = backend::by_name("oci:runc").unwrap();
    let limits = Limits {
        memory_bytes: Some(16 << 20),
        ..Limits::default()
    };
    for _ in 0..3 {
        let run = oci
            .run(&lab, &Spec::new(Kernel::Mem, 64, 1), &limits)
            .unwrap();
        assert_eq!(run.outcome, Outcome::OomKilled);
    }
    let mut instance = oci
        .start(&lab, &Spec::default_for(Kernel::Sleep), &Limits::default())
        .unwrap();
    instance.wait_ready().unwrap();
    kill(instance.main_pid(), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let run = instance.finish().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "noticed after {:?}",
        killed.elapsed()
    );
    assert!(
        matches!(run.outcome, Outcome::Failed { ref reason } if reason.contains("SIGKILL")),
        "{:?}",
        run.outcome
    );
    drop(lab);
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// The next lab (`lab clean`) finds nothing that the test's labs left: labs `ids`, which ran in
/// `temp` (`what` ran there). Only their sections of its output count: other labs on the
/// machine — killed in other tests beside this one — may well leave their guardians' work to it.
fn nothing_to_reap(temp: &Path, ids: &[String], what: &str) {
    let clean = Command::new(LAB)
        .arg("clean")
        .env("TMPDIR", temp)
        .output()
        .unwrap();
    let out = stdout(&clean);
    let inside = format!("{}/", temp.display());
    // Sections: "lab <id> … had ended:" and the lines under it, indented.
    let mut ours = Vec::new();
    let mut section: Vec<&str> = Vec::new();
    let mut flush = |section: &mut Vec<&str>| {
        let head = section.first().copied().unwrap_or_default();
        let id = head.strip_prefix("lab ").and_then(|r| r.split(' ').next());
        let mine = id.is_some_and(|id| ids.iter().any(|i| i == id))
            || section.iter().any(|l| l.contains(&inside));
        if mine {
            ours.extend(section.iter().map(|l| l.to_string()));
        }
        section.clear();
    };
    for line in out.lines() {
        if line.starts_with("lab ") {
            flush(&mut section);
        }
        section.push(line);
    }
    flush(&mut section);
    assert!(
        !ours
            .iter()
            .any(|l| l.contains("removed") || l.contains("unmounted")),
        "{what}: the next lab had something of the test's labs to reap: {ours:?}"
    );
}

/// Every network namespace the processes `pids` hold — as their own, a thread's, or an open
/// descriptor — by inode (`net:[…]`), with a path that leads to it: anonymous namespaces have no
/// name to look for, and exist exactly as long as one of these (or a mount) holds them.
fn netns_held_by(pids: impl IntoIterator<Item = u32>) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for pid in pids {
        let mut links = vec![PathBuf::from(format!("/proc/{pid}/ns/net"))];
        for dir in [format!("/proc/{pid}/task"), format!("/proc/{pid}/fd")] {
            for t in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                links.push(if dir.ends_with("task") {
                    t.path().join("ns/net")
                } else {
                    t.path()
                });
            }
        }
        for l in links {
            if let Ok(target) = std::fs::read_link(&l) {
                let t = target.to_string_lossy().into_owned();
                if t.starts_with("net:[") {
                    out.entry(t).or_insert(l);
                }
            }
        }
    }
    out
}

/// Every process on the host.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// `SO_NETNS_COOKIE` (asm-generic/socket.h, Linux 5.14): a socket's network namespace's cookie.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace `link` leads to: a number the kernel gives each
/// namespace once and never again. Its inode number is no name to follow a namespace by: once
/// the namespace is gone, the next one made anywhere on the host — by another lab running beside
/// the test — may get the same number. `None` when it is gone already.
fn netns_cookie(link: &Path) -> Option<u64> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(link).ok()?;
    // `setns` moves only the calling thread: a thread of its own enters the namespace, makes a
    // socket there (a socket belongs to the namespace it was made in) and asks it.
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            let sock = socket(
                AddressFamily::Unix,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .ok()?;
            let mut cookie = 0u64;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            // SAFETY: the kernel writes at most `len` bytes, the size of `cookie`, into it.
            let r = unsafe {
                libc::getsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_NETNS_COOKIE,
                    (&raw mut cookie).cast(),
                    &mut len,
                )
            };
            (r == 0).then_some(cookie)
        })
        .join()
        .ok()
        .flatten()
    })
}

/// The network namespaces the labs whose work directories are in `temp` hold now — by the lab,
/// its forks and its instances, the host's own namespace aside — by inode, with their cookies.
fn lab_netns(temp: &Path) -> BTreeMap<String, u64> {
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let mut pids: Vec<u32> = processes_mentioning(&temp.to_string_lossy(), true)
        .into_iter()
        .map(|(p, _)| p as u32)
        .collect();
    pids.extend(instances_of(&lab_ids(temp)).into_iter().map(|p| p as u32));
    netns_held_by(pids)
        .into_iter()
        .filter(|(ino, _)| *ino != host.to_string_lossy())
        .filter_map(|(ino, link)| Some((ino, netns_cookie(&link)?)))
        .collect()
}

/// Those of the namespaces `made` (by inode, with their cookies) that anything on the host still
/// holds: the same inode *and* the same cookie — another namespace that took a freed inode
/// number is another lab's.
fn still_held(made: &BTreeMap<String, u64>) -> Vec<String> {
    netns_held_by(all_pids())
        .into_iter()
        .filter(|(ino, link)| {
            made.get(ino)
                .is_some_and(|c| netns_cookie(link) == Some(*c))
        })
        .map(|(ino, _)| ino)
        .collect()
}

/// Interfaces of the host's network namespace named as the lab names the ends of its links
/// (`v<n>` and `t<n>`, which live in its peer's namespace), and named network namespaces of a
/// lab's: what a lab must never add to the host's network. (Other interfaces come and go with
/// whatever else runs on the machine.)
fn host_network() -> (Vec<String>, Vec<String>) {
    let names = |dir: &str, keep: fn(&str) -> bool| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| keep(n))
            .collect();
        v.sort();
        v
    };
    let lab_end = |n: &str| {
        n.strip_prefix(['v', 't'])
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    (
        names("/sys/class/net", lab_end),
        names("/run/netns", |n| n.contains("isolab")),
    )
}

/// Labs killed with SIGKILL in the middle of a network kernel and of a disk kernel, on a process,
/// a container and runc: no network namespace the lab made is held by anything (so the kernel has
/// removed it, with every veth in it), the host's network has no interface or named namespace of
/// a lab's, no disk file or directory is left, and the next lab finds nothing of it to reap.
/// Only the test's own lab is counted: other labs may run beside it, making and removing
/// namespaces of their own.
#[test]
fn a_killed_lab_leaves_no_network_namespace_veth_or_disk() {
    let _serial = serial();
    let temp = temp_dir("killed-devices");
    let disks = temp.join("disks");
    std::fs::create_dir(&disks).unwrap();
    let host_before = host_network();
    for backend in ["process", "container", "oci:runc"] {
        for (kernel, size) in [("net-rr", "--iters"), ("disk-rand", "--iters")] {
            let mut lab = Reap(vec![quiet_lab(&temp)
                .args([
                    "exec",
                    "--backend",
                    backend,
                    "--kernel",
                    kernel,
                    "--mib",
                    "8",
                ])
                .args([size, "100000000000"])
                .arg("--disk-dir")
                .arg(&disks)
                .spawn()
                .unwrap()]);
            let child = &mut lab.0[0];
            wait_until_running(&temp, backend, child, &[]);
            let ids = lab_ids(&temp);
            let made = lab_netns(&temp);
            if kernel == "net-rr" {
                assert!(
                    made.len() >= 2,
                    "{backend}: the peer's and the instance's namespaces exist while it runs: {made:?}"
                );
            } else {
                let disk_dirs = entries(&disks);
                assert_eq!(disk_dirs.len(), 1, "{backend}: the lab's disk directory");
            }
            kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
            let _ = child.wait();
            let gone = eventually(Duration::from_secs(20), || {
                still_held(&made).is_empty()
                    && entries(&disks).is_empty()
                    && leftovers(&temp).is_empty()
                    && lab_ids(&temp).is_empty()
            });
            assert!(
                gone,
                "{backend} {kernel}: left namespaces {:?}, disks {:?}, processes {:?}, labs {ids:?}",
                still_held(&made),
                entries(&disks),
                leftovers(&temp)
            );
            assert_eq!(
                host_network(),
                host_before,
                "{backend} {kernel}: the host's network"
            );
            nothing_to_reap(&temp, &ids, &format!("{backend} {kernel}"));
        }
    }
    std::fs::remove_dir_all(temp).unwrap();
}

/// Overlay mounts in the host's mount namespace (an OCI bundle's root on the lab's image).
fn overlay_mounts_under(temp: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - overlay "))
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&temp.to_string_lossy().to_string()))
        .collect()
}

/// Labs killed with SIGKILL while instances run on the lab's layered image — isolab's
/// container (an overlay in its own mount namespace), runc (an overlay mounted on the host as its
/// bundle's root) and Docker (an image built in the daemon) — leave no overlay mount, no image
/// directory and no Docker image of theirs, and the next lab finds nothing to reap.
#[test]
#[ignore = "needs runc, docker.io and a running dockerd (CI runs it)"]
fn a_killed_lab_leaves_no_overlay_image_or_docker_image() {
    let _serial = serial();
    let daemon = Command::new("docker").arg("version").output();
    assert!(
        daemon.is_ok_and(|o| o.status.success()),
        "this test needs docker.io and a running dockerd"
    );
    let temp = temp_dir("killed-image");
    for backend in ["container", "oci:runc", "docker"] {
        let mut lab = Reap(vec![quiet_lab(&temp)
            .args(["exec", "--backend", backend, "--kernel", "cpu"])
            .args([
                "--iters",
                "100000000000",
                "--image",
                "layered",
                "--image-mib",
                "8",
            ])
            .spawn()
            .unwrap()]);
        let child = &mut lab.0[0];
        wait_until_running(&temp, backend, child, &[]);
        let ids = lab_ids(&temp);
        if backend == "oci:runc" {
            assert!(
                !overlay_mounts_under(&temp).is_empty(),
                "runc's bundle root is an overlay on the host while it runs"
            );
        }
        let tags = |ids: &[String]| -> Vec<String> {
            let out = Command::new("docker")
                .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
                .output()
                .unwrap();
            stdout(&out)
                .lines()
                .filter(|t| {
                    ids.iter()
                        .any(|id| t.starts_with(&format!("isolab-image:{id}-")))
                })
                .map(str::to_string)
                .collect()
        };
        if backend == "docker" {
            assert!(
                !tags(&ids).is_empty(),
                "the lab built its image in the daemon"
            );
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        let _ = child.wait();
        let gone = eventually(Duration::from_secs(30), || {
            overlay_mounts_under(&temp).is_empty()
                && lab_ids(&temp).is_empty()
                && leftovers(&temp).is_empty()
                && tags(&ids).is_empty()
        });
        assert!(
            gone,
            "{backend}: left overlays {:?}, labs {:?}, processes {:?}, docker images {:?}",
            overlay_mounts_under(&temp),
            lab_ids(&temp),
            leftovers(&temp),
            tags(&ids)
        );
        nothing_to_reap(&temp, &ids, backend);
    }
    std::fs::remove_dir_all(temp).unwrap();
}

/// KSM's `run` setting now.
fn ksm_run() -> String {
    std::fs::read_to_string("/sys/kernel/mm/ksm/run")
        .expect("this kernel has KSM (CONFIG_KSM)")
        .trim()
        .to_string()
}

/// KSM is one switch for the whole host. Two labs turn it on one after the other and end in the
/// same order: the first to end must leave it on (the second still merges), the second must
/// put back the host's setting — not the "on" it found when it started.
#[test]
fn two_labs_share_ksm_and_the_last_to_end_puts_the_host_setting_back() {
    let _serial = serial();
    // The registry must be private, and so must its parent (`/tmp` is not).
    let temp = temp_dir("ksm-registry");
    let registry = temp.join("registry");
    let before = ksm_run();
    let a = isolab_resources::ownership::Ledger::open_in(&registry).unwrap();
    let b = isolab_resources::ownership::Ledger::open_in(&registry).unwrap();
    let ksm_a = isolab_resources::ksm::Ksm::start(&a).unwrap();
    assert_eq!(ksm_run(), "1", "the first lab turned KSM on");
    let ksm_b = isolab_resources::ksm::Ksm::start(&b).unwrap();
    drop(ksm_a);
    assert_eq!(ksm_run(), "1", "KSM stays on while the second lab uses it");
    drop(ksm_b);
    assert_eq!(
        ksm_run(),
        before,
        "the last lab put the host's setting back"
    );
    assert!(
        !registry.join("ksm.json").exists(),
        "no record of KSM users is left"
    );
    drop((a, b));
    std::fs::remove_dir_all(temp).unwrap();
}

/// A lab killed with SIGKILL while KSM merges its VMs' memory (`lab run images --ksm`, on QEMU
/// here: the lab's own VMM cannot boot Linux on nested PVM) leaves KSM as the host had it, no
/// image disk and no record of KSM users, and the next lab finds nothing to reap.
#[test]
#[ignore = "needs qemu-system-x86 and Debian's kernel (CI installs them)"]
fn a_lab_killed_while_ksm_merges_leaves_the_host_setting_and_no_image_disk() {
    let _serial = serial();
    common::needs_qemu();
    let temp = temp_dir("killed-ksm");
    let disks = temp.join("disks");
    std::fs::create_dir(&disks).unwrap();
    let before = ksm_run();
    assert_ne!(
        before, "1",
        "this test needs KSM off on the host to see the lab turn it on"
    );
    let mut lab = Reap(vec![quiet_lab(&temp)
        .args(["run", "images", "--backends", "qemu", "--max", "4", "--ksm"])
        .args(["--image-mib", "8", "--no-progress", "--out"])
        .arg(&temp)
        .arg("--disk-dir")
        .arg(&disks)
        .spawn()
        .unwrap()]);
    let child = &mut lab.0[0];
    // KSM on, and the first VM running on its copy of the image.
    let running = eventually(Duration::from_secs(180), || {
        assert!(child.try_wait().unwrap().is_none(), "the lab ended early");
        ksm_run() == "1" && !instances_of(&lab_ids(&temp)).is_empty()
    });
    assert!(running, "the lab never turned KSM on with a VM running");
    let ids = lab_ids(&temp);
    let registry = isolab_resources::ownership::registry_dir();
    assert!(registry.join("ksm.json").is_file(), "the lab is a KSM user");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let gone = eventually(Duration::from_secs(30), || {
        ksm_run() == before
            && entries(&disks).is_empty()
            && leftovers(&temp).is_empty()
            && lab_ids(&temp).is_empty()
    });
    assert!(
        gone,
        "left: KSM run {}, disks {:?}, processes {:?}, labs {:?}",
        ksm_run(),
        entries(&disks),
        leftovers(&temp),
        lab_ids(&temp)
    );
    assert!(
        !registry.join("ksm.json").exists(),
        "no record of KSM users is left"
    );
    nothing_to_reap(&temp, &ids, "images --ksm");
    std::fs::remove_dir_all(temp).unwrap();
}

/// A lab killed with SIGKILL in the middle of `lab run interference`, while aggressors run
/// beside a victim — a fork bomb that has filled its pids limit, memory hogs, CPU hogs — leaves
/// no aggressor, no victim, no cgroup (in any hierarchy: the I/O limit's blkio ones too), no
/// mount and no disk, and the next lab finds nothing to reap.
fn killed_among_neighbours(name: &str, backends: &str, aggressors: &str, crowd: usize) {
    let _serial = serial();
    let temp = temp_dir(name);
    let disks = temp.join("disks");
    std::fs::create_dir(&disks).unwrap();
    // Only this test's labs' mounts: other labs may run on the machine meanwhile.
    let mine = temp.to_string_lossy().into_owned();
    let state = |temp: &Path| {
        let mut s = HostState {
            fds: 0,
            children: Default::default(),
            ..HostState::now(temp)
        };
        s.mounts.retain(|m| m.contains(&mine));
        s
    };
    let before = state(&temp);
    let out = temp.join("out");
    let mut lab = Reap(vec![quiet_lab(&temp)
        .args(["run", "interference", "--backends", backends])
        .args(["--aggressors", aggressors, "--max-aggressors", "2"])
        .args(["--runs", "50", "--warmup", "0", "--no-progress"])
        // Every instance under limits, an I/O limit among them (blkio cgroups on v1).
        .args([
            "--cpu-limit",
            "0.5",
            "--memory-limit",
            "256",
            "--io-limit",
            "64",
        ])
        .arg("--disk-dir")
        .arg(&disks)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap()]);
    let child = &mut lab.0[0];
    // Wait for the crowd: a bomb at its limit, or aggressors and a victim at once.
    let crowded = eventually(Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "the lab ended early");
        instances_of(&lab_ids(&temp)).len() >= crowd
    });
    assert!(
        crowded,
        "{backends}: never {crowd} processes of instances at once"
    );
    let ids = lab_ids(&temp);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let gone = eventually(Duration::from_secs(30), || {
        let mut now = state(&temp);
        now.temp_entries.remove("out");
        now == before
            && leftovers(&temp).is_empty()
            && instances_of(&ids).is_empty()
            && entries(&disks).is_empty()
    });
    assert!(
        gone,
        "{backends}: left behind {:?} (before: {before:?}), processes {:?}, disks {:?}",
        state(&temp),
        leftovers(&temp),
        entries(&disks),
    );
    nothing_to_reap(&temp, &ids, backends);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn a_lab_killed_among_a_fork_bomb_and_memory_hogs_leaves_nothing() {
    // A bomb under pids 128 in the unlimited configuration (64 limited, here 128 is the lab's
    // cap): at least 40 of its processes means it is well under way.
    killed_among_neighbours("killed-bomb", "process,container", "fork,oom,disk", 40);
}

/// The same among microVMs: their aggressors are VMM processes, each in its cgroup.
#[test]
#[ignore = "needs /dev/kvm (CI runs it)"]
fn a_lab_killed_among_vm_neighbours_leaves_nothing() {
    common::needs_kvm();
    killed_among_neighbours("killed-vm-neighbours", "vm", "cpu,mem", 3);
}

/// Descriptors any process holds on the lab's unnamed snapshot files under `temp`: an
/// `O_TMPFILE` file shows in `/proc/PID/fd` as `<dir>/#<inode> (deleted)`.
fn snapshot_fds(temp: &Path) -> Vec<String> {
    let temp = temp.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for pid in std::fs::read_dir("/proc").unwrap().flatten() {
        for fd in std::fs::read_dir(pid.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if target.starts_with(&temp) && target.contains("/#") {
                    found.push(format!("{}: {target}", fd.path().display()));
                }
            }
        }
    }
    found
}

/// `lab run restore` killed with SIGKILL while it restores VMs from a snapshot: the restored
/// VMMs die with it, the guardian removes their cgroups and the work directory, and the
/// snapshot — an unnamed file whose only references were the lab's and its VMMs' descriptors —
/// is freed by the kernel with the last of them: nothing of it is left anywhere.
#[test]
fn a_lab_killed_mid_restore_leaves_no_snapshot_vmm_or_cgroup() {
    common::needs_kvm();
    let _serial = serial();
    let temp = temp_dir("killed-restore");
    let state = |temp: &Path| HostState {
        fds: 0,
        children: Default::default(),
        ..HostState::now(temp)
    };
    let before = state(&temp);
    let out = temp.join("out");
    let mut lab = Reap(vec![quiet_lab(&temp)
        .args([
            "run",
            "restore",
            "--backends",
            "vm",
            "--runs",
            "100000",
            "--warmup",
            "0",
        ])
        .args(["--no-progress", "--out", out.to_str().unwrap()])
        .spawn()
        .unwrap()]);
    let child = &mut lab.0[0];
    // Restores are under way once a restored sample is in the results.
    let restoring = eventually(Duration::from_secs(120), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "lab run restore ended early"
        );
        Results::read_all(&out).ok().is_some_and(|r| {
            r.iter()
                .any(|r| r.runs.iter().any(|x| x.backend.contains("/restored")))
        })
    });
    assert!(restoring, "no restored sample within two minutes");
    let held = snapshot_fds(&temp);
    assert!(
        !held.is_empty(),
        "the lab holds no snapshot file: this test would prove nothing"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let gone = eventually(Duration::from_secs(20), || {
        let mut now = state(&temp);
        now.temp_entries.remove("out");
        now == before && leftovers(&temp).is_empty() && snapshot_fds(&temp).is_empty()
    });
    assert!(
        gone,
        "left behind {:?} (before: {before:?}), processes {:?}, snapshot files {:?}",
        state(&temp),
        leftovers(&temp),
        snapshot_fds(&temp)
    );
    std::fs::remove_dir_all(temp).unwrap();
}

/// `lab run restore` killed with SIGKILL while a QEMU loads or runs a guest from its migration
/// stream: QEMU dies with its instance's cgroup, and the guardian removes the cgroups and the
/// work directory — the stream's snapshot directory and the QMP sockets are in it.
#[test]
fn a_lab_killed_while_qemu_restores_leaves_no_stream_qemu_or_cgroup() {
    common::needs_qemu();
    let _serial = serial();
    let temp = temp_dir("killed-qemu-restore");
    let state = |temp: &Path| HostState {
        fds: 0,
        children: Default::default(),
        ..HostState::now(temp)
    };
    let before = state(&temp);
    let out = temp.join("out");
    let mut lab = Reap(vec![quiet_lab(&temp)
        .args(["run", "restore", "--backends", "qemu", "--runs", "100"])
        .args([
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
        .spawn()
        .unwrap()]);
    let child = &mut lab.0[0];
    // A restored QEMU is one started with `-incoming`; its arguments name the lab's directory.
    let restoring = || {
        processes_mentioning(&temp.to_string_lossy(), false)
            .iter()
            .any(|(_, cmd)| cmd.starts_with("qemu-system") && cmd.contains("-incoming"))
    };
    let found = eventually(Duration::from_secs(180), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "lab run restore ended early"
        );
        restoring()
    });
    assert!(found, "no restored QEMU within three minutes");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let gone = eventually(Duration::from_secs(30), || {
        let mut now = state(&temp);
        now.temp_entries.remove("out");
        now == before && leftovers(&temp).is_empty()
    });
    assert!(
        gone,
        "left behind {:?} (before: {before:?}), processes {:?}",
        state(&temp),
        leftovers(&temp)
    );
    std::fs::remove_dir_all(temp).unwrap();
}
