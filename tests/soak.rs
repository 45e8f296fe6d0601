//! The fault-injection soak: a thousand launches across every backend, with faults injected at
//! random — workloads that segfault, guests that triple-fault or hang, instances over their
//! memory limit, runtimes and VMMs killed under their instance, labs sent SIGINT, SIGTERM,
//! SIGHUP or SIGKILL at random moments and the next lab started at once — and afterwards nothing
//! left: no cgroup in any hierarchy, mount, process, zombie, runtime state, Docker container, work directory or
//! KVM descriptor, and every results file readable with every completed sample.
//!
//! The randomness is seeded and the seed printed: `ISOLAB_SOAK_SEED=<seed>` repeats a run,
//! `ISOLAB_SOAK_LAUNCHES=<n>` changes its length (default 1000).

mod common;

use common::{temp_dir, HostState};
use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::vm::Vm;
use isolab_backends::{Backend, BackendError, Instance, Limits, Outcome};
use isolab_kernels::rng::Rng;
use isolab_payload::{Kernel, Spec};
use isolab_results::Results;
use isolab_vmm::fixtures;
use isolab_vmm::loader::Guest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// What the soak did, for the closing lines.
#[derive(Default)]
struct Tally {
    /// Instances started, per backend.
    launches: BTreeMap<String, u64>,
    /// Faults injected, per kind.
    faults: BTreeMap<&'static str, u64>,
    /// Labs run as separate processes, and samples their results files kept.
    labs: u64,
    samples_kept: u64,
}

impl Tally {
    fn launch(&mut self, backend: &str, n: u64) {
        *self.launches.entry(backend.to_string()).or_default() += n;
    }
    fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }
    fn total(&self) -> u64 {
        self.launches.values().sum()
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

/// Make the sleeping workload `pid` crash on its own: zero its whole stack, so that when its
/// `read` of the control pipe returns, the return address it pops is 0 and the CPU faults —
/// a genuine SIGSEGV, raised by the workload's own instruction, with no change to the workload.
/// (Written through /proc/PID/mem, which root may do to any process.)
fn corrupt_stack(pid: i32) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .expect("the workload has a stack");
    let range = line.split_whitespace().next().unwrap();
    let (lo, hi) = range.split_once('-').unwrap();
    let (lo, hi) = (
        u64::from_str_radix(lo, 16).unwrap(),
        u64::from_str_radix(hi, 16).unwrap(),
    );
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    mem.write_all_at(&vec![0u8; (hi - lo) as usize], lo)
        .unwrap();
}

/// The workload process of a running instance: the process in its cgroup named like it.
fn workload_pid(instance: &Instance) -> i32 {
    let pids: Vec<i32> = match instance.cgroup() {
        Some(cg) => cg.pids().iter().map(|p| p.as_raw()).collect(),
        None => vec![instance.main_pid().as_raw()],
    };
    *pids
        .iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim().ends_with("workload"))
        })
        .unwrap_or_else(|| panic!("no workload among {pids:?}"))
}

fn sleep_spec() -> Spec {
    Spec::default_for(Kernel::Sleep)
}

fn reason(run: &isolab_backends::Run) -> String {
    format!("{:?}", run.outcome)
}

