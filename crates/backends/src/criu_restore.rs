//! Containers checkpointed and restored by CRIU ([`isolab_resources::criu`]): `oci:runc`
//! through runc's own `checkpoint` and `restore`, and isolab's `container` through `criu dump`
//! and `criu restore` of its process tree.
//!
//! Both take the checkpoint the same way: a container of the workload is started with `hold`,
//! so that after its `ready` it waits for the host's go-ahead, blocked in `read(2)` on its
//! control pipe; that is the moment saved. A restored tree wakes up in the same `read`, the lab
//! lets it go ([`Instance::restored`]), and the first marker it then sends — its `released`
//! phase, the first thing a held workload does after the go-ahead — stamped by the restored
//! workload on the host's clock (there is no time namespace), is the restored instance's
//! `ready`.
//!
//! The workload's two pipes to the lab are the delicate part. A pipe has two ends; CRIU saves the
//! workload's, and the lab's end is not in the tree. A restore builds a new pipe, whose other
//! end nobody holds — unless it is told to put a descriptor it *inherits* in the old pipe's place
//! (`--inherit-fd fd[N]:pipe:[INODE]`). The lab makes new pipes for each restored instance and
//! hands their ends in that way:
//!
//! * **runc** does it for the container's standard streams only (what it records in
//!   `descriptors.json` at checkpoint): a container to be checkpointed therefore reports on its
//!   standard output and is released through its standard input, as under gVisor
//!   ([`crate::oci::Launch::Checkpointable`]), and `runc restore` hands its own streams — the
//!   lab's new pipes — to the restored workload.
//! * **`criu restore`** is run by the lab with the new pipes at descriptors 3 and 4, where the
//!   workload had them, and told which old pipe each replaces.
//!
//! The checkpoint is a directory in the lab's 0700 work directory ([`Snapshot::new_dir`]),
//! removed with the snapshot. A restored container is an ordinary instance: its processes in
//! the instance's cgroup (runc's under it, removed by `runc delete --force` from the lab's
//! ledger; CRIU's forked by a `criu` started in it), so a lab killed by SIGKILL leaves nothing.
//!
//! CRIU copies every page of the checkpoint into the restored processes' memory before they
//! run: a restored container starts prefaulted, whatever `--prefault` says (its `prefault` fact
//! is `yes`). CRIU's own stages come from its stats file: `criu_forking` (forking the tree
//! again with its old PIDs) and `criu_restore` (the whole of CRIU's work).

use crate::container::Container;
use crate::instance::{wait_until, Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::oci::{Launch, Oci};
use crate::restore::{Restore, RestoreOptions, Snapshot, Stored};
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_container::rootfs;
use isolab_host::clock::now_ns;
use isolab_resources::criu::{self, CriuError, DumpStats, RestoreStats};
use isolab_results::info;
use isolab_spawn::child::{self, Exec, CONTROL_FD};
use isolab_spawn::{spawn_exec_with, Placement, Streams};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a checkpointed instance, ended by its checkpoint, gets to be collected.
const AFTER_CHECKPOINT: Duration = Duration::from_secs(5);

/// Why containers cannot be checkpointed here, in one line, or `None` when they can.
pub fn criu_problem() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("CRIU checkpoints and restores containers as root only".into());
    }
    criu::verdict().problem().map(str::to_string)
}

fn availability() -> Availability {
    match criu_problem() {
        Some(why) => Availability::Unavailable(why),
        None => Availability::Available,
    }
}

fn criu_error(e: CriuError) -> BackendError {
    BackendError::External {
        program: "criu".into(),
        detail: e.to_string(),
    }
}

fn private_dir(dir: &Path) -> Result<(), BackendError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(BackendError::io(format!("make {}", dir.display())))
}

/// The stages of CRIU's dump, as a snapshot's phases (name, ns).
fn dump_phases(stats: &DumpStats) -> Vec<(String, u64)> {
    [
        ("criu_freezing", stats.freezing_us),
        ("criu_frozen", stats.frozen_us),
        ("criu_memdump", stats.memdump_us),
        ("criu_memwrite", stats.memwrite_us),
    ]
    .into_iter()
    .map(|(name, us)| (name.to_string(), us * 1000))
    .collect()
}

