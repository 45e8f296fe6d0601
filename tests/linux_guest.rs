//! Linux guests end to end: the `qemu` backend boots the host's kernel with the lab's initramfs
//! and runs the workload as `/init`; the checksum must equal the native one.
//!
//! On this lab's CI machines there is no hardware virtualization, so QEMU emulates (TCG): slow
//! (seconds per boot) but complete. The kernel is the newest /boot/vmlinuz-* (CI installs Debian's
//! linux-image-amd64) — never one `lab kernel build` left in the cache, so the tests boot what CI
//! provides; `ISOLAB_TEST_KERNEL` overrides it. Without a kernel or QEMU the tests fail with the
//! reason. The tests of `vm-linux` check what this machine's KVM allows: a full boot with
//! hardware virtualization, an explained stop on nested PVM; `tests/emulated/host.rs` runs the
//! lab on an emulated AMD-V machine too, where `vm-linux` boots fully.

mod common;

use common::{native, serial, temp_dir, HostState};
use isolab_backends::lab::Lab;
use isolab_backends::qemu::{Accel, Qemu};
use isolab_backends::{Backend, Limits};
use isolab_linux_guest::guest_kernel;
use isolab_payload::{Kernel, Spec};
use isolab_results::{info, Outcome};
use std::path::PathBuf;

/// A lab in `temp` whose guests boot the test kernel; fails with the reason where this machine
/// has no kernel to boot or no QEMU (CI installs both).
fn guest_lab(temp: &std::path::Path) -> Lab {
    let mut lab = Lab::in_dir(temp).unwrap();
    let given = std::env::var_os("ISOLAB_TEST_KERNEL").map(PathBuf::from);
    let image = match given {
        Some(path) => guest_kernel::KernelImage::open(&path, guest_kernel::Origin::Given),
        None => guest_kernel::find_in_boot(
            std::path::Path::new("/boot"),
            &isolab_host::facts::kernel_release(),
        ),
    };
    match image {
        Ok(image) => lab.settings.guest_kernel = Some(image.path),
        Err(e) => panic!("these tests need a kernel to boot (apt install linux-image-amd64): {e}"),
    }
    assert!(
        isolab_backends::qemu::qemu_path().is_some(),
        "these tests need qemu-system-x86_64 (apt install qemu-system-x86)"
    );
    lab
}

