//! `oci:<runtime>`: the same workload in an OCI bundle, run by an OCI runtime such as `runc` —
//! the runtime Docker and containerd use underneath.
//!
//! The Open Container Initiative runtime specification describes a container as a **bundle**: a
//! directory with the root file system (`rootfs/`) and a `config.json` saying which namespaces,
//! mounts, capabilities and limits to apply. isolab writes a bundle equivalent to its own
//! container (same namespaces plus cgroup, Docker's 14 capabilities, no_new_privs, the same
//! limits, a read-only root holding only the workload) and runs `<runtime> run` on it. The
//! difference in start-up between `container` and `oci:runc` is then the runtime's own work:
//! runc re-executes itself to set the container up, in Go, with many more safety steps.
//!
//! `runc run` stays in the foreground as the container's parent until it exits, so it lives in
//! the instance's cgroup and its memory counts as part of the instance.

use super::child::{self, Exec, CONTROL_FD, REPORT_FD};
use super::container::capabilities;
use super::instance::{Instance, Parts, Timeline};
use super::spawn::spawn_exec;
use super::{Availability, Backend, BackendError, Limits, Spec};
use crate::lab::Lab;
use crate::results::info;
use crate::workload::{self, Kernel, WORKLOAD_ELF};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    MountBuilder, ProcessBuilder, RootBuilder, Spec as OciSpec,
};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// An OCI runtime backend.
#[derive(Clone, Debug)]
pub struct Oci {
    runtime: String,
    name: String,
}

impl Oci {
    /// The backend for the runtime binary `runtime` (looked up in PATH), named `oci:<runtime>`.
    pub fn new(runtime: &str) -> Oci {
        Oci {
            runtime: runtime.to_string(),
            name: format!("oci:{runtime}"),
        }
    }

    /// `oci:runc`.
    pub fn runc() -> Oci {
        Oci::new("runc")
    }

    fn runtime_path(&self) -> Option<PathBuf> {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        std::env::split_paths(&path)
            .map(|dir| dir.join(&self.runtime))
            .find(|p| p.is_file())
    }
}

impl Backend for Oci {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> &str {
        "an equivalent OCI bundle run by an OCI runtime (runc: what Docker uses underneath)"
    }

