//! Docker's seccomp profile, as `--profile docker` promises it: the attacker, as a container's
//! init, makes a user namespace (no capability needed), then in it the mount, network and UTS
//! namespaces only `CAP_SYS_ADMIN` may make, mounts a tmpfs, tries `unshare` and `clone` with
//! each namespace flag, and reads its uid's keyring (`tests/attacker/src/seccomp.rs`). Docker's
//! profile refuses all of it to a container without `CAP_SYS_ADMIN`: the namespace flags of
//! `clone`, `unshare`, `mount` and `keyctl` fail with EPERM before the kernel looks at them.
//!
//! For the OCI runtimes the test also reads the bundle's `config.json` while the attacker
//! lives: its `linux.seccomp` must be the profile the lab resolved for isolab's own container,
//! with Docker's conditional rule for `clone` (allowed only without namespace flags).

use super::{attack_from_inside, by_name, lab_with_attacker};
use crate::common::{serial, temp_dir};
use isolab_backends::container::Container;
use isolab_backends::{Availability, Backend};
use std::fs;
use std::path::Path;

/// `clone`'s namespace flags, as Docker's profile masks them: NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET (0x7e020000).
const NAMESPACE_FLAGS: u64 = 0x7e02_0000;

/// EPERM, as the attacker reports a refused call.
const REFUSED: &str = "errno=1";

/// Run the attacker in `backend` under `--profile docker` and check every attack was refused.
fn namespaces_and_mounts_are_refused(backend: Box<dyn Backend>) {
    let name = backend.name().to_string();
    let _serial = serial();
    let temp = temp_dir(&format!("security-seccomp-{}", name.replace(':', "-")));
    let lab = lab_with_attacker(&temp);
    if let Availability::Unavailable(why) = backend.availability(&lab) {
        panic!("{name} cannot run here: {why}");
    }
    let security = lab.security().unwrap();
    let resolved = security
        .seccomp
        .as_ref()
        .expect("--profile docker has a filter");
    let mut bundle = None;
    let facts = attack_from_inside(backend.as_ref(), &lab, || {
        bundle = bundle_seccomp(lab.workdir());
    });
    eprintln!("{name} under {}:", resolved.source);
    for key in [
        "attack.userns_mount",
        "attack.unshare",
        "attack.clone",
        "attack.keyctl",
    ] {
        eprintln!("  {key}: {}", facts[key]);
    }
    let mut gained = Vec::new();
    if !facts["attack.userns_mount"].starts_with(&format!("unshare(CLONE_NEWUSER) {REFUSED}")) {
        gained.push(format!("userns_mount: {}", facts["attack.userns_mount"]));
    }
    for key in ["attack.unshare", "attack.clone"] {
        for flag in facts[key].split(' ') {
            if !flag.ends_with(&format!(":{REFUSED}")) {
                gained.push(format!("{key} {flag}"));
            }
        }
    }
    if facts["attack.keyctl"] != REFUSED {
        gained.push(format!("keyctl: {}", facts["attack.keyctl"]));
    }
    assert!(
        gained.is_empty(),
        "{name} under --profile docker ({}): the container got past Docker's profile: \
         {gained:#?}",
        resolved.source
    );
    if name.starts_with("oci:") {
        let bundle = bundle.unwrap_or_else(|| panic!("{name}: no bundle config.json was found"));
        assert_eq!(
            bundle,
            resolved.to_oci(),
            "{name}: the bundle's seccomp is not the profile the lab resolved"
        );
        assert_docker_rules(&bundle, &name);
    }
    drop(lab);
    fs::remove_dir_all(&temp).unwrap();
}

/// The `linux.seccomp` of the one bundle under the lab's work directory.
fn bundle_seccomp(workdir: &Path) -> Option<serde_json::Value> {
    let dir = fs::read_dir(workdir).ok()?.flatten().find(|e| {
        e.file_name().to_string_lossy().starts_with("oci-") && e.path().join("config.json").exists()
    })?;
    let text = fs::read_to_string(dir.path().join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(config["linux"]["seccomp"].clone())
}

/// Docker's rules for a container without `CAP_SYS_ADMIN`, in an OCI `linux.seccomp`: `clone`
/// allowed only with no namespace flag set, `clone3` answered ENOSYS (so libc falls back to
/// `clone`, whose flags a filter can read: `clone3` passes them in memory), and no rule that
/// allows `unshare`, `mount`, `setns` or `keyctl`.
fn assert_docker_rules(seccomp: &serde_json::Value, name: &str) {
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO", "{name}");
    let rules = seccomp["syscalls"].as_array().expect("syscalls");
    let with = |call: &str| -> Vec<&serde_json::Value> {
        rules
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n == call))
            })
            .collect()
    };
    let clone = with("clone");
    assert_eq!(clone.len(), 1, "{name}: clone's rules: {clone:?}");
    assert_eq!(clone[0]["action"], "SCMP_ACT_ALLOW");
    let args = clone[0]["args"].as_array().expect("clone has a condition");
    assert_eq!(args.len(), 1, "{name}: {args:?}");
    assert_eq!(args[0]["index"], 0);
    assert_eq!(args[0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(args[0]["value"], NAMESPACE_FLAGS);
    assert_eq!(args[0]["valueTwo"], 0);
    let clone3 = with("clone3");
    assert_eq!(clone3.len(), 1, "{name}: clone3's rules: {clone3:?}");
    assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
    assert_eq!(clone3[0]["errnoRet"], libc::ENOSYS);
    for call in ["unshare", "mount", "setns", "keyctl", "umount2", "bpf"] {
        let allowed: Vec<_> = with(call)
            .into_iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .collect();
        assert!(allowed.is_empty(), "{name}: {call} is allowed: {allowed:?}");
    }
}

#[test]
fn a_container_makes_no_namespace_nor_mount_under_dockers_profile() {
    namespaces_and_mounts_are_refused(by_name("container"));
}

/// The same with the container's root left the host's root, as Docker leaves it: no user
/// namespace of the lab's, and the filter alone stands between the workload and new ones.
#[test]
fn the_same_from_a_container_whose_root_is_the_hosts() {
    namespaces_and_mounts_are_refused(Box::new(Container {
        host_root: true,
        ..Container::default()
    }));
}

#[test]
fn runc_makes_no_namespace_nor_mount_under_dockers_profile() {
    namespaces_and_mounts_are_refused(by_name("oci:runc"));
}

#[test]
#[ignore = "needs crun (CI runs it)"]
fn crun_makes_no_namespace_nor_mount_under_dockers_profile() {
    namespaces_and_mounts_are_refused(by_name("oci:crun"));
}

#[test]
#[ignore = "needs runsc, gVisor (CI runs it)"]
fn runsc_makes_no_namespace_nor_mount_under_dockers_profile() {
    namespaces_and_mounts_are_refused(by_name("oci:runsc"));
}
