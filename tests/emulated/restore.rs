//! Linux guests restored from snapshots, on the student's machine (AMD-V and cgroup v2,
//! emulated here: see `tests/hosts/`), where they boot — on this CI's nested PVM they cannot.
//!
//! `examples/restore` with `vm-linux` running `cpu`, and `disk-rand` (its virtio disk saved and
//! restored with its queues), each restored to its cold checksum; one with `net-rr`, refused
//! in one line; then one `lab run restore` with `vm-linux`, `qemu` on KVM (the lab's VMM saves the whole machine at `/init`'s
//! `ready` and maps the snapshot as guest RAM) and `container` (the cold reference), then
//! that nothing is left. It prints what the issue asks for: restored `vm-linux` ÷ its cold
//! boot and ÷ restored `qemu`, and host memory per more restored `vm-linux`; every restored
//! run must end with its backend's cold checksum.
//!
//! ```text
//! cargo test --test emulated -- --include-ignored --nocapture restore::
//! ```

use crate::hosts::{Check, EmulatedHost};
use isolab_report::restore::{per_more_instance, starts};
use std::path::Path;

/// The backends: the Linux guest of the lab's VMM, QEMU (on KVM here) restored from its
/// migration stream, and the container every start is held against.
const BACKENDS: &str = "vm-linux,qemu,container";
/// Where `examples/restore` is inside.
const EXAMPLE: &str = "/usr/local/bin/restore";

#[test]
#[ignore = "needs the emulated host: boots an emulated AMD-V machine (QEMU TCG) where Linux guests boot on KVM, for several minutes; .ci/run runs it"]
fn restored_linux_guests_start_from_their_snapshot_with_the_cold_checksums() {
    let work = std::env::temp_dir().join(format!("isolab-emulated-restore-{}", std::process::id()));
    let host = EmulatedHost::new(Path::new(env!("CARGO_BIN_EXE_lab")), &work)
        .and_then(EmulatedHost::with_guest_devices)
        // The disk kernels' disks live on a disk (`--disk-dir`, /var/tmp), not in the tmpfs.
        .and_then(|h| h.with_disk(512, "/var/tmp"))
        .unwrap_or_else(|e| panic!("this test needs an emulated host: {e}"))
        .with_program(&crate::criu::restore_example(), EXAMPLE);
    let out = "/tmp/restore";
    let checks = [
        // One cold run, one snapshot, one restore, with the consoles kept: the restored
        // guest's console is printed if its checksum is not the cold one's.
        Check::new(
            "example",
            600,
            &format!("mkdir -p /tmp/consoles; {EXAMPLE} --console /tmp/consoles vm-linux 2>&1"),
        ),
        // A guest with a disk: its virtio-blk device saved with its queues, and restored.
        // 2,000 random reads: the cold guest's run, under an emulator shared with three
        // others, must fit the instance's time limit.
        Check::new(
            "example-disk",
            600,
            &format!("mkdir -p /tmp/consoles-disk; {EXAMPLE} --kernel disk-rand --iters 2000 --console /tmp/consoles-disk vm-linux 2>&1"),
        ),
        // A guest with a network card is refused in one line: its command line holds its own
        // instance's address, and a restored instance has another.
        Check::new(
            "example-net",
            600,
            // 200 round trips: the cold guest's work is not what is tested.
            &format!("{EXAMPLE} --kernel net-rr --iters 200 vm-linux 2>&1"),
        ),
        Check::printing_results(
            "restore",
            1800,
            &format!(
                "lab run restore --backends {BACKENDS} --runs 2 --warmup 0 --counts 1,2 \
                 --no-progress --out {out}"
            ),
            out,
        ),
        Check::new(
            "left-behind",
            60,
            r#"ps -o pid,comm | grep -E 'lab|qemu|isolab' | grep -v grep
find /sys/fs/cgroup -mindepth 2 -type d -path '*isolab*'
grep -E 'isolab|overlay' /proc/mounts
ls -d /tmp/isolab* 2>/dev/null
true"#,
        ),
    ];
    let report = host
        .run(&checks)
        .unwrap_or_else(|e| panic!("the emulated host did not run: {e}"));
    for name in ["example", "example-disk"] {
        let example = report.check(name);
        eprintln!("{}", example.text());
        assert!(example.passed(), "{}", example.explain());
    }
    let net = report.check("example-net");
    eprintln!("{}", net.text());
    assert!(!net.passed(), "{}", net.explain());
    assert!(
        net.text().contains("this one would be with `net="),
        "{}",
        net.explain()
    );
    let run = report.check("restore");
    eprintln!("{}", run.text());
    assert!(run.passed(), "{}", run.explain());
    let results = run.results(&work);
    let rows = starts(&results);
    let row = |backend: &str| {
        rows.iter()
            .find(|r| r.backend == backend)
            .unwrap_or_else(|| panic!("no {backend} row: {rows:?}\n{}", run.text()))
    };
    let restored = row("vm-linux/restored");
    assert!(restored.n >= 2, "{restored:?}");
    // Each restored run's checksum is its cold run's, or the run is not measured: n counts
    // only measured ones.
    for r in &results.runs {
        if r.backend.contains("/restored") {
            assert_eq!(r.outcome, isolab_results::Outcome::Completed, "{r:?}");
        }
    }
    let qemu = row("qemu/restored");
    assert!(qemu.n >= 2, "{qemu:?}");
    let per_more = |backend: &str| {
        per_more_instance(&results, &format!("{backend}/restored"))
            .or_else(|| per_more_instance(&results, backend))
            .unwrap_or_else(|| panic!("host memory per more restored {backend}"))
    };
    let mib = |b: f64| b / f64::from(1 << 20);
    let ms = |ns: Option<f64>| ns.unwrap_or(f64::NAN) / 1e6;
    let summary = format!(
        "emulated host (restore): vm-linux cold {:.1} ms, restored {:.1} ms ({:.3}× its cold \
         boot, {:.3}× restored qemu), prefaulted {:.1} ms; qemu cold {:.1} ms, restored {:.1} \
         ms ({:.3}× its cold boot); container cold {:.1} ms; {:.2} MiB per more restored \
         vm-linux, {:.2} per more restored qemu; snapshot {}",
        ms(row("vm-linux").start_ns),
        ms(restored.start_ns),
        restored.over_cold.unwrap_or(f64::NAN),
        restored.start_ns.unwrap_or(f64::NAN) / qemu.start_ns.unwrap_or(f64::NAN),
        ms(row("vm-linux/restored+prefault").start_ns),
        ms(row("qemu").start_ns),
        ms(qemu.start_ns),
        qemu.over_cold.unwrap_or(f64::NAN),
        ms(row("container").start_ns),
        mib(per_more("vm-linux")),
        mib(per_more("qemu")),
        results
            .snapshots
            .iter()
            .map(|s| format!(
                "{} {:.1} MiB in {:.1} ms",
                s.backend,
                mib(s.bytes as f64),
                s.take_ns as f64 / 1e6
            ))
            .collect::<Vec<_>>()
            .join(", "),
    );
    eprintln!("{summary}");
    std::fs::write(work.join("summary.txt"), &summary).unwrap();
    assert!(restored.over_cold.is_some(), "{summary}");
    assert!(qemu.over_cold.is_some(), "{summary}");
    report.assert_nothing_left_behind();
}
