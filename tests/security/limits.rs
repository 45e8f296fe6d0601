//! Limits that are really in force: the lab writes `pids.max` and the memory, CPU and I/O limits
//! into an instance's cgroup, and every process of the instance must be under them.
//!
//! The attack: a fork bomb in an OCI container, on a machine where the lab's own cgroup is not
//! at the same place in every cgroup v1 hierarchy (here: the session's memory cgroup is nested,
//! its pids cgroup is not). runc and crun were given one `cgroupsPath`, the instance's path in
//! the *memory* hierarchy, which a runtime reads as a path from each hierarchy's root: in the
//! pids hierarchy that named a cgroup nowhere near the instance's, with no `pids.max` above it.
//! The bomb forked until the machine refused (27,511 processes in one `lab run interference`);
//! the results said 128.
//!
//! The tests put the lab where its paths differ between hierarchies on purpose: a memory cgroup
//! below the test's own, a pids cgroup elsewhere. A safety net — a pids cgroup with
//! `pids.max` 2000 around the lab, and another where a runtime given the memory path would put
//! its container in the pids hierarchy — keeps an escaped bomb from taking the machine down:
//! without the fix, the bomb stops at 2000, not at the instance's 16.

use super::common::{serial, temp_dir};
use isolab_backends as backend;
use isolab_backends::instance::{Instance, Parts, Timeline};
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Backend, BackendError, Limits, Spec};
use isolab_experiments::interference;
use isolab_experiments::interference::Aggressor;
use isolab_payload as workload;
use isolab_payload::Kernel;
use isolab_results::{Facts, Results};
use isolab_spawn::child;
use isolab_spawn::child::{Exec, CONTROL_FD, REPORT_FD};
use isolab_spawn::{spawn_exec, Placement};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// The bound of the safety net: far above any instance's limit here, far below what hurts.
const NET: u64 = 2000;

/// This process's cgroup path in the v1 hierarchy of `controller` (`/proc/self/cgroup`).
fn own(controller: &str) -> Option<String> {
    fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            list.split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
}

/// Cgroup v1 with the memory and pids controllers in hierarchies of their own, as here.
fn v1_apart() -> bool {
    Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
        && Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists()
}

/// A place for a lab, in cgroups the test makes: `memory` below the test's own memory cgroup,
/// `pids` somewhere else — or, `same`, at the same path in both — under a pids limit of
/// [`NET`], with a second net where a runtime given the memory path would put its container.
struct Place {
    memory: PathBuf,
    pids: PathBuf,
    /// The pids cgroup at the memory cgroup's path: where an unfixed runtime's container went.
    net: PathBuf,
    /// Every directory made, outermost first.
    made: Vec<PathBuf>,
    /// The name all of them carry.
    name: String,
}

impl Place {
    fn new(tag: &str, same: bool) -> Place {
        assert!(v1_apart(), "needs cgroup v1 with memory and pids apart");
        let name = format!("isolab-sec-limits-{}-{tag}", std::process::id());
        let memory_rel = format!("{}/{name}", own("memory").unwrap().trim_end_matches('/'));
        let pids_rel = if same {
            memory_rel.clone()
        } else {
            format!(
                "{}/{name}-p/elsewhere",
                own("pids").unwrap().trim_end_matches('/')
            )
        };
        let mut place = Place {
            memory: PathBuf::from(format!("/sys/fs/cgroup/memory{memory_rel}")),
            pids: PathBuf::from(format!("/sys/fs/cgroup/pids{pids_rel}")),
            net: PathBuf::from(format!("/sys/fs/cgroup/pids{memory_rel}")),
            made: Vec::new(),
            name: String::new(),
        };
        for dir in [place.memory.clone(), place.net.clone(), place.pids.clone()] {
            place.make(&dir);
        }
        // The net where a container would escape to, and the outermost pids cgroup the test
        // made around the lab (the same one when the paths are the same).
        let outer = if same {
            place.net.clone()
        } else {
            place.pids.parent().unwrap().to_path_buf()
        };
        for dir in [&place.net, &outer] {
            assert!(
                place.made.contains(dir),
                "{} is not the test's",
                dir.display()
            );
            fs::write(dir.join("pids.max"), NET.to_string()).unwrap();
        }
        place.name = name;
        place
    }

