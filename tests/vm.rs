//! The `vm` backend end to end: the lab forks a VMM into its own cgroup, the VMM boots a real
//! microVM on /dev/kvm, and the guest — the real bare guest, or a tiny fixture — runs in it.
//!
//! Every test needs a usable /dev/kvm and cgroups (CI has both); on a machine without them each
//! test fails with the reason, never passes without having run.

use isolab_backends::vm::Vm;
use isolab_backends::{Backend, BackendError, Limits, Outcome, Run};
use isolab_kernels::hypercall::status;
use isolab_kernels::{Error, Shim};
use isolab_payload::{Kernel, Output, Spec};
use isolab_vmm::fixtures;
use isolab_vmm::loader::Guest;
use std::time::Duration;

mod common;
use common::vm_lab as lab;

/// The kernels run natively, in this process, with an in-memory shim: what every backend must
/// reproduce bit for bit.
#[derive(Default)]
struct Native {
    file: Vec<u8>,
}

impl Shim for Native {
    fn enter_kernel(&mut self, x: u64) -> u64 {
        x
    }
    fn wait_host(&mut self) -> Result<(), Error> {
        Ok(())
    }
    fn io_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let end = offset as usize + data.len();
        if self.file.len() < end {
            self.file.resize(end, 0);
        }
        self.file[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn io_sync(&mut self) -> Result<(), Error> {
        Ok(())
    }
    fn io_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        data.copy_from_slice(&self.file[offset as usize..offset as usize + data.len()]);
        Ok(())
    }
}

fn native(spec: &Spec) -> Output {
    let n = spec.arena_bytes() as usize;
    let mut buf = vec![0u8; n + 8];
    let at = buf.as_ptr().align_offset(8);
    isolab_kernels::run(spec, &mut Native::default(), &mut buf[at..at + n]).unwrap()
}

fn completed(run: &Run) -> Output {
    assert_eq!(run.outcome, Outcome::Completed, "{run:#?}");
    run.output.expect("a completed run has an output")
}

#[test]
fn the_guest_computes_exactly_what_the_host_computes() {
    let (_turn, lab) = lab();
    let spec = Spec::default_for(Kernel::Cpu);
    let run = Vm::default().run(&lab, &spec, &Limits::default()).unwrap();
    // The native value straight from the shared crate: same seed, same iterations.
    let expected = isolab_kernels::compute::cpu(spec.iters, spec.seed);
    assert_eq!(completed(&run), expected);
    assert!(run.work_ns().unwrap() > 0);
}

#[test]
fn every_kernel_runs_in_a_microvm_with_the_native_checksum() {
    let (_turn, lab) = lab();
    for spec in [
        Spec::new(Kernel::Ready, 0, 0),
        Spec::new(Kernel::Mem, 4, 2),
        Spec::new(Kernel::Random, 4, 100_000),
        Spec::new(Kernel::Syscall, 0, 500),
        Spec::new(Kernel::Io, 1, 0),
    ] {
        let run = Vm::default().run(&lab, &spec, &Limits::default()).unwrap();
        assert_eq!(completed(&run), native(&spec), "{spec}");
        // Each call of the syscall kernel is one VM exit, counted by the VMM.
        if spec.kernel == Kernel::Syscall {
            assert_eq!(run.info["exits_enter_kernel"], "500");
        }
        if spec.kernel == Kernel::Io {
            assert_eq!(run.info["exits_io_write"], "16", "1 MiB in 64 KiB writes");
            assert_eq!(run.info["exits_io_sync"], "1");
        }
    }
    // The scratch file was unlinked as soon as it was made: nothing is left behind.
    let left: Vec<_> = std::fs::read_dir(lab.scratch_dir()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_run_has_every_phase_in_order_and_reports_its_cost() {
    let (_turn, lab) = lab();
    let run = Vm::default()
        .run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default())
        .unwrap();
    completed(&run);
    let names: Vec<&str> = run
        .timeline
        .phases
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let expected = [
        "spawn",
        "cgroup",
        "fork",
        "kvm_open",
        "vm_created",
        "memory_mapped",
        "vcpu_created",
        "guest_loaded",
        "first_entry",
        "ready",
        "done",
        "exited",
    ];
    assert_eq!(names, expected);
    let times: Vec<u64> = run.timeline.phases.iter().map(|p| p.t_ns).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "one clock: {times:?}"
    );
    let number = |key: &str| -> u64 {
        run.info
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", run.info))
            .parse()
            .unwrap()
    };
    assert_eq!(number("guest_ram_bytes"), 2 << 20);
    let touched = number("guest_touched_bytes");
    assert!(touched > 0 && touched <= 2 << 20, "{touched}");
    assert_eq!(
        number("vmm_overhead_bytes"),
        number("vmm_uss_bytes") - touched
    );
    // A forked VMM shares most of its pages with the lab: RSS ≥ PSS ≥ USS, strictly here.
    assert!(number("vmm_rss_bytes") > number("vmm_pss_bytes"));
    assert!(number("vmm_pss_bytes") > number("vmm_uss_bytes"));
    assert_eq!(
        number("exits_total"),
        3,
        "ready, done, exit: {:?}",
        run.info
    );
    assert!(run.info.contains_key("kvm"));
    assert!(run.cgroup_peak_bytes.unwrap() > 0);
}

