//! `docker`: the same workload in a Docker container — the tool the introductory texts are
//! about, measured as students run it: `docker run --rm --network none`.
//!
//! Docker is three programs and a runtime, and one `docker run` crosses all of them:
//!
//! ```text
//!  docker (the CLI) ──HTTP over /var/run/docker.sock──► dockerd ──gRPC──► containerd
//!    create, attach, start, wait                        (images,          │ starts one
//!                                                        networks,        ▼
//!                                                        volumes)   containerd-shim ── runc create/start ──► the workload
//! ```
//!
//! The image is the lab's own root file system — one static executable — imported once with
//! `docker import` under a tag named after its content (`isolab-workload:<hash>`), so no
//! registry and no network are needed and a new build of the workload gets a new image. The
//! lab neither starts nor configures a daemon: when none answers, the backend is unavailable,
//! with the daemon's own words and the command that starts one.
//!
//! **Phases.** The CLI's own start is stamped like any child's (`fork`, `exec`). Docker does not
//! report how long its daemon and runtime take, but its event log does: `docker events` lists,
//! with nanosecond wall-clock times, when the daemon had `create`d the container, `attach`ed the
//! CLI's streams and `start`ed it (containerd, the shim and runc have made the process). The lab
//! converts those times to its monotonic clock and adds them as phases `daemon_created`,
//! `attached` and `runtime_started`; the workload stamps `ready` itself, as everywhere. The
//! daemon logs `start` only once the runtime has returned, usually after the workload is
//! running: such an edge is left out, and the last phase, `attached` → `ready`, is the daemon's
//! start request — containerd starting a shim, the shim running runc, runc making the container.
//!
//! **Streams.** A container does not inherit the CLI's file descriptors: the workload's marker
//! lines reach the lab through the attached standard output (`-i`), and the go-ahead through
//! standard input. Their times are the workload's own clock readings, not arrival times.
//!
//! **Memory.** With the `cgroupfs` cgroup driver, `--cgroup-parent` puts the container's cgroup
//! below the instance's, so the instance's figures are the container's (the CLI itself stays in
//! the lab's cgroup: it is the client, not the container). What Docker adds outside the
//! container is reported apart, as facts: the `containerd-shim` that babysits this container,
//! and `dockerd` plus `containerd`, shared by all containers. With the `systemd` driver a
//! container's cgroup must be a systemd unit, and the lab reports no memory for it.
//!
//! **Limits.** `--memory`, `--pids-limit`, `--cpus` and `--device-{read,write}-bps` ask Docker
//! to apply them to the container's own cgroup. The daemon hands runc the parent's path as a
//! path from the root of *every* cgroup v1 hierarchy, so the instance's cgroup is made at that
//! one path in all of them ([`isolab_resources::cgroup::Hierarchy::create_at_one_path`]): the container is
//! below it everywhere, and the kernel's counts (forks refused at `pids.max`) are the
//! instance's. At `ready` the lab reads the container's limits back from its own
//! `/proc/PID/cgroup` (its PID from `docker inspect`), whatever the driver.
//!
//! **Rootless Docker and Podman.** The lab talks to whatever `docker` talks to (`DOCKER_HOST`,
//! the current context), so a rootless daemon works for start-up, throughput and isolation; its
//! containers live in the user's systemd cgroups, so their memory is not measured. Podman takes
//! the same flags (`podman run --rm --network none`); `lab doctor` says which of them answers.

use crate::instance::{Instance, Parts, Run, Timeline};
use crate::lab::Lab;
use crate::provide::{DISK_INSIDE, SCRATCH_INSIDE};
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_host::clock::now_ns;
use isolab_host::format::last_lines;
use isolab_host::memory::ProcessMemory;
use isolab_payload as workload;
use isolab_payload::WORKLOAD_ELF;
use isolab_resources::ownership::Resource;
use isolab_results::info;
use isolab_spawn::child;
use isolab_spawn::child::Exec;
use isolab_spawn::{spawn_exec_with, Placement, Streams};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The `docker` backend.
#[derive(Debug, Default)]
pub struct Docker {
    prepared: OnceLock<Result<Prepared, String>>,
}

/// What a lab learns about the daemon once: the image, the versions, the cgroup driver.
#[derive(Clone, Debug)]
struct Prepared {
    cli: PathBuf,
    image: String,
    version: String,
    cgroupfs: bool,
}

/// The variables the Docker CLI needs to find its daemon and its configuration.
const ENV: [&str; 6] = [
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
];

