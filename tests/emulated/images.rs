//! N instances of the lab's layered image on a student's machine (AMD-V and cgroup v2, emulated
//! here: see `tests/hosts/`), where Linux guests boot — on this CI's nested PVM they cannot.
//!
//! The machine gets a disk (the lab's disks and its VMs' image disks must live on one, not in
//! the machine's tmpfs root) and runs `lab run images` twice:
//!
//! 1. containers, `vm-linux` and `qemu` on KVM, N = 1, 2, 4, KSM off: each more container reads
//!    the image from the host's page cache, each more VM reads its own copy into its own memory;
//! 2. `vm-linux` again with `--ksm`: the lab turns KSM on for the ladder, the guests' RAM is
//!    marked mergeable, and the results say how many pages KSM merged and how long it took;
//! 3. `vm-linux` with `--shared-disk`: every guest boots from one read-only disk of the image.
//!
//! Then that the KSM setting came back and nothing is left (mounts, disks, cgroups).
//!
//! ```text
//! cargo test --release --test emulated -- --include-ignored --nocapture images::
//! ```

use crate::hosts::{Check, CheckResult, EmulatedHost, Report};
use isolab_report::summary::{density, DensitySeries};
use std::path::Path;

/// The top of each ladder: 1, 2, 4.
const MAX: u32 = 4;
/// MiB of the emulated machine's disk: the image's master and one copy per VM, with room.
const DISK_MIB: u64 = 2048;
/// Where the disk is mounted: the lab's default disk directory.
const DISK_AT: &str = "/var/tmp";

/// `lab run images` on `backends` with `options`, printing its results.
fn images(name: &str, backends: &str, options: &str) -> Check {
    let out = format!("/tmp/{name}");
    Check::printing_results(
        name,
        2400,
        &format!(
            "lab run images --backends {backends} --max {MAX} {options} --no-progress --out {out}"
        ),
        &out,
    )
}

fn checks() -> Vec<Check> {
    vec![
        Check::new("ksm-before", 10, "cat /sys/kernel/mm/ksm/run"),
        images("images", "container,vm-linux,qemu", ""),
        images("images-ksm", "vm-linux", "--ksm"),
        // One read-only disk for every guest of the lab's own VMM (a small image: it is the
        // device path that is checked, not the memory).
        images("images-shared", "vm-linux", "--shared-disk --image-mib 8"),
        Check::new("ksm-after", 10, "cat /sys/kernel/mm/ksm/run"),
        Check::new(
            "left-behind",
            60,
            &format!(
                r#"ps -o pid,comm | grep -E 'lab|qemu|isolab' | grep -v grep
find /sys/fs/cgroup -mindepth 2 -type d -path '*isolab*'
grep -E 'isolab|overlay' /proc/mounts
ls -d /tmp/isolab* {DISK_AT}/isolab* 2>/dev/null
true"#
            ),
        ),
    ]
}

/// A backend's ladder in `series`, which must have reached the top.
fn ladder<'a>(
    series: &'a [DensitySeries],
    backend: &str,
    check: &CheckResult,
) -> &'a DensitySeries {
    let d = series
        .iter()
        .find(|d| d.backend == backend)
        .unwrap_or_else(|| panic!("no {backend} ladder: {}", check.explain()));
    assert_eq!(
        d.max_n(),
        MAX,
        "{backend} reached N = {MAX}: {}",
        check.explain()
    );
    d
}

/// Host MiB each more instance costs (the median of the ladder's steps).
fn per_instance_mib(d: &DensitySeries) -> f64 {
    d.per_instance_on_image
        .as_ref()
        .map(|s| s.median / 1048576.0)
        .unwrap_or_else(|| panic!("{}: no per-instance figure on the image", d.backend))
}