/// One launch on `name` with `fault` injected; asserts the outcome the fault must have.
fn launch(lab: &mut Lab, name: &str, fault: &'static str, rng: &mut Rng) {
    let plain = backend::by_name(name).unwrap();
    let limits = Limits::default();
    let finish_quickly = |instance: Instance, what: &str| {
        let t = Instant::now();
        let run = instance
            .finish()
            .unwrap_or_else(|e| panic!("{name} {what}: finishing failed: {e:?}"));
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{name} {what}: noticed after {:?}",
            t.elapsed()
        );
        run
    };
    match fault {
        "none" => {
            let kernel = *pick(rng, &[Kernel::Ready, Kernel::Cpu, Kernel::Syscall]);
            let run = plain
                .run(lab, &Spec::default_for(kernel), &limits)
                .unwrap_or_else(|e| panic!("{name} {kernel}: {e}"));
            assert_eq!(run.outcome, Outcome::Completed, "{name} {kernel}");
        }
        "segfault" => {
            let mut i = plain.start(lab, &sleep_spec(), &limits).unwrap();
            i.wait_ready().unwrap();
            corrupt_stack(workload_pid(&i));
            i.let_go();
            let run = finish_quickly(i, "segfault");
            // runc reports its container's death by signal N as its own exit status 128 + N.
            let why = reason(&run);
            assert!(
                why.contains("SIGSEGV") || why.contains("status 139"),
                "{name}: {why}"
            );
        }
        "triple-fault" => {
            let vm = Vm::default().with_guest(Guest::Raw(&fixtures::NULL_READ));
            let e = vm.run(lab, &Spec::default_for(Kernel::Ready), &limits);
            assert!(
                matches!(&e, Err(BackendError::Instance { step, .. }) if step == "guest fault"),
                "{e:?}"
            );
        }
        "oom" => {
            let limits = Limits {
                memory_bytes: Some((16 + rng.below(8)) << 20),
                ..Limits::default()
            };
            let run = plain.run(lab, &Spec::new(Kernel::Mem, 64, 1), &limits);
            match run {
                // An OCI runtime's or Docker's container sits in a cgroup below the instance's,
                // which the runtime removes when the container ends; on cgroup v1 the kernel
                // counts the OOM kill only there, so the lab may see just the runtime's report
                // of the SIGKILL, 128 + 9.
                Ok(run) if name.starts_with("oci:") || name == "docker" => assert!(
                    run.outcome == Outcome::OomKilled || reason(&run).contains("status 137"),
                    "{name}: {}",
                    reason(&run)
                ),
                Ok(run) => assert_eq!(run.outcome, Outcome::OomKilled, "{name}"),
                // A VMM killed before its guest reached `ready`.
                Err(BackendError::Exited { status, .. }) => {
                    assert!(status.contains("OOM"), "{name}: {status}")
                }
                Err(e) => panic!("{name} over its limit: {e}"),
            }
        }
        "hang" => {
            if name == "vm" {
                let vm = Vm::default()
                    .with_guest(Guest::Raw(&fixtures::SPIN))
                    .with_time_limit(Duration::from_millis(300));
                let e = vm.run(lab, &Spec::default_for(Kernel::Ready), &limits);
                assert!(
                    matches!(&e, Err(BackendError::Instance { step, .. }) if step == "guest timeout"),
                    "{e:?}"
                );
            } else {
                // A workload that never reaches `done` (nobody lets it go): the lab's timeout.
                let saved = lab.settings.timeout;
                // A runtime alone may take longer than that to start on a busy machine.
                lab.settings.timeout = Duration::from_millis(match name {
                    "oci:runsc" | "docker" => 3000,
                    "oci:runc" | "oci:crun" => 1500,
                    _ => 400,
                });
                let e = plain.run(lab, &sleep_spec(), &limits);
                lab.settings.timeout = saved;
                assert!(
                    matches!(e, Err(BackendError::Timeout { .. })),
                    "{name}: {e:?}"
                );
            }
        }
        "runtime-killed" => {
            // The instance's main process: runc, the VMM, QEMU, a container's init.
            let mut i = plain.start(lab, &sleep_spec(), &limits).unwrap();
            i.wait_ready().unwrap();
            kill(i.main_pid(), Signal::SIGKILL).unwrap();
            let run = finish_quickly(i, "runtime killed");
            assert!(
                !matches!(run.outcome, Outcome::Completed),
                "{name}: {}",
                reason(&run)
            );
        }
        "abandoned" => {
            // Dropped mid-run, as on an error in the lab.
            let mut i = plain.start(lab, &sleep_spec(), &limits).unwrap();
            i.wait_ready().unwrap();
            drop(i);
        }
        other => unreachable!("{other}"),
    }
}

