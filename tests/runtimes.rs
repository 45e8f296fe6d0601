//! The external runtimes side by side with isolab's own container: runc, crun, gVisor's runsc and
//! Docker itself, through every experiment, with the same checksums, leaving nothing behind.
//!
//! These tests need the runtimes installed and a Docker daemon running, as root: `.ci/run`
//! installs and starts them, and runs the ignored tests too (`--include-ignored`). Run without
//! them, a test fails and says what is missing.

mod common;

use common::{checksums_agree, ladder_of_16, probe_facts, serial, temp_dir, HostState};
use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Limits};
use isolab_experiments as experiment;
use isolab_experiments::Settings;
use isolab_results::{Family, Outcome, Results};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// The runtimes this file is about.
const RUNTIMES: [&str; 4] = ["oci:runc", "oci:crun", "oci:runsc", "docker"];

const NEEDS: &str =
    "needs runc, crun, runsc, docker.io and a running dockerd, as root (.ci/run installs them)";

/// The runtimes plus the lab's own baseline and container; fails if a runtime cannot run.
fn every_runtime(lab: &Lab) -> Vec<String> {
    let mut names = vec!["process".to_string(), "container".to_string()];
    for name in RUNTIMES {
        let b = backend::by_name(name).unwrap();
        if let Availability::Unavailable(why) = b.availability(lab) {
            panic!("{name} cannot run here ({NEEDS}): {why}");
        }
        names.push(name.to_string());
    }
    names
}

fn settings(out: &Path, runs: u32) -> Settings {
    Settings {
        runs,
        warmup: 0,
        seed: 11,
        limits: Limits::default(),
        out: out.to_path_buf(),
        progress: false,
    }
}

/// What a runtime can leave on the host: its containers' state under /run, Docker's
/// containers, runsc's sandboxes. Only lab `id`'s (named `isolab-<id>-…`; a sandbox whose
/// command line names the lab or the test's `temp`, where its state is): other labs run beside
/// the test, and theirs are not its to count.
fn runtime_leftovers(id: &str, temp: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let prefix = format!("isolab-{id}-");
    for dir in ["/run/runc", "/run/crun", "/run/runsc", "/var/run/runsc"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                out.insert(format!("{dir}/{name}"));
            }
        }
    }
    if let Ok(o) = Command::new("docker")
        .args(["ps", "--all", "--format", "{{.Names}}"])
        .output()
    {
        for name in String::from_utf8_lossy(&o.stdout).lines() {
            if name.starts_with(&prefix) {
                out.insert(format!("docker container {name}"));
            }
        }
    }
    let temp = temp.to_string_lossy();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let cmdline =
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
        if comm.starts_with("runsc") && (cmdline.contains(id) || cmdline.contains(&*temp)) {
            out.insert(format!(
                "process {} ({})",
                e.file_name().to_string_lossy(),
                comm.trim()
            ));
        }
    }
    out
}