    fn family(&self) -> crate::results::Family {
        // gVisor's runsc runs the workload on a kernel of its own in user space (the Sentry),
        // which takes every system call: a sandbox. Other runtimes set up namespaces and cgroups
        // on the host's kernel, as Docker's runc does.
        if self.runtime == "runsc" {
            crate::results::Family::Sandbox
        } else {
            crate::results::Family::Container
        }
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if self.runtime_path().is_none() {
            return Availability::Unavailable(format!(
                "{} is not installed (Debian/Ubuntu: sudo apt install {})",
                self.runtime, self.runtime
            ));
        }
        if !nix::unistd::geteuid().is_root() {
            return Availability::Unavailable(format!(
                "isolab runs {} as root only (rootless runtimes need a delegated cgroup and a rootless bundle)",
                self.runtime
            ));
        }
        Availability::of_cgroups(lab)
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let name = lab.next_instance_name();
        let cgroup = lab.cgroups()?.create(&name, limits)?;
        let placement = cgroup.placement()?;
        timeline.mark("cgroup");

        let bundle = lab.workdir().join(format!("oci-{name}"));
        let id = format!("isolab-{name}");
        let runtime = self
            .runtime_path()
            .ok_or_else(|| BackendError::Unavailable {
                backend: self.name.clone(),
                reason: format!("{} not found in PATH", self.runtime),
            })?;
        // Clean-up runs after the runtime has exited, whatever happened: forget the container
        // (`run --keep` left its state so its cgroup could be read) and remove the bundle.
        let cleanup = {
            let (runtime, id, bundle) = (runtime.clone(), id.clone(), bundle.clone());
            move || {
                let _ = std::process::Command::new(&runtime)
                    .args(["delete", "--force", &id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                let _ = fs::remove_dir_all(&bundle);
            }
        };
        let written = write_bundle(lab, &bundle, &id, spec, limits, cgroup.relative_path());
        if let Err(e) = written {
            cleanup();
            return Err(e);
        }
        timeline.mark("bundle");

        // `--keep`: do not delete the container when it exits, so its cgroup can still be read;
        // `--preserve-fds 2`: hand fds 3 and 4 (report, control) through to the workload.
        let args: Vec<String> = [
            "run",
            "--keep",
            "--preserve-fds",
            "2",
            "--bundle",
            &bundle.to_string_lossy(),
            &id,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let exec = Exec::new(&runtime, &self.runtime, &args, &[("PATH", &path)]);
        let (ends, fds) = child::pipes(None)?;
        let spawned = spawn_exec(0, &placement, &fds, &exec);
        drop(placement);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                cleanup();
                return Err(BackendError::Sys {
                    step: "clone",
                    source: e,
                });
            }
        };
        let mut instance = Instance::new(Parts {
            backend: self.name.clone(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup: Some(cgroup),
            ends,
            timeline,
            timeout: lab.timeout,
            cleanup: vec![Box::new(cleanup)],
        });
        instance.note(info::IMAGE_BYTES, WORKLOAD_ELF.len());
        instance.note(
            info::IMAGE,
            "OCI bundle: config.json and a root holding one static executable",
        );
        Ok(instance)
    }
}

/// Write `bundle/rootfs/workload` and `bundle/config.json`.
fn write_bundle(
    lab: &Lab,
    bundle: &Path,
    id: &str,
    spec: &Spec,
    limits: &Limits,
    cgroup_path: Option<String>,
) -> Result<(), BackendError> {
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(BackendError::io("create OCI bundle"))?;
    // A hard link costs nothing and the root is mounted read-only, so the container cannot
    // modify the lab's copy through it.
    let exe = rootfs.join("workload");
    if fs::hard_link(lab.workload_path(), &exe).is_err() {
        fs::copy(lab.workload_path(), &exe)
            .map_err(BackendError::io("copy workload into bundle"))?;
    }
    let config =
        config(lab, id, spec, limits, cgroup_path).map_err(|e| BackendError::External {
            program: "oci-spec".into(),
            detail: e.to_string(),
        })?;
    config
        .save(bundle.join("config.json"))
        .map_err(|e| BackendError::External {
            program: "oci-spec".into(),
            detail: e.to_string(),
        })
}

/// The runtime configuration: oci-spec's defaults (those of `runc spec`: mounts for /proc, /dev,
/// /dev/pts, /dev/shm, /dev/mqueue, /sys, masked and read-only paths) made equivalent to isolab's
/// container.
fn config(
    lab: &Lab,
    id: &str,
    spec: &Spec,
    limits: &Limits,
    cgroup_path: Option<String>,
) -> Result<OciSpec, oci_spec::OciSpecError> {
    let mut config = OciSpec::default();
    let caps: HashSet<Capability> = capabilities::DOCKER_DEFAULT
        .iter()
        .filter_map(|(_, name)| serde_json::from_value(serde_json::Value::from(*name)).ok())
        .collect();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .cwd("/")
        .args(
            std::iter::once("/workload".to_string())
                .chain(workload::argv(spec, REPORT_FD, CONTROL_FD, "/scratch"))
                .collect::<Vec<_>>(),
        )
        .env(vec!["PATH=/".to_string()])
        .no_new_privileges(true)
        .capabilities(caps)
        .build()?;
    config.set_process(Some(process));
    config.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build()?,
    ));
    config.set_hostname(Some(id.to_string()));

    let mut mounts = config.mounts().clone().unwrap_or_default();
    if spec.kernel == Kernel::Io {
        mounts.push(
            MountBuilder::default()
                .destination("/scratch")
                .typ("bind")
                .source(lab.scratch_dir())
                .options(vec!["rbind".to_string(), "rw".to_string()])
                .build()?,
        );
    }
    config.set_mounts(Some(mounts));

    let mut linux = config
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().expect("empty"));
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()?,
        );
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(cgroup_path.map(PathBuf::from));
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = limits.memory_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(bytes as i64).build()?);
    }
    if let Some(pids) = limits.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids as i64).build()?);
    }
    if let Some(cpus) = limits.cpus {
        let period = 100_000u64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((cpus * period as f64) as i64)
                .build()?,
        );
    }
    linux.set_resources(Some(resources.build()?));
    config.set_linux(Some(linux));
    Ok(config)
}