    /// Make `dir` and any missing parent; only what this makes is removed at the end.
    fn make(&mut self, dir: &Path) {
        if dir.exists() {
            return;
        }
        self.make(dir.parent().unwrap());
        fs::create_dir(dir).unwrap();
        self.made.push(dir.to_path_buf());
    }

    /// `lab args...`, started in this place's cgroups.
    fn lab(&self, args: &[&str], temp: &Path) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && echo $$ > "$2/cgroup.procs" && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(&self.memory)
            .arg(&self.pids)
            .arg(LAB)
            .args(args)
            .env("TMPDIR", temp);
        c
    }

    /// The most tasks the net under an escaped container ever held.
    fn net_peak(&self) -> u64 {
        fs::read_to_string(self.net.join("pids.peak"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// `dir` and every cgroup below it, deepest first (the lab leaves its empty `isolab` base; a
/// runtime given the memory path left its own in every hierarchy). What ran there has ended.
fn remove_cgroup_tree(dir: &Path) {
    let mut dirs = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        let below: Vec<PathBuf> = fs::read_dir(&dirs[i])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        dirs.extend(below);
        i += 1;
    }
    for d in dirs.iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            // Below the test's own names, everything; a parent it had to make (the session's
            // path in another hierarchy) is shared, and goes only if empty.
            if dir.to_string_lossy().contains(&self.name) {
                remove_cgroup_tree(dir);
            } else {
                let _ = fs::remove_dir(dir);
            }
        }
        // What a runtime made at the memory cgroup's path in the other hierarchies.
        for hierarchy in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let rel = self.memory.strip_prefix("/sys/fs/cgroup/memory").unwrap();
            let mirror = hierarchy.path().join(rel);
            if mirror.ends_with(&self.name) && mirror.is_dir() {
                remove_cgroup_tree(&mirror);
            }
        }
    }
}

/// The value of fact `key` in `lab exec`'s output (`  key   value`).
fn fact(out: &str, key: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(key)).then(|| words.collect::<Vec<_>>().join(" "))
    })
}

/// A fork bomb under `backend` with `--pids-limit 16`, the lab placed at different paths in the
/// memory and pids hierarchies: the instance's `pids.max` stops it, and nothing reaches the
/// place an unfixed runtime put its container.
fn bomb_stops_at_the_instances_pids_max(backend: &str) {
    let _serial = serial();
    let temp = temp_dir(&format!("sec-limits-bomb-{}", backend.replace(':', "-")));
    let place = Place::new(&backend.replace(':', "-"), false);
    let out = place
        .lab(
            &[
                "exec",
                "--backend",
                backend,
                "--kernel",
                "fork-bomb",
                "--iters",
                "2000",
                "--pids-limit",
                "16",
            ],
            &temp,
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{backend}: {text}{err}");
    let number = |key: &str| {
        fact(&text, key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{backend}: no {key} in {text}"))
    };
    let forks = number("forks");
    eprintln!(
        "{backend}: the bomb forked {forks} times, {:?} refused by the instance's pids.max; \
         in force: {:?} ({:?}); the net where an unfixed runtime put the container held at \
         most {}",
        fact(&text, "pids_max_refused"),
        fact(&text, "pids_limit_in_force"),
        fact(&text, "limits_read_from"),
        place.net_peak(),
    );
    assert!(
        forks < 16,
        "{backend}: the bomb forked {forks} times under --pids-limit 16: the instance's \
         pids.max did not hold it\n{text}"
    );
    assert!(number("pids_max_refused") > 0, "{backend}: {text}");
    assert_eq!(number("pids_limit_in_force"), 16, "{backend}: {text}");
    assert_eq!(
        place.net_peak(),
        0,
        "{backend}: the container went outside the instance"
    );
    drop(place);
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
#[ignore = "needs cgroup v1 with memory and pids in hierarchies apart (CI's machine)"]
fn a_fork_bomb_under_runc_stops_at_its_instances_pids_max_wherever_the_lab_is() {
    bomb_stops_at_the_instances_pids_max("oci:runc");
}

#[test]
#[ignore = "needs crun, and cgroup v1 with memory and pids in hierarchies apart (CI's machine)"]
fn a_fork_bomb_under_crun_stops_at_its_instances_pids_max_wherever_the_lab_is() {
    bomb_stops_at_the_instances_pids_max("oci:crun");
}

#[test]
#[ignore = "needs cgroup v1 with memory and pids in hierarchies apart (CI's machine)"]
fn a_fork_bomb_in_a_container_stops_at_its_instances_pids_max_wherever_the_lab_is() {
    bomb_stops_at_the_instances_pids_max("container");
}

/// The limit of `file` in force for process `pid` in v1 hierarchy `controller`: the smallest
/// from its cgroup up to the hierarchy's root, as the test reads it (not the lab's code).
fn in_force_v1(pid: i32, controller: &str, file: &str) -> (u64, String) {
    let line = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = line
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            list.split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap();
    let root = PathBuf::from(format!("/sys/fs/cgroup/{controller}"));
    let mut dir = root.join(path.trim_start_matches('/'));
    let mut least = u64::MAX;
    loop {
        if let Ok(v) = fs::read_to_string(dir.join(file)) {
            least = least.min(v.trim().parse().unwrap_or(u64::MAX));
        }
        if dir == root {
            break;
        }
        dir.pop();
    }
    (least, format!("{controller}:{path}"))
}

/// The processes called `workload` descended from `root`.
fn workloads_below(root: i32) -> Vec<i32> {
    isolab_resources::cgroup::in_force::process_tree(nix::unistd::Pid::from_raw(root))
        .into_iter()
        .map(|p| p.as_raw())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "workload")
        })
        .collect()
}

