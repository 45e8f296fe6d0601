//! What kind of isolation each backend name stands for, and how to label it.
//!
//! Reports know backends only by the names in results files. The claims ledger needs to know
//! which of them are containers and which are virtual machines, so the mapping lives here, in
//! one place, from the naming convention every backend follows:
//!
//! * `process` — the baseline: no isolation at all;
//! * `container`, `oci:<runtime>` — containers (namespaces + cgroups on the host's kernel);
//! * `vm…` (`vm`, `vm-linux`, ...) and `qemu` — virtual machines;
//! * anything else (e.g. `ns-floor`, the cheapest possible namespace set-up) is shown in tables
//!   and plots but takes no side in the claims.

use crate::results::{info, Results};

/// The isolation model a backend belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// `process`: the baseline every ratio is taken against.
    Process,
    /// `container` and `oci:*`.
    Container,
    /// `vm*` and `qemu`.
    Vm,
    /// Anything else.
    Other,
}

/// The family of a backend name (the convention of [`crate::results::backend_rank`]).
pub fn family(backend: &str) -> Family {
    match crate::results::backend_rank(backend) {
        0 => Family::Process,
        1 | 2 => Family::Container,
        3..=5 => Family::Vm,
        _ => Family::Other,
    }
}

/// True when any run of `backend` in `results` says its numbers come from emulation (QEMU's
/// TCG translates every guest instruction in software: it measures an emulator, not a VM).
pub fn is_emulated(results: &Results, backend: &str) -> bool {
    results.info(backend, info::EMULATED).is_some()
}

/// The name to print for `backend`: emulated backends say so everywhere they appear, so no
/// reader mistakes an emulator's figures for a virtual machine's.
pub fn label(results: &Results, backend: &str) -> String {
    if is_emulated(results, backend) {
        format!("{backend} (emulated)")
    } else {
        backend.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_families() {
        assert_eq!(family("process"), Family::Process);
        assert_eq!(family("container"), Family::Container);
        assert_eq!(family("oci:runc"), Family::Container);
        assert_eq!(family("oci:crun"), Family::Container);
        assert_eq!(family("vm"), Family::Vm);
        assert_eq!(family("vm-linux"), Family::Vm);
        assert_eq!(family("qemu"), Family::Vm);
        assert_eq!(family("ns-floor"), Family::Other);
        assert_eq!(family("processes"), Family::Other);
    }
}
