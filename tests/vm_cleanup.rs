//! Nothing a microVM run creates outlives it: no VMM process, no cgroup directory, no file
//! descriptor — whether the guest finished, faulted, hung or was abandoned mid-run.
//!
//! Alone in its own test binary, so no other test creates processes or descriptors in this
//! process while it counts.

use isolab_backends::lab::Lab;
use isolab_backends::vm::Vm;
use isolab_backends::{Availability, Backend, Limits};
use isolab_payload::{Kernel, Spec};
use isolab_vmm::fixtures;
use isolab_vmm::loader::Guest;
use std::fs;
use std::time::Duration;

/// Processes whose parent is this process (zombies included: they are still in /proc).
fn children() -> Vec<i32> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                // The parent PID is the second field after the parenthesised command name.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split(' ').nth(2).map(|p| p == me))
                    .unwrap_or(false)
            })
        })
        .collect()
}

/// This lab's instance cgroups: directories named `<lab id>-<n>` under each cgroup base.
fn cgroup_dirs(lab: &Lab) -> Vec<String> {
    let prefix = format!("{}-", lab.id());
    lab.cgroups()
        .unwrap()
        .bases()
        .flat_map(|base| {
            fs::read_dir(base)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
        })
        .map(|e| e.path().display().to_string())
        .filter(|p| p.rsplit('/').next().unwrap_or("").starts_with(&prefix))
        .collect()
}

/// Open file descriptors of this process.
fn fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn no_vmm_process_cgroup_or_fd_outlives_a_run() {
    let mut lab = Lab::new().unwrap();
    lab.settings.timeout = Duration::from_secs(60);
    if let Availability::Unavailable(why) = Vm::default().availability(&lab) {
        panic!("the vm backend cannot run here, so this test cannot: {why}");
    }
    let before = (children(), cgroup_dirs(&lab), fds());
    let limits = Limits::default();
    let ready = Spec::default_for(Kernel::Ready);

    // Finished, with I/O to a scratch file.
    Vm::default()
        .run(&lab, &Spec::new(Kernel::Io, 1, 0), &limits)
        .unwrap();
    // Faulted.
    let fault = Vm::default().with_guest(Guest::Raw(&fixtures::NULL_READ));
    assert!(fault.run(&lab, &ready, &limits).is_err());
    // Hung, stopped by the VMM's time limit.
    let spin = Vm::default()
        .with_guest(Guest::Raw(&fixtures::SPIN))
        .with_time_limit(Duration::from_millis(300));
    assert!(spin.run(&lab, &ready, &limits).is_err());
    // Passed bad addresses, got errors, finished.
    let bad = Vm::default().with_guest(Guest::Raw(&fixtures::BAD_BUFFERS));
    bad.run(&lab, &ready, &limits).unwrap();
    // Abandoned while its guest runs: dropping the instance must kill and reap the VMM.
    let mut hung = Vm::default()
        .with_guest(Guest::Raw(&fixtures::SPIN))
        .start(&lab, &ready, &limits)
        .unwrap();
    hung.wait_ready().unwrap();
    // The counters see a live instance: its VMM, its cgroup, the lab's ends of its pipes.
    assert_eq!(children().len(), before.0.len() + 1, "the VMM is running");
    assert_eq!(
        cgroup_dirs(&lab).len(),
        before.1.len() + 1,
        "its cgroup exists"
    );
    assert_eq!(
        fds(),
        before.2 + 4,
        "report, control and stderr pipes, and a pidfd of the VMM"
    );
    drop(hung);
    // Abandoned while its guest sleeps in a hypercall.
    let mut sleeping = Vm::default()
        .start(&lab, &Spec::default_for(Kernel::Sleep), &limits)
        .unwrap();
    sleeping.wait_ready().unwrap();
    drop(sleeping);

    let after = (children(), cgroup_dirs(&lab), fds());
    assert_eq!(
        after, before,
        "(children, cgroup dirs, fds) before vs after"
    );
}