/// The faults `backend` can have.
fn faults_of(backend: &str) -> &'static [&'static str] {
    match backend {
        "process" | "container" | "oci:runc" => &[
            "none",
            "none",
            "segfault",
            "oom",
            "hang",
            "runtime-killed",
            "abandoned",
        ],
        // No cgroup, so no memory limit.
        "ns-floor" => &["none", "none", "segfault", "hang", "abandoned"],
        "oci:crun" | "docker" => &[
            "none",
            "segfault",
            "oom",
            "hang",
            "runtime-killed",
            "abandoned",
        ],
        // The workload runs on gVisor's Sentry, not as a host process of its own: no segfault
        // from outside.
        "oci:runsc" => &["none", "oom", "hang", "runtime-killed", "abandoned"],
        "vm" => &[
            "none",
            "none",
            "triple-fault",
            "oom",
            "hang",
            "runtime-killed",
            "abandoned",
        ],
        _ => &["none"],
    }
}

/// A lab as a separate process, stopped by `sig` at a random moment.
fn killed_lab(temp: &Path, n: u64, rng: &mut Rng, tally: &mut Tally) {
    let names = ["process", "container", "ns-floor", "oci:runc", "vm"];
    let mut chosen: Vec<&str> = names
        .iter()
        .copied()
        .filter(|_| rng.below(2) == 0)
        .collect();
    if chosen.is_empty() {
        chosen.push(*pick(rng, &names));
    }
    let backends = chosen.join(",");
    let out = temp.join(format!("results-{n}"));
    let out_s = out.to_str().unwrap().to_string();
    let kind = *pick(rng, &["startup", "startup", "startup", "density", "exec"]);
    let args: Vec<String> = match kind {
        "startup" => [
            "run",
            "startup",
            "--backends",
            &backends,
            "--runs",
            "100000",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
            &out_s,
        ]
        .map(String::from)
        .to_vec(),
        "density" => [
            "run",
            "density",
            "--backends",
            &backends,
            "--max",
            "16",
            "--idle-window-ms",
            "200",
            "--no-progress",
            "--out",
            &out_s,
        ]
        .map(String::from)
        .to_vec(),
        _ => ["exec", "--backend", chosen[0], "--kernel", "sleep"]
            .map(String::from)
            .to_vec(),
    };
    let (sig, code) = *pick(
        rng,
        &[
            (Signal::SIGINT, Some(130)),
            (Signal::SIGTERM, Some(143)),
            (Signal::SIGHUP, Some(129)),
            (Signal::SIGKILL, None),
        ],
    );
    let mut child: Child = Command::new(LAB)
        .args(&args)
        .env("TMPDIR", temp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A random moment: somewhere from its start-up to well into its run.
    std::thread::sleep(Duration::from_millis(30 + rng.below(350)));
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "lab {args:?} did not stop on {sig}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    match code {
        Some(code) => assert!(
            // A lab stopped before it could catch signals (its first milliseconds) dies of
            // the signal's default action: its guardian and the next lab clean up.
            o.status.code() == Some(code) || o.status.code().is_none(),
            "{args:?} on {sig}: {:?} {stderr}",
            o.status
        ),
        None => assert_eq!(o.status.code(), None, "SIGKILL"),
    }
    tally.labs += 1;
    tally.fault(match sig {
        Signal::SIGINT => "lab SIGINT",
        Signal::SIGTERM => "lab SIGTERM",
        Signal::SIGHUP => "lab SIGHUP",
        _ => "lab SIGKILL",
    });
    // Every results file the lab began is readable, with every sample it completed.
    if let Ok(files) = Results::read_all(&out) {
        for results in files {
            for r in &results.runs {
                assert_eq!(
                    r.outcome,
                    Outcome::Completed,
                    "{}: {r:?}",
                    results.path.display()
                );
                tally.launch(&r.backend, 1);
            }
            let mut per_backend: BTreeMap<&str, u32> = BTreeMap::new();
            for step in &results.density {
                *per_backend.entry(&step.backend).or_default() += step.added;
            }
            for (b, added) in per_backend {
                tally.launch(b, added as u64);
            }
            tally.samples_kept += (results.runs.len() + results.density.len()) as u64;
        }
    } else if kind == "exec" {
        tally.launch(chosen[0], 1);
    }
}

