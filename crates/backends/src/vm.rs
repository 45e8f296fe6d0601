//! `vm`: the workload as a bare microVM guest, run by isolab's own minimal VMM
//! ([`isolab_vmm`]) on KVM: one forked VMM process per instance, in the instance's cgroup.

use crate::instance::{Instance, Timeline};
use crate::lab::Lab;
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_payload::Kernel;
use isolab_payload::GUEST_ELF;
use isolab_results::info;
use isolab_vmm::{kvm, memory, run_machine};
use isolab_vmm::{Guest, MachineConfig};
use std::time::Duration;

/// The `vm` backend.
#[derive(Clone, Debug)]
pub struct Vm {
    guest: Guest,
    ram_bytes: Option<u64>,
    time_limit: Option<Duration>,
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            guest: Guest::Elf(GUEST_ELF),
            ram_bytes: None,
            time_limit: None,
        }
    }
}

impl Vm {
    /// Run `guest` instead of the bare guest (test fixtures, experiments with other guests).
    pub fn with_guest(mut self, guest: Guest) -> Self {
        self.guest = guest;
        self
    }

    /// Give every guest `bytes` of RAM instead of what its kernel needs.
    pub fn with_ram(mut self, bytes: u64) -> Self {
        self.ram_bytes = Some(bytes);
        self
    }

    /// Stop a guest that runs longer than `limit` (default: 90% of the lab's timeout, so the
    /// VMM's report, with the guest's registers, arrives before the lab stops waiting).
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The machine an instance of `spec` gets: the arena its kernel needs plus the fixed low
    /// 2 MiB (page tables, stack, program), unless told otherwise.
    pub fn config(&self, lab: &Lab, spec: &Spec) -> MachineConfig {
        MachineConfig {
            ram_bytes: self
                .ram_bytes
                .unwrap_or_else(|| memory::ram_for_arena(spec.arena_bytes())),
            time_limit: self.time_limit.unwrap_or(lab.settings.timeout.mul_f64(0.9)),
        }
    }
}

impl Backend for Vm {
    fn name(&self) -> &str {
        "vm"
    }

    fn describe(&self) -> &str {
        "bare microVM: isolab's KVM VMM (rust-vmm crates), a ring-3 guest running the shared kernels over hypercalls"
    }

    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::VmNoOs
    }

    fn availability(&self, _lab: &Lab) -> Availability {
        match kvm::cache_supported_cpuid() {
            Ok(()) => Availability::Available,
            Err(e) => Availability::Unavailable(e.to_string()),
        }
    }

    /// A bare guest has no drivers: its only I/O is the VMM's hypercalls.
    fn supports(&self, lab: &Lab, kernel: Kernel) -> Result<(), String> {
        if lab.settings.image_spec.is_some() {
            // The workload on the layered image maps its libraries from the image's files at
            // start; a bare guest has no file system to find them in, so it would never mark
            // `libraries` and a run would wait for it until its time limit.
            return Err(
                "a bare guest has no file system: it cannot load the layered image's libraries \
                 (vm-linux and qemu get the image as a disk)"
                    .into(),
            );
        }
        if matches!(kernel, Kernel::ForkBomb | Kernel::MemHog) {
            return Err(
                "a bare guest has no OS: no processes to fork, and no memory to run out of but \
                 the RAM its VMM mapped (vm-linux runs these kernels in a Linux guest)"
                    .into(),
            );
        }
        if kernel.needs_disk() || kernel.needs_network() {
            return Err(
                "a bare guest has no disk or network driver (vm-linux runs these kernels, with \
                 virtio devices)"
                    .into(),
            );
        }
        Ok(())
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let timeline = Timeline::start();
        crate::vmm_launch::prepare(self.name())?;
        let config = self.config(lab, spec);
        // Refuse an impossible machine here, in the lab, rather than in a child.
        memory::check_size(config.ram_bytes).map_err(|e| BackendError::Instance {
            step: "guest memory".into(),
            detail: e.to_string(),
        })?;
        let guest = self.guest;
        let mut instance = crate::vmm_launch::launch(
            lab,
            self.name(),
            &lab.next_instance_name(),
            spec,
            limits,
            timeline,
            |host| run_machine(&config, &guest, spec, host),
        )?;
        instance.note(info::GUEST_OS, "none");
        if let Guest::Elf(elf) = &self.guest {
            instance.note(info::IMAGE_BYTES, elf.len());
            instance.note(
                info::IMAGE,
                "bare guest ELF: the kernels and a hypercall shim, no OS",
            );
        }
        // A bare guest has no OS: its file I/O and its view of the system are the VMM's.
        if matches!(spec.kernel, Kernel::Io | Kernel::Probe) {
            instance.note(info::SERVED_BY, "vmm");
        }
        Ok(instance)
    }
}
