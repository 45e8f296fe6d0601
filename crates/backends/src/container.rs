//! `container`: isolab's own container runtime ([`isolab_container`]) as a backend.
//!
//! The runtime's pieces — namespaces, the root file system, capabilities, seccomp — are the
//! `isolab-container` crate; this file starts one instance of it for the lab: its cgroup, what the
//! lab shares with it (a scratch directory, a disk, a network link), and the facts its runs
//! record.

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_container::rootfs::RootfsPlan;
use isolab_container::start::{
    self, container_root, detached_tree, mapped_root_refused, spawn_alone, Alone, Job, SendExec,
    ROOTLESS_DEVICES,
};
use isolab_container::{namespaces, rootfs};
use isolab_payload as workload;
use isolab_resources::image::overlay;
use isolab_resources::image::overlay::Upper;
use isolab_results::info;
use isolab_spawn::child;
use isolab_spawn::child::{Exec, CONTROL_FD, REPORT_FD};
use isolab_spawn::Placement;
use std::path::PathBuf;

/// The `container` backend.
#[derive(Clone, Debug, Default)]
pub struct Container {
    /// Put a static busybox at `/bin/busybox` (and `/bin/sh`) for exercises that want a shell.
    pub busybox: Option<PathBuf>,
    /// Start the container the rootless way, in a user namespace from its first step: `None`
    /// decides by privilege (only when not root), `Some(true)` also as root — the container's
    /// root is then the lab's own uid outside.
    pub userns: Option<bool>,
    /// As root, leave the container's root the host's root, as Docker does by default (no
    /// `userns-remap`). Without it a root lab maps the container's root to a uid of its own
    /// ([`namespaces::MappedRoot`]), unless the kernel allows no user namespace at all.
    pub host_root: bool,
}

impl Backend for Container {
    fn name(&self) -> &str {
        "container"
    }