#[test]
#[ignore = "needs runc, crun, runsc, docker.io and a running dockerd, as root"]
fn every_runtime_runs_every_experiment_with_the_same_checksums() {
    let _serial = serial();
    let temp = temp_dir("runtimes-all");
    let lab = Lab::in_dir(&temp).unwrap();
    let names = every_runtime(&lab);
    let out = temp.join("out");
    let before = runtime_leftovers(lab.id(), &temp);

    // Start-up: every runtime reaches `ready`, with its own phases and its version.
    let startup = experiment::startup::run(&lab, Some(&names), &settings(&out, 2), false).unwrap();
    assert!(startup.failures.is_empty(), "{:?}", startup.failures);
    let results = Results::read(&startup.results).unwrap();
    for name in RUNTIMES {
        let runs: Vec<_> = results.measured(name).collect();
        assert_eq!(runs.len(), 2, "{name}");
        for r in &runs {
            assert!(r.startup_ns.unwrap() > 0, "{name}: {r:?}");
            assert!(
                r.facts.runtime_version.is_some(),
                "{name} records its version: {:?}",
                r.facts
            );
        }
    }
    let phases = |name: &str| -> BTreeSet<String> {
        results
            .measured(name)
            .flat_map(|r| r.phases.phases.iter().map(|p| p.name.clone()))
            .collect()
    };
    for p in ["daemon_created", "attached", "ready"] {
        assert!(
            phases("docker").contains(p),
            "docker's {p}: {:?}",
            phases("docker")
        );
    }
    for p in ["masked_paths", "capabilities", "seccomp"] {
        assert!(phases("container").contains(p), "container's {p}");
    }
    assert_eq!(results.family("oci:runsc"), Family::Sandbox);
    assert_eq!(results.family("docker"), Family::Container);
    let runsc = results.measured("oci:runsc").next().unwrap();
    assert!(
        matches!(
            runsc.facts.sandbox_platform.as_deref(),
            Some("ptrace" | "kvm")
        ),
        "{:?}",
        runsc.facts
    );

    // Throughput: every kernel on every runtime computes the same thing.
    let throughput = experiment::throughput::run(
        &lab,
        Some(&names),
        &experiment::throughput::KERNELS,
        Default::default(),
        Vec::new(),
        &settings(&out, 1),
    )
    .unwrap();
    assert!(throughput.failures.is_empty(), "{:?}", throughput.failures);
    let results = Results::read(&throughput.results).unwrap();
    checksums_agree(
        &lab,
        &results,
        &names,
        experiment::throughput::KERNELS.len(),
    );

    // Memory: the runtimes' instances are measured; gVisor's Sentry and Gofer are counted.
    let memory = experiment::memory::run(&lab, Some(&names), &[1], &settings(&out, 1)).unwrap();
    assert!(memory.failures.is_empty(), "{:?}", memory.failures);
    let results = Results::read(&memory.results).unwrap();
    let at_ready = |name: &str| {
        results
            .measured(name)
            .next()
            .unwrap()
            .memory_at_ready
            .unwrap()
            .instance_bytes()
    };
    assert!(
        at_ready("oci:runsc") > 4 * at_ready("container"),
        "a sandbox's own kernel costs memory: runsc {} B, container {} B",
        at_ready("oci:runsc"),
        at_ready("container")
    );
    let docker = results.measured("docker").next().unwrap();
    if docker.facts.memory_note.is_none() {
        assert!(
            docker.facts.shim_pss_bytes.unwrap() > 0,
            "{:?}",
            docker.facts
        );
        assert!(
            docker.facts.daemon_pss_bytes.unwrap() > 0,
            "{:?}",
            docker.facts
        );
        assert!(at_ready("docker") > 0);
    }

    // Isolation: gVisor answers with a kernel of its own; everyone else with the host's.
    let isolation = experiment::isolation::run(&lab, Some(&names), &settings(&out, 1)).unwrap();
    assert!(isolation.failures.is_empty(), "{:?}", isolation.failures);
    let results = Results::read(&isolation.results).unwrap();
    let probe = |name: &str| probe_facts(&results, name);
    let host = isolab_host::facts::kernel_release();
    for name in ["container", "oci:runc", "oci:crun", "docker"] {
        let p = probe(name);
        assert_eq!(p["kernel_release"], host, "{name} shares the host's kernel");
        assert_eq!(p["pid"], "1", "{name}");
        assert!(
            p["seccomp"].starts_with("filter"),
            "{name}: {}",
            p["seccomp"]
        );
        assert!(
            p["sensitive_calls"].contains("mount:EPERM"),
            "{name}: {p:?}"
        );
        // Docker's profile (dockerd's own, and the lab's for the others) refuses every
        // namespace flag to a container without CAP_SYS_ADMIN, user namespaces included.
        for key in ["unshare_flags", "clone_flags"] {
            assert!(!p[key].contains(":ok"), "{name}: {key} {}", p[key]);
        }
    }
    let sandbox = probe("oci:runsc");
    assert_ne!(
        sandbox["kernel_release"], host,
        "gVisor answers with its own kernel"
    );
    assert_eq!(sandbox["pid"], "1");
    assert_eq!(probe("process")["seccomp"], "disabled");

    let id = lab.id().to_string();
    drop(lab);
    assert_eq!(
        runtime_leftovers(&id, &temp),
        before,
        "no runtime state left behind"
    );
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
#[ignore = "needs runc, crun, runsc, docker.io and a running dockerd, as root"]
fn a_density_ladder_of_16_on_every_runtime_leaves_nothing_behind() {
    let _serial = serial();
    let temp = temp_dir("runtimes-density");
    let out = temp.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let state = HostState::now(&temp);
    let lab = Lab::in_dir(&temp).unwrap();
    let id = lab.id().to_string();
    let before = (state, runtime_leftovers(&id, &temp));
    let names: Vec<String> = every_runtime(&lab)
        .into_iter()
        .filter(|n| RUNTIMES.contains(&n.as_str()))
        .collect();
    ladder_of_16(&lab, &names, &out);
    drop(lab);
    let mut after = (HostState::now(&temp), runtime_leftovers(&id, &temp));
    after.0.temp_entries.clear();
    let mut before = before;
    before.0.temp_entries.clear();
    assert_eq!(
        after, before,
        "every container, sandbox, cgroup and state dir is gone"
    );
    std::fs::remove_dir_all(temp).unwrap();
}

/// A runtime that fails says why, in its own words, on one line; exit status 1.
fn assert_failed_in_one_line(o: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line, not: {stderr}"
    );
    assert!(stderr.contains(expect), "{expect:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_runtime_that_rejects_its_bundle_says_why_and_leaves_nothing() {
    let _serial = serial();
    let temp = temp_dir("runtimes-reject");
    // An OCI runtime that rejects every bundle the way runtimes do: a message on stderr and a
    // failing exit status.
    let bin = temp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("isolab-rejecting-runtime");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = delete ] && exit 0\n\
         echo 'loading config.json: unknown field \"isolab\" in linux' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let before = HostState::now(&temp);
    let lab = |args: &[&str]| {
        Command::new(LAB)
            .args(args)
            .env("TMPDIR", &temp)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let reason = "unknown field \"isolab\" in linux";
    let o = lab(&[
        "exec",
        "--backend",
        "oci:isolab-rejecting-runtime",
        "--kernel",
        "ready",
    ]);
    assert_failed_in_one_line(&o, reason);
    let out = temp.join("reports");
    let o = lab(&[
        "run",
        "startup",
        "--backends",
        "oci:isolab-rejecting-runtime",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_failed_in_one_line(&o, reason);
    // The failed record keeps the runtime's own words too.
    let dir = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let results = Results::read(&dir.join("results.jsonl")).unwrap();
    match &results.runs[0].outcome {
        Outcome::Failed { reason: r } => assert!(r.contains(reason), "{r}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&out).unwrap();
    assert_eq!(HostState::now(&temp), before, "nothing left behind");
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
#[ignore = "needs docker.io (the docker CLI)"]
fn a_docker_daemon_that_does_not_answer_is_refused_with_its_reason() {
    let _serial = serial();
    let temp = temp_dir("runtimes-nodaemon");
    assert!(
        isolab_host::facts::find_program("docker").is_some(),
        "the docker CLI is not installed ({NEEDS})"
    );
    let before = HostState::now(&temp);
    let o = Command::new(LAB)
        .args(["exec", "--backend", "docker", "--kernel", "ready"])
        .env("TMPDIR", &temp)
        .env("DOCKER_HOST", "unix:///nonexistent/isolab-docker.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "unavailable is the user's to fix: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no Docker daemon answers"), "{stderr}");
    assert!(
        stderr.contains("isolab-docker.sock"),
        "Docker's own words: {stderr}"
    );
    assert!(stderr.contains("dockerd"), "how to start one: {stderr}");
    assert_eq!(HostState::now(&temp), before);
    std::fs::remove_dir_all(temp).unwrap();
}
