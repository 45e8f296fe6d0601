//! A disk and a network card for Linux guests on a student's machine (AMD-V, emulated here: see
//! `tests/hosts/`): `vm-linux` — the lab's own VMM, whose guests cannot boot on this CI's
//! nested PVM — and `qemu` on KVM boot Debian's kernel with a virtio disk and a virtio network
//! card on a tap, and the guest finds `/dev/vda` and `eth0`. The run's exit counts say where
//! the devices' notifications went: through KVM's ioeventfds by default, as MMIO exits to the
//! vCPU thread with `ISOLAB_VIRTIO_NOTIFY=exit`.
//!
//! The probes are booted by `examples/guest_devices.rs` (built here, carried inside), which
//! makes the disk file and the tap the way the lab does. Then the lab's own `lab run throughput`
//! runs the four device kernels on a plain process, a container, `vm-linux` and `qemu` side by
//! side: same checksums everywhere, and the rates compared.
//!
//! ```text
//! cargo test --release --test emulated -- --include-ignored --nocapture devices::
//! ```

use crate::hosts::{Check, CheckResult, EmulatedHost};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the example is put inside the emulated machine.
const GUEST_DEVICES: &str = "/usr/local/bin/guest-devices";

/// The example program, built in the same profile as the lab under test.
fn example() -> PathBuf {
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    let dir = lab.parent().expect("the lab's directory");
    let release = dir.ends_with("release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--example", "guest_devices"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo");
    assert!(
        status.success(),
        "cargo build --example guest_devices failed"
    );
    let path = dir.join("examples/guest_devices");
    assert!(path.is_file(), "no {}", path.display());
    path
}

/// The kernels that use the devices.
const DEVICE_KERNELS: [&str; 4] = ["disk-seq", "disk-rand", "net-stream", "net-rr"];
/// MiB of the emulated machine's disk: one disk kernel's 64 MiB file at a time, with room.
const DISK_MIB: u64 = 512;
/// The device kernels through `lab run throughput` on the emulated machine: a plain process, a
/// container on its veth, vm-linux and qemu on their taps, side by side. One round: each VM's
/// kernel takes tens of seconds under emulation, and only the comparison means something here.
/// Smaller runs than the defaults: a guest's 4 KiB read or round trip costs milliseconds under
/// nested emulation, so 20,000 of them (or 256 MiB streamed) outlast the two-minute timeout.
const THROUGHPUT: &str = "lab run throughput --kernels disk-seq,disk-rand,net-stream,net-rr \
     --requests 2000 --stream-mib 32 \
     --backends process,container,vm-linux,qemu --runs 1 --warmup 0 --no-progress --out /tmp/throughput";

fn checks() -> Vec<Check> {
    let boot = |name: &str, env: &str, backend: &str, kernel: &str| {
        Check::new(
            name,
            420,
            &format!("{env} {GUEST_DEVICES} {backend} {kernel}"),
        )
    };
    let exit = "ISOLAB_VIRTIO_NOTIFY=exit";
    let mut checks = vec![
        Check::new("kernel-show", 60, "lab kernel show"),
        boot("vm-linux-devices", "", "vm-linux", "probe"),
        boot("vm-linux-devices-exit", exit, "vm-linux", "probe"),
        boot("qemu-devices", "", "qemu", "probe"),
    ];
    checks.push(Check::printing_results(
        "throughput",
        3600,
        THROUGHPUT,
        "/tmp/throughput",
    ));
    checks.push(Check::new(
        "left-behind",
        60,
        r#"ps -o pid,comm | grep -E 'lab|qemu|isolab|guest-dev' | grep -v grep
ls -d /tmp/isolab* /tmp/.isolab* 2>/dev/null
ip link 2>/dev/null | grep -E 'isolab|tap'
true"#,
    ));
    checks
}

/// The value of `info KEY = VALUE` (or `probe KEY = VALUE`) lines the example printed.
fn value(c: &CheckResult, kind: &str, key: &str) -> Option<String> {
    c.output.iter().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{kind} {key} = "))
            .map(str::to_string)
    })
}

