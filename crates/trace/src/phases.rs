//! **The phase table**: which kernel event, in which program, marks which phase of a start-up.
//!
//! A start-up is a chain of programs — `docker` asks `dockerd`, which asks `containerd`, which
//! starts a shim, which runs `runc`, which re-executes itself as `runc init`, which becomes the
//! workload — and each step leaves marks in the kernel: an `execve`, a `clone` into new
//! namespaces, a move into a cgroup, a `pivot_root`, a KVM `ioctl`. One row of [`TABLE`] names one
//! such mark. A sample's phases are the *first* event matching each row (or its `nth`), in time
//! order; the time between one phase and the next is what that step cost.
//!
//! To add a runtime, add rows: the backends it applies to, the program (its `comm`: the kernel's
//! 15-byte task name, which a program may change with `prctl(PR_SET_NAME)` — runc's `nsexec`
//! names its stages `runc:[0:PARENT]`, `runc:[1:CHILD]`, `runc:[2:INIT]`), the event, and a name.

use crate::events::Event;
use isolab_results::TracedPhase;
use std::collections::HashMap;

/// Which program's events a row looks at.
#[derive(Clone, Copy, Debug)]
pub enum Program {
    /// Exactly this name.
    Is(&'static str),
    /// A name starting with this (`runc:[2` for runc's third stage).
    Starts(&'static str),
}

/// Which event a row looks for.
#[derive(Clone, Copy, Debug)]
pub enum On {
    /// `sched_process_exec` of a file whose path ends with this (`""`: any).
    Exec(&'static str),
    /// `clone` or `clone3` entered (a process or a thread is about to be made).
    Clone,
    /// `sys_enter_<name>`: `unshare`, `setns`, `pivot_root`, `mount`, `seccomp`, `execve`.
    Syscall(&'static str),
    /// `unshare` with any of these `CLONE_NEW*` flags.
    Unshare(u64),
    /// `ioctl` with this request on a KVM file (KVM's requests have type byte 0xAE).
    Ioctl(u64),
    /// `cgroup_attach_task`: a task moved into a cgroup.
    CgroupAttach,
    /// `task_rename`: the program names itself (or a thread) this, by prefix.
    Rename(&'static str),
    /// `kvm_entry`: a virtual CPU enters the guest.
    KvmEntry,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// The backends whose samples it applies to.
    pub backends: &'static [&'static str],
    /// The program whose event it is.
    pub program: Program,
    /// The event.
    pub on: On,
    /// Which matching event marks the phase: 1 for the first, 2 for the second, ...
    pub nth: u32,
    /// The phase's name, as reports show it.
    pub phase: &'static str,
}

const fn row(
    backends: &'static [&'static str],
    program: Program,
    on: On,
    phase: &'static str,
) -> Rule {
    Rule {
        backends,
        program,
        on,
        nth: 1,
        phase,
    }
}

const fn nth(rule: Rule, n: u32) -> Rule {
    Rule { nth: n, ..rule }
}

// KVM's ioctl requests (linux/kvm.h): _IO(0xAE, 0x01) and so on.
/// `KVM_CREATE_VM`: a VM file descriptor, the guest's address space.
pub const KVM_CREATE_VM: u64 = 0xae01;
/// `KVM_CREATE_VCPU`: one virtual CPU.
pub const KVM_CREATE_VCPU: u64 = 0xae41;
/// `KVM_SET_USER_MEMORY_REGION`: a slot of guest RAM backed by the VMM's memory.
pub const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_ae46;
/// `KVM_RUN`: run a virtual CPU until the guest exits to the VMM.
pub const KVM_RUN: u64 = 0xae80;

// The namespaces' clone flags (linux/sched.h).
/// `CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET`: the container's own namespaces
/// (the mount namespace, `CLONE_NEWNS`, is left out: isolab's launcher makes one for itself).
pub const NEW_CONTAINER_NAMESPACES: u64 = 0x0400_0000 | 0x0800_0000 | 0x2000_0000 | 0x4000_0000;
/// `CLONE_NEWUSER`.
pub const CLONE_NEWUSER: u64 = 0x1000_0000;

const RUNC: &[&str] = &["oci:runc", "docker"];
const DOCKER: &[&str] = &["docker"];
const VMMS: &[&str] = &["qemu", "vm", "vm-linux"];
use On::*;
use Program::{Is, Starts};

/// The table. Rows apply to the backends they name; order does not matter (phases are sorted by
/// time).
#[rustfmt::skip]
pub const TABLE: &[Rule] = &[
    // Docker: the CLI asks the daemon over its socket; dockerd asks containerd, which starts a
    // shim (`containerd-shim-runc-v2 start`, which starts the shim that stays as the container's
    // parent), which runs runc. (dockerd also runs `runc --version` and `docker-init --version`
    // for itself: those are not the container's runc, so runc's CLI row is not Docker's.)
    row(DOCKER, Is("docker"), Exec("/docker"), "docker: CLI starts"),
    row(DOCKER, Is("containerd"), Exec("/containerd-shim-runc-v2"), "containerd: starts the shim"),
    nth(row(DOCKER, Starts("containerd-shim"), Exec("/containerd-shim-runc-v2"), "shim: the shim that stays starts"), 2),
    row(DOCKER, Starts("containerd-shim"), Exec("/runc"), "shim: runs runc"),
    // runc: a Go program. The CLI starts the Go runtime (threads), then re-executes itself
    // (`runc init`, the C `nsexec` runs before Go) and that init makes the namespaces in three
    // stages, joins the cgroup, mounts the root, pivot_roots, and execs the workload.
    row(&["oci:runc"], Is("runc"), Exec("/runc"), "runc: CLI starts (Go runtime)"),
    row(RUNC, Is("runc"), Exec("/proc/self/exe"), "runc: `runc init` re-executes"),
    row(RUNC, Is("runc"), CgroupAttach, "runc: init joins the container's cgroup"),
    row(RUNC, Starts("runc:[1"), Syscall("unshare"), "runc init: unshare namespaces"),
    row(RUNC, Starts("runc:[2"), Syscall("mount"), "runc init: mounts the root"),
    row(RUNC, Starts("runc:[2"), Syscall("pivot_root"), "runc init: pivot_root"),
    row(RUNC, Starts("runc:[2"), Syscall("execve"), "runc init: execve the workload"),
    // crun: C, one process; it re-executes itself from a sealed copy (/dev/fd/N) before running
    // the container's init.
    row(&["oci:crun"], Is("crun"), Exec("/crun"), "crun: CLI starts"),
    row(&["oci:crun"], Is("crun"), Syscall("unshare"), "crun: unshare namespaces"),
    row(&["oci:crun"], Is("crun"), Syscall("pivot_root"), "crun: pivot_root"),
    row(&["oci:crun"], Is("crun"), Syscall("execve"), "crun: execve the workload"),
    // gVisor: runsc re-executes itself as the gofer (file access) and the sandbox (the Sentry, a
    // kernel in user space); both chroot with pivot_root. The workload's own execve happens
    // inside the Sentry, which the host kernel does not see.
    row(&["oci:runsc"], Is("runsc"), Exec("/runsc"), "runsc: CLI starts (Go runtime)"),
    row(&["oci:runsc"], Is("exe"), Exec("/proc/self/exe"), "runsc: first re-exec (gofer or sandbox)"),
    nth(row(&["oci:runsc"], Is("exe"), Exec("/proc/self/exe"), "runsc: second re-exec"), 2),
    row(&["oci:runsc"], Is("exe"), Syscall("pivot_root"), "runsc: first pivot_root into the sandbox"),
    nth(row(&["oci:runsc"], Is("exe"), Syscall("pivot_root"), "runsc: second pivot_root"), 2),
    nth(row(&["oci:runsc"], Is("exe"), Exec("/proc/self/exe"), "runsc: the Sentry starts"), 3),
    // QEMU: the process, its first thread (RCU), its seccomp sandbox, the vCPU thread — from its
    // birth to `ready` the guest boots (its kernel, then /init) — and on KVM the VM, its memory
    // slots, its vCPU, the first KVM_RUN and the first guest entry. A vCPU thread is named
    // `CPU 0/KVM` only with `-name debug-threads=on`.
    row(&["qemu"], Starts("qemu-system"), Exec("/qemu-system-x86_64"), "qemu: process starts"),
    row(&["qemu"], Starts("qemu-system"), Clone, "qemu: first thread (RCU)"),
    row(&["qemu"], Starts("qemu-system"), Syscall("seccomp"), "qemu: seccomp sandbox"),
    nth(row(&["qemu"], Starts("qemu-system"), Clone, "qemu: vCPU thread starts, the guest boots"), 2),
    row(&["qemu"], Starts("qemu-system"), Rename("CPU 0/"), "qemu: vCPU thread named"),
    row(VMMS, Starts(""), Ioctl(KVM_CREATE_VM), "KVM_CREATE_VM"),
    row(VMMS, Starts(""), Ioctl(KVM_SET_USER_MEMORY_REGION), "KVM_SET_USER_MEMORY_REGION"),
    row(VMMS, Starts(""), Ioctl(KVM_CREATE_VCPU), "KVM_CREATE_VCPU"),
    row(VMMS, Starts(""), Ioctl(KVM_RUN), "first KVM_RUN"),
    row(VMMS, Starts(""), KvmEntry, "first guest entry (kvm_entry)"),
    // isolab's own container: a launcher thread (made once, for the lab's first container)
    // prepares the root, clones the child, which unshares its namespaces, then the user
    // namespace, then execs the workload. The unshares are told apart by their flags, not their
    // order: the launcher's own (a mount namespace) happens only once. Its self-reported
    // phases are checked against these ([`CROSS_CHECKS`]).
    row(&["container"], Starts(""), Rename("isolab-launcher"), "container: launcher thread starts"),
    row(&["container"], Is("isolab-launcher"), Syscall("pivot_root"), "container: launcher pivot_root"),
    row(&["container"], Is("isolab-launcher"), Clone, "container: clone the child"),
    row(&["container"], Is("isolab-launcher"), Unshare(NEW_CONTAINER_NAMESPACES), "container: unshare namespaces"),
    row(&["container"], Is("isolab-launcher"), Unshare(CLONE_NEWUSER), "container: unshare the user namespace"),
    row(&["container"], Is("isolab-launcher"), Syscall("execve"), "container: execve the workload"),
    // The workload's own exec, wherever the host kernel sees it (`/workload` in a container's
    // root, the lab's copy `isolab-workload` for a process).
    row(&["container", "oci:runc", "oci:crun", "docker", "process", "ns-floor"], Starts(""), Exec("workload"), "workload: execve"),
];

/// A program's name through a sample, task by task: from the `trace` file's comm at first sight,
/// from a fork (the child is named as its parent), an exec (the file's name, except for a
/// re-execution of itself: `/proc/self/exe`, `/dev/fd/N`) and a rename.
///
/// An `execve` renames the task too (`task_rename`, between `sys_enter_execve` and
/// `sched_process_exec`): the name a task had when it asked for the exec is kept aside.
#[derive(Debug, Default)]
pub struct Programs {
    names: HashMap<u32, String>,
    before_exec: HashMap<u32, String>,
}

impl Programs {
    /// The name of `e`'s task *after* `e`, updating what `e` changes.
    pub fn follow(&mut self, e: &Event) -> String {
        let current = self
            .names
            .entry(e.tid)
            .or_insert_with(|| e.comm.clone())
            .clone();
        match e.name.as_str() {
            "sys_enter_execve" => {
                self.before_exec.insert(e.tid, current);
            }
            "sched_process_fork" => {
                if let Some(child) = e.number("child_pid") {
                    self.names.insert(child as u32, current.clone());
                }
            }
            "sched_process_exec" => {
                let file = e.field("filename").unwrap_or("");
                let itself = file.starts_with("/proc/self/") || file.starts_with("/dev/fd/");
                let base = file.rsplit('/').next().unwrap_or(file);
                if !itself && !base.is_empty() {
                    self.names.insert(e.tid, base.to_string());
                }
            }
            "task_rename" => {
                if let (Some(pid), Some(new)) = (e.number("pid"), e.field("newcomm")) {
                    self.names.insert(pid as u32, new.to_string());
                }
            }
            _ => {}
        }
        self.names[&e.tid].clone()
    }

    /// The name `tid` had when it entered `execve` (after its exec has been followed).
    fn asked_for_exec(&mut self, tid: u32) -> Option<String> {
        self.before_exec.remove(&tid)
    }
}

fn program_matches(p: Program, name: &str) -> bool {
    match p {
        Is(n) => name == n || (n.len() == 15 && name.starts_with(n)),
        Starts(prefix) => name.starts_with(prefix),
    }
}

fn event_matches(on: On, e: &Event) -> bool {
    match on {
        Exec(suffix) => {
            e.name == "sched_process_exec"
                && e.field("filename").is_some_and(|f| f.ends_with(suffix))
        }
        Clone => e.name == "sys_enter_clone" || e.name == "sys_enter_clone3",
        Syscall(name) => e.name.strip_prefix("sys_enter_") == Some(name),
        Ioctl(cmd) => e.name == "sys_enter_ioctl" && e.number("cmd") == Some(cmd),
        Unshare(mask) => {
            e.name == "sys_enter_unshare"
                && e.number("unshare_flags").is_some_and(|f| f & mask != 0)
        }
        CgroupAttach => e.name == "cgroup_attach_task",
        Rename(prefix) => {
            e.name == "task_rename" && e.field("newcomm").is_some_and(|n| n.starts_with(prefix))
        }
        KvmEntry => e.name == "kvm_entry",
    }
}

/// The phases of one sample of `backend`: for each row of [`TABLE`] that applies, the `nth`
/// matching event at or after `since_ns` (the sample's `spawn`: what came before was the lab's
/// preparation, such as Docker building its image), sorted by time.
pub fn phases(backend: &str, events: &[Event], since_ns: u64) -> Vec<TracedPhase> {
    let rules: Vec<&Rule> = TABLE
        .iter()
        .filter(|r| r.backends.contains(&backend))
        .collect();
    let mut seen = vec![0u32; rules.len()];
    let mut out = Vec::new();
    let mut programs = Programs::default();
    for e in events {
        // The name the task had when the event happened: an exec's phase belongs to the
        // program that asked for it (runc:[2:INIT] execs the workload), a fork's to the parent.
        let mut before = programs
            .names
            .get(&e.tid)
            .cloned()
            .unwrap_or(e.comm.clone());
        let after = programs.follow(e);
        let exec = e.name == "sched_process_exec";
        if exec {
            before = programs.asked_for_exec(e.tid).unwrap_or(before);
        }
        if e.t_ns < since_ns {
            continue;
        }
        let name = if exec || e.name == "task_rename" {
            &after
        } else {
            &before
        };
        for (i, r) in rules.iter().enumerate() {
            // An exec matches by the program it becomes or the one it was.
            let prog =
                program_matches(r.program, name) || (exec && program_matches(r.program, &before));
            if prog && event_matches(r.on, e) {
                seen[i] += 1;
                if seen[i] == r.nth {
                    out.push(TracedPhase {
                        name: r.phase.to_string(),
                        program: name.clone(),
                        pid: e.tid,
                        event: e.name.clone(),
                        t_ns: e.t_ns,
                    });
                }
            }
        }
    }
    out.sort_by_key(|p| p.t_ns);
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// How far a phase the lab stamps itself may be from the kernel event it stands for, in the
/// median over a run's samples. The lab stamps `CLOCK_MONOTONIC` in user space just before (or
/// after) the system call; tracefs stamps the event on entry to the kernel with the same clock.
/// Between them lie the system call itself (making a network namespace takes ~0.7 ms here), the
/// workload's way from `execve` to `main` (~0.5 ms), tracefs's microsecond print, and on a busy
/// machine a preemption — which is why one sample may be further off (6.5 ms once in 17 here)
/// and the median is what is judged.
pub const TOLERANCE_NS: u64 = 2_000_000;

/// Pairs that must agree: (backend, phase the lab reports, traced phase).
pub const CROSS_CHECKS: &[(&str, &str, &str)] = &[
    ("container", "namespaces", "container: unshare namespaces"),
    (
        "container",
        "userns",
        "container: unshare the user namespace",
    ),
    ("container", "ready", "workload: execve"),
    ("oci:runc", "exec", "runc: CLI starts (Go runtime)"),
    ("oci:runc", "ready", "workload: execve"),
    ("oci:crun", "ready", "workload: execve"),
    ("process", "ready", "workload: execve"),
];

/// One cross-check of a sample: the lab's phase, the traced one, and how far apart they are
/// (lab − kernel, in ns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The lab's phase.
    pub reported: &'static str,
    /// The traced phase.
    pub traced: &'static str,
    /// lab − kernel, ns.
    pub delta_ns: i64,
}

impl Check {
    /// Within [`TOLERANCE_NS`].
    pub fn agrees(&self) -> bool {
        self.delta_ns.unsigned_abs() <= TOLERANCE_NS
    }
}

/// The median of the checks' absolute differences, ns.
pub fn median_abs_delta_ns<'a>(checks: impl Iterator<Item = &'a Check>) -> Option<u64> {
    let mut v: Vec<u64> = checks.map(|c| c.delta_ns.unsigned_abs()).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The cross-checks of one sample that has both phases.
pub fn cross_check(
    backend: &str,
    reported: &[(String, u64)],
    traced: &[TracedPhase],
) -> Vec<Check> {
    CROSS_CHECKS
        .iter()
        .filter(|(b, _, _)| *b == backend)
        .filter_map(|&(_, r, t)| {
            let lab = reported.iter().find(|(n, _)| n == r)?.1;
            let kernel = traced.iter().find(|p| p.name == t)?.t_ns;
            Some(Check {
                reported: r,
                traced: t,
                delta_ns: lab as i64 - kernel as i64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parse;

    /// Docker's shim starting runc, and runc re-executing itself, as this machine's kernel
    /// printed them (shortened): the shell-visible names (`trace`'s comm column) are the tasks'
    /// *last* names, and `execve` renames a task before `sched_process_exec` — the phase still
    /// belongs to the program that asked for the exec.
    const SHIM_AND_RUNC: &str = "\
      containerd-4800    [000] ..... 25076.464607: sched_process_fork: comm=containerd pid=4800 child_comm=containerd child_pid=20632
 containerd-shim-20632   [001] ..... 25076.464704: sys_execve(filename: 0xc0002e25d0, argv: 0xc000492240, envp: 0xc00015e280)
 containerd-shim-20632   [001] ..... 25076.464892: task_rename: pid=20632 oldcomm=containerd newcomm=containerd-shim oom_score_adj=0
 containerd-shim-20632   [001] ..... 25076.464995: sched_process_exec: filename=/usr/bin/containerd-shim-runc-v2 pid=20632 old_pid=20632
 containerd-shim-20646   [000] ..... 25076.483852: sched_process_fork: comm=containerd-shim pid=20646 child_comm=containerd-shim child_pid=20650
            runc-20650   [001] ..... 25076.483914: sys_execve(filename: 0xc00021e490, argv: 0xc00022e620, envp: 0xc00025e140)
            runc-20650   [001] ..... 25076.484042: task_rename: pid=20650 oldcomm=containerd-shim newcomm=runc oom_score_adj=1
            runc-20650   [001] ..... 25076.484151: sched_process_exec: filename=/usr/sbin/runc pid=20650 old_pid=20650
            runc-20650   [001] ..... 25076.485935: sched_process_fork: comm=runc pid=20650 child_comm=runc child_pid=20657
 runc:[0:PARENT]-20657   [001] ..... 25076.491966: sys_execve(filename: 0xc00018c070, argv: 0xc0001b2030, envp: 0xc00019e080)
 runc:[0:PARENT]-20657   [001] ..... 25076.492182: task_rename: pid=20657 oldcomm=runc newcomm=exe oom_score_adj=1
 runc:[0:PARENT]-20657   [001] .N... 25076.492287: sched_process_exec: filename=/proc/self/exe pid=20657 old_pid=20657
 runc:[0:PARENT]-20657   [001] ..... 25076.502304: task_rename: pid=20657 oldcomm=runc newcomm=runc:[0:PARENT] oom_score_adj=0
  runc:[1:CHILD]-20660   [000] ..... 25076.532384: sys_unshare(unshare_flags: 0x6c020000)
";

    #[test]
    fn docker_s_shim_and_runc_are_named_by_the_program_that_asked() {
        let events = parse(SHIM_AND_RUNC);
        assert_eq!(events.len(), 14);
        let got: Vec<(String, String)> = phases("docker", &events, 0)
            .into_iter()
            .map(|p| (p.name, p.program))
            .collect();
        let want = [
            ("containerd: starts the shim", "containerd-shim-runc-v2"),
            ("shim: runs runc", "runc"),
            ("runc: `runc init` re-executes", "exe"),
            // First seen here: named by the trace's comm column.
            ("runc init: unshare namespaces", "runc:[1:CHILD]"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        // The same events, later than `since`: nothing.
        assert!(phases("docker", &events, u64::MAX).is_empty());
        // Another backend's table does not apply.
        assert!(phases("oci:crun", &events, 0).is_empty());
    }

    #[test]
    fn a_cross_check_agrees_within_the_tolerance_and_not_beyond() {
        let traced = vec![TracedPhase {
            name: "workload: execve".into(),
            program: "workload".into(),
            pid: 1,
            event: "sched_process_exec".into(),
            t_ns: 10_000_000,
        }];
        let near = [("ready".to_string(), 10_500_000)];
        let far = [("ready".to_string(), 10_000_000 + TOLERANCE_NS + 1)];
        assert!(cross_check("process", &near, &traced)[0].agrees());
        assert!(!cross_check("process", &far, &traced)[0].agrees());
    }
}