fn summarise(report: &Report, plain: &[DensitySeries], ksm: &[DensitySeries]) -> String {
    let mut s = report.summary("emulated host (images)", |_| false);
    for (title, series) in [("KSM off", plain), ("--ksm", ksm)] {
        for d in series {
            let top = d.top();
            s.push_str(&format!(
                "{title}: {:<9} host MiB per more instance {:.2}; at N = {}: image in page cache {:.1} MiB, KSM pages sharing {}, settled in {}\n",
                d.backend,
                d.per_instance_on_image.as_ref().map_or(f64::NAN, |m| m.median / 1048576.0),
                d.max_n(),
                top.and_then(|t| t.image.image_cache_bytes).unwrap_or(0) as f64 / 1048576.0,
                top.and_then(|t| t.image.ksm_pages_sharing).map_or("-".into(), |p| p.to_string()),
                top.and_then(|t| t.image.ksm_settle_ns).map_or("-".into(), |n| format!("{:.1} s", n as f64 / 1e9)),
            ));
        }
    }
    s
}

#[test]
#[ignore = "boots an emulated AMD-V machine (QEMU TCG) with Linux guests for tens of minutes; .ci/run runs it"]
fn n_instances_of_one_image_on_an_emulated_amd_v_machine_with_and_without_ksm() {
    let work = std::env::temp_dir().join(format!("isolab-emulated-images-{}", std::process::id()));
    let host = EmulatedHost::new(Path::new(env!("CARGO_BIN_EXE_lab")), &work)
        .and_then(EmulatedHost::with_guest_devices)
        .and_then(|h| h.with_disk(DISK_MIB, DISK_AT))
        .unwrap_or_else(|e| panic!("this test needs an emulated host: {e}"));
    let report = host
        .run(&checks())
        .unwrap_or_else(|e| panic!("the emulated host did not run: {e}"));
    let ok = |c: &CheckResult| assert!(c.passed(), "{}", c.explain());
    for name in ["images", "images-ksm", "images-shared"] {
        ok(report.check(name));
    }
    let plain = density(&report.check("images").results(&work));
    let merged = density(&report.check("images-ksm").results(&work));
    let summary = summarise(&report, &plain, &merged);
    eprintln!("{summary}");
    std::fs::write(work.join("summary.txt"), &summary).unwrap();

    // Every ladder reached the top, and each step was measured on the image.
    let images = report.check("images");
    let container = per_instance_mib(ladder(&plain, "container", images));
    let vm = per_instance_mib(ladder(&plain, "vm-linux", images));
    per_instance_mib(ladder(&plain, "qemu", images));
    // The containers share one page cache: a more container costs a small fraction of a more VM.
    assert!(
        container < 0.1 * vm,
        "a container's host memory per instance ({container:.2} MiB) is under a tenth of a VM's ({vm:.2} MiB)"
    );
    // Without --ksm nothing is merged or recorded; with it, KSM merged pages of the guests.
    assert!(plain
        .iter()
        .flat_map(|d| &d.steps)
        .all(|s| s.image.ksm_pages_sharing.is_none()));
    let with_ksm = ladder(&merged, "vm-linux", report.check("images-ksm"));
    let sharing = with_ksm
        .top()
        .and_then(|t| t.image.ksm_pages_sharing)
        .expect("KSM's pages_sharing at the top of the --ksm ladder");
    assert!(sharing > 0, "KSM merged pages of {MAX} guests: {summary}");

    // The guests of the lab's VMM booted from one read-only disk, all the way up the ladder.
    let shared_check = report.check("images-shared");
    let shared = shared_check.results(&work);
    assert!(
        shared.image.as_ref().is_some_and(|i| i.vm_disk_shared),
        "the results record the shared disk: {}",
        shared_check.explain()
    );
    ladder(&density(&shared), "vm-linux", shared_check);

    // The host's KSM setting is what it was, and nothing is left behind.
    assert_eq!(
        report.check("ksm-before").text().trim(),
        report.check("ksm-after").text().trim(),
        "KSM's run setting came back"
    );
    report.assert_nothing_left_behind();
    std::fs::remove_dir_all(&work).unwrap();
}
