//! How a report names backends: by the isolation family their records carry.
//!
//! Reports know backends only through results files. Every record says which
//! [`Family`] its run belongs to (process, container, sandbox, VM without or with a guest OS,
//! emulated, ...), so a report never interprets a backend's name: a backend added later lands in
//! the right rows, colours and claims by declaring its family. Files of version 1, which carry
//! no family, get theirs when they are read ([`isolab_results::v1`]).

pub use isolab_results::Family;
use isolab_results::Results;

/// True when `backend`'s numbers in `results` come from emulation (QEMU's TCG translates every
/// guest instruction in software: it measures an emulator, not a VM).
pub fn is_emulated(results: &Results, backend: &str) -> bool {
    results.family(backend) == Family::Emulated
}

/// The name to print for `backend`: a VM, a sandbox or an emulated machine says what it is
/// wherever it appears — "vm (VM, no OS)", "qemu (emulated)" — so no reader takes a VM that runs
/// no OS for one that boots Linux, nor an emulator's figures for a virtual machine's. A process
/// and a container are known by their names. A student's program from a step before its
/// track's last says so, in the words its runs recorded — "student:vmm, your VMM (step 2 of
/// 5)" — never "(floor)", which would not tell a student that the program is not finished.
pub fn label(results: &Results, backend: &str) -> String {
    if let Some(what) = results.fact(backend, |f| {
        f.other.get(isolab_results::info::UNFINISHED).cloned()
    }) {
        return format!("{backend}, {what}");
    }
    match results.family(backend) {
        Family::Process | Family::Container => backend.to_string(),
        family => format!("{backend} ({})", family.short()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;
    use isolab_results::info;

    #[test]
    fn labels_say_what_kind_of_vm_whatever_the_name() {
        let mut f = Fixture::new("startup");
        f.startup("process", 0, 1)
            .startup("vm", 0, 1)
            .startup("qemu", 0, 1)
            .startup("firecracker", 0, 1)
            .family("firecracker", Family::VmGuestOs)
            .note("qemu", info::EMULATED, "tcg");
        let r = f.results();
        assert_eq!(label(&r, "process"), "process");
        assert_eq!(label(&r, "vm"), "vm (VM, no OS)");
        assert_eq!(label(&r, "firecracker"), "firecracker (VM + guest OS)");
        assert_eq!(label(&r, "qemu"), "qemu (emulated)");
        assert!(is_emulated(&r, "qemu") && !is_emulated(&r, "vm"));
        assert_eq!(r.backends(), ["process", "vm", "firecracker", "qemu"]);
    }

    #[test]
    fn an_unfinished_student_program_is_labelled_with_its_step() {
        let mut f = Fixture::new("startup");
        f.startup("student:container", 0, 1)
            .family("student:container", Family::Floor)
            .note(
                "student:container",
                info::UNFINISHED,
                "your runtime (step 3 of 7)",
            )
            .startup("ns-floor", 0, 1)
            .family("ns-floor", Family::Floor);
        let r = f.results();
        assert_eq!(
            label(&r, "student:container"),
            "student:container, your runtime (step 3 of 7)"
        );
        assert_eq!(label(&r, "ns-floor"), "ns-floor (floor)");
    }
}