/// Zombies whose parent is this process or init, left by the lab's processes.
fn zombies() -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next()?, f.next()?.parse::<i32>().ok()?);
            let ours = [
                "workload",
                "isolab-workload",
                "runc",
                "runc:[2:INIT]",
                "qemu-system-x86",
                "lab",
                "isolab-guard",
            ];
            (state == "Z" && (ppid == me || (ppid == 1 && ours.contains(&comm.as_str()))))
                .then_some((pid, comm))
        })
        .collect()
}

/// Docker containers named for labs `ids` (the soak's, all ended by now): the daemon keeps them,
/// not the lab. Other labs' containers — other tests' running beside the soak — are theirs.
fn orphan_docker_containers(ids: &[String]) -> Vec<String> {
    common::docker_container_names()
        .into_iter()
        .filter(|n| {
            n.strip_prefix("isolab-")
                .and_then(|rest| rest.split('-').next())
                .is_some_and(|id| ids.iter().any(|l| l == id))
        })
        .collect()
}

/// KVM descriptors (VMs, vCPUs) this process holds.
fn kvm_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:kvm"))
        })
        .count()
}

#[test]
#[ignore = "needs /dev/kvm, qemu-system-x86, a /boot kernel, crun, runsc, a running dockerd and ~3 minutes (CI runs it)"]
fn a_thousand_launches_with_faults_leave_nothing_behind() {
    common::needs_kvm();
    common::needs_qemu();
    for program in ["crun", "runsc"] {
        assert!(
            isolab_host::facts::find_program(program).is_some(),
            "the soak needs {program} (apt install {program})"
        );
    }
    assert!(
        Command::new("docker")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the soak needs docker.io and a running dockerd"
    );
    let _serial = common::serial();
    let seed = std::env::var("ISOLAB_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(isolab_host::clock::now_ns);
    let target: u64 = std::env::var("ISOLAB_SOAK_LAUNCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    println!("soak: seed {seed} (ISOLAB_SOAK_SEED={seed} repeats it), {target} launches");
    // No core files from the crashes this injects.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0).unwrap();
    let temp = temp_dir("soak");
    let before = HostState::now(&temp);
    // The host's mount table as init sees it, besides this process's own.
    let (mounts_before, kvm_before) = (common::lab_mounts("/proc/1/mountinfo", &temp), kvm_fds());
    // The labs of this process (the only ones that run Docker), by id.
    let mut ids: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();

    // The Linux guests first and only a few: under TCG a boot takes seconds. vm-linux cannot
    // boot on nested PVM and stops at its time limit (a hung guest); with VT-x/AMD-V it boots.
    {
        let mut lab = Lab::in_dir(&temp).unwrap();
        ids.push(lab.id().to_string());
        lab.settings.timeout = Duration::from_secs(90);
        let run = backend::qemu::Qemu::default()
            .run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default())
            .unwrap();
        assert_eq!(run.outcome, Outcome::Completed, "qemu");
        tally.launch("qemu", 1);
        tally.fault("none");
        // QEMU (the VMM) killed under its guest, which is then still booting.
        let mut i = backend::qemu::Qemu::default()
            .start(&lab, &Spec::default_for(Kernel::Ready), &Limits::default())
            .unwrap();
        std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        kill(i.main_pid(), Signal::SIGKILL).unwrap();
        let t = Instant::now();
        assert!(i.wait_ready().is_err(), "a killed QEMU is no guest");
        assert!(t.elapsed() < Duration::from_secs(15));
        drop(i);
        tally.launch("qemu", 1);
        tally.fault("runtime-killed");
        lab.settings.force = true;
        for _ in 0..2 {
            lab.settings.timeout = Duration::from_secs(3);
            let run = backend::vm_linux::VmLinux::default().run(
                &lab,
                &Spec::default_for(Kernel::Ready),
                &Limits::default(),
            );
            if isolab_host::facts::KvmKind::detect().is_hardware() {
                assert!(run.is_ok_and(|r| r.outcome == Outcome::Completed));
                tally.fault("none");
            } else {
                assert!(run.is_err(), "vm-linux cannot boot on nested PVM");
                tally.fault("hang");
            }
            tally.launch("vm-linux", 1);
        }
    }

    let in_process = [
        "process",
        "container",
        "ns-floor",
        "oci:runc",
        "vm",
        "oci:crun",
        "oci:runsc",
        "docker",
    ];
    let mut labs = 0u64;
    while tally.total() < target {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the soak is overdue"
        );
        if rng.below(3) == 0 {
            // A lab in its own process, stopped at a random moment; the next lab (the next
            // iteration's, whichever kind) starts at once.
            killed_lab(&temp, labs, &mut rng, &mut tally);
            labs += 1;
            continue;
        }
        // A batch of launches in one lab of this process.
        let mut lab = Lab::in_dir(&temp).unwrap();
        ids.push(lab.id().to_string());
        lab.settings.timeout = Duration::from_secs(30);
        for _ in 0..(5 + rng.below(20)) {
            let name = *pick(&mut rng, &in_process);
            // External runtimes are slow (Docker most: a CLI, a daemon, containerd, a shim and
            // runc): fewer of them.
            let name = match name {
                "oci:runc" | "oci:crun" if rng.below(2) != 0 => "process",
                "oci:runsc" | "docker" if rng.below(8) != 0 => "container",
                other => other,
            };
            let fault = *pick(&mut rng, faults_of(name));
            launch(&mut lab, name, fault, &mut rng);
            tally.launch(name, 1);
            tally.fault(fault);
        }
        drop(lab);
    }
    let soak_time = started.elapsed();

    // The next lab: any command reaps what a killed one might have left (its guardian has
    // usually done it already).
    let o = Command::new(LAB)
        .arg("backends")
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    assert!(o.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after;
    loop {
        after = HostState::now(&temp);
        after.temp_entries.retain(|e| !e.starts_with("results-"));
        let settled = after == before
            && common::processes_mentioning(&temp.to_string_lossy(), true).is_empty()
            && zombies().is_empty();
        if settled || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let leaked_processes = common::processes_mentioning(&temp.to_string_lossy(), true);
    let leaked_zombies = zombies();
    let leaked_docker = orphan_docker_containers(&ids);
    let leaked_mounts: Vec<String> = common::lab_mounts("/proc/1/mountinfo", &temp)
        .difference(&mounts_before)
        .cloned()
        .chain(after.mounts.symmetric_difference(&before.mounts).cloned())
        .collect();
    let leaked_kvm = kvm_fds().saturating_sub(kvm_before);
    let leaks = [
        ("cgroups (all hierarchies)", after.cgroups.len()),
        ("runtime state dirs", after.runtime_state.len()),
        ("docker containers", leaked_docker.len()),
        ("dead labs in the registry", after.dead_labs.len()),
        (
            "work dirs",
            after
                .temp_entries
                .iter()
                .filter(|e| e.starts_with("isolab-"))
                .count(),
        ),
        ("child processes", after.children.len()),
        ("processes", leaked_processes.len()),
        ("zombies", leaked_zombies.len()),
        ("mounts", leaked_mounts.len()),
        ("KVM fds", leaked_kvm),
        ("other fds", after.fds.abs_diff(before.fds)),
    ];
    let launches: Vec<String> = tally
        .launches
        .iter()
        .map(|(b, n)| format!("{b} {n}"))
        .collect();
    let faults: Vec<String> = tally
        .faults
        .iter()
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    println!(
        "soak: {} launches in {:.0} s (seed {seed}): {}",
        tally.total(),
        soak_time.as_secs_f64(),
        launches.join(", ")
    );
    println!("soak: faults: {}", faults.join(", "));
    println!(
        "soak: {} labs stopped at random moments; their results files readable, {} samples kept",
        tally.labs, tally.samples_kept
    );
    let total_leaks: usize = leaks.iter().map(|(_, n)| n).sum();
    println!(
        "soak: leaks: {total_leaks} ({})",
        leaks
            .iter()
            .map(|(what, n)| format!("{what} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        total_leaks, 0,
        "{after:?} processes {leaked_processes:?} zombies {leaked_zombies:?} mounts {leaked_mounts:?} docker {leaked_docker:?}"
    );
    std::fs::remove_dir_all(&temp).unwrap();
}
