//! Isolation backends: the ways isolab can run the workload.
//!
//! Each backend is one type implementing [`Backend`]. Experiments know only this trait: they ask a
//! backend to [`Backend::start`] an [`Instance`] for a workload [`Spec`] under some [`Limits`],
//! wait for its markers, and collect a [`Run`]. Whatever the backend does — fork and exec, clone
//! into namespaces, create a VM — ends in the same shape: a tree of host processes in one cgroup
//! that speaks the marker protocol on a pipe. That shared shape is [`Instance`].
//!
//! | name        | what runs the workload                                                   |
//! |-------------|--------------------------------------------------------------------------|
//! | `process`   | fork + exec of the static workload: the baseline                         |
//! | `container` | isolab's own runtime: namespaces, pivot_root, cgroup limits, dropped caps |
//! | `ns-floor`  | clone with the container's namespace flags + exec, nothing else (a floor) |
//! | `oci:runc`  | an OCI bundle run by `runc run`, the runtime under Docker                 |
//! | `oci:crun`  | the same bundle run by crun, a runtime written in C                       |
//! | `oci:runsc` | the same bundle run by gVisor's runsc: a kernel of its own, in user space |
//! | `docker`    | `docker run` on an image of the lab's root: CLI, dockerd, containerd, runc |
//! | `vm`        | isolab's own KVM VMM running the bare guest (the kernels, no OS)         |
//! | `vm-linux`  | isolab's own KVM VMM booting a Linux kernel, the workload as `/init`     |
//! | `qemu`      | the Linux guest under QEMU microvm (KVM, or TCG emulation: "emulated")    |
//! | `student:…` | the container runtime or VMM a student built in `labs/` (on request)     |
//!
//! Each backend declares its isolation [`Family`] (process, container, sandbox, VM without or
//! with a guest OS, ...). Adding a backend is one file implementing [`Backend`] and one line
//! in [`registry`]: reports place it by the family its records carry.

pub mod container;
pub mod criu_restore;
pub mod docker;
pub mod floor;
pub mod instance;
pub mod lab;
pub mod linux_vm;
pub mod oci;
pub mod process;
pub mod provide;
pub mod qemu;
pub mod qemu_restore;
pub mod qmp;
pub mod restore;
pub mod student;
pub mod vm;
pub mod vm_linux;
pub mod vmm_launch;

pub use instance::{Instance, Outcome, Phase, Run, Timeline};
pub use isolab_payload::Spec;
pub use isolab_resources::cgroup::Limits;
pub use isolab_results::Family;
pub use restore::{Restore, RestoreOptions, Snapshot};

use crate::lab::Lab;
use std::time::Duration;