    fn describe(&self) -> &str {
        "isolab's runtime: namespaces, pivot_root, cgroup limits, Docker's masks, capabilities and seccomp profile"
    }

    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::Container
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if namespaces::need_userns() {
            if let Some(why) = isolab_host::facts::userns_restriction() {
                return Availability::Unavailable(format!(
                    "not root and user namespaces are restricted: {why} (see `lab doctor`)"
                ));
            }
        }
        match lab.security() {
            Ok(_) => Availability::Available,
            Err(why) => Availability::Unavailable(why),
        }
    }

    /// A container sees the lab's directory of tools at `/tools`, read-only.
    fn carries_tools(&self) -> bool {
        true
    }

    /// Restored by CRIU ([`crate::criu_restore`]).
    fn restorer(&self) -> Option<&dyn crate::Restore> {
        Some(self)
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let fresh = !lab.security_ready();
        let security = lab.security().map_err(|reason| BackendError::Unavailable {
            backend: self.name().into(),
            reason,
        })?;
        let name = lab.next_instance_name();
        let userns = self.userns.unwrap_or_else(namespaces::need_userns);
        let hostname = format!("isolab-{name}");
        // Who the container's root is on the host: a uid of its own where the lab is root
        // (see `namespaces::MappedRoot`), the lab's own uid rootless.
        let mapped = (!userns && !self.host_root && mapped_root_refused().is_none())
            .then(|| namespaces::MappedRoot::for_container(&name));
        let provisions = lab.provide(spec, &name, mapped.as_ref().map(|m| (m.id, m.id)))?;
        // A network kernel's container joins the namespace of its link to the peer instead of
        // making an empty one.
        let netns = provisions
            .link
            .as_ref()
            .map(|l| l.ns.try_clone_fd())
            .transpose()
            .map_err(BackendError::io("dup the link's netns"))?;
        let unshared = match netns {
            Some(_) => namespaces::UNSHARED & !libc::CLONE_NEWNET,
            None => namespaces::UNSHARED,
        };
        // As root, a container starts from the lab's launcher thread and its template root,
        // which holds nothing of the host's: a container that needs its scratch directory or
        // its disk attaches them.
        let template = RootfsPlan::new(
            &lab.rootfs_mount_point(),
            &lab.workload_path(),
            self.busybox.as_deref(),
            None,
            &hostname,
            false,
        );
        // A container on the lab's layered image has a root of its own (an overlay), not the
        // template's: it builds it itself, as a rootless container does; so does one that
        // carries the field's tools at /tools.
        let own_root = provisions.image.is_some() || provisions.tools.is_some();
        let (launcher, started) = match userns || own_root {
            true => (None, false),
            false => security.launcher(&template)?,
        };
        let mut provisions = provisions;
        if provisions.image.is_some() {
            provisions.upper = Some(Upper::make(
                &lab.overlay_dir()?.join(&name),
                mapped.as_ref().map(|m| (m.id, m.id)),
            )?);
        }
        if fresh || started {
            // Once per lab: compiling the seccomp profile, building the template root.
            timeline.mark("lab_setup");
        }
        let mut cgroup = lab.instance_cgroup(&name, limits)?;
        // Before the placement: on v1 the policy is one more cgroup for init to join.
        let devices = match cgroup.as_mut() {
            Some(cg) if !userns => lab.confine_devices(cg)?,
            _ if userns => format!("not in force: {ROOTLESS_DEVICES}"),
            _ => format!(
                "not in force: the lab has no cgroups ({})",
                lab.cgroup_problem().unwrap_or("none")
            ),
        };
        let placement = Placement::of(cgroup.as_ref())?;
        if cgroup.is_some() {
            timeline.mark("cgroup");
        }

        // Everything the child process needs, prepared while allocating is still safe.
        let caps = security.caps;
        let args = workload::argv(spec, REPORT_FD, CONTROL_FD, &provisions.given(true));
        let exec = Exec::new(rootfs::WORKLOAD_PATH.as_ref(), "workload", &args, &[]);
        let (pid, ends, sync) = match launcher {
            Some(launcher) => {
                let mut attach = Vec::new();
                if let Some(s) = &provisions.scratch {
                    attach.push((detached_tree(s.path())?, c"/scratch"));
                }
                // The disk is bound by its path, which no user but root (and the lab's) may
                // change (`isolab_resources::disks`, "Paths others open").
                if let Some(d) = &provisions.disk {
                    attach.push((detached_tree(d.path())?, c"/dev/vda"));
                }
                let (ends, mut fds) = child::pipes(None)?;
                if let Some(ns) = netns {
                    fds.join_netns(ns)?;
                }
                let job = Job {
                    fds,
                    placement,
                    plan: template,
                    unshared,
                    attach,
                    security: security.clone(),
                    caps,
                    mapped: mapped.clone(),
                    exec: SendExec(exec),
                };
                let pid = start::from_launcher(&launcher, job)?;
                (pid, ends, None)
            }
            None => {
                let plan = RootfsPlan::new(
                    &lab.rootfs_mount_point(),
                    &lab.workload_path(),
                    self.busybox.as_deref(),
                    provisions.scratch.as_ref().map(|s| s.path()),
                    &hostname,
                    userns,
                )
                .with_disk(provisions.disk.as_ref().map(|d| d.path()))
                .with_tools(provisions.tools.as_ref().map(|t| t.dir()))
                .with_overlay(
                    provisions
                        .image
                        .as_ref()
                        .zip(provisions.upper.as_ref())
                        .map(|(image, upper)| {
                            overlay::options(
                                &image.lowerdir(),
                                Some((&upper.upper(), &upper.work())),
                            )
                        }),
                );
                let alone = Alone {
                    userns,
                    unshared,
                    netns,
                    mapped: mapped.clone(),
                };
                spawn_alone(&alone, placement, &plan, &security, &caps, &exec)?
            }
        };
        let image = provisions.image.clone();
        let mut instance = Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup,
            ends,
            timeline,
            timeout: lab.settings.timeout,
            cleanup: Vec::new(),
        });
        provisions.hand_to(lab, &mut instance);
        // The "image": everything the container's root holds.
        crate::note_image(
            &mut instance,
            image.as_deref(),
            "tmpfs root holding one static executable (the workload)",
        );
        instance.note(info::PROFILE, security.profile.name());
        if let Some(seccomp) = security.seccomp_note() {
            instance.note(info::SECCOMP_PROFILE, seccomp);
        }
        instance.note(
            info::CONTAINER_ROOT,
            container_root(userns, mapped.as_ref()),
        );
        instance.note(info::DEVICES, devices);
        // From here on, dropping `instance` on an error kills and reaps whatever was started.
        if let Some(lab_sync) = sync {
            start::finish_rootless(pid, lab_sync, lab.settings.timeout)?;
        }
        Ok(instance)
    }
}
