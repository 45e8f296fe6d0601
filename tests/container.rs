//! The container backend, tested from the inside: real namespaces, real cgroups, real mounts.

mod common;

use common::{serial, temp_dir, HostState};
use isolab_backends as backend;
use isolab_backends::container::Container;
use isolab_backends::lab::Lab;
use isolab_backends::{Backend, Limits, Outcome, Run};
use isolab_payload::{Kernel, Spec};
use isolab_resources::cgroup::Hierarchy;
use nix::sys::signal::{kill, Signal};
use std::collections::BTreeMap;

fn probe(backend: &dyn Backend, lab: &Lab) -> BTreeMap<String, String> {
    let run = backend
        .run(lab, &Spec::default_for(Kernel::Probe), &Limits::default())
        .unwrap();
    assert_eq!(run.outcome, Outcome::Completed, "{run:?}");
    run.probe.into_iter().collect()
}

#[test]
fn a_container_sees_only_its_own_world() {
    let _serial = serial();
    let temp = temp_dir("world");
    let lab = Lab::in_dir(&temp).unwrap();
    let host = probe(&backend::process::Process, &lab);
    let inside = probe(&Container::default(), &lab);

    assert_eq!(
        inside["pid"], "1",
        "the workload is PID 1 of its PID namespace"
    );
    assert_ne!(host["pid"], "1");
    assert_eq!(inside["pids_visible"], "1", "no host process is visible");
    assert!(host["pids_visible"].parse::<u32>().unwrap() > 1);
    assert!(
        inside["hostname"].starts_with("isolab-"),
        "{}",
        inside["hostname"]
    );
    assert_eq!(host["hostname"], isolab_host::facts::hostname());
    assert_eq!(
        inside["interfaces"], "lo",
        "only loopback in a new network namespace"
    );
    // The root is the lab's: the workload, four mount points, nothing of the host's.
    assert_eq!(inside["root_entries"], "dev,proc,scratch,tmp,workload");
    assert!(host["root_entries"].split(',').any(|e| e == "etc"));
    assert_eq!(inside["root_fs"], "tmpfs");
    // Docker's 14 capabilities, and no way to gain more.
    assert_eq!(inside["cap_eff"], "00000000a80425fb");
    assert_eq!(inside["no_new_privs"], "1");
    // Same kernel: a container is not a VM.
    assert_eq!(inside["kernel_release"], host["kernel_release"]);
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn a_rootless_container_maps_root_to_the_invoking_user() {
    let _serial = serial();
    let temp = temp_dir("rootless");
    let lab = Lab::in_dir(&temp).unwrap();
    let rootless = Container {
        userns: Some(true),
        ..Container::default()
    };
    let inside = probe(&rootless, &lab);
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(inside["uid_map"], format!("0 {uid} 1"));
    assert_eq!(inside["pid"], "1");
    assert_eq!(inside["root_entries"], "dev,proc,scratch,tmp,workload");
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

fn mem(mib: u64) -> Spec {
    Spec::new(Kernel::Mem, mib, 1)
}

#[test]
fn the_memory_limit_holds() {
    let _serial = serial();
    let temp = temp_dir("oom");
    let lab = Lab::in_dir(&temp).unwrap();
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        pids: Some(16),
        cpus: Some(1.0),
        io_bps: None,
    };
    let container = Container::default();
    let under: Run = container.run(&lab, &mem(8), &limits).unwrap();
    assert_eq!(
        under.outcome,
        Outcome::Completed,
        "8 MiB fits in 32 MiB: {under:?}"
    );
    let over: Run = container.run(&lab, &mem(64), &limits).unwrap();
    assert_eq!(
        over.outcome,
        Outcome::OomKilled,
        "64 MiB does not: {over:?}"
    );
    assert!(over.output.is_none());
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn nothing_is_left_behind_even_when_workloads_crash() {
    let _serial = serial();
    let temp = temp_dir("leaks");
    // One warm-up run so the cgroup bases exist before counting.
    let lab = Lab::in_dir(&temp).unwrap();
    Container::default()
        .run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default())
        .unwrap();
    drop(lab);
    let before = HostState::now(&temp);

    let lab = Lab::in_dir(&temp).unwrap();
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        pids: Some(8),
        cpus: None,
        io_bps: None,
    };
    for b in [
        backend::by_name("process").unwrap(),
        backend::by_name("container").unwrap(),
    ] {
        // A normal run, an OOM kill, and a workload killed from outside while it sleeps.
        let ok = b
            .run(&lab, &Spec::default_for(Kernel::Cpu), &limits)
            .unwrap();
        assert_eq!(ok.outcome, Outcome::Completed);
        let oom = b.run(&lab, &mem(64), &limits).unwrap();
        assert_eq!(oom.outcome, Outcome::OomKilled, "{}", b.name());
        let mut sleeping = b
            .start(&lab, &Spec::default_for(Kernel::Sleep), &limits)
            .unwrap();
        sleeping.wait_ready().unwrap();
        kill(sleeping.main_pid(), Signal::SIGKILL).unwrap();
        let killed = sleeping.finish().unwrap();
        match killed.outcome {
            Outcome::Failed { reason } => assert!(reason.contains("SIGKILL"), "{reason}"),
            other => panic!("a killed workload is a failure, not {other:?}"),
        }
        // An instance dropped without being finished (an error path in the lab).
        let abandoned = b
            .start(&lab, &Spec::default_for(Kernel::Sleep), &limits)
            .unwrap();
        drop(abandoned);
    }
    drop(lab);
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn cgroup_v2_code_runs_on_the_unified_hierarchy() {
    let _serial = serial();
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let base = if unified.join("cgroup.procs").exists() {
        unified.join("isolab-v2-test")
    } else {
        std::path::PathBuf::from("/sys/fs/cgroup/isolab-v2-test")
    };
    let temp = temp_dir("v2");
    let lab = Lab::in_dir(&temp)
        .unwrap()
        .with_cgroups(Hierarchy::v2_at(base.clone()));
    let run = backend::process::Process
        .run(&lab, &Spec::default_for(Kernel::Probe), &Limits::default())
        .unwrap();
    assert_eq!(run.outcome, Outcome::Completed);
    let cgroup_line = &run.probe.iter().find(|(k, _)| k == "cgroup").unwrap().1;
    assert!(
        cgroup_line.contains("isolab-v2-test/"),
        "joined the v2 cgroup: {cgroup_line}"
    );
    drop(lab);
    let left: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(left.is_empty(), "instance cgroups removed: {left:?}");
    std::fs::remove_dir(&base).unwrap();
    std::fs::remove_dir_all(temp).unwrap();
}

/// A lab that is not root, in a delegated cgroup v2 subtree, moves itself into a leaf of its own
/// beside its instances (v2 lets a cgroup either hold processes or give controllers to
/// children, not both). A process cannot remove the cgroup it is in, so the leaf, `lab-<id>`,
/// is claimed in the lab's ledger and removed once the lab has gone; it used to stay forever as
/// `lab-<pid>`, and two labs in different PID namespaces could collide on it.
#[test]
fn a_rootless_labs_own_cgroup_leaf_is_removed_after_it() {
    let _serial = serial();
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let root = if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        std::path::PathBuf::from("/sys/fs/cgroup")
    };
    let own = root.join(format!("isolab-delegated-test-{}", std::process::id()));
    std::fs::create_dir(&own).unwrap();
    let temp = temp_dir("leaf");
    // The lab runs in a child process: it moves itself into its leaf, which would take the
    // whole test binary with it.
    // SAFETY: the child runs a lab and ends with _exit, never returning into the test harness.
    let child = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = std::panic::catch_unwind(|| {
                let lab = Lab::in_dir(&temp)
                    .unwrap()
                    .with_cgroups(Hierarchy::v2_delegated(own.clone()));
                let leaf = own.join(format!("lab-{}", lab.id()));
                let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
                let in_leaf = mine
                    .lines()
                    .any(|l| l.starts_with("0::") && l.ends_with(&format!("/lab-{}", lab.id())));
                let run = backend::process::Process
                    .run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default())
                    .unwrap();
                let ok = in_leaf && leaf.is_dir() && run.outcome == Outcome::Completed;
                drop(lab);
                // Still in the leaf, so it is still there: the lab cannot remove it itself.
                ok && leaf.is_dir()
            });
            let code = if code.unwrap_or(false) { 0 } else { 1 };
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let status = nix::sys::wait::waitpid(child, None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(child, 0),
        "the lab ran in its leaf"
    );
    let subdirs = || -> Vec<_> {
        std::fs::read_dir(&own)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name())
            .filter(|n| n != "isolab")
            .collect()
    };
    // The dead lab's guardian removes it, or else what the next lab does first: reap.
    let gone = common::eventually(std::time::Duration::from_secs(10), || {
        isolab_resources::ownership::reap(&isolab_resources::ownership::registry_dir());
        subdirs().is_empty()
    });
    assert!(gone, "the leaf is gone: {:?}", subdirs());
    let left: Vec<_> = std::fs::read_dir(own.join("isolab"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        left.iter().all(|e| !e.file_type().unwrap().is_dir()),
        "{left:?}"
    );
    std::fs::remove_dir(own.join("isolab")).unwrap();
    std::fs::remove_dir(&own).unwrap();
    std::fs::remove_dir_all(temp).unwrap();
}