/// `lab exec --backend B --kernel sleep --hold 3 --pids-limit 16 --memory-limit 64`, the lab at
/// `place`: while it holds, the workload's own cgroups — read by the test from its
/// `/proc/PID/cgroup` — put it under `pids.max` ≤ 16 and a memory limit ≤ 64 MiB, and the lab
/// records both as in force.
fn exec_is_under_its_limits(backend: &str, same: bool) {
    let temp = temp_dir(&format!("sec-limits-exec-{}", backend.replace(':', "-")));
    let place = Place::new(&format!("x-{}", backend.replace(':', "-")), same);
    let child: Child = place
        .lab(
            &[
                "exec",
                "--backend",
                backend,
                "--kernel",
                "sleep",
                "--hold",
                "3",
                "--pids-limit",
                "16",
                "--memory-limit",
                "64",
            ],
            &temp,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let workload = loop {
        if let Some(&w) = workloads_below(child.id() as i32).first() {
            break w;
        }
        assert!(Instant::now() < deadline, "{backend}: no workload appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (pids, pids_at) = in_force_v1(workload, "pids", "pids.max");
    let (memory, memory_at) = in_force_v1(workload, "memory", "memory.limit_in_bytes");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "{backend} ({}): workload pid {workload}: pids.max {pids} in force ({pids_at}), memory \
         limit {memory} in force ({memory_at}); the lab recorded pids {:?}, memory {:?}",
        if same {
            "same path in both hierarchies"
        } else {
            "paths differ between hierarchies"
        },
        fact(&text, "pids_limit_in_force"),
        fact(&text, "memory_limit_in_force_bytes"),
    );
    assert!(
        out.status.success(),
        "{backend}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        pids <= 16,
        "{backend}: pids.max {pids} in force at {pids_at}"
    );
    assert!(
        memory <= 64 << 20,
        "{backend}: memory {memory} in force at {memory_at}"
    );
    assert_eq!(
        fact(&text, "pids_limit_in_force").as_deref(),
        Some("16"),
        "{text}"
    );
    assert_eq!(
        fact(&text, "memory_limit_in_force_bytes").as_deref(),
        Some("67108864"),
        "{text}"
    );
    drop(place);
    fs::remove_dir_all(&temp).unwrap();
}

#[test]
#[ignore = "needs crun, and cgroup v1 with memory and pids in hierarchies apart (CI's machine)"]
fn lab_exec_holds_runc_crun_and_the_container_under_their_pids_and_memory_limits() {
    let _serial = serial();
    for backend in ["oci:runc", "oci:crun", "container"] {
        exec_is_under_its_limits(backend, false);
    }
    // Where the paths are the same in every hierarchy (what the runtimes were once given).
    exec_is_under_its_limits("oci:runc", true);
}

/// A backend whose runtime puts its workload somewhere else than the instance's cgroup: the
/// `process` backend's workload, started in the lab's own cgroup while the instance's — with
/// the limits written in it — stays empty. What runc and crun did on this machine.
struct Elsewhere;

impl Backend for Elsewhere {
    fn name(&self) -> &str {
        "elsewhere"
    }
    fn describe(&self) -> &str {
        "a runtime that places its workload outside the instance's cgroup"
    }
    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::Process
    }
    fn availability(&self, _lab: &Lab) -> Availability {
        Availability::Available
    }
    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let name = lab.next_instance_name();
        let cgroup = lab.cgroup_for(&name, limits)?;
        let args = workload::argv(spec, REPORT_FD, CONTROL_FD, &workload::Given::default());
        let exec = Exec::new(&lab.workload_path(), "isolab-workload", &args, &[]);
        let (ends, fds) = child::pipes(None)?;
        let pid =
            spawn_exec(0, &Placement::none(), &fds, &exec).map_err(|source| BackendError::Sys {
                step: "clone",
                source,
            })?;
        Ok(Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup: Some(cgroup),
            ends,
            timeline: Timeline::start(),
            timeout: lab.settings.timeout,
            cleanup: Vec::new(),
        }))
    }
}