/// The Docker CLI in PATH.
pub fn cli() -> Option<PathBuf> {
    isolab_host::facts::find_program("docker")
}

/// Run `docker args...` to completion: its standard output, or its own error line.
fn docker(cli: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cli)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(last_lines(&String::from_utf8_lossy(&out.stderr)))
    }
}

/// Whether a daemon answers, and if not, why (in Docker's words) and how to start one.
pub fn daemon_problem() -> Option<String> {
    let Some(cli) = cli() else {
        return Some(
            "the docker CLI is not installed (Debian/Ubuntu: sudo apt install docker.io)".into(),
        );
    };
    docker(&cli, &["version", "--format", "{{.Server.Version}}"])
        .err()
        .map(|why| {
            format!(
                "no Docker daemon answers: {why} (start one: sudo systemctl start docker, or \
                 sudo dockerd &; rootless: dockerd-rootless.sh and DOCKER_HOST)"
            )
        })
}

/// Why `docker checkpoint` cannot be used here, or `None` when it can. Docker keeps
/// checkpoints behind its daemon's *experimental* switch (`dockerd --experimental`, or
/// `"experimental": true` in daemon.json); underneath it asks containerd, which asks runc, which
/// runs CRIU — so CRIU must also pass its own check.
pub fn checkpoint_problem() -> Option<String> {
    if let Some(why) = daemon_problem() {
        return Some(why);
    }
    let cli = cli()?;
    match docker(&cli, &["version", "--format", "{{.Server.Experimental}}"]) {
        Ok(on) if on.trim() == "true" => isolab_resources::criu::verdict()
            .problem()
            .map(str::to_string),
        Ok(_) => Some(
            "the Docker daemon runs without experimental features, which `docker checkpoint` \
             needs (dockerd --experimental)"
                .into(),
        ),
        Err(why) => Some(format!("docker version: {why}")),
    }
}

impl Docker {
    /// Learn about the daemon and import the image if it is not there yet.
    fn prepare(&self) -> Result<Prepared, String> {
        self.prepared
            .get_or_init(|| {
                let cli = cli().ok_or_else(|| "the docker CLI is not installed".to_string())?;
                let version = docker(
                    &cli,
                    &[
                        "version",
                        "--format",
                        "client {{.Client.Version}}, daemon {{.Server.Version}} (API {{.Server.APIVersion}})",
                    ],
                )
                .map_err(|why| format!("no Docker daemon answers: {why}"))?;
                let driver = docker(&cli, &["info", "--format", "{{.CgroupDriver}}"])?;
                let image = format!("isolab-workload:{:016x}", fnv1a(WORKLOAD_ELF));
                if docker(&cli, &["image", "inspect", "--format", "{{.Id}}", &image]).is_err() {
                    import(&cli, &image)?;
                }
                Ok(Prepared {
                    cli,
                    image,
                    version,
                    cgroupfs: driver == "cgroupfs",
                })
            })
            .clone()
    }
}

/// The tag of the lab's layered image, app layer `version`, in the daemon: named for the lab.
pub fn layered_tag(lab_id: &str, version: u32) -> String {
    format!("isolab-image:{lab_id}-v{version}")
}

/// The `DOCKER_*` variables that choose the daemon, as the lab was started with them.
pub fn daemon_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("DOCKER_") && k != "DOCKER_BUILDKIT")
        .collect()
}