/// CRIU's restore figures as an instance's facts.
fn restore_notes(stats: &RestoreStats) -> Vec<(String, String)> {
    vec![
        (
            "criu_forking_ns".into(),
            (stats.forking_us * 1000).to_string(),
        ),
        (
            "criu_restore_ns".into(),
            (stats.restore_us * 1000).to_string(),
        ),
        (
            "criu_pages_restored".into(),
            stats.pages_restored.to_string(),
        ),
    ]
}

/// A snapshot taken into `dir`, not filled in yet: made first, so that an error on the way
/// drops it and removes the directory.
fn empty_snapshot(backend: &str, spec: Spec, dir: PathBuf) -> Snapshot {
    Snapshot {
        backend: backend.to_string(),
        spec,
        stored: Stored::Dir(dir),
        bytes: 0,
        take_ns: 0,
        phases: Vec::new(),
    }
}

/// The spec a checkpointed instance runs: held at `ready`, where it is saved. A network
/// kernel's container is refused: its network namespace is the lab's link to its peer, which
/// a checkpoint saves as empty (see [`criu::Dump::empty_net`]).
fn held(backend: &str, spec: &Spec) -> Result<Spec, BackendError> {
    if spec.kernel.needs_network() {
        return Err(BackendError::Unavailable {
            backend: backend.into(),
            reason: format!(
                "{} is not checkpointed: a restored container's network namespace is empty",
                spec.kernel
            ),
        });
    }
    let mut spec = *spec;
    spec.hold = true;
    Ok(spec)
}

impl Restore for Oci {
    fn restore_availability(&self, _lab: &Lab) -> Availability {
        availability()
    }