#[test]
#[ignore = "boots an emulated AMD-V machine (QEMU TCG) for several minutes; .ci/run runs it"]
fn vm_linux_and_qemu_give_a_guest_a_disk_and_a_network_card() {
    let work = std::env::temp_dir().join(format!("isolab-emulated-devices-{}", std::process::id()));
    let example = example();
    let host = EmulatedHost::new(Path::new(env!("CARGO_BIN_EXE_lab")), &work)
        .and_then(EmulatedHost::with_guest_devices)
        // The lab keeps its disks on a disk (`--disk-dir`, /var/tmp), not in the machine's tmpfs.
        .and_then(|h| h.with_disk(DISK_MIB, "/var/tmp"))
        .unwrap_or_else(|e| panic!("this test needs an emulated host: {e}"))
        .with_program(&example, GUEST_DEVICES);
    let report = host
        .run(&checks())
        .unwrap_or_else(|e| panic!("the emulated host did not run: {e}"));
    let keep = [
        "info exits",
        "info virtio",
        "info disk",
        "checksum",
        "peer ",
    ];
    let mut summary = report.summary("emulated host (devices)", |l| {
        keep.iter().any(|p| l.starts_with(p))
    });
    let throughput = report.check("throughput");
    let results = throughput.results(&work);
    let rows = isolab_report::summary::throughput(&results);
    summary.push_str(&throughput_summary(&rows));
    eprintln!("{summary}");
    std::fs::write(work.join("summary.txt"), &summary).unwrap();

    let ok = |c: &CheckResult| assert!(c.passed(), "{}", c.explain());
    let show = report.check("kernel-show");
    ok(show);
    assert!(
        show.text().contains("virtio_blk    module") && show.text().contains("ACPI"),
        "{}",
        show.explain()
    );
    for name in ["vm-linux-devices", "vm-linux-devices-exit", "qemu-devices"] {
        let c = report.check(name);
        ok(c);
        assert_eq!(
            value(c, "probe", "block_devices").as_deref(),
            Some("vda"),
            "{}",
            c.explain()
        );
        let interfaces = value(c, "probe", "interfaces").unwrap_or_default();
        assert!(
            interfaces.split(',').any(|i| i == "eth0"),
            "{}",
            c.explain()
        );
    }
    // The lab's VMM counts its devices' exits: register accesses always, notifications through
    // ioeventfds by default, as exits to the vCPU thread when asked.
    let vm = report.check("vm-linux-devices");
    for key in ["exits_mmio_blk", "exits_mmio_net", "exits_notify_blk"] {
        let n: u64 = value(vm, "info", key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}: {}", vm.explain()));
        assert!(n > 0, "{key} = {n}");
    }
    // The lab's own experiment ran every kernel on every backend, each sample completed, and
    // every backend computed the same checksums (the peer's byte counts included).
    ok(throughput);
    for kernel in DEVICE_KERNELS {
        for backend in ["process", "container", "vm-linux", "qemu"] {
            let row = rows
                .iter()
                .find(|r| r.workload.kernel == kernel && r.backend == backend)
                .unwrap_or_else(|| panic!("no {kernel} on {backend}: {summary}"));
            assert_eq!(row.failed, 0, "{kernel} on {backend}: {summary}");
            assert!(row.rate.is_some(), "{kernel} on {backend}: {summary}");
        }
    }
    let mismatches = isolab_report::summary::checksum_mismatches(&results);
    assert!(mismatches.is_empty(), "{mismatches:?}");
    let exit = report.check("vm-linux-devices-exit");
    assert!(
        value(exit, "info", "exits_notify_blk").is_some(),
        "{}",
        exit.explain()
    );
    report.assert_nothing_left_behind();
    std::fs::remove_dir_all(&work).unwrap();
}

/// Each device kernel's rate on each backend (the median of its rounds), and the comparisons the
/// lab is after: a container against the lab's microVM, the lab's VMM against QEMU.
fn throughput_summary(rows: &[isolab_report::summary::ThroughputRow]) -> String {
    let mut s = String::from("lab run throughput on the emulated machine:\n");
    for kernel in DEVICE_KERNELS {
        let rate = |backend: &str| {
            rows.iter()
                .find(|r| r.workload.kernel == kernel && r.backend == backend)
                .and_then(|r| r.rate.as_ref())
                .map(|r| r.median)
        };
        let ratio = |a: &str, b: &str| match (rate(a), rate(b)) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "  {kernel:<10} rate: process {:?}, container {:?}, vm-linux {:?}, qemu {:?}; container÷vm-linux {}, vm-linux÷qemu {}\n",
            rate("process"),
            rate("container"),
            rate("vm-linux"),
            rate("qemu"),
            ratio("container", "vm-linux"),
            ratio("vm-linux", "qemu"),
        ));
    }
    s
}
