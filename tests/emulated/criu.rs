//! Containers checkpointed and restored by CRIU, on the emulated student machine: Debian's CRIU
//! 3.17.1 fails its own `criu check` on this CI's 6.18 kernel (its vDSO), and passes on
//! Debian 12's 6.1, which the emulated machine boots. The machine carries `criu` and `runc` with
//! their libraries, and `examples/criu_restore`, which runs each backend cold, checkpoints it,
//! restores it and prints both checksums.

use crate::hosts::{Check, EmulatedHost};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the example is inside.
const CRIU_RESTORE: &str = "/usr/local/bin/criu-restore";

/// The modules `criu check` needs, which a laptop loads on demand: the socket-diagnostics
/// modules CRIU asks the kernel about every socket with, tun and veth (it probes both), and
/// nf_tables (it tests that nftables sets take concatenated keys, to lock a restored tree's
/// network while it is rebuilt) — after crc32c, which its libcrc32c asks the crypto API for
/// (a soft dependency, `modules.softdep`, that `modules.dep` does not list).
const CRIU_MODULES: [&str; 11] = [
    "crypto/crc32c_generic",
    "drivers/net/tun",
    "drivers/net/veth",
    "net/netfilter/nf_tables",
    "net/ipv4/inet_diag",
    "net/ipv4/tcp_diag",
    "net/ipv4/udp_diag",
    "net/ipv4/raw_diag",
    "net/unix/unix_diag",
    "net/netlink/netlink_diag",
    "net/packet/af_packet_diag",
];

/// `examples/criu_restore`, built in the same profile as the lab under test.
fn example() -> PathBuf {
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    let dir = lab.parent().expect("the lab's directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--example", "criu_restore"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(
        build.status().expect("run cargo").success(),
        "cargo build --example criu_restore failed"
    );
    let path = dir.join("examples/criu_restore");
    assert!(path.is_file(), "no {}", path.display());
    path
}

/// A host program, as the lab finds it.
fn program(name: &str) -> PathBuf {
    isolab_resources::tools::find(name)
        .unwrap_or_else(|| panic!("this test needs {name} (apt-get install {name})"))
}

#[test]
#[ignore = "needs the emulated host: boots an emulated AMD-V machine with Debian's 6.1 kernel (QEMU TCG), where CRIU passes its check, for several minutes; .ci/run runs it"]
fn container_and_runc_restored_by_criu_give_the_cold_checksums() {
    let work = std::env::temp_dir().join(format!("isolab-emulated-criu-{}", std::process::id()));
    let host = EmulatedHost::new(Path::new(env!("CARGO_BIN_EXE_lab")), &work)
        // And `criu check` opens a TCP connection on the loopback.
        .and_then(|h| h.with_modules(&CRIU_MODULES))
        .unwrap_or_else(|e| panic!("this test needs an emulated host: {e}"))
        .with_setup("ip link set lo up")
        .with_binary(&program("criu"))
        .with_binary(&program("runc"))
        .with_program(&example(), CRIU_RESTORE);
    let checks = [
        Check::new("criu-check", 120, "criu check; lab doctor | grep criu"),
        Check::new("container", 600, &format!("{CRIU_RESTORE} container")),
        Check::new("oci-runc", 600, &format!("{CRIU_RESTORE} oci:runc")),
        // Restored processes, runc's state, cgroups, mounts, checkpoints: nothing stays.
        Check::new(
            "left-behind",
            60,
            r#"ps -o pid,comm | grep -E 'criu|runc|isolab|workload' | grep -v grep
find /sys/fs/cgroup -mindepth 2 -type d -path '*isolab*'
ls -d /run/runc/isolab* 2>/dev/null
grep -E 'isolab|overlay' /proc/mounts
ls -d /tmp/isolab* 2>/dev/null
true"#,
        ),
    ];
    let report = host
        .run(&checks)
        .unwrap_or_else(|e| panic!("the emulated host did not run: {e}"));
    let summary = report.summary("emulated host (CRIU)", |l| {
        [
            "cold ",
            "checkpoint ",
            "restored ",
            "skipped ",
            "Error",
            "criu ",
        ]
        .iter()
        .any(|p| l.trim_start().starts_with(p))
            || l.contains("Looks good")
    });
    eprintln!("{summary}");
    std::fs::write(work.join("summary.txt"), &summary).unwrap();
    for name in ["criu-check", "container", "oci-runc"] {
        let c = report.check(name);
        assert!(c.passed(), "{}", c.explain());
    }
    for (check, backend) in [("container", "container"), ("oci-runc", "oci:runc")] {
        let text = report.check(check).text();
        let sum = |kind: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{kind} {backend} ")))
                .and_then(|l| l.split_whitespace().find(|w| w.starts_with("checksum=")))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no {kind} line for {backend}:\n{text}"))
        };
        assert_eq!(sum("restored"), sum("cold"), "{backend}:\n{text}");
        assert!(!sum("cold").contains("None"), "{text}");
    }
    report.assert_nothing_left_behind();
}