/// Here Debian's CRIU fails its own `criu check` (3.17.1 on a 6.18 kernel: "vdso: Unexpected rt
/// vDSO area bounds"): restoring `container` and `oci:runc` is then refused, and the reason is
/// that check's first error, in one line. Run beside it on the real CRIU, wherever it runs: where
/// the check passes (as root), both are restorable.
#[test]
fn a_containers_restore_is_skipped_with_criu_checks_own_reason() {
    let temp = temp_dir("criu-verdict");
    let lab = Lab::in_dir(&temp).unwrap();
    let container = Container::default();
    let runc = backend::oci::Oci::runc();
    let check = isolab_resources::tools::find("criu").map(|criu| {
        std::process::Command::new(criu)
            .arg("check")
            .output()
            .expect("run criu check")
    });
    for backend in [&container as &dyn Backend, &runc] {
        let restorer = backend.restorer().expect("containers restore through CRIU");
        let said = match restorer.restore_availability(&lab) {
            backend::Availability::Available => None,
            backend::Availability::Unavailable(why) => Some(why),
        };
        match &check {
            None => assert_eq!(
                said.as_deref(),
                Some("criu is not installed (apt-get install criu)"),
                "{}",
                backend.name()
            ),
            Some(out) if out.status.success() => assert_eq!(
                said,
                (!nix::unistd::geteuid().is_root())
                    .then(|| "CRIU checkpoints and restores containers as root only".to_string()),
                "{}",
                backend.name()
            ),
            Some(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let cause = stderr
                    .lines()
                    .find_map(|l| l.strip_prefix("Error (")?.split_once("): "))
                    .map(|(_, cause)| cause.trim())
                    .expect("criu check names its error");
                let why = said.unwrap_or_else(|| panic!("{} restorable", backend.name()));
                if nix::unistd::geteuid().is_root() {
                    assert!(
                        why.ends_with(cause),
                        "{why:?} is not criu check's {cause:?}"
                    );
                    assert_eq!(why.lines().count(), 1, "{why:?}");
                }
            }
        }
    }
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}