/// An instance whose workload is not under the limits written for it is not counted as started:
/// `ready` is refused with one line naming the process, the limit and where it lives, and the
/// workload is gone once the instance is.
#[test]
fn an_instance_whose_workload_escaped_its_limits_is_refused_at_ready() {
    let _serial = serial();
    let temp = temp_dir("sec-limits-refused");
    let lab = Lab::in_dir(&temp).unwrap();
    let limits = Limits {
        pids: Some(16),
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    let mut instance = Elsewhere
        .start(&lab, &Spec::new(Kernel::Sleep, 0, 0), &limits)
        .unwrap();
    let workload = instance.main_pid();
    let e = instance.wait_ready().unwrap_err();
    let line = e.to_string();
    eprintln!("refused: {line}");
    assert!(matches!(e, BackendError::LimitsNotInForce { .. }), "{e:?}");
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains(&format!("pid {workload}")) && line.contains("not the"),
        "{line}"
    );
    drop(instance);
    assert!(
        !Path::new(&format!("/proc/{workload}")).exists(),
        "the escaped workload still runs"
    );
    // The same workload in its cgroup: in force, and recorded.
    let mut instance = backend::by_name("process")
        .unwrap()
        .start(&lab, &Spec::new(Kernel::Sleep, 0, 0), &limits)
        .unwrap();
    instance.wait_ready().unwrap();
    let run = instance.stop().unwrap();
    let facts = Facts::from_wire(&run.info);
    assert_eq!(facts.pids_limit_in_force, Some(16), "{facts:?}");
    assert_eq!(
        facts.memory_limit_in_force_bytes,
        Some(64 << 20),
        "{facts:?}"
    );
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

/// What is in force is the smallest value up the hierarchy: a process in a child cgroup whose
/// own `pids.max` is `max`, below the instance's 8, is under 8 — enough for a limit of 16, not
/// for one of 4.
#[test]
fn the_limit_in_force_is_the_smallest_up_the_hierarchy() {
    let _serial = serial();
    let temp = temp_dir("sec-limits-up");
    let lab = Lab::in_dir(&temp).unwrap();
    let cgroup = lab
        .cgroup_for(
            &lab.next_instance_name(),
            &Limits {
                pids: Some(8),
                ..Limits::default()
            },
        )
        .unwrap();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(sleeper.id() as i32);
    cgroup.add(pid).unwrap();
    // One level down in every directory of the instance (the pids one included).
    for dir in cgroup.paths() {
        let inner = dir.join("inner");
        fs::create_dir(&inner).unwrap();
        fs::write(inner.join("cgroup.procs"), pid.to_string()).unwrap();
    }
    let verify = |pids| {
        isolab_resources::cgroup::in_force::verify(
            &Limits {
                pids: Some(pids),
                ..Limits::default()
            },
            None,
            &[pid],
        )
    };
    let found = verify(16).unwrap().unwrap();
    assert_eq!(found.pids, Some(8), "{found:?}");
    assert!(found.read_from.contains("/inner"), "{found:?}");
    let e = verify(4).unwrap_err();
    assert!(e.contains("pids.max 8") && e.contains("/inner"), "{e}");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    drop(cgroup);
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

/// The interference experiment checks, before its first aggressor, that every set of limits it
/// will use holds on every backend: on a runtime that places its workload elsewhere, it stops
/// with one line and no aggressor ever starts; on the lab's `process` backend it goes on.
#[test]
fn the_interference_experiment_stops_before_any_aggressor_where_limits_do_not_hold() {
    let _serial = serial();
    let temp = temp_dir("sec-limits-preflight");
    let lab = Lab::in_dir(&temp).unwrap();
    let limited = interference::default_limited(2, 1, false);
    let aggressors = [Aggressor::Fork, Aggressor::Oom];
    let escaped: Vec<Box<dyn Backend>> = vec![Box::new(Elsewhere)];
    let e = interference::preflight(&lab, &escaped, &limited, true, &aggressors).unwrap_err();
    let line = e.to_string();
    eprintln!("stopped: {line}");
    assert!(
        line.contains("limits not in force") && !line.contains('\n'),
        "{line}"
    );
    let process: Vec<Box<dyn Backend>> = vec![backend::by_name("process").unwrap()];
    interference::preflight(&lab, &process, &limited, true, &aggressors).unwrap();
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

/// `lab run interference --aggressors fork` on runc and crun, the lab nested differently per
/// hierarchy: every bomb, in both configurations, is stopped by its own instance's `pids.max`
/// (the lab's 128 unlimited, 64 limited), and the results record the limit read back.
#[test]
#[ignore = "needs crun, and cgroup v1 with memory and pids in hierarchies apart (CI's machine)"]
fn interference_bombs_under_runc_and_crun_stop_at_their_own_pids_max() {
    let _serial = serial();
    let temp = temp_dir("sec-limits-interference");
    let place = Place::new("interference", false);
    let out_dir = temp.join("out");
    let out = place
        .lab(
            &[
                "run",
                "interference",
                "--backends",
                "oci:runc,oci:crun",
                "--aggressors",
                "fork",
                "--max-aggressors",
                "1",
                "--runs",
                "1",
                "--warmup",
                "0",
                "--no-progress",
                "--out",
                out_dir.to_str().unwrap(),
            ],
            &temp,
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("results.jsonl"))
        .find(|p| p.exists())
        .unwrap();
    let results = Results::read(&file).unwrap();
    let mut bombs = 0;
    for r in &results.runs {
        let Some(n) = &r.neighbours else { continue };
        for a in &n.aggressors {
            let limit = n.aggressor_limits.unwrap().pids.unwrap();
            let f = &a.facts;
            eprintln!(
                "{} {:?}: bomb forked {:?} times, pids.max refused {:?}, pids limit in force {:?} (asked {limit})",
                r.backend, n.config, f.forks, f.pids_max_refused, f.pids_limit_in_force
            );
            assert!(f.forks.unwrap() < limit, "{}: {f:?}", r.backend);
            assert!(f.pids_max_refused.unwrap_or(0) > 0, "{}: {f:?}", r.backend);
            assert_eq!(f.pids_limit_in_force, Some(limit), "{}: {f:?}", r.backend);
            bombs += 1;
        }
    }
    assert_eq!(bombs, 4, "two backends, two configurations, one bomb each");
    assert_eq!(place.net_peak(), 0, "a container went outside its instance");
    drop(place);
    fs::remove_dir_all(&temp).unwrap();
}