    fn checkpoint(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<Snapshot, BackendError> {
        let spec = held(self.name(), spec)?;
        let (mut instance, id) = self.launch(lab, &spec, limits, Launch::Checkpointable)?;
        instance.wait_phase("ready")?;
        let mut snapshot = empty_snapshot(self.name(), spec, Snapshot::new_dir(lab, &id)?);
        let dir = snapshot.dir().map(Path::to_path_buf).unwrap_or_default();
        let (images, work) = (dir.join("images"), dir.join("work"));
        private_dir(&images)?;
        private_dir(&work)?;
        let runtime = self
            .runtime_path()
            .ok_or_else(|| BackendError::Unavailable {
                backend: self.name().into(),
                reason: "runc is not installed".into(),
            })?;
        let begin = now_ns();
        // runc asks CRIU to dump the container's tree, then ends the container (without
        // `--leave-running`); `runc run`, its parent and the instance's main process, exits.
        // The network namespace is saved empty, as the container has none (see `held`).
        let out = Command::new(&runtime)
            .args(self.global_args(lab, &spec))
            .arg("checkpoint")
            .args(["--empty-ns", "network"])
            .arg("--image-path")
            .arg(&images)
            .arg("--work-path")
            .arg(&work)
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .map_err(BackendError::io("run runc checkpoint"))?;
        snapshot.take_ns = now_ns() - begin;
        let _ = instance.stop_within(AFTER_CHECKPOINT);
        if !out.status.success() {
            let log = [&work, &images]
                .into_iter()
                .flat_map(fs::read_dir)
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>();
            let why = criu::first_error(&log).unwrap_or_else(|| {
                format!(
                    "{} (CRIU's log ends: {})",
                    isolab_host::format::last_lines(&String::from_utf8_lossy(&out.stderr)),
                    isolab_host::format::last_lines(&log)
                )
            });
            return Err(BackendError::External {
                program: "runc checkpoint".into(),
                detail: why,
            });
        }
        snapshot
            .phases
            .push(("runc_checkpoint".into(), snapshot.take_ns));
        // CRIU writes its stats beside its log, in runc's work directory.
        if let Ok(stats) = criu::read_stats(&work.join("stats-dump")) {
            snapshot.phases.extend(dump_phases(&stats.dump));
        }
        snapshot.bytes = criu::images_bytes(&images);
        Ok(snapshot)
    }

    fn restore(
        &self,
        lab: &Lab,
        snapshot: &Snapshot,
        limits: &Limits,
        _options: &RestoreOptions,
    ) -> Result<Instance, BackendError> {
        let dir = snapshot.dir().ok_or_else(|| BackendError::External {
            program: "runc restore".into(),
            detail: "the snapshot is not a directory of CRIU images".into(),
        })?;
        // One work directory per restore: several may run from one checkpoint at once.
        let work = dir.join(format!("restore-{}", lab.next_instance_name()));
        private_dir(&work)?;
        let images = dir.join("images");
        let how = Launch::Restore {
            images: &images,
            work: &work,
        };
        let (mut instance, _) = self.launch(lab, &snapshot.spec, limits, how)?;
        instance.restored()?;
        // CRIU copies every page in before the tree runs (see the module documentation).
        snapshot.note_restored(&mut instance, true);
        instance.at_end(Box::new(move || {
            match criu::read_stats(&work.join("stats-restore")) {
                Ok(stats) => restore_notes(&stats.restore),
                Err(e) => vec![("criu_stats".into(), e.to_string())],
            }
        }));
        Ok(instance)
    }
}

/// The file in a container's checkpoint that lists the descriptors its workload had from the
/// lab (`FD RESOURCE` a line), which a restore hands in anew.
const INHERITED: &str = "inherited";

/// The workload's descriptors 0 to 4 that lead out of the container, as CRIU names them: its
/// pipes to the lab (stderr, report, control) as `pipe:[INODE]`, and the host's `/dev/null`
/// (its standard input and output, opened by the lab before the container had a `/dev`) as
/// `file[MNT_ID:INODE]`, in hex — a file on a mount the container does not have, which CRIU
/// can only name. A restore puts, at each of those numbers, the lab's new one: `criu restore`
/// runs with the new instance's pipes and `/dev/null` at the same numbers.
fn outside_files(pid: i32) -> Result<Vec<(i32, String)>, BackendError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for fd in 0..=CONTROL_FD {
        let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
        let target =
            fs::read_link(&link).map_err(BackendError::io(format!("read {}", link.display())))?;
        let target = target.to_string_lossy().into_owned();
        if target.starts_with("pipe:[") {
            out.push((fd, target));
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .map_err(BackendError::io(format!("read /proc/{pid}/fdinfo/{fd}")))?;
        let mnt_id: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| BackendError::External {
                program: "criu dump".into(),
                detail: format!("no mnt_id for descriptor {fd} of {pid}"),
            })?;
        let inode = fs::metadata(&link)
            .map_err(BackendError::io(format!("stat {}", link.display())))?
            .ino();
        out.push((fd, format!("file[{mnt_id:x}:{inode:x}]")));
    }
    Ok(out)
}

/// The file in a container's checkpoint that lists the mount points on its root (`dir PATH`
/// or `file PATH` a line), which a restore makes in the root it gives CRIU.
const MOUNT_POINTS: &str = "mountpoints";

/// The mount points of [`MOUNT_POINTS`], read back.
fn read_mount_points(dir: &Path) -> Result<Vec<criu::MountPoint>, BackendError> {
    let text = fs::read_to_string(dir.join(MOUNT_POINTS))
        .map_err(BackendError::io("read the checkpoint's mount points"))?;
    text.lines()
        .map(|line| match line.split_once(' ') {
            Some((kind @ ("dir" | "file"), path)) if path.starts_with('/') => {
                Ok(criu::MountPoint {
                    path: PathBuf::from(path),
                    dir: kind == "dir",
                })
            }
            _ => Err(BackendError::External {
                program: "criu restore".into(),
                detail: format!("{MOUNT_POINTS} in the checkpoint holds {line:?}"),
            }),
        })
        .collect()
}

/// The key CRIU writes for the container's `/workload`, a bind mount of the lab's copy of the
/// workload: CRIU does not save what another file system holds, so the dump names the mount
/// by this key and the restore says where that is now (`--external mnt[…]`).
const WORKLOAD_KEY: &str = "isolab-workload";

