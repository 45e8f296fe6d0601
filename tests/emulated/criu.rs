//! Containers checkpointed and restored by CRIU, on the emulated student machine: Debian's CRIU
//! 3.17.1 fails its own `criu check` on this CI's 6.18 kernel (its vDSO), and passes on
//! Debian 12's 6.1, which the emulated machine boots. The machine carries `criu` and `runc` with
//! their libraries, and `examples/restore`, which runs each backend cold, checkpoints it,
//! restores it and prints both checksums.

use crate::hosts::{Check, EmulatedHost};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the example is inside.
const CRIU_RESTORE: &str = "/usr/local/bin/criu-restore";

/// The modules CRIU needs, which a laptop loads on demand: the socket-diagnostics modules it
/// asks the kernel about every socket with, tun and veth (its check probes both), nf_tables
/// (it tests that nftables sets take concatenated keys) — after crc32c, which its libcrc32c asks
/// the crypto API for (a soft dependency, `modules.softdep`, that `modules.dep` does not list)
/// — and what iptables' `-m mark` needs on nftables: CRIU keeps a tree off the network while it
/// dumps and restores it with rules that let only its own marked packets through; and
/// conntrack's netlink interface, which it asks for the namespace's tracked connections
/// (nfnetlink answers EINVAL for a subsystem that is not loaded).
const CRIU_MODULES: [&str; 15] = [
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
    "net/netfilter/x_tables",
    "net/netfilter/xt_mark",
    "net/netfilter/nft_compat",
    "net/netfilter/nf_conntrack_netlink",
];

/// `examples/restore`, built in the same profile as the lab under test.
pub fn restore_example() -> PathBuf {
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    let dir = lab.parent().expect("the lab's directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--example", "restore"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(
        build.status().expect("run cargo").success(),
        "cargo build --example restore failed"
    );
    let path = dir.join("examples/restore");
    assert!(path.is_file(), "no {}", path.display());
    path
}

/// Where Debian's iptables keeps its plug-ins.
const XTABLES: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// The program behind Debian's `iptables-restore`.
fn xtables() -> PathBuf {
    std::fs::canonicalize(program("iptables-restore")).expect("resolve iptables-restore")
}

/// A host program, as the lab finds it.
fn program(name: &str) -> PathBuf {
    isolab_resources::tools::find(name)
        .unwrap_or_else(|| panic!("this test needs {name} (apt-get install criu runc iptables)"))
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
        // CRIU saves a tmpfs (the container's root) with GNU tar, compressed by gzip.
        .with_binary(&program("tar"))
        .with_binary(&program("gzip"))
        // CRIU keeps the container off the network while it works, with its default,
        // iptables (Debian's: the nftables back end, one program named for each tool).
        .with_program(&xtables(), "/usr/sbin/iptables-restore")
        .with_program(&xtables(), "/usr/sbin/ip6tables-restore")
        .with_program(&restore_example(), CRIU_RESTORE);
    let checks = [
        Check::new("criu-check", 120, "criu check; lab doctor | grep criu"),
        Check::new("container", 600, &format!("{CRIU_RESTORE} container 2>&1")),
        Check::new(
            "oci-runc",
            600,
            &format!("{CRIU_RESTORE} oci:runc; s=$?; dmesg | grep -iE 'criu|runc|segfault' | tail -5; exit $s"),
        ),
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
    // iptables loads each match and target from a plug-in of its own (`-m mark`: libxt_mark).
    let plugins =
        std::fs::read_dir(XTABLES).expect("iptables' plug-ins (apt-get install iptables)");
    let host = plugins.flatten().fold(host, |host, p| {
        let to = p.path().display().to_string();
        host.with_file(&p.path(), &to)
    });
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
