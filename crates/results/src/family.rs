//! Isolation families: what kind of boundary stands between a workload and the host.
//!
//! Every backend declares its [`Family`] (`isolab_backends::Backend::family`) and every record
//! of a results file carries the family of its run, so a report never has to guess a backend's
//! kind from its name: a new backend lands in the right tables, colours and claims by declaring
//! its family, whatever it is called.
//!
//! The families, from the least isolation to the most (the order tables use):
//!
//! | family        | the workload's system calls go to              | e.g.                |
//! |---------------|------------------------------------------------|---------------------|
//! | `process`     | the host's kernel, with nothing in between      | `process`           |
//! | `container`   | the host's kernel, through namespaces + cgroups | `container`, `oci:runc` |
//! | `sandbox`     | a kernel in user space (which runs on the host's) | gVisor (`runsc`)  |
//! | `vm-no-os`    | no kernel at all: the VMM answers its exits     | `vm` (the bare guest) |
//! | `vm`          | a VM whose file does not say if it runs an OS   | version-1 files only |
//! | `vm-guest-os` | a guest kernel, on virtual hardware             | `vm-linux`, `qemu` on KVM |
//! | `emulated`    | a guest kernel on an emulated CPU               | `qemu` under TCG     |
//! | `floor`       | part of a mechanism, measured as a lower bound  | `ns-floor`           |
//! | `unknown`     | not recorded (version-1 files the mapping cannot place) | —           |
//!
//! A run's family can differ from what its backend declares: QEMU is a VM with a guest OS on
//! KVM, but where there is no KVM it emulates the CPU and reports so ([`Facts::emulated`]);
//! [`Family::of_run`] is the one rule that turns a declaration and a run's facts into the
//! family recorded.

use crate::facts::{Facts, GuestOs};
use serde::{Deserialize, Serialize};

/// The isolation model of a run. Ordered as tables show them: least isolation first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// A plain process: the baseline every ratio is taken against.
    Process,
    /// Namespaces and cgroups on the host's kernel: what Docker runs by default.
    Container,
    /// A container runtime that puts a kernel of its own, running in user space, between the
    /// workload and the host (gVisor's Sentry): the workload never talks to the host's kernel,
    /// but the sandbox itself is a set of host processes.
    Sandbox,
    /// A virtual machine whose guest runs no operating system (isolab's bare guest: the
    /// kernels and a hypercall shim; the VMM answers for it).
    VmNoOs,
    /// A virtual machine whose results do not say whether it runs a guest OS (files of
    /// version 1 written before runs recorded `guest_os`). Unknown stays unknown: it never
    /// counts as a VM with a guest OS.
    Vm,
    /// A virtual machine that boots a guest operating system (a Linux kernel).
    VmGuestOs,
    /// A machine whose CPU is emulated in software (QEMU's TCG translates every guest
    /// instruction): its timings say nothing about virtual machines.
    Emulated,
    /// Part of an isolation mechanism, measured alone as a lower bound (e.g. only the
    /// namespaces a container creates): shown, never counted in a claim.
    Floor,
    /// Not recorded and not derivable (a version-1 record the documented mapping cannot place).
    Unknown,
}

/// What kind of VM a backend is, for claims whose reason is the guest OS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VmKind {
    /// It boots a guest operating system.
    GuestOs,
    /// It runs none.
    NoOs,
    /// Its results do not say.
    Unknown,
}

impl Family {
    /// Every family, in table order.
    pub const ALL: [Family; 9] = [
        Family::Process,
        Family::Container,
        Family::Sandbox,
        Family::VmNoOs,
        Family::Vm,
        Family::VmGuestOs,
        Family::Emulated,
        Family::Floor,
        Family::Unknown,
    ];

    /// The family recorded for one run: what the backend declares, except that a VM whose run
    /// reports emulation (QEMU without KVM) is [`Family::Emulated`].
    pub fn of_run(declared: Family, facts: &Facts) -> Family {
        if declared.is_vm() && facts.emulated.is_some() {
            Family::Emulated
        } else {
            declared
        }
    }

    /// A virtual machine on KVM (with, without or with an unrecorded guest OS).
    pub fn is_vm(self) -> bool {
        matches!(self, Family::VmNoOs | Family::Vm | Family::VmGuestOs)
    }