impl Restore for Container {
    fn restore_availability(&self, _lab: &Lab) -> Availability {
        if self.userns == Some(true) {
            return Availability::Unavailable(
                "a container started the rootless way is not restored: CRIU runs as root".into(),
            );
        }
        availability()
    }

    fn checkpoint(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<Snapshot, BackendError> {
        let spec = held(self.name(), spec)?;
        // Without a user namespace, as Docker's containers by default. isolab's container
        // enters its user namespace last, so its other namespaces belong to the host's user
        // namespace; CRIU dumps a tree's namespaces from inside its user namespace, where it no
        // longer holds the capabilities over them (`Can't setns …/net: Operation not
        // permitted`).
        let plain = Container {
            host_root: true,
            ..self.clone()
        };
        let mut instance = plain.start(lab, &spec, limits)?;
        instance.wait_phase("ready")?;
        let name = format!("container-{}", lab.next_instance_name());
        let mut snapshot = empty_snapshot(self.name(), spec, Snapshot::new_dir(lab, &name)?);
        let dir = snapshot.dir().map(Path::to_path_buf).unwrap_or_default();
        let pid = instance.main_pid().as_raw();
        let inherited = outside_files(pid)?;
        let listed: String = inherited
            .iter()
            .map(|(fd, what)| format!("{fd} {what}\n"))
            .collect();
        fs::write(dir.join(INHERITED), listed)
            .map_err(BackendError::io("write the checkpoint's descriptors"))?;
        // What the container's root holds that CRIU will not restore (see `restore`).
        let points = criu::root_mount_points(pid).map_err(criu_error)?;
        let listed: String = points
            .iter()
            .map(|p| {
                let kind = if p.dir { "dir" } else { "file" };
                format!("{kind} {}\n", p.path.display())
            })
            .collect();
        fs::write(dir.join(MOUNT_POINTS), listed)
            .map_err(BackendError::io("write the checkpoint's mount points"))?;
        let mut external = vec![format!("mnt[{}]:{WORKLOAD_KEY}", rootfs::WORKLOAD_PATH)];
        // A file outside the tree's mounts is dumped as a name only; a pipe needs nothing.
        external.extend(
            inherited
                .iter()
                .filter(|(_, what)| what.starts_with("file["))
                .map(|(_, what)| what.clone()),
        );
        let dump = criu::Dump {
            pid,
            leave_running: false,
            external,
            manage_cgroups: false,
            empty_net: true,
        };
        let begin = now_ns();
        let dumped = dump.run(&dir);
        snapshot.take_ns = now_ns() - begin;
        // CRIU ended the tree it dumped: collect the instance.
        let _ = instance.stop_within(AFTER_CHECKPOINT);
        let dumped = dumped.map_err(criu_error)?;
        snapshot.phases.push(("criu_dump".into(), snapshot.take_ns));
        snapshot.phases.extend(dump_phases(&dumped.stats));
        snapshot.bytes = criu::images_bytes(&dir);
        Ok(snapshot)
    }

    fn restore(
        &self,
        lab: &Lab,
        snapshot: &Snapshot,
        limits: &Limits,
        _options: &RestoreOptions,
    ) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let dir = snapshot.dir().ok_or_else(|| BackendError::External {
            program: "criu restore".into(),
            detail: "the snapshot is not a directory of CRIU images".into(),
        })?;
        let listed = fs::read_to_string(dir.join(INHERITED))
            .map_err(BackendError::io("read the checkpoint's descriptors"))?;
        let mut inherit = Vec::new();
        for line in listed.lines() {
            match line.split_once(' ').map(|(fd, what)| (fd.parse(), what)) {
                Some((Ok(fd), what)) if (0..=CONTROL_FD).contains(&fd) => {
                    inherit.push((fd, what.to_string()))
                }
                _ => {
                    return Err(BackendError::External {
                        program: "criu restore".into(),
                        detail: format!("{INHERITED} in the checkpoint holds {line:?}"),
                    })
                }
            }
        }
        let name = lab.next_instance_name();
        let cgroup = lab.instance_cgroup(&name, limits)?;
        let placement = Placement::of(cgroup.as_ref())?;
        if cgroup.is_some() {
            timeline.mark("cgroup");
        }
        let work = dir.join(format!("restore-{name}"));
        private_dir(&work)?;
        // The restored container's root. CRIU restores every mount of the container but its
        // root mount: there it bind-mounts the directory given as `--root` (it restores no
        // mount namespace without one), as a runtime's root is a directory of its bundle.
        // isolab's container root was a tmpfs of its own holding nothing but the mount points
        // of the container's other mounts (`isolab_container::rootfs`): they are made here, in
        // a directory of the checkpoint's, for CRIU to mount the rest on. A bind of the lab's
        // disk, this root is not the read-only, `nosuid`, `nodev` tmpfs of a cold start; the
        // workload writes only to `/tmp`, a tmpfs of its own again.
        let root = work.join("root");
        private_dir(&root)?;
        criu::make_root(&root, &read_mount_points(dir)?).map_err(criu_error)?;
        // As the tmpfs was (`mode=0755`); the work directory around it stays the lab's alone.
        fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(BackendError::io("open the restored root"))?;
        let restore = criu::Restore {
            work: Some(work),
            root: Some(root),
            external: vec![format!(
                "mnt[{WORKLOAD_KEY}]:{}",
                lab.workload_path().display()
            )],
            inherit,
            ..criu::Restore::default()
        };
        let program = criu::usable().map_err(criu_error)?;
        let args = restore.args(dir);
        // CRIU runs helper programs by name — GNU tar, to refill each tmpfs of the container —
        // so it needs the lab's PATH: without one, the C library looks in `/bin:/usr/bin`
        // only, which may hold another `tar` first (busybox's, whose options CRIU's are not).
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let exec = Exec::new(&program, "criu", &args, &[("PATH", &path)]);
        // CRIU runs as the instance's first process would: in its cgroup (the tree it forks
        // stays there), with the new pipes at 3 and 4, where it finds the descriptors it hands
        // to the restored workload in place of the old ones.
        let (ends, fds) = child::pipes(None)?;
        let begin = Instant::now();
        let t0 = now_ns();
        let criu_pid = spawn_exec_with(0, &placement, &fds, &exec, Streams::Fixed, None).map_err(
            |source| BackendError::Sys {
                step: "clone",
                source,
            },
        )?;
        drop(fds);
        drop(placement);
        let exit = match wait_until(criu_pid, Instant::now() + lab.settings.timeout) {
            Some(WaitStatus::Exited(_, 0)) => Ok(()),
            Some(status) => Err(crate::instance::describe_status(status)),
            None => {
                let _ = kill(criu_pid, Signal::SIGKILL);
                let _ = wait_until(criu_pid, Instant::now() + Duration::from_secs(5));
                Err(format!("did not end within {:?}", lab.settings.timeout))
            }
        };
        // On an error, dropping the cgroup kills whatever CRIU had restored in it.
        let restored = restore
            .outcome(dir, exit, begin.elapsed())
            .map_err(criu_error)?;
        // CRIU's clock starts as it starts, a little after t0: its stages as edges from there.
        timeline.push("criu_forked", t0 + restored.stats.forking_us * 1000);
        timeline.push("criu_restored", t0 + restored.stats.restore_us * 1000);
        timeline.mark("criu_exited");
        let mut instance = Instance::new(Parts {
            backend: self.name().into(),
            spec: snapshot.spec,
            main: Pid::from_raw(restored.pid),
            helpers: Vec::new(),
            cgroup,
            ends,
            timeline,
            timeout: lab.settings.timeout,
            cleanup: Vec::new(),
        });
        instance.restored()?;
        // CRIU copies every page in before the tree runs (see the module documentation).
        snapshot.note_restored(&mut instance, true);
        instance.note(
            info::CONTAINER_ROOT,
            isolab_container::start::container_root(false, None),
        );
        for (key, value) in restore_notes(&restored.stats) {
            instance.note(&key, value);
        }
        Ok(instance)
    }
}