#[test]
fn probe_reports_a_bare_machine_and_who_answered() {
    let (_turn, lab) = lab();
    let run = Vm::default()
        .run(&lab, &Spec::default_for(Kernel::Probe), &Limits::default())
        .unwrap();
    let out = completed(&run);
    assert_eq!(out.checksum, run.probe.len() as u64);
    let fact = |key: &str| {
        run.probe
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert!(fact("answered_by").starts_with("vmm"));
    assert!(fact("kernel_release").starts_with("none"));
    assert!(fact("pid").starts_with("none"));
    assert!(fact("interfaces").starts_with("none"));
    assert_eq!(fact("cpus"), "1");
}

/// The `sleep` kernel waits for the host in a hypercall; the VMM blocks in `read(2)`, so a
/// sleeping microVM is a sleeping process that uses no CPU.
#[test]
fn a_sleeping_microvm_sleeps_in_the_kernel() {
    let (_turn, lab) = lab();
    let spec = Spec::default_for(Kernel::Sleep);
    let mut instance = Vm::default()
        .start(&lab, &spec, &Limits::default())
        .unwrap();
    instance.wait_ready().unwrap();
    let pid = instance.main_pid().as_raw();
    // Wait until the guest is in its wait_host hypercall: the VMM is then asleep ('S').
    let stat = || {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<String> = text[text.rfind(')').unwrap() + 2..]
            .split(' ')
            .map(str::to_string)
            .collect();
        // state, utime + stime (clock ticks)
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        (fields[0].clone(), ticks)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stat().0 != "S" {
        assert!(std::time::Instant::now() < deadline, "never went to sleep");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_, before) = stat();
    std::thread::sleep(Duration::from_millis(300));
    let (state, after) = stat();
    assert_eq!(state, "S");
    assert!(
        after <= before + 1,
        "a sleeping VMM used CPU: {before} → {after} ticks"
    );
    let run = instance.stop().unwrap();
    assert!(
        run.output.is_some(),
        "after the go-ahead the guest finishes"
    );
}

#[test]
fn a_held_microvm_is_sampled_at_ready_and_done() {
    let (_turn, lab) = lab();
    let mut spec = Spec::new(Kernel::Mem, 8, 1);
    spec.hold = true;
    let run = Vm::default().run(&lab, &spec, &Limits::default()).unwrap();
    completed(&run);
    let (ready, done) = (run.memory_at_ready.unwrap(), run.memory_at_done.unwrap());
    // The guest touched its 8 MiB arena between the two samples: the VMM's USS grew by it.
    let grew = done.processes.uss_bytes - ready.processes.uss_bytes;
    assert!(grew >= 8 << 20, "USS grew by {grew} bytes");
}

#[test]
fn a_guest_fault_is_an_instance_error_saying_what_and_where() {
    let (_turn, lab) = lab();
    let vm = Vm::default().with_guest(Guest::Raw(&fixtures::NULL_READ));
    match vm.run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default()) {
        Err(BackendError::Instance { step, detail }) => {
            assert_eq!(step, "guest fault");
            assert!(
                detail.starts_with("page fault (#PF, vector 14) on a read of 0x0"),
                "{detail}"
            );
            let rip = format!("rip={:#x}", fixtures::NULL_READ_RIP);
            assert!(detail.contains(&rip), "{detail}");
        }
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

#[test]
fn a_guest_that_never_finishes_is_stopped_by_the_vmm() {
    let (_turn, lab) = lab();
    let vm = Vm::default()
        .with_guest(Guest::Raw(&fixtures::SPIN))
        .with_time_limit(Duration::from_millis(500));
    match vm.run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default()) {
        Err(BackendError::Instance { step, detail }) => {
            assert_eq!(step, "guest timeout");
            assert!(detail.contains("500ms"), "{detail}");
            let rip = format!("rip={:#x}", fixtures::SPIN_RIP);
            assert!(detail.contains(&rip), "{detail}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn out_of_range_guest_buffers_get_errors_not_a_crash() {
    let (_turn, lab) = lab();
    let vm = Vm::default().with_guest(Guest::Raw(&fixtures::BAD_BUFFERS));
    let run = vm
        .run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default())
        .unwrap();
    let out = completed(&run);
    assert_eq!(
        (out.checksum, out.ops, out.bytes),
        (status::EFAULT, status::EFAULT, status::EINVAL)
    );
}

#[test]
fn a_machine_too_small_for_its_kernel_is_refused_before_it_starts() {
    let (_turn, lab) = lab();
    let vm = Vm::default().with_ram(3 << 20);
    match vm.run(&lab, &Spec::default_for(Kernel::Ready), &Limits::default()) {
        Err(BackendError::Instance { step, detail }) => {
            assert_eq!(step, "guest memory");
            assert!(detail.contains("2 MiB"), "{detail}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Enough to build, too little for the kernel: the guest's own error, as the workload's.
    let vm = Vm::default().with_ram(4 << 20);
    match vm.run(&lab, &Spec::new(Kernel::Mem, 8, 1), &Limits::default()) {
        Err(BackendError::Instance { step, detail }) => {
            assert_eq!(step, "mem");
            assert!(detail.starts_with("ArenaTooSmall"), "{detail}");
        }
        other => panic!("expected the kernel's error, got {other:?}"),
    }
}

/// On cgroup v2 the VMM is born in its cgroup: the lab's fork, single-threaded, makes it with
/// `clone3(CLONE_INTO_CGROUP | CLONE_PARENT)` (see `vmm::launch`), so it is the lab's own child,
/// already in the instance's cgroup, and answers as usual. Here the v2 code runs on this
/// machine's unified tree (on a hybrid machine, the controller-less one beside v1).
#[test]
fn a_vmm_is_born_in_its_cgroup_on_v2_and_is_the_labs_child() {
    let (_turn, lab) = lab();
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let root = if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        std::path::PathBuf::from("/sys/fs/cgroup")
    };
    let base = root.join(format!("isolab-vm-v2-test-{}", std::process::id()));
    let lab = lab.with_cgroups(isolab_resources::cgroup::Hierarchy::v2_at(base.clone()));
    let mut instance = Vm::default()
        .start(&lab, &Spec::default_for(Kernel::Sleep), &Limits::default())
        .unwrap();
    instance.wait_ready().unwrap();
    let vmm = instance.main_pid();
    let cgroup = std::fs::read_to_string(format!("/proc/{vmm}/cgroup")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().to_string());
    let run = instance.stop().unwrap();
    assert!(
        matches!(run.outcome, Outcome::Completed | Outcome::Stopped),
        "{run:?}"
    );
    assert!(
        cgroup
            .lines()
            .any(|l| l.starts_with("0::") && l.contains("isolab-vm-v2-test-")),
        "the VMM is in the instance's v2 cgroup: {cgroup}"
    );
    assert_eq!(
        ppid,
        Some(std::process::id().to_string()),
        "the VMM is the lab's child (CLONE_PARENT), not its go-between's"
    );
    drop(lab);
    std::fs::remove_dir(&base).unwrap();
}