    /// The kind of VM this is, for a VM or an emulated machine (`guest_os` says what an emulated
    /// machine ran); `None` for everything that is not a VM.
    pub fn vm_kind(self, guest_os: Option<GuestOs>) -> Option<VmKind> {
        match self {
            Family::VmGuestOs => Some(VmKind::GuestOs),
            Family::VmNoOs => Some(VmKind::NoOs),
            Family::Vm => Some(VmKind::Unknown),
            Family::Emulated => Some(match guest_os {
                Some(GuestOs::None) => VmKind::NoOs,
                Some(GuestOs::Linux) => VmKind::GuestOs,
                None => VmKind::Unknown,
            }),
            _ => None,
        }
    }

    /// The name written in results files (`vm-guest-os`, ...).
    pub fn id(self) -> &'static str {
        match self {
            Family::Process => "process",
            Family::Container => "container",
            Family::Sandbox => "sandbox",
            Family::VmNoOs => "vm-no-os",
            Family::Vm => "vm",
            Family::VmGuestOs => "vm-guest-os",
            Family::Emulated => "emulated",
            Family::Floor => "floor",
            Family::Unknown => "unknown",
        }
    }

    /// A few words for tables and labels: "VM, no OS".
    pub fn short(self) -> &'static str {
        match self {
            Family::Process => "process",
            Family::Container => "container",
            Family::Sandbox => "sandbox",
            Family::VmNoOs => "VM, no OS",
            Family::Vm => "VM, OS not recorded",
            Family::VmGuestOs => "VM + guest OS",
            Family::Emulated => "emulated",
            Family::Floor => "floor",
            Family::Unknown => "kind not recorded",
        }
    }

    /// One sentence for a reader: what the boundary is.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Process => "a plain process on the host's kernel: the baseline",
            Family::Container => {
                "namespaces and cgroups on the host's kernel: the workload's system calls go \
                 to the host's kernel"
            }
            Family::Sandbox => {
                "a container runtime with a kernel of its own in user space (e.g. gVisor): the \
                 workload's system calls go to that kernel, not to the host's"
            }
            Family::VmNoOs => {
                "a virtual machine without an operating system: the guest runs only the \
                 workload, the VMM answers its exits"
            }
            Family::Vm => {
                "a virtual machine whose results do not record whether it runs a guest OS"
            }
            Family::VmGuestOs => {
                "a virtual machine that boots a guest operating system (a Linux kernel) on \
                 virtual hardware"
            }
            Family::Emulated => {
                "a machine whose CPU is emulated in software: its timings say nothing about \
                 virtual machines"
            }
            Family::Floor => {
                "part of a mechanism measured alone, as a lower bound: shown, never judged"
            }
            Family::Unknown => "a backend whose results do not say what kind it is",
        }
    }
}

impl VmKind {
    /// "VM with a guest OS", for sentences.
    pub fn noun(self) -> &'static str {
        match self {
            VmKind::GuestOs => "VM with a guest OS",
            VmKind::NoOs => "VM without an OS",
            VmKind::Unknown => "VM whose results do not say whether it runs a guest OS",
        }
    }

    /// "VMs with a guest OS", for sentences.
    pub fn plural(self) -> &'static str {
        match self {
            VmKind::GuestOs => "VMs with a guest OS",
            VmKind::NoOs => "VMs without an OS",
            VmKind::Unknown => "VMs whose results do not say whether they run a guest OS",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulated_run_of_a_vm_is_emulated_and_nothing_else_changes() {
        let mut facts = Facts::default();
        assert_eq!(Family::of_run(Family::VmGuestOs, &facts), Family::VmGuestOs);
        facts.emulated = Some("QEMU TCG".into());
        assert_eq!(Family::of_run(Family::VmGuestOs, &facts), Family::Emulated);
        assert_eq!(Family::of_run(Family::Container, &facts), Family::Container);
    }

    #[test]
    fn ids_are_what_serde_writes_and_families_sort_least_isolated_first() {
        for f in Family::ALL {
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.id())
            );
        }
        let mut sorted = Family::ALL;
        sorted.sort();
        assert_eq!(sorted, Family::ALL);
    }

    #[test]
    fn the_kind_of_an_emulated_machine_is_what_it_ran() {
        assert_eq!(
            Family::Emulated.vm_kind(Some(GuestOs::Linux)),
            Some(VmKind::GuestOs)
        );
        assert_eq!(Family::Emulated.vm_kind(None), Some(VmKind::Unknown));
        assert_eq!(Family::Vm.vm_kind(None), Some(VmKind::Unknown));
        assert_eq!(Family::Sandbox.vm_kind(None), None);
    }
}
