//! Reading files of schema `isolab-results/1`.
//!
//! Version 1 kept a run's facts as a map of strings (`"info": {"guest_os": "none", ...}`) and
//! recorded no isolation family. Reading such a file converts each line to version 2's shape
//! (`upgrade`) and then gives each backend its family from [`family`]: the one place in isolab
//! where a backend's *name* is interpreted, documented here because version 1 wrote nothing
//! else to go by.
//!
//! Nothing is guessed beyond what version 1 always meant by its names: a VM whose file does not
//! say whether it ran a guest OS gets [`Family::Vm`] (unknown stays unknown), and a `qemu` whose
//! file does not say whether it was emulated gets [`Family::Unknown`] and takes no side in any
//! claim.

use crate::{info, DensityEnd, DensityStep, Facts, Family, GuestOs, RunRecord};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The schema identifier of version 1.
pub const SCHEMA: &str = "isolab-results/1";

/// Keys version 1 wrote under other names (the `vm-linux` backend's), and the key they mean.
const RENAMED: [(&str, &str); 2] = [
    ("guest_ram_touched_bytes", info::GUEST_TOUCHED_BYTES),
    ("kvm_kind", info::KVM),
];

/// Turn one version-1 line into version 2's shape: its `info` map becomes `facts`, and records
/// get a placeholder family that [`assign_families`] replaces once the whole file is read.
pub(super) fn upgrade(line: &mut Value) {
    let Some(obj) = line.as_object_mut() else {
        return;
    };
    let kind = obj.get("record").and_then(Value::as_str).unwrap_or("");
    if !matches!(kind, "run" | "density-step" | "density-end") {
        return;
    }
    obj.insert("family".into(), Value::from(Family::Unknown.id()));
    if let Some(Value::Object(info)) = obj.remove("info") {
        obj.insert("facts".into(), facts_json(&info));
    }
}

fn facts_json(info: &Map<String, Value>) -> Value {
    let mut facts = Facts::default();
    for (key, value) in info {
        let key = RENAMED
            .iter()
            .find(|(old, _)| old == key)
            .map_or(key.as_str(), |(_, new)| new);
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        facts.set(key, &text);
    }
    serde_json::to_value(facts).expect("facts serialise")
}

/// The family of a version-1 backend, from the names isolab 1 wrote and its facts:
///
/// * `process` → process; `container` → container; `ns-floor` → floor;
/// * `oci:runsc` → sandbox (gVisor); any other `oci:<runtime>` → container;
/// * `vm` and `vm-<anything>` → a VM whose kind is its `guest_os` fact: `none` → VM without an
///   OS, `linux` → VM with a guest OS, absent → a VM of unrecorded kind — or emulated, if its
///   facts say so;
/// * `qemu` → emulated if its facts say `emulated`, a VM with a guest OS if they say it ran on
///   KVM (`accel: kvm`), unknown if they say neither;
/// * anything else → unknown.
pub fn family(backend: &str, facts: &Facts) -> Family {
    let vm_by_guest_os = || match facts.guest_os {
        Some(GuestOs::None) => Family::VmNoOs,
        Some(GuestOs::Linux) => Family::VmGuestOs,
        None => Family::Vm,
    };
    let declared = match backend {
        "process" => Family::Process,
        "container" => Family::Container,
        "ns-floor" => Family::Floor,
        "oci:runsc" => Family::Sandbox,
        b if b.starts_with("oci:") => Family::Container,
        "vm" => vm_by_guest_os(),
        b if b.starts_with("vm-") => vm_by_guest_os(),
        "qemu" if facts.emulated.is_some() => Family::Emulated,
        "qemu" if facts.other.get("accel").is_some_and(|a| a == "kvm") => vm_by_guest_os(),
        _ => Family::Unknown,
    };
    Family::of_run(declared, facts)
}

/// Give every record of a version-1 file its backend's family. A backend's facts are gathered
/// from all its records first: a density file keeps them only in the ladder's end, and a
/// qemu run records whether it was emulated once per run.
pub(super) fn assign_families(
    runs: &mut [RunRecord],
    density: &mut [DensityStep],
    ends: &mut [DensityEnd],
) {
    let mut merged: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let facts = runs
        .iter()
        .map(|r| (&r.backend, &r.facts))
        .chain(ends.iter().map(|e| (&e.backend, &e.facts)));
    for (backend, f) in facts {
        let into = merged.entry(backend.clone()).or_default();
        for (k, v) in f.entries() {
            into.entry(k).or_insert(v);
        }
    }
    let of = |backend: &str| {
        let facts = merged
            .get(backend)
            .map_or_else(Facts::default, Facts::from_wire);
        family(backend, &facts)
    };
    for r in runs {
        r.family = of(&r.backend);
    }
    for d in density {
        d.family = of(&d.backend);
    }
    for e in ends {
        e.family = of(&e.backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> Facts {
        let mut f = Facts::default();
        for (k, v) in pairs {
            f.set(k, v);
        }
        f
    }

    #[test]
    fn version_1_names_map_to_families_and_unknown_stays_unknown() {
        let none = Facts::default();
        assert_eq!(family("process", &none), Family::Process);
        assert_eq!(family("container", &none), Family::Container);
        assert_eq!(family("oci:runc", &none), Family::Container);
        assert_eq!(family("oci:runsc", &none), Family::Sandbox);
        assert_eq!(family("ns-floor", &none), Family::Floor);
        assert_eq!(family("processes", &none), Family::Unknown);
        // A VM that does not say whether it ran a guest OS is not assumed to have one.
        assert_eq!(family("vm", &none), Family::Vm);
        assert_eq!(
            family("vm", &facts(&[(info::GUEST_OS, "none")])),
            Family::VmNoOs
        );
        assert_eq!(
            family("vm-linux", &facts(&[(info::GUEST_OS, "linux")])),
            Family::VmGuestOs
        );
        // qemu: emulated, on KVM, or not said.
        assert_eq!(
            family("qemu", &facts(&[(info::EMULATED, "QEMU TCG")])),
            Family::Emulated
        );
        assert_eq!(
            family(
                "qemu",
                &facts(&[("accel", "kvm"), (info::GUEST_OS, "linux")])
            ),
            Family::VmGuestOs
        );
        assert_eq!(family("qemu", &none), Family::Unknown);
    }

    #[test]
    fn an_info_map_becomes_facts_with_renamed_keys() {
        let mut line = serde_json::json!({
            "record": "run",
            "backend": "vm-linux",
            "info": {"guest_os": "linux", "guest_ram_touched_bytes": "4096", "kvm_kind": "no /dev/kvm"},
        });
        upgrade(&mut line);
        assert_eq!(line["family"], "unknown");
        assert_eq!(line["facts"]["guest_os"], "linux");
        assert_eq!(line["facts"]["guest_ram_touched_bytes"], 4096);
        assert_eq!(line["facts"]["kvm"], "absent");
        assert!(line.get("info").is_none());
    }
}
