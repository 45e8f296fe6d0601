//! How much of Docker's default configuration a container gets beyond its namespaces:
//! `--profile minimal|docker|podman`.
//!
//! | layer                         | `minimal` | `docker` | `podman` | start-up phase  |
//! |-------------------------------|:---------:|:--------:|:--------:|-----------------|
//! | namespaces, a private root    | ✓         | ✓        | ✓        | `namespaces`, `rootfs` |
//! | masked and read-only `/proc` paths |      | ✓        | ✓        | `masked_paths`  |
//! | Docker's 14 capabilities, no_new_privs | ✓ | ✓      | ✓        | `capabilities`  |
//! | seccomp profile               |           | Docker's | Podman's | `seccomp`       |
//!
//! `docker` is the default: it is what students run when they type `docker run`, so it is what
//! the comparison must be with. `minimal` peels off the masks and the filter, to see what they
//! cost. `podman` swaps Docker's seccomp profile for Podman's, which lets every container make
//! namespaces and mounts (see [`crate::seccomp::source`]). The same profile goes into the OCI
//! bundles isolab writes for runc, crun and runsc.
//!
//! A lab compiles its seccomp profile once ([`Security::prepare`]) and keeps it, with the
//! launcher thread containers start from ([`crate::launcher`]), in a [`Security`].

use crate::capabilities::{CapPlan, DOCKER_DEFAULT};
use crate::launcher::{LaunchError, Launcher};
use crate::rootfs::{Masks, RootfsPlan};
use crate::seccomp;
use crate::seccomp::source::{Shipped, DOCKER, PODMAN};
use crate::seccomp::{Filter, SeccompError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How a container is configured beyond its namespaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Namespaces, a private root, Docker's capabilities and no_new_privs: no masks, no filter.
    Minimal,
    /// What `docker run` applies by default: also the masked and read-only paths and
    /// Docker's seccomp profile.
    #[default]
    Docker,
    /// Docker's configuration with Podman's seccomp profile instead of Docker's.
    Podman,
}

impl Profile {
    /// Every profile, for the command line.
    pub const ALL: [Profile; 3] = [Profile::Minimal, Profile::Docker, Profile::Podman];

    /// Its name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Minimal => "minimal",
            Profile::Docker => "docker",
            Profile::Podman => "podman",
        }
    }

    /// The seccomp profile file it loads, and the package that ships it.
    pub fn seccomp(self) -> Option<Shipped> {
        match self {
            Profile::Minimal => None,
            Profile::Docker => Some(DOCKER),
            Profile::Podman => Some(PODMAN),
        }
    }

    /// The profile called `name`.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// True when masks and seccomp are applied.
    pub fn hardened(self) -> bool {
        self != Profile::Minimal
    }
}

/// The calls a container makes to build itself after it is cloned by the launcher and before
/// it execs, which Docker's profile refuses to a container without `CAP_SYS_ADMIN`: they stay
/// allowed in the launcher's half of the filter and each container takes them back
/// ([`seccomp::Profile::split`]). `clone`/`clone3` are the launcher's own (namespaces in the
/// flags); `unshare`, `setns` (a network kernel's link), `mount`, `move_mount` (the host's
/// scratch directory) and `sethostname` the container's.
pub const SETUP_CALLS: [&str; 7] = [
    "clone",
    "clone3",
    "unshare",
    "setns",
    "mount",
    "move_mount",
    "sethostname",
];

/// A lab's container configuration, prepared once: the profile, its compiled seccomp filters,
/// and the launcher thread.
pub struct Security {
    /// The profile.
    pub profile: Profile,
    /// The seccomp profile, resolved for Docker's capabilities (when the profile has one).
    pub seccomp: Option<seccomp::Profile>,
    /// The whole filter, for a container that loads it itself (rootless, or a template other
    /// than the launcher's).
    pub full: Option<Filter>,
    /// The outer half, loaded by the launcher; `None` when the profile cannot be split.
    outer: Option<Filter>,
    /// The inner half, loaded by every container started from the launcher.
    pub inner: Option<Filter>,
    /// Docker's masked and read-only paths (applied with [`Profile::Docker`]).
    pub masks: Masks,
    /// Docker's capabilities, against this kernel's highest capability number (read once).
    pub caps: CapPlan,
    /// Nanoseconds libseccomp took to compile the profile.
    pub compile_ns: u64,
    launcher: Mutex<Option<Arc<Launcher>>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("profile", &self.profile)
            .field("full", &self.full.as_ref().map(Filter::len))
            .field("inner", &self.inner.as_ref().map(Filter::len))
            .finish()
    }
}

impl Security {
    /// Read and compile what `profile` needs: its seccomp profile (the file at `file`, else
    /// the one [`Profile::seccomp`] names), resolved for Docker's capabilities on this kernel.
    pub fn prepare(profile: Profile, file: Option<&Path>) -> Result<Security, SeccompError> {
        let started = isolab_host::clock::now_ns();
        let mut security = Security {
            profile,
            seccomp: None,
            full: None,
            outer: None,
            inner: None,
            masks: Masks::default(),
            caps: CapPlan::new(&DOCKER_DEFAULT, isolab_host::facts::cap_last_cap()),
            compile_ns: 0,
            launcher: Mutex::new(None),
        };
        let path = file.or(profile.seccomp().map(|s| Path::new(s.path)));
        if let (true, Some(path)) = (profile.hardened(), path) {
            let resolved = seccomp::Profile::load(
                path,
                seccomp::Target {
                    caps: &DOCKER_DEFAULT,
                    kernel: seccomp::kernel_version(),
                },
            )?;
            security.full = Some(resolved.compile()?);
            if let Some(split) = resolved.split(&SETUP_CALLS)? {
                security.outer = Some(split.outer);
                security.inner = Some(split.inner);
            }
            security.seccomp = Some(resolved);
        }
        security.compile_ns = isolab_host::clock::now_ns() - started;
        Ok(security)
    }

    /// The launcher for containers of `plan`, started on first use, and whether this call
    /// started it. `None` when the existing launcher's template is another root (a container
    /// with busybox in a lab of containers without): such a container builds its own root.
    pub fn launcher(
        &self,
        plan: &RootfsPlan,
    ) -> Result<(Option<Arc<Launcher>>, bool), LaunchError> {
        let mut slot = self.launcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = slot.as_ref() {
            return Ok((l.serves(plan).then(|| l.clone()), false));
        }
        let launcher = Launcher::start(plan, self.outer.clone())
            .map_err(|(step, errno)| LaunchError { step, errno })?;
        let launcher = Arc::new(launcher);
        *slot = Some(launcher.clone());
        Ok((Some(launcher), true))
    }

    /// What the results record of the seccomp profile: its file, package and digest.
    pub fn seccomp_note(&self) -> Option<String> {
        self.seccomp.as_ref().map(|p| p.source.to_string())
    }

    /// The filter a container loads just before exec: the inner half when it was started by
    /// the launcher (which holds the outer half), else the whole profile.
    pub fn filter(&self, from_launcher: bool) -> Option<&Filter> {
        if from_launcher && self.outer.is_some() {
            self.inner.as_ref()
        } else {
            self.full.as_ref()
        }
    }
}
