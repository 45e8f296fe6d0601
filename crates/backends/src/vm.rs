//! `vm`: the workload as a bare microVM guest, run by isolab's own minimal VMM
//! ([`isolab_vmm`]) on KVM: one forked VMM process per instance, in the instance's cgroup.

use crate::instance::{Instance, Timeline};
use crate::lab::Lab;
use crate::restore::{allocated_bytes, Restore, RestoreOptions, Snapshot, Stored};
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_payload::Kernel;
use isolab_payload::GUEST_ELF;
use isolab_results::info;
use isolab_vmm::{kvm, memory, restore_machine, run_machine, snapshot_machine};
use isolab_vmm::{Guest, MachineConfig};
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
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

    fn restorer(&self) -> Option<&dyn Restore> {
        Some(self)
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

/// The snapshot file as the VMM child received it, at number `fd`.
///
/// The child owns it: [`crate::vmm_launch::launch_keeping`] installed it there for this VMM
/// alone, and it is closed when the VMM exits.
pub(crate) fn kept_file(fd: RawFd) -> File {
    // SAFETY: `fd` is one of the descriptors launch_keeping installed in this child for the VMM,
    // open and owned by nothing else in this process.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The snapshot a VMM child wrote into `file` during `run`, its steps read off the run's
/// timeline: from the edge `held` (the guest stopped at `ready`) to `snapshot_state` (the
/// state, `state_step`), then to `snapshot_memory` (guest RAM). A VMM that stopped without
/// saving is the run's failure, in its own words.
pub(crate) fn snapshot_taken(
    backend: &str,
    spec: &Spec,
    file: File,
    run: &crate::Run,
    held: &str,
    state_step: &str,
) -> Result<Snapshot, BackendError> {
    let t = &run.timeline;
    let (Some(held), Some(state), Some(saved)) =
        (t.at(held), t.at("snapshot_state"), t.at("snapshot_memory"))
    else {
        return Err(BackendError::Instance {
            step: "snapshot".into(),
            detail: match &run.outcome {
                isolab_results::Outcome::Failed { reason } => reason.clone(),
                other => format!("the VMM ended without saving the guest ({other:?})"),
            },
        });
    };
    Ok(Snapshot {
        backend: backend.into(),
        spec: *spec,
        bytes: allocated_bytes(&file)?,
        stored: Stored::Unnamed(file),
        take_ns: saved.saturating_sub(held),
        phases: vec![
            (state_step.into(), state.saturating_sub(held)),
            ("guest RAM".into(), saved.saturating_sub(state)),
        ],
    })
}

pub(crate) fn snapshot_error(step: &str) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |e| BackendError::Instance {
        step: step.into(),
        detail: e.to_string(),
    }
}

/// `vm` snapshots: the VMM saves the guest at its `ready` into an unnamed file of the lab's
/// ([`isolab_vmm::snapshot`]); each restore is a new VMM process that maps that file as guest
/// RAM, so restored guests share its pages until they write them.
impl Restore for Vm {
    fn restore_availability(&self, lab: &Lab) -> Availability {
        self.availability(lab)
    }

    fn checkpoint(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<Snapshot, BackendError> {
        let timeline = Timeline::start();
        crate::vmm_launch::prepare(self.name())?;
        let config = self.config(lab, spec);
        memory::check_size(config.ram_bytes).map_err(|e| BackendError::Instance {
            step: "guest memory".into(),
            detail: e.to_string(),
        })?;
        let file = Snapshot::unnamed_file(lab)?;
        let theirs = file
            .try_clone()
            .map_err(snapshot_error("duplicate the snapshot file's descriptor"))?;
        let guest = self.guest;
        let mut instance = crate::vmm_launch::launch_keeping(
            lab,
            self.name(),
            &lab.next_instance_name(),
            spec,
            limits,
            timeline,
            vec![OwnedFd::from(theirs)],
            |host, kept| snapshot_machine(&config, &guest, spec, host, &kept_file(kept[0])),
        )?;
        let waited = instance.wait_ready();
        let run = instance.finish()?;
        waited?;
        snapshot_taken(self.name(), spec, file, &run, "ready", "vcpu state")
    }

    fn restore(
        &self,
        lab: &Lab,
        snapshot: &Snapshot,
        limits: &Limits,
        options: &RestoreOptions,
    ) -> Result<Instance, BackendError> {
        let timeline = Timeline::start();
        let Some(file) = snapshot.file() else {
            return Err(BackendError::Instance {
                step: "snapshot".into(),
                detail: format!("a snapshot of {} is not a vm's", snapshot.backend),
            });
        };
        crate::vmm_launch::prepare(self.name())?;
        let spec = snapshot.spec;
        let config = self.config(lab, &spec);
        let theirs = file
            .try_clone_to_owned()
            .map_err(snapshot_error("duplicate the snapshot file's descriptor"))?;
        let prefault = options.prefault;
        let mut instance = crate::vmm_launch::launch_keeping(
            lab,
            self.name(),
            &lab.next_instance_name(),
            &spec,
            limits,
            timeline,
            vec![theirs],
            |host, kept| restore_machine(&config, &kept_file(kept[0]), &spec, prefault, host),
        )?;
        instance.note(info::GUEST_OS, "none");
        snapshot.note_restored(&mut instance, prefault);
        instance.note(info::IMAGE_BYTES, snapshot.bytes);
        instance.note(
            info::IMAGE,
            "a snapshot of the bare guest at ready, its RAM mapped MAP_PRIVATE",
        );
        Ok(instance)
    }
}