/// Errors of launching and running an instance.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run on this machine; the text says why and what would fix it.
    #[error("{backend} is unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: String,
        /// Why, with a hint.
        reason: String,
    },
    /// The instance's cgroup could not be made or used.
    #[error(transparent)]
    Cgroup(#[from] isolab_resources::cgroup::CgroupError),
    /// A system call made by the lab itself failed.
    #[error("{step}: {source}")]
    Sys {
        /// What the lab was doing.
        step: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// A step inside the instance (between fork and exec, or in the workload) failed.
    #[error("instance failed at {step}: {detail}")]
    Instance {
        /// The step.
        step: String,
        /// errno text or message.
        detail: String,
    },
    /// The instance ended before reaching a marker.
    #[error("instance exited before {waiting_for}: {status}{stderr}")]
    Exited {
        /// The marker that never came.
        waiting_for: &'static str,
        /// How it ended.
        status: String,
        /// What it wrote on stderr, if anything.
        stderr: String,
    },
    /// The instance did not reach a marker in time.
    #[error("instance did not reach {waiting_for} within {after:?}")]
    Timeout {
        /// The marker that never came.
        waiting_for: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// A limit the lab records is not in force for a process of the instance: read back from
    /// the process's own cgroups, it is looser than asked for, or absent (see
    /// [`isolab_resources::cgroup::in_force`]). The run cannot be counted; an experiment stops on it.
    #[error("{backend}: limits not in force: {detail}")]
    LimitsNotInForce {
        /// The backend.
        backend: String,
        /// Which process, which limit, what was found and where.
        detail: String,
    },
    /// The lab was asked to stop (SIGINT, SIGTERM, SIGHUP) while waiting for the instance.
    #[error("interrupted by {signal}")]
    Interrupted {
        /// The signal's name.
        signal: String,
    },
    /// An external program the backend drives failed.
    #[error("{program}: {detail}")]
    External {
        /// The program.
        program: String,
        /// What happened.
        detail: String,
    },
    /// The lab could not write down what it is about to make.
    #[error(transparent)]
    Ownership(#[from] isolab_resources::ownership::OwnershipError),
    /// The lab could not make what it shares with the instance (its scratch directory).
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
    /// The lab's image could not be mounted or prepared for the instance.
    #[error(transparent)]
    Image(#[from] isolab_resources::image::ImageError),
    /// Preparing the instance's first process failed.
    #[error(transparent)]
    Spawn(#[from] isolab_spawn::SpawnError),
    /// Host file I/O failed.
    #[error("{action}: {source}")]
    Io {
        /// What the lab was doing.
        action: String,
        /// The error.
        source: std::io::Error,
    },
}

impl BackendError {
    pub(crate) fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> BackendError {
        move |source| BackendError::Sys { step, source }
    }

    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
        let action = action.into();
        move |source| BackendError::Io { action, source }
    }
}

impl From<isolab_container::start::StartError> for BackendError {
    fn from(e: isolab_container::start::StartError) -> Self {
        use isolab_container::start::StartError;
        match e {
            StartError::Sys { step, source } => BackendError::Sys { step, source },
            StartError::Io { action, source } => BackendError::Io { action, source },
            StartError::Spawn(e) => BackendError::Spawn(e),
            StartError::Unavailable { reason } => BackendError::Unavailable {
                backend: "container".into(),
                reason,
            },
            StartError::LauncherStopped => BackendError::Instance {
                step: "the launcher thread".into(),
                detail: "it has stopped".into(),
            },
        }
    }
}

impl From<isolab_container::launcher::LaunchError> for BackendError {
    fn from(e: isolab_container::launcher::LaunchError) -> Self {
        BackendError::Instance {
            step: e.step,
            detail: format!("{} (errno {})", e.errno.desc(), e.errno as i32),
        }
    }
}

/// Note what `instance` runs on: the lab's layered image when it has one, else the bare root
/// the backend describes as `bare` (its bytes: the workload alone).
pub(crate) fn note_image(
    instance: &mut Instance,
    image: Option<&isolab_resources::image::Image>,
    bare: &str,
) {
    use isolab_results::info;
    match image {
        Some(image) => {
            instance.note(info::IMAGE_BYTES, image.bytes());
            instance.note(info::IMAGE, image.describe());
        }
        None => {
            instance.note(info::IMAGE_BYTES, isolab_payload::WORKLOAD_ELF.len());
            instance.note(info::IMAGE, bare);
        }
    }
}

/// Whether a backend can run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// It can.
    Available,
    /// It cannot; the reason says why and how to fix it.
    Unavailable(String),
}

impl Availability {
    /// Available when the lab can make cgroups (every backend that measures memory needs them).
    pub fn of_cgroups(lab: &Lab) -> Availability {
        match lab.cgroup_problem() {
            Some(why) => Availability::Unavailable(format!("no usable cgroups: {why}")),
            None => Availability::Available,
        }
    }
}

/// One way of running the workload.
pub trait Backend: Send + Sync {
    /// The name used on the command line and in results (`process`, `container`, ...).
    fn name(&self) -> &str;

    /// One line for tables and reports: what this backend is.
    fn describe(&self) -> &str;

    /// The isolation model of this backend's runs, recorded with every sample: reports group,
    /// colour and judge backends by it, never by their names. A run that reports it was
    /// emulated is recorded as [`Family::Emulated`] whatever is declared here
    /// ([`Family::of_run`]).
    fn family(&self) -> Family;

    /// Whether this backend can run on this machine now.
    fn availability(&self, lab: &Lab) -> Availability;

    /// Whether this backend applies [`Limits`]. One that cannot (it makes no cgroup) must say so,
    /// and the lab refuses limits for it rather than run it silently unlimited.
    fn applies_limits(&self) -> bool {
        true
    }

    /// Why `lab run` leaves this backend out when no `--backends` are given, or `None` when it
    /// uses it. The reason is printed and recorded with the results' skipped backends, so a
    /// reader learns what did not run and how to ask for it (`--backends NAME`).
    fn left_out_by_default(&self) -> Option<String> {
        None
    }

    /// Whether `lab run` uses this backend when no `--backends` are given (see
    /// [`Backend::left_out_by_default`], which says why not).
    fn default_enabled(&self) -> bool {
        self.left_out_by_default().is_none()
    }

    /// The host files holding this backend's copy of the lab's layered image (for the image's
    /// page cache, counted once by `lab run images`): the lab's own layers, unless the backend
    /// keeps a copy of its own (Docker's layers in its storage). Empty without an image.
    fn image_files(&self, lab: &Lab) -> Result<Vec<std::path::PathBuf>, BackendError> {
        Ok(lab.image()?.map(|i| i.files()).unwrap_or_default())
    }

    /// Whether this backend can run `kernel` in `lab` — on the lab's layered image, when it has
    /// one — and if not, why (a bare guest has no disk driver, nor a file system to load an
    /// image's libraries from, say). Experiments skip such pairs and record why; none picks a
    /// backend by default for a workload it knows the backend cannot run.
    fn supports(&self, _lab: &Lab, _kernel: isolab_payload::Kernel) -> Result<(), String> {
        Ok(())
    }

    /// Whether this backend carries the field's tools into its instances, so that they can
    /// run the tool kernels (`fio`, `netperf`, `iperf3`: `lab validate`). The others' instances
    /// have no `/tools` and refuse them, saying so.
    fn carries_tools(&self) -> bool {
        false
    }

    /// This backend as one whose instances can be snapshotted and restored ([`restore`]), or
    /// `None` when it has no way to (`lab run restore` then skips it, saying so).
    fn restorer(&self) -> Option<&dyn Restore> {
        None
    }

    /// Why a backend without a [`Backend::restorer`] cannot be restored, in one line.
    fn not_restorable(&self) -> String {
        "cannot snapshot or restore its instances (no restore for this backend)".into()
    }

    /// Start one instance running `spec` under `limits`. Returns once the instance's processes
    /// exist; use the [`Instance`] to wait for its markers.
    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError>;

    /// Run one instance to completion: start, wait for `ready` and `done`, collect.
    ///
    /// An instance that ends early (killed by the OOM killer, crashed) still yields a [`Run`],
    /// whose outcome says what happened; errors are for instances that could not be run at all
    /// or did not answer in time.
    fn run(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Run, BackendError> {
        let mut instance = self.start(lab, spec, limits)?;
        match instance.wait_ready().and_then(|()| instance.wait_done()) {
            Ok(()) | Err(BackendError::Exited { .. }) => instance.finish(),
            Err(e) => Err(e),
        }
    }
}

/// Every backend isolab knows, in a fixed order.
pub fn registry() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(process::Process),
        Box::new(container::Container::default()),
        Box::new(vm::Vm::default()),
        Box::new(vm_linux::VmLinux::default()),
        Box::new(oci::Oci::runc()),
        Box::new(oci::Oci::new("crun")),
        Box::new(oci::Oci::new("runsc")),
        Box::new(docker::Docker::default()),
        Box::new(floor::NsFloor),
        Box::new(qemu::Qemu::default()),
        Box::new(student::Student::installed(student::Kind::Container)),
        Box::new(student::Student::installed(student::Kind::Vmm)),
    ]
}

/// The backend called `name`. Any OCI runtime can be named as `oci:<binary>` (e.g. `oci:crun`).
pub fn by_name(name: &str) -> Option<Box<dyn Backend>> {
    registry()
        .into_iter()
        .find(|b| b.name() == name)
        .or_else(|| match name.strip_prefix("oci:") {
            Some(runtime) if !runtime.is_empty() && !runtime.contains('/') => {
                Some(Box::new(oci::Oci::new(runtime)) as Box<dyn Backend>)
            }
            _ => None,
        })
}

/// The names of every backend, for error messages.
pub fn names() -> Vec<String> {
    registry().iter().map(|b| b.name().to_string()).collect()
}