#[test]
fn qemu_boots_the_workload_to_ready_and_done_with_the_native_checksum() {
    let _serial = serial();
    let temp = temp_dir("qemu-boot");
    let before = HostState::now(&temp);
    let lab = guest_lab(&temp);
    let console = temp.join("console.log");
    let qemu = Qemu::default().with_console_log(console.clone());
    // hold=1: the lab samples memory at ready and done and releases the guest each time,
    // through QEMU's serial input, which must reach /init's read of its console.
    let mut spec = Spec::new(Kernel::Mem, 4, 2);
    spec.hold = true;
    let run = qemu.run(&lab, &spec, &Limits::default()).unwrap();

    assert_eq!(run.outcome, Outcome::Completed, "{run:#?}");
    assert_eq!(
        run.output,
        Some(native(&spec)),
        "the guest computed what the host computes"
    );
    // The phases of a Linux guest, in this order on the host clock.
    let t = |name: &str| {
        run.timeline
            .at(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", run.timeline))
    };
    let order = [
        "spawn", "cgroup", "exec", "init", "ready", "start", "done", "exited",
    ];
    for pair in order.windows(2) {
        assert!(t(pair[0]) <= t(pair[1]), "{} after {}", pair[0], pair[1]);
    }
    assert!(run.memory_at_ready.is_some() && run.memory_at_done.is_some());
    let peak = run
        .cgroup_peak_bytes
        .expect("QEMU ran in the instance's cgroup");
    assert!(
        peak > 16 << 20,
        "QEMU and its guest RAM are charged: {peak}"
    );
    // The run says what it booted and whether it was emulated.
    assert!(run.info[info::GUEST_CMDLINE].contains(" -- kernel=mem mib=4 iters=2 hold=1"));
    assert!(run.info.contains_key(info::GUEST_KERNEL));
    let emulated = run.info.contains_key(info::EMULATED);
    assert_eq!(emulated, Accel::for_host() == Accel::Tcg);
    // The console log holds the markers, as the guest printed them.
    let log = std::fs::read_to_string(&console).unwrap();
    assert!(log.contains("isolab phase name=init"), "{log}");
    assert!(log.contains("isolab done checksum="), "{log}");

    drop(lab);
    std::fs::remove_file(&console).unwrap();
    assert_eq!(
        HostState::now(&temp),
        before,
        "the run left something behind"
    );
    std::fs::remove_dir_all(&temp).unwrap();
}

#[test]
fn a_sleeping_guest_ends_when_the_lab_lets_go() {
    let _serial = serial();
    let temp = temp_dir("qemu-sleep");
    let lab = guest_lab(&temp);
    let spec = Spec::default_for(Kernel::Sleep);
    let mut instance = Qemu::default()
        .start(&lab, &spec, &Limits::default())
        .unwrap();
    instance.wait_ready().unwrap();
    // Closing the control pipe must reach the guest (the relay sends a last byte), so the
    // guest finishes by itself instead of waiting for the lab's timeout.
    let started = std::time::Instant::now();
    let run = instance.stop().unwrap();
    assert!(
        run.timeline.at("done").is_some(),
        "the guest saw the end and reported done: {run:#?}"
    );
    assert!(
        started.elapsed() < lab.settings.timeout / 2,
        "stopped by the guest, not by the timeout"
    );
    drop(lab);
    std::fs::remove_dir_all(&temp).unwrap();
}

/// The lab's own VMM boots the kernel as far as this machine's KVM allows. With hardware
/// virtualization, all the way: the workload's checksum equals the native one. On nested PVM
/// (this lab's CI) until the ring-0 emulator gives up; by then the console must show the banner,
/// the exact command line the lab passed and the e820 map the lab built, and the run must end as
/// an explained error, in time.
#[test]
fn vm_linux_boots_as_far_as_this_kvm_allows() {
    use isolab_host::facts::KvmKind;
    match KvmKind::detect() {
        KvmKind::NestedPvm => vm_linux_under_nested_pvm(),
        kind if kind.is_hardware() => vm_linux_on_hardware(),
        kind => panic!(
            "this test needs KVM (hardware or nested PVM); here: {}",
            kind.label()
        ),
    }
}

fn vm_linux_under_nested_pvm() {
    use isolab_backends::vm_linux::VmLinux;
    use isolab_backends::BackendError;
    use isolab_vmm::linux::boot::e820_map;
    let _serial = serial();
    let temp = temp_dir("vm-linux-pvm");
    let before = HostState::now(&temp);
    let lab = guest_lab(&temp);
    let console = temp.join("console.log");
    let backend = VmLinux::default().with_console_log(console.clone());
    let spec = Spec::default_for(Kernel::Ready);
    let started = std::time::Instant::now();
    let err = backend
        .run(&lab, &spec, &Limits::default())
        .expect_err("a Linux guest cannot finish booting on nested PVM");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(120), "took {took:?}");
    match &err {
        BackendError::Instance { step, detail } => {
            assert!(
                step == "guest fault" || step == "guest timeout",
                "{step}: {detail}"
            );
            assert!(detail.contains("nested PVM"), "{detail}");
            assert!(detail.contains("rip="), "where the guest stopped: {detail}");
        }
        other => panic!("expected the VMM's explained stop, got {other}"),
    }
    let log = std::fs::read_to_string(&console).unwrap();
    assert!(log.contains("Linux version "), "no banner in:\n{log}");
    let cmdline = backend.cmdline(&spec);
    assert!(
        log.contains(&format!("Command line: {cmdline}")),
        "the command line the lab passed ({cmdline}) is not in:\n{log}"
    );
    for entry in e820_map(isolab_linux_guest::ram_bytes(&spec)) {
        assert!(
            log.contains(&entry.linux_line()),
            "{} not in:\n{log}",
            entry.linux_line()
        );
    }
    // The guest was told it runs on KVM (the hypervisor bit and KVM's CPUID leaves).
    assert!(log.contains("Hypervisor detected: KVM"), "{log}");
    eprintln!("vm-linux under nested PVM: stopped after {took:?}: {err}");
    drop(lab);
    std::fs::remove_file(&console).unwrap();
    assert_eq!(
        HostState::now(&temp),
        before,
        "the run left something behind"
    );
    std::fs::remove_dir_all(&temp).unwrap();
}

fn vm_linux_on_hardware() {
    use isolab_backends::vm_linux::VmLinux;
    let _serial = serial();
    let temp = temp_dir("vm-linux-hw");
    let lab = guest_lab(&temp);
    let mut spec = Spec::new(Kernel::Mem, 4, 2);
    spec.hold = true;
    let run = VmLinux::default()
        .run(&lab, &spec, &Limits::default())
        .unwrap();
    assert_eq!(run.outcome, Outcome::Completed, "{run:#?}");
    assert_eq!(run.output, Some(native(&spec)));
    for phase in ["kernel_entry", "init", "ready", "start", "done", "reboot"] {
        assert!(run.timeline.at(phase).is_some(), "no {phase}: {run:#?}");
    }
    assert!(!run.info.contains_key(info::EMULATED));
    let touched: u64 = run.info[info::GUEST_TOUCHED_BYTES].parse().unwrap();
    assert!(
        touched > 0,
        "guest RAM touched is recorded under its schema key"
    );
    drop(lab);
    std::fs::remove_dir_all(&temp).unwrap();
}

/// `lab run --backends vm-linux` refuses on nested PVM with the reason (exit status 2, one
/// line); with hardware virtualization it runs.
#[test]
fn lab_run_with_vm_linux_refuses_on_nested_pvm_and_runs_on_hardware() {
    use isolab_host::facts::KvmKind;
    // The lab child would show up in another test's count of this process's children.
    let _serial = serial();
    let temp = temp_dir("vm-linux-refuse");
    let kind = KvmKind::detect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args([
            "run",
            "startup",
            "--backends",
            "vm-linux",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--no-progress",
            "--out",
        ])
        .arg(temp.join("reports"))
        .env("TMPDIR", &temp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match kind {
        KvmKind::NestedPvm => {
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains("vm-linux") && stderr.contains("nested PVM"),
                "{stderr}"
            );
            assert!(
                stderr.contains("--force"),
                "the way to try anyway: {stderr}"
            );
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        }
        kind if kind.is_hardware() => assert!(out.status.success(), "{stderr}"),
        kind => panic!("this test needs KVM; here: {}", kind.label()),
    }
    std::fs::remove_dir_all(&temp).unwrap();
}
