//! How much of Docker's default configuration a container gets beyond its namespaces:
//! `--profile minimal|docker`.
//!
//! | layer                         | `minimal` | `docker` | start-up phase  |
//! |-------------------------------|:---------:|:--------:|-----------------|
//! | namespaces, a private root    | ✓         | ✓        | `namespaces`, `rootfs` |
//! | masked and read-only `/proc` paths |      | ✓        | `masked_paths`  |
//! | Docker's 14 capabilities, no_new_privs | ✓ | ✓      | `capabilities`  |
//! | Docker's seccomp profile      |           | ✓        | `seccomp`       |
//!
//! `docker` is the default: it is what students run when they type `docker run`, so it is what
//! the comparison must be with. `minimal` peels off the masks and the filter, to see what they
//! cost. The same profile goes into the OCI bundles isolab writes for runc, crun and runsc.
//!
//! A lab compiles its seccomp profile once ([`Security::prepare`]) and keeps it, with the
//! launcher thread containers start from ([`crate::launcher`]), in a [`Security`].

use crate::capabilities::{CapPlan, DOCKER_DEFAULT};
use crate::launcher::{LaunchError, Launcher};
use crate::rootfs::{Masks, RootfsPlan};
use crate::seccomp;
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
    /// What `docker run` applies by default: also the masked and read-only paths and the
    /// seccomp profile.
    #[default]
    Docker,
}

impl Profile {
    /// Every profile, for the command line.
    pub const ALL: [Profile; 2] = [Profile::Minimal, Profile::Docker];

    /// Its name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Minimal => "minimal",
            Profile::Docker => "docker",
        }
    }

    /// The profile called `name`.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// True when masks and seccomp are applied.
    pub fn hardened(self) -> bool {
        self == Profile::Docker
    }
}

/// The calls a container makes to build itself after it is cloned by the launcher and before
/// it execs, which Docker's profile may refuse: they stay allowed in the launcher's half of the
/// filter and each container takes them back ([`seccomp::Profile::split`]). `clone`/`clone3`
/// are the launcher's own (namespaces in the flags); `unshare`, `mount` and `sethostname` the
/// container's.
pub const SETUP_CALLS: [&str; 5] = ["clone", "clone3", "unshare", "mount", "sethostname"];

/// A lab's container configuration, prepared once: the profile, its compiled seccomp filters,
/// and the launcher thread.
pub struct Security {
    /// The profile.
    pub profile: Profile,
    /// The seccomp profile, resolved for Docker's capabilities (with [`Profile::Docker`]).
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
    /// Read and compile what `profile` needs: for [`Profile::Docker`], the seccomp profile at
    /// `path`, resolved for Docker's capabilities on this kernel.
    pub fn prepare(profile: Profile, path: &Path) -> Result<Security, SeccompError> {
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
        if profile.hardened() {
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