/// 64-bit FNV-1a: a name for the image's content (not a cryptographic hash: it only has to
/// change when the workload does).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `docker import`: an image whose only file is the workload at `/workload`, from a tar stream
/// the lab writes (one ustar entry).
fn import(cli: &Path, image: &str) -> Result<(), String> {
    let mut child = Command::new(cli)
        .args(["import", "-", image])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run docker import: {e}"))?;
    let tar = tar_of_one_file("workload", WORKLOAD_ELF, 0o755);
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(&tar))
        .unwrap_or(Ok(()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("docker import: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker import: {}",
            last_lines(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    written.map_err(|e| format!("docker import: {e}"))
}

/// A tar archive (POSIX ustar) holding one regular file owned by root.
fn tar_of_one_file(name: &str, data: &[u8], mode: u32) -> Vec<u8> {
    let mut header = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut header, 0, name.as_bytes());
    put(&mut header, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(
        &mut header,
        124,
        format!("{:011o}\0", data.len()).as_bytes(),
    );
    put(&mut header, 136, b"00000000000\0");
    header[156] = b'0';
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    // The checksum is computed with its own field read as spaces.
    put(&mut header, 148, b"        ");
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    // Two empty blocks end the archive.
    out.extend_from_slice(&[0u8; 1024]);
    out
}

impl Backend for Docker {
    fn name(&self) -> &str {
        "docker"
    }

    /// Docker's own checkpoints (`docker checkpoint create`, `docker start --checkpoint`) go
    /// through containerd and runc to CRIU: `oci:runc` measures that path without the daemon.
    fn not_restorable(&self) -> String {
        let lab = "the lab does not drive `docker checkpoint`; `oci:runc` restores through \
                   the same runc and CRIU";
        match checkpoint_problem() {
            Some(why) => format!("{why}; and {lab}"),
            None => lab.to_string(),
        }
    }

    fn describe(&self) -> &str {
        "docker run --rm --network none on an image of the lab's root: the CLI, dockerd, containerd, its shim and runc"
    }

    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::Container
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if let Some(why) = daemon_problem() {
            return Availability::Unavailable(why);
        }
        Availability::of_cgroups(lab)
    }

    /// Docker keeps its own copy of the image's layers in its storage (overlay2's `diff`
    /// directories): those are the files its containers read.
    fn image_files(&self, lab: &Lab) -> Result<Vec<PathBuf>, BackendError> {
        let prepared = self.prepare().map_err(|reason| BackendError::Unavailable {
            backend: self.name().into(),
            reason,
        })?;
        let tag = self.image_for(lab, &prepared)?;
        let dirs = docker(
            &prepared.cli,
            &[
                "image",
                "inspect",
                "--format",
                "{{.GraphDriver.Data.LowerDir}}:{{.GraphDriver.Data.UpperDir}}",
                &tag,
            ],
        )
        .map_err(|detail| BackendError::External {
            program: "docker image inspect".into(),
            detail,
        })?;
        let mut files = Vec::new();
        for dir in dirs
            .split(':')
            .filter(|d| !d.is_empty() && *d != "<no value>")
        {
            isolab_resources::image::collect_files(Path::new(dir), &mut files);
        }
        Ok(files)
    }

    fn supports(&self, _lab: &Lab, kernel: isolab_payload::Kernel) -> Result<(), String> {
        if kernel.needs_network() {
            return Err(
                "Docker's containers join the daemon's own networks; the lab's peer lives in a \
                 network namespace of the lab's, which no daemon network reaches without changing \
                 the host's network, and the lab never does"
                    .into(),
            );
        }
        Ok(())
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        self.start_named(lab, spec, limits)
            .map(|(instance, _)| instance)
    }

    /// As every backend, plus what Docker adds outside the container, sampled at `ready`, and
    /// the daemon's phases from its event log.
    fn run(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Run, BackendError> {
        let (mut instance, container) = self.start_named(lab, spec, limits)?;
        let waited = instance
            .wait_ready()
            .map(|()| note_daemons(&mut instance))
            .and_then(|()| instance.wait_done());
        match waited {
            Ok(()) | Err(BackendError::Exited { .. }) => {
                if let Ok(p) = self.prepare() {
                    add_daemon_phases(&mut instance, &p.cli, &container);
                }
                instance.finish()
            }
            Err(e) => Err(e),
        }
    }
}

impl Docker {
    /// The image to run: the lab's root imported once (`prepared.image`), or, when the lab runs
    /// on its layered image, that image as `docker build` makes it — built once per lab, in the
    /// lab's ledger before it exists (see [`isolab_resources::image::docker`]).
    fn image_for(&self, lab: &Lab, prepared: &Prepared) -> Result<String, BackendError> {
        let Some(image) = lab.image()? else {
            return Ok(prepared.image.clone());
        };
        let tag = layered_tag(lab.id(), image.spec.app_version);
        if docker(
            &prepared.cli,
            &["image", "inspect", "--format", "{{.Id}}", &tag],
        )
        .is_ok()
        {
            return Ok(tag);
        }
        let env = daemon_env();
        lab.keep(lab.ledger().claim(Resource::DockerImage {
            cli: prepared.cli.clone(),
            env: env.clone(),
            tag: tag.clone(),
        })?);
        isolab_resources::image::docker::build(&prepared.cli, &env, &image, &tag)?;
        Ok(tag)
    }

    /// Start one container; returns it with its name.
    fn start_named(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<(Instance, String), BackendError> {
        let mut timeline = Timeline::start();
        let fresh = self.prepared.get().is_none();
        let prepared = self.prepare().map_err(|reason| BackendError::Unavailable {
            backend: self.name().into(),
            reason,
        })?;
        if fresh {
            timeline.mark("lab_setup");
        }
        let name = lab.next_instance_name();
        let container = format!("isolab-{name}");
        // The container's cgroup goes below this one, in every hierarchy: Docker takes one
        // path for all of them, so the instance is made at one path in all of them. The limits
        // are Docker's to apply.
        let cgroup = if prepared.cgroupfs {
            Some(lab.cgroups()?.create_at_one_path(&name)?)
        } else {
            None
        };
        timeline.mark("cgroup");

        let mut args: Vec<String> = ["run", "--rm", "-i", "--network", "none", "--name"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(container.clone());
        let relative = cgroup.as_ref().and_then(|c| c.relative_path());
        if let Some(rel) = &relative {
            args.push(format!("--cgroup-parent={rel}"));
        }
        if let Some(bytes) = limits.memory_bytes {
            args.push(format!("--memory={bytes}"));
            args.push(format!("--memory-swap={bytes}"));
        }
        if let Some(pids) = limits.pids {
            args.push(format!("--pids-limit={pids}"));
        }
        if let Some(cpus) = limits.cpus {
            args.push(format!("--cpus={cpus}"));
        }
        // Docker names a disk by its device node, which it turns into the `major:minor` of
        // the throttle rules itself.
        let io_disk = match limits.io_bps {
            Some(bps) => {
                let disk = lab.io_disk().map_err(|why| {
                    BackendError::Cgroup(isolab_resources::cgroup::CgroupError::NoIoDevice(why))
                })?;
                let node = format!("/dev/{}", disk.name);
                args.push(format!("--device-read-bps={node}:{bps}"));
                args.push(format!("--device-write-bps={node}:{bps}"));
                Some(disk)
            }
            None => None,
        };
        // The daemon binds it with the flags of the lab's own mount of `scratch/` (nosuid,
        // nodev, noexec: a bind inherits them); `docker run` has no option to add them.
        let provisions = lab.provide(spec, &name, None)?;
        if let Some(dir) = &provisions.scratch {
            args.push(format!(
                "--mount=type=bind,source={},target={SCRATCH_INSIDE}",
                dir.path().display()
            ));
        }
        // The daemon resolves the disk's path itself: safe because no user but root (and the
        // lab's) may change a directory on it (`isolab_resources::disks`, "Paths others open").
        if let Some(disk) = &provisions.disk {
            args.push(format!(
                "--mount=type=bind,source={},target={DISK_INSIDE}",
                disk.path().display()
            ));
        }
        args.push(self.image_for(lab, &prepared)?);
        args.push("/workload".into());
        // Markers on the attached standard output, the go-ahead on standard input.
        args.extend(workload::argv(spec, 1, 0, &provisions.given(true)));
        let env: Vec<(String, String)> = ENV
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .collect();
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let exec = Exec::new(&prepared.cli, "docker", &args, &env_refs);
        let (ends, fds) = child::pipes(None)?;
        // The container lives in the daemon, not in the lab: written down before the daemon
        // hears of it, so that a lab killed from here on still has it removed (by its guardian
        // or the next lab), with the daemon's address this lab used.
        let owned = lab.ledger().claim(Resource::DockerContainer {
            cli: prepared.cli.clone(),
            env: env
                .iter()
                .filter(|(k, _)| k.starts_with("DOCKER_"))
                .cloned()
                .collect(),
            name: container.clone(),
        })?;
        // The CLI stays in the lab's cgroup: it is the client, not the container.
        let pid = spawn_exec_with(0, &Placement::none(), &fds, &exec, Streams::Standard, None)
            .map_err(BackendError::sys("clone"))?;
        drop(fds);
        let cleanup = move || {
            // Gone already after a normal end (--rm); otherwise stop and remove it. Then the
            // directories Docker made for it in the hierarchies the lab does not use.
            drop(owned);
            if let Some(rel) = relative {
                let _ = isolab_resources::cgroup::remove_everywhere(Path::new(&rel));
            }
            drop(provisions);
        };
        let mut instance = Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup,
            ends,
            timeline,
            timeout: lab.settings.timeout,
            cleanup: vec![Box::new(cleanup)],
        });
        // Docker applies the limits to the container's own cgroup, which the daemon makes:
        // its processes are checked against them at `ready`, found through the daemon (the
        // CLI, the instance's main process, stays outside).
        instance.expect_limits(*limits, io_disk);
        let (cli, name) = (prepared.cli.clone(), container.clone());
        let env_for_inspect = env.clone();
        instance.main_is_a_client(Box::new(move || {
            Command::new(&cli)
                .args(["inspect", "--format", "{{.State.Pid}}", &name])
                .envs(env_for_inspect.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse::<i32>()
                        .ok()
                })
                .filter(|&pid| pid > 0)
                .map(nix::unistd::Pid::from_raw)
                .into_iter()
                .collect()
        }));
        crate::note_image(
            &mut instance,
            lab.image()?.as_deref(),
            &format!(
                "{} (docker import of the lab's root: one static executable)",
                prepared.image
            ),
        );
        instance.note(info::RUNTIME_VERSION, &prepared.version);
        instance.note(info::PROFILE, "docker (the daemon's own default)");
        if !prepared.cgroupfs {
            instance.note(
                info::MEMORY_NOTE,
                "not measured: the daemon uses the systemd cgroup driver, so the container's \
                 cgroup is a systemd unit outside the lab's",
            );
        }
        Ok((instance, container))
    }
}

/// Note the memory of the processes Docker keeps outside the container: this container's
/// shim, and the daemons every container shares.
fn note_daemons(instance: &mut Instance) {
    let id = instance
        .cgroup()
        .and_then(|c| c.paths().next().map(Path::to_path_buf))
        .and_then(|dir| {
            fs::read_dir(dir)
                .ok()?
                .flatten()
                .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
        });
    let mut shims = Vec::new();
    let mut daemons = Vec::new();
    for pid in isolab_host::procfs::numbered("/proc") {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        match comm.trim() {
            "dockerd" | "containerd" => daemons.push(pid),
            c if c.starts_with("containerd-shim") => {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                if id.as_deref().is_some_and(|id| cmdline.contains(id)) {
                    shims.push(pid);
                }
            }
            _ => {}
        }
    }
    if !shims.is_empty() {
        instance.note(info::SHIM_PSS_BYTES, ProcessMemory::of(shims).pss_bytes);
    }
    if !daemons.is_empty() {
        instance.note(info::DAEMON_PSS_BYTES, ProcessMemory::of(daemons).pss_bytes);
    }
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds: what turns a wall-clock time into the
/// lab's clock.
fn realtime_offset_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mono = now_ns();
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as i128) * 1_000_000_000 + ts.tv_nsec as i128 - mono as i128
}

/// The daemon's `create`, `attach` and `start` events of `container`, as phases.
fn add_daemon_phases(instance: &mut Instance, cli: &Path, container: &str) {
    let offset = realtime_offset_ns();
    let Some(spawn) = instance.timeline().at("spawn") else {
        return;
    };
    let since = (spawn as i128 + offset) as f64 / 1e9 - 1.0;
    let until = (now_ns() as i128 + offset) as f64 / 1e9 + 1.0;
    let Ok(events) = docker(
        cli,
        &[
            "events",
            "--since",
            &format!("{since:.9}"),
            "--until",
            &format!("{until:.9}"),
            "--filter",
            &format!("container={container}"),
            "--format",
            "{{.TimeNano}} {{.Action}}",
        ],
    ) else {
        return;
    };
    for line in events.lines() {
        let Some((t, action)) = line.split_once(' ') else {
            continue;
        };
        let phase = match action.trim() {
            "create" => "daemon_created",
            "attach" => "attached",
            "start" => "runtime_started",
            _ => continue,
        };
        // The daemon logs `start` once the runtime has returned, when the workload is often
        // running already: only edges before `ready` are phases of the start-up.
        let ready = instance.timeline().at("ready").unwrap_or(u64::MAX) as i128;
        if let Ok(t) = t.parse::<i128>() {
            let mono = t - offset;
            if mono > 0 && mono < ready {
                instance.push_phase(phase, mono as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_of_one_file_is_what_tar_reads() {
        let tar = tar_of_one_file("workload", b"hello", 0o755);
        assert_eq!(tar.len() % 512, 0);
        let dir = std::env::temp_dir().join(format!("isolab-tar-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("one.tar");
        fs::write(&path, &tar).unwrap();
        let out = Command::new("tar")
            .args(["-tvf"])
            .arg(&path)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(listing.contains("workload"), "{listing}");
        assert!(listing.starts_with("-rwxr-xr-x"), "{listing}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn error_output_becomes_its_last_lines() {
        assert_eq!(last_lines("a\n\n b \nc\nd\n"), "b | c | d");
        assert_eq!(last_lines(""), "no error message");
    }
}
