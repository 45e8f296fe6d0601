//! Neighbours: the kernels of a bad neighbour, the limits that stop them, and the interference
//! experiment — on real cgroups, namespaces and VMs. Behaviour only: who was refused, who was
//! killed, who survived, what was left behind; never how long anything took.

mod common;

use common::{eventually, serial, temp_dir, HostState};
use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Limits, Outcome};
use isolab_experiments::interference::{Aggressor, Options};
use isolab_experiments::{interference, Settings};
use isolab_payload::{Kernel, Spec};
use isolab_results::{Config, Results};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn limits(pids: Option<u64>, memory_mib: Option<u64>) -> Limits {
    Limits {
        pids,
        memory_bytes: memory_mib.map(|m| m << 20),
        ..Limits::default()
    }
}

/// A fork bomb in a process and in a container fills its own cgroup's `pids.max` and no more:
/// the kernel refuses the rest, the host counts the refusals, and the workload — the
/// container's PID 1 — survives its child's bomb, reaps all of it and reports.
#[test]
fn a_fork_bomb_stops_at_its_own_pids_limit_and_its_workload_reports() {
    let _serial = serial();
    let temp = temp_dir("nb-bomb");
    let before = HostState::now(&temp);
    let lab = Lab::in_dir(&temp).unwrap();
    let bomb = Spec::new(Kernel::ForkBomb, 0, 1500);
    for name in ["process", "container"] {
        let b = backend::by_name(name).unwrap();
        let run = b.run(&lab, &bomb, &limits(Some(24), None)).unwrap();
        assert_eq!(run.outcome, Outcome::Completed, "{name}: {run:?}");
        let facts = isolab_results::Facts::from_wire(&run.info);
        let forks = facts.forks.unwrap();
        // The workload and the bomb's first process count too: at most 22 more.
        assert!((1..=22).contains(&forks), "{name}: {forks} forks");
        assert!(facts.forks_refused.unwrap() > 0, "{name}: {facts:?}");
        assert!(facts.pids_max_refused.unwrap() > 0, "{name}: {facts:?}");
        assert_eq!(
            facts.fork_limit, None,
            "{name}: the cgroup is the limit here"
        );
    }
    drop(lab);
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// A memory hog in a process and in a container meets the OOM killer in its own cgroup: the
/// kernel kills the hog (the child the workload made, never the workload), the workload starts
/// it again, and reports the kills and the signal before it marks done.
#[test]
fn a_memory_hog_is_killed_in_its_own_cgroup_and_its_workload_reports() {
    let _serial = serial();
    let temp = temp_dir("nb-hog");
    let lab = Lab::in_dir(&temp).unwrap();
    let hog = Spec::new(Kernel::MemHog, 1024, 3000);
    for name in ["process", "container"] {
        let b = backend::by_name(name).unwrap();
        let run = b.run(&lab, &hog, &limits(None, Some(64))).unwrap();
        // The cgroup saw an OOM kill, so the run says so; the workload still finished.
        assert_eq!(run.outcome, Outcome::OomKilled, "{name}: {run:?}");
        assert!(run.output.is_some(), "{name}: the workload reported done");
        let facts = isolab_results::Facts::from_wire(&run.info);
        assert!(facts.oom_kills.unwrap() >= 1, "{name}: {facts:?}");
        assert!(facts.hog_kills.unwrap() >= 1, "{name}: {facts:?}");
        assert_eq!(facts.child_signal.as_deref(), Some("SIGKILL"), "{name}");
        let touched = facts.hog_bytes.unwrap();
        assert!(
            touched <= 64 << 20,
            "{name}: {touched} B under a 64 MiB limit"
        );
    }
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

/// A bare guest has no OS: no processes to fork, no memory to run out of.
#[test]
fn a_vm_without_an_os_refuses_the_kernels_that_need_one() {
    // A lab holds descriptors while it lives: the other tests count the process's.
    let _serial = serial();
    let temp = temp_dir("nb-bare");
    let lab = Lab::in_dir(&temp).unwrap();
    let vm = backend::by_name("vm").unwrap();
    for k in [Kernel::ForkBomb, Kernel::MemHog] {
        let why = vm.supports(&lab, k).unwrap_err();
        assert!(why.contains("no OS"), "{why}");
    }
    assert!(vm.supports(&lab, Kernel::Probe).is_ok());
    assert!(backend::by_name("vm-linux")
        .unwrap()
        .supports(&lab, Kernel::ForkBomb)
        .is_ok());
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

/// `lab exec` never runs a bomb without a limit: asked for none, it gets the lab's.
#[test]
fn lab_exec_gives_a_bomb_the_labs_pids_limit() {
    let _serial = serial();
    let temp = temp_dir("nb-exec");
    let o = Command::new(LAB)
        .args([
            "exec",
            "--backend",
            "process",
            "--kernel",
            "fork-bomb",
            "--iters",
            "1000",
        ])
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let fact = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    assert!(fact("forks ") < interference::SAFETY_PIDS, "{text}");
    assert!(fact("pids_max_refused ") > 0, "{text}");
    std::fs::remove_dir_all(temp).unwrap();
}

/// An I/O limit is the instance's own: its cgroup throttles the disk that holds the disk
/// directory, and the instance's requests pass through that throttle (v1: `blkio`; v2: `io`).
#[test]
fn an_io_limit_throttles_the_disk_under_the_disk_directory_for_that_instance() {
    let _serial = serial();
    let temp = temp_dir("nb-io");
    let disks = temp.join("disks");
    std::fs::create_dir(&disks).unwrap();
    let mut lab = Lab::in_dir(&temp).unwrap();
    lab.settings.disk_parent = disks.clone();
    let disk = lab.io_disk().unwrap();
    let limits = Limits {
        io_bps: Some(4 << 20),
        ..Limits::default()
    };
    // Passes enough to run until stopped, at 4 MiB/s.
    let spec = Spec::new(Kernel::DiskSeq, 8, 1000);
    let instance = backend::by_name("process")
        .unwrap()
        .start(&lab, &spec, &limits)
        .unwrap();
    let rule = format!("{}:{} {}", disk.major, disk.minor, 4 << 20);
    let dirs: Vec<_> = instance
        .cgroup()
        .unwrap()
        .paths()
        .map(Path::to_path_buf)
        .collect();
    let read = |file: &str| {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .unwrap_or_default()
    };
    if dirs.iter().any(|d| d.join("io.max").exists()) {
        let max = read("io.max");
        assert!(
            max.contains(&format!(
                "{}:{} rbps={} wbps={}",
                disk.major,
                disk.minor,
                4 << 20,
                4 << 20
            )),
            "{max}"
        );
    } else {
        for f in [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
        ] {
            assert_eq!(read(f).trim(), rule, "{f}");
        }
        // The instance's own requests to that disk are counted by its throttle.
        let device = format!("{}:{} Write", disk.major, disk.minor);
        let counted = eventually(Duration::from_secs(30), || {
            read("blkio.throttle.io_service_bytes").lines().any(|l| {
                l.strip_prefix(&device)
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        });
        assert!(counted, "{}", read("blkio.throttle.io_service_bytes"));
    }
    drop(instance);
    drop(lab);
    assert_eq!(std::fs::read_dir(&disks).unwrap().count(), 0);
    std::fs::remove_dir_all(temp).unwrap();
}

/// Every backend of the lab's own that can run here, and that is not a floor.
fn backends(lab: &Lab) -> Vec<String> {
    backend::registry()
        .into_iter()
        .filter(|b| !b.name().starts_with("oci:") && b.name() != "docker")
        .filter(|b| b.default_enabled() && b.availability(lab) == Availability::Available)
        .map(|b| b.name().to_string())
        .collect()
}

/// `lab run interference` on every backend here: each victim ran alone and beside each
/// aggressor in both configurations, every victim completed with the checksum every backend
/// computes, every bomb and hog had the lab's limits on it, what a backend cannot run is said,
/// and nothing is left behind.
#[test]
fn interference_on_every_backend_here_records_every_condition_and_leaves_nothing() {
    let _serial = serial();
    let temp = temp_dir("nb-run");
    let before = HostState::now(&temp);
    let lab = Lab::in_dir(&temp).unwrap();
    let names = backends(&lab);
    let options = Options {
        aggressors: vec![
            Aggressor::Cpu,
            Aggressor::Mem,
            Aggressor::Fork,
            Aggressor::Oom,
        ],
        kernels: None,
        max_aggressors: 1,
    };
    let settings = Settings {
        runs: 1,
        warmup: 0,
        seed: 3,
        limits: Limits::default(),
        out: temp.join("out"),
        progress: false,
    };
    let campaign = interference::run(&lab, Some(&names), &options, &settings).unwrap();
    assert!(campaign.failures.is_empty(), "{:?}", campaign.failures);
    let results = Results::read(&campaign.results).unwrap();
    // A victim computes the same beside its neighbours as alone, on every backend.
    let mut sums: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &results.runs {
        let sum = r.output.as_ref().map_or("none", |o| o.checksum.as_str());
        let seen = sums.entry(r.workload.kernel.as_str()).or_default();
        if !seen.contains(&sum) {
            seen.push(sum);
        }
    }
    assert!(sums.values().all(|s| s.len() == 1), "{sums:?}");
    assert_eq!(
        sums.keys().copied().collect::<Vec<_>>(),
        ["cpu", "mem", "syscall"]
    );
    for name in &names {
        let vm = name == "vm";
        let mine: Vec<_> = results.runs.iter().filter(|r| r.backend == *name).collect();
        // Victims alone (cpu, mem and syscall; a bare VM: no syscall, whose aggressor is the
        // bomb) and beside each aggressor it can run, in both configurations.
        let expected = if vm { 2 * 2 + 2 * 2 } else { 3 * 2 + 4 * 2 };
        assert_eq!(mine.len(), expected, "{name}");
        for r in &mine {
            assert_eq!(r.outcome, Outcome::Completed, "{name}: {r:?}");
            let n = r.neighbours.as_ref().unwrap();
            assert_eq!(n.aggressors.len() as u32, n.count, "{name}");
            let safety = n.aggressor_limits.unwrap_or_default();
            // Every aggressor did its work on the lab's own backends: every sample is measured.
            assert_eq!(n.not_measured, None, "{name}: {r:?}");
            match n.aggressor.as_deref() {
                Some("fork") => {
                    // Room above what the runtime itself holds: 128 for the bomb.
                    let own = n.aggressors[0].evidence.runtime_tasks.unwrap();
                    assert!(safety.pids.unwrap() <= own + interference::SAFETY_PIDS);
                    let f = &n.aggressors[0].facts;
                    assert!(f.pids_max_refused.unwrap_or(0) > 0, "{name}: {f:?}");
                }
                Some("oom") => {
                    assert!(
                        safety.memory_bytes.unwrap()
                            <= (1 << 30) + interference::SAFETY_MEMORY_BYTES
                    );
                    assert!(n.aggressors[0].facts.hog_bytes.unwrap_or(0) > 0, "{name}");
                }
                _ => {}
            }
            if n.config == Config::Limited {
                assert!(n.limits.cpus.is_some() && n.limits.memory_bytes.is_some());
            } else {
                assert_eq!(n.limits, Limits::default(), "{name}");
            }
        }
        if vm {
            assert!(
                results.header.skipped.iter().any(|s| s.backend == "vm"
                    && s.reason.contains("aggressor fork")
                    && s.reason.contains("no OS")),
                "{:?}",
                results.header.skipped
            );
        }
    }
    drop(lab);
    let mut after = HostState::now(&temp);
    after.temp_entries.remove("out");
    assert_eq!(after, before);
    std::fs::remove_dir_all(temp).unwrap();
}

/// A bomb with no room to fork — the user's limited configuration leaves its instance two tasks,
/// the workload and the bomb's first process — did not do its work: its samples are *not
/// measured*, with the reason its own cgroup gives, and no slowdown, no survival and no verdict
/// comes from them; in the unlimited configuration, where the lab sized its limit above the
/// runtime's own tasks, the same bomb forks until `pids.max` refuses and is measured.
#[test]
fn a_bomb_that_never_forked_gives_no_slowdown_only_the_reason() {
    let _serial = serial();
    let temp = temp_dir("nb-idle-bomb");
    let lab = Lab::in_dir(&temp).unwrap();
    let options = Options {
        aggressors: vec![Aggressor::Fork],
        kernels: None,
        max_aggressors: 1,
    };
    let settings = Settings {
        runs: 2,
        warmup: 0,
        seed: 5,
        limits: limits(Some(2), None),
        out: temp.join("out"),
        progress: false,
    };
    let names = ["process".to_string()];
    let campaign = interference::run(&lab, Some(&names), &options, &settings).unwrap();
    let results = Results::read(&campaign.results).unwrap();
    for r in results
        .runs
        .iter()
        .filter(|r| r.neighbours.as_ref().unwrap().count > 0)
    {
        let n = r.neighbours.as_ref().unwrap();
        let bomb = &n.aggressors[0];
        match n.config {
            Config::Limited => {
                let why = n.not_measured.as_deref().unwrap_or_else(|| panic!("{r:?}"));
                assert!(why.contains("never forked"), "{why}");
                assert_eq!(bomb.facts.forks.unwrap_or(0), 0, "{bomb:?}");
                assert!(bomb.evidence.tasks_peak.unwrap() <= 2, "{bomb:?}");
            }
            Config::Unlimited => {
                assert_eq!(n.not_measured, None, "{r:?}");
                let own = bomb.evidence.runtime_tasks.unwrap();
                assert_eq!(
                    n.aggressor_limits.unwrap().pids,
                    Some(own + interference::SAFETY_PIDS)
                );
                assert!(bomb.facts.forks.unwrap() > 0, "{bomb:?}");
                assert!(bomb.facts.pids_max_refused.unwrap() > 0, "{bomb:?}");
            }
        }
    }
    let rows = isolab_report::summary::interference(&results);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        match row.config {
            Config::Limited => {
                assert!(row.is_not_measured(), "{row:?}");
                assert_eq!(
                    row.slowdown, None,
                    "a bomb that never forked gave a slowdown"
                );
                assert_eq!((row.n, row.failed), (0, 0));
                assert!(!row.survived());
            }
            Config::Unlimited => {
                assert!(!row.is_not_measured(), "{row:?}");
                assert!(row.slowdown.is_some(), "{row:?}");
            }
        }
    }
    let table = isolab_report::terminal(&results);
    assert!(
        table.contains("not measured") && table.contains("never forked"),
        "{table}"
    );
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

/// The judge of each aggressor's work, on records of aggressors that did nothing and of ones
/// that did: a did-nothing aggressor is never taken for one at work.
#[test]
fn an_aggressor_that_did_nothing_is_never_at_work() {
    use interference::AggressorWork;
    use isolab_results::{AggressorRecord, Facts, WorkEvidence, WorkloadRecord};
    let record = |facts: &[(&str, &str)], peak: Option<u64>, evidence: WorkEvidence| {
        let mut f = Facts::default();
        for (k, v) in facts {
            f.set(k, v);
        }
        AggressorRecord {
            workload: WorkloadRecord {
                kernel: "x".into(),
                mib: 0,
                iters: 0,
                seed: 0,
            },
            outcome: Outcome::Stopped,
            cpu_ns: None,
            cgroup_peak_bytes: peak,
            facts: f,
            evidence,
        }
    };
    let alive = WorkEvidence {
        runtime_tasks: Some(33),
        ended_before_victim_started: Some(false),
        ended_before_victim_done: Some(false),
        tasks_at_victim_start: Some(40),
        tasks_at_victim_done: Some(40),
        tasks_peak: Some(34),
        victim_window_ns: Some(1_000_000_000),
        cpu_ns_beside_victim: Some(0),
        written_bytes_beside_victim: Some(0),
    };
    let bomb_limits = limits(Some(161), None);
    let hog_limits = limits(None, Some(542));
    use isolab_results::info;
    // Did nothing.
    let idle = record(&[(info::FORKS, "0")], None, alive.clone());
    assert!(Aggressor::Fork.at_work(&idle, &bomb_limits).is_err());
    let idle = record(&[], Some(30 << 20), alive.clone());
    assert!(Aggressor::Oom.at_work(&idle, &hog_limits).is_err());
    assert!(Aggressor::Disk.at_work(&idle, &hog_limits).is_err());
    assert!(Aggressor::Cpu.at_work(&idle, &hog_limits).is_err());
    assert!(Aggressor::Mem.at_work(&idle, &hog_limits).is_err());
    // Gone before the victim started, whatever it did before: a sandbox killed by its own
    // bomb's pids.max or its own hog's OOM.
    let gone = WorkEvidence {
        ended_before_victim_started: Some(true),
        tasks_at_victim_start: Some(10),
        tasks_peak: Some(161),
        ..alive.clone()
    };
    let died = record(&[(info::PIDS_MAX_REFUSED, "3")], Some(542 << 20), gone);
    for a in Aggressor::ALL {
        let why = a.at_work(&died, &bomb_limits).unwrap_err();
        assert!(why.contains("before the victim started"), "{a:?}: {why}");
    }
    // At work.
    let busy = WorkEvidence {
        tasks_peak: Some(161),
        cpu_ns_beside_victim: Some(900_000_000),
        written_bytes_beside_victim: Some(64 << 20),
        ..alive
    };
    let worked = record(
        &[(info::FORKS, "127"), (info::HOG_BYTES, "536870912")],
        Some(542 << 20),
        busy,
    );
    for a in Aggressor::ALL {
        let limits = if a == Aggressor::Fork {
            &bomb_limits
        } else {
            &hog_limits
        };
        assert_eq!(a.at_work(&worked, limits), Ok(()), "{a:?}");
    }
    // Ended while the victim ran: a load that stopped is not a load; a hog killed at its limit
    // is what a hog is for.
    let mut ended = worked.clone();
    ended.evidence.ended_before_victim_done = Some(true);
    assert_eq!(Aggressor::Oom.at_work(&ended, &hog_limits), Ok(()));
    for a in [Aggressor::Cpu, Aggressor::Mem, Aggressor::Disk] {
        assert!(a.at_work(&ended, &hog_limits).is_err(), "{a:?}");
    }
}
