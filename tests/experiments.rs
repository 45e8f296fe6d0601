//! The experiments on real backends: what each one records must make physical sense.

mod common;

use common::{checksums_agree, ladder_of_16, probe_facts, serial, temp_dir, HostState};
use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Limits};
use isolab_experiments as experiment;
use isolab_experiments::Settings;
use isolab_results::Results;
use std::path::Path;

/// Every default backend of the lab's own that can run here (process, container, and any VM
/// backend present). The external runtimes (runc, crun, runsc, Docker) have tests of their own,
/// which fail where they are missing: tests/runtimes.rs.
fn backends(lab: &Lab) -> Vec<String> {
    backend::registry()
        .into_iter()
        .filter(|b| !b.name().starts_with("oci:") && b.name() != "docker")
        .filter(|b| b.default_enabled() && b.availability(lab) == Availability::Available)
        .map(|b| b.name().to_string())
        .collect()
}

fn settings(out: &Path, runs: u32) -> Settings {
    Settings {
        runs,
        warmup: 0,
        seed: 7,
        limits: Limits::default(),
        out: out.to_path_buf(),
        progress: false,
    }
}

#[test]
fn memory_grows_with_what_the_workload_touches_on_every_backend() {
    let _serial = serial();
    let temp = temp_dir("exp-memory");
    let lab = Lab::in_dir(&temp).unwrap();
    let names = backends(&lab);
    assert!(
        names.len() >= 2,
        "at least process and container: {names:?}"
    );
    let campaign = experiment::memory::run(
        &lab,
        Some(&names),
        &[1, 64],
        &settings(&temp.join("out"), 2),
    )
    .unwrap();
    assert!(campaign.failures.is_empty(), "{:?}", campaign.failures);
    let results = Results::read(&campaign.results).unwrap();
    for name in &names {
        // Median over rounds of what the workload added between ready and done.
        let touched = |mib: u64| {
            let mut v: Vec<u64> = results
                .measured(name)
                .filter(|r| r.workload.mib == mib)
                .map(|r| {
                    let (ready, done) = (r.memory_at_ready.unwrap(), r.memory_at_done.unwrap());
                    done.instance_bytes().saturating_sub(ready.instance_bytes())
                })
                .collect();
            v.sort();
            v[v.len() / 2]
        };
        let (small, large) = (touched(1), touched(64));
        assert!(
            large > small,
            "{name}: 64 MiB touched {large} B, 1 MiB touched {small} B"
        );
        assert!(
            large >= 60 << 20,
            "{name}: 64 MiB workload added only {large} B"
        );
        assert!(small < 8 << 20, "{name}: 1 MiB workload added {small} B");
    }
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn throughput_checksums_agree_across_backends() {
    let _serial = serial();
    let temp = temp_dir("exp-throughput");
    let lab = Lab::in_dir(&temp).unwrap();
    let names = backends(&lab);
    let campaign = experiment::throughput::run(
        &lab,
        Some(&names),
        &experiment::throughput::KERNELS,
        Default::default(),
        Vec::new(),
        &settings(&temp.join("out"), 1),
    )
    .unwrap();
    assert!(campaign.failures.is_empty(), "{:?}", campaign.failures);
    let results = Results::read(&campaign.results).unwrap();
    checksums_agree(
        &lab,
        &results,
        &names,
        experiment::throughput::KERNELS.len(),
    );
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn isolation_shows_what_each_backend_can_see() {
    let _serial = serial();
    let temp = temp_dir("exp-isolation");
    let lab = Lab::in_dir(&temp).unwrap();
    let names = backends(&lab);
    let campaign =
        experiment::isolation::run(&lab, Some(&names), &settings(&temp.join("out"), 1)).unwrap();
    let results = Results::read(&campaign.results).unwrap();
    let facts = |backend: &str| probe_facts(&results, backend);
    let (process, container) = (facts("process"), facts("container"));
    let host_release = isolab_host::facts::kernel_release();
    assert_eq!(process["kernel_release"], host_release);
    assert_eq!(
        container["kernel_release"], host_release,
        "a container shares the host's kernel"
    );
    assert_eq!(container["pid"], "1");
    assert_ne!(process["pid"], "1");
    assert_ne!(
        container["hostname"],
        isolab_host::facts::hostname(),
        "a private host name"
    );
    assert_eq!(process["hostname"], isolab_host::facts::hostname());
    drop(lab);
    std::fs::remove_dir_all(temp).unwrap();
}

#[test]
fn density_of_16_on_every_backend_leaves_nothing_behind() {
    let _serial = serial();
    let temp = temp_dir("exp-density");
    let out = temp.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let before = HostState::now(&temp);
    let lab = Lab::in_dir(&temp).unwrap();
    let names = backends(&lab);
    ladder_of_16(&lab, &names, &out);
    drop(lab);
    let mut after = HostState::now(&temp);
    after.temp_entries.clear();
    let mut before = before;
    before.temp_entries.clear();
    assert_eq!(
        after, before,
        "every instance, cgroup, mount and fd is gone"
    );
    std::fs::remove_dir_all(temp).unwrap();
}
