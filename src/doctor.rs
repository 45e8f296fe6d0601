//! `lab doctor`: what this machine can do, what it cannot, and the command that fixes it.

use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::Availability;
use isolab_host::facts as host;
use isolab_host::facts::{KvmKind, Underneath};
use std::fmt;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, with a caveat.
    Warn,
    /// Does not work.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the doctor's report.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The command or step that fixes it.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Run every check.
pub fn checks(lab: &Lab) -> Vec<Check> {
    let mut out = vec![Check::new("kernel", Status::Ok, host::kernel_release())];
    out.push(privilege());
    out.push(container_root());
    out.push(cgroups(lab));
    out.push(kvm());
    out.extend(kvm_host());
    out.extend(linux_guests(lab));
    out.push(seccomp(lab));
    out.push(disks(lab));
    out.push(network());
    out.extend(docker_and_podman());
    out.push(criu());
    out.push(match backend::docker::checkpoint_problem() {
        None => Check::new(
            "docker ckpt",
            Status::Ok,
            "the daemon runs with experimental features: `docker checkpoint` can work",
        ),
        Some(why) => Check::new("docker ckpt", Status::Warn, why),
    });
    for b in backend::registry() {
        let check = match b.availability(lab) {
            Availability::Available => {
                Check::new("backend", Status::Ok, format!("{}: available", b.name()))
            }
            Availability::Unavailable(why) => Check::new(
                "backend",
                Status::Warn,
                format!("{}: unavailable: {why}", b.name()),
            ),
        };
        out.push(check);
    }
    out
}

/// Which Linux-guest backends will work here, and with which kernel.
fn linux_guests(lab: &Lab) -> Vec<Check> {
    use isolab_backends::qemu::{qemu_path, Accel};
    use isolab_vmm::linux::kvm_problem;
    let mut out = Vec::new();
    match isolab_linux_guest::guest_kernel::find(lab.settings.guest_kernel.as_deref()) {
        Ok(image) => out.push(Check::new("guest kern", Status::Ok, image.describe())),
        Err(e) => out.push(
            Check::new("guest kern", Status::Warn, e.to_string())
                .fix("sudo apt install linux-image-amd64   (or: lab kernel build)"),
        ),
    }
    let kind = KvmKind::detect();
    out.push(match kvm_problem(kind) {
        None => Check::new(
            "vm-linux",
            Status::Ok,
            format!(
                "Linux guests boot natively in isolab's VMM ({})",
                kind.label()
            ),
        ),
        Some(_) if kind == KvmKind::NestedPvm => Check::new(
            "vm-linux",
            Status::Warn,
            "Linux guests stop early on nested PVM (--force shows how far); needs VT-x/AMD-V",
        ),
        Some(why) => Check::new("vm-linux", Status::Warn, format!("will not boot: {why}")),
    });
    out.push(match (qemu_path(), Accel::for_host()) {
        (None, _) => Check::new("qemu", Status::Warn, "qemu-system-x86_64 is not installed")
            .fix("sudo apt install qemu-system-x86"),
        (Some(_), Accel::Kvm) => Check::new("qemu", Status::Ok, "QEMU microvm on KVM"),
        (Some(_), Accel::Tcg) => Check::new(
            "qemu",
            Status::Warn,
            "QEMU microvm with TCG: boots, but emulated (labelled so; use --backends qemu)",
        ),
    });
    out
}

fn privilege() -> Check {
    if nix::unistd::geteuid().is_root() {
        return Check::new("privilege", Status::Ok, "running as root");
    }
    userns_check(host::userns_restriction())
}

/// Where the disk kernels' disks go, and whether one of the default size fits there.
fn disks(lab: &Lab) -> Check {
    let bytes = isolab_payload::Spec::default_for(isolab_payload::Kernel::DiskSeq).disk_bytes();
    match isolab_resources::disks::check(&lab.settings.disk_parent, bytes) {
        Ok(()) => Check::new(
            "disks",
            Status::Ok,
            format!(
                "disk-seq and disk-rand get a file each in {} (direct I/O works there)",
                lab.settings.disk_parent.display()
            ),
        ),
        Err(e) => Check::new("disks", Status::Warn, e.to_string())
            .fix("lab run throughput --disk-dir DIR   (a directory on a disk)"),
    }
}

/// Whether the lab may build its own network for net-stream and net-rr.
fn network() -> Check {
    if nix::unistd::geteuid().is_root() {
        Check::new(
            "network",
            Status::Ok,
            "net-stream and net-rr reach the lab's peer over links in namespaces of the lab's own \
             (veth for containers and processes, tap for VMs); the host's network is not touched",
        )
    } else {
        Check::new(
            "network",
            Status::Warn,
            "net-stream and net-rr need CAP_NET_ADMIN for the lab's own network: without root \
             they are left out; every other kernel runs",
        )
        .fix("sudo lab run throughput")
    }
}

/// Who a container's root is on the host: what a way out of it would be worth.
fn container_root() -> Check {
    use isolab_container::namespaces::mapped_root_refused;
    const NAME: &str = "root inside";
    if !nix::unistd::geteuid().is_root() {
        return Check::new(
            NAME,
            Status::Ok,
            "a container's root is your own uid on the host (rootless)",
        );
    }
    match mapped_root_refused() {
        None => Check::new(
            NAME,
            Status::Ok,
            "isolab's container maps its root to an unprivileged uid of its own (a user \
             namespace); oci:runc, oci:crun and docker keep the host's root, as Docker does by \
             default",
        ),
        Some(why) => Check::new(
            NAME,
            Status::Warn,
            format!("{why}: isolab's container runs as the host's root, as Docker's do"),
        )
        .fix(host::userns_fix(&why)),
    }
}

/// The privilege line of a lab that is not root, given what restricts user namespaces.
fn userns_check(restriction: Option<String>) -> Check {
    match restriction {
        None => Check::new(
            "privilege",
            Status::Ok,
            "not root; unprivileged user namespaces are allowed (containers map uid 0 to you)",
        ),
        Some(why) => Check::new(
            "privilege",
            Status::Fail,
            format!("not root and {why}: containers cannot be created"),
        )
        .fix(host::userns_fix(&why)),
    }
}

fn cgroups(lab: &Lab) -> Check {
    let h = match lab.cgroups() {
        Ok(h) => h,
        // The lab runs without them: start-up, throughput and isolation need none.
        Err(_) => {
            let why = lab.cgroup_problem().unwrap_or("?");
            let fix = why
                .rsplit_once("(fix: ")
                .map(|(_, fix)| fix.trim_end_matches(')').to_string());
            let check = Check::new(
                "cgroups",
                Status::Warn,
                format!(
                    "{}; start-up, throughput and isolation run without cgroups, `lab run \
                     memory`/`density` and limits are refused",
                    why.rsplit_once(" (fix: ").map_or(why, |(w, _)| w)
                ),
            );
            return match fix {
                Some(fix) => check.fix(fix),
                None => check,
            };
        }
    };
    // Try it: make and remove one cgroup with a memory limit.
    let probe = h.create(
        &lab.next_instance_name(),
        &isolab_resources::cgroup::Limits {
            memory_bytes: Some(64 << 20),
            ..Default::default()
        },
    );
    match probe {
        Ok(cg) => {
            let _ = cg.destroy();
            let status = if h.controllers().iter().any(|c| c == "pids") {
                Status::Ok
            } else {
                Status::Warn
            };
            let delegated = if h.is_delegated() {
                " (the lab found it runs in a delegated subtree and uses it)"
            } else {
                ""
            };
            Check::new(
                "cgroups",
                status,
                format!(
                    "{} — instance cgroups can be created{delegated}",
                    h.description()
                ),
            )
        }
        Err(e) => Check::new("cgroups", Status::Fail, h.unusable(&e)),
    }
}

fn kvm() -> Check {
    let kind = KvmKind::detect();
    if kind == KvmKind::Absent {
        return Check::new(
            "kvm",
            Status::Warn,
            "no /dev/kvm: VM backends are unavailable",
        )
        .fix("enable VT-x/AMD-V in the firmware, then: sudo modprobe kvm_intel (or kvm_amd)");
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Check::new(
            "kvm",
            Status::Fail,
            format!("/dev/kvm exists but cannot be opened: {e}"),
        )
        .fix("sudo usermod -aG kvm $USER   (then log out and in again)");
    }
    match kind {
        KvmKind::NestedPvm => Check::new(
            "kvm",
            Status::Warn,
            format!(
                "/dev/kvm is {}: the bare microVM runs (its guest stays in ring 3), a Linux guest cannot boot",
                kind.label()
            ),
        ),
        _ => Check::new(
            "kvm",
            Status::Ok,
            format!("/dev/kvm usable: {}", host::kvm_description()),
        ),
    }
}

/// The seccomp profile of `--profile` (docker: Docker's own, podman: Podman's), where it came
/// from, how it resolved for the container's capabilities, and what it compiled to.
fn seccomp(lab: &Lab) -> Check {
    let what = lab
        .settings
        .profile
        .seccomp()
        .map_or("the seccomp profile", |s| s.what);
    match lab.security() {
        Ok(s) => match (&s.seccomp, &s.full) {
            (Some(p), Some(full)) => {
                // What a student should notice: the calls Docker keeps for CAP_SYS_ADMIN.
                let admin = p.kept_for("CAP_SYS_ADMIN");
                let notable: Vec<&str> = ["unshare", "clone", "mount", "setns", "bpf"]
                    .into_iter()
                    .filter(|c| admin.contains(c))
                    .collect();
                Check::new(
                    "seccomp",
                    Status::Ok,
                    format!(
                        "--profile {}: {what}, {}: {} rules for Docker's 14 capabilities ({} \
                         entries left out{}), {} BPF instructions{} (libseccomp compiled it in \
                         {:.1} ms)",
                        lab.settings.profile.name(),
                        p.source,
                        p.rules.len(),
                        p.dropped.len(),
                        match admin.len() {
                            0 => String::new(),
                            n => format!(
                                "; {n} calls only for CAP_SYS_ADMIN, among them {}",
                                notable.join(", ")
                            ),
                        },
                        full.len(),
                        s.inner
                            .as_ref()
                            .map(|i| format!("; each container adds {}", i.len()))
                            .unwrap_or_default(),
                        s.compile_ns as f64 / 1e6
                    ),
                )
            }
            _ => Check::new("seccomp", Status::Ok, "--profile minimal: no filter"),
        },
        Err(why) => {
            let check = Check::new("seccomp", Status::Fail, format!("{what}: {why}"));
            match (
                &lab.settings.seccomp_profile,
                lab.settings.profile.seccomp(),
            ) {
                (None, Some(shipped)) => check.fix(format!(
                    "sudo apt install {} (or run with --profile minimal)",
                    shipped.package
                )),
                _ => check,
            }
        }
    }
}

/// Which container engine answers, and what works with it.
/// Whether CRIU can checkpoint and restore here: `criu check`'s verdict, which decides whether
/// `container` and `oci:runc` (and Docker's `checkpoint`) are restored or skipped.
fn criu() -> Check {
    use isolab_resources::criu::Verdict;
    match isolab_resources::criu::verdict() {
        Verdict::Works { version, .. } => Check::new(
            "criu",
            Status::Ok,
            format!(
                "CRIU {version} passes `criu check`: containers can be checkpointed and restored"
            ),
        ),
        Verdict::Fails(why) if why.contains("not installed") => Check::new(
            "criu",
            Status::Warn,
            format!("{why}: containers are not restored"),
        )
        .fix("sudo apt install criu"),
        Verdict::Fails(why) => Check::new(
            "criu",
            Status::Warn,
            format!("{why}: containers are not restored"),
        )
        .fix(
            "a CRIU release newer than this kernel (criu.org), or a kernel this CRIU knows; the \
             emulated AMD-V host boots Debian's 6.1 kernel: cargo test --test emulated -- \
             --ignored criu::",
        ),
    }
}

fn docker_and_podman() -> Vec<Check> {
    let run = |prog: &str, args: &[&str]| -> Option<String> {
        let o = std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut out = vec![match backend::docker::daemon_problem() {
        Some(why) => Check::new("docker", Status::Warn, why)
            .fix("sudo systemctl start docker (or: sudo dockerd --iptables=false --bridge=none &)"),
        None => {
            let info = run(
                "docker",
                &[
                    "info",
                    "--format",
                    "{{.ServerVersion}} {{.CgroupDriver}} {{.SecurityOptions}}",
                ],
            )
            .unwrap_or_default();
            let where_ =
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into());
            let mut detail = format!(
                "a daemon answers at {where_} (dockerd {})",
                info.split_whitespace().next().unwrap_or("?")
            );
            if info.contains("rootless") || info.contains(" systemd ") {
                detail.push_str(
                    ": start-up, throughput and isolation work; memory is not measured (the \
                     container's cgroup is a systemd unit outside the lab's)",
                );
                Check::new("docker", Status::Warn, detail).fix(
                    "for memory figures: a rootful dockerd with the cgroupfs driver \
                     (--exec-opt native.cgroupdriver=cgroupfs)",
                )
            } else {
                detail.push_str(
                    ": every experiment works (cgroupfs driver: the container's cgroup goes \
                     below the instance's)",
                );
                Check::new("docker", Status::Ok, detail)
            }
        }
    }];
    if let Some(v) = run("podman", &["--version"]) {
        out.push(Check::new(
            "podman",
            Status::Warn,
            format!(
                "{v}: takes the same flags (podman run --rm --network none), but the lab drives \
                 `docker`; with podman-docker's `docker` the docker backend runs through Podman \
                 (untested; memory is not measured)"
            ),
        ));
    }
    out
}

/// What KVM itself runs on, when this machine is a VM or an emulated one: the figures a lab
/// measures here are then not a laptop's, and reports say so too.
fn kvm_host() -> Option<Check> {
    let under = Underneath::detect();
    let said = under.describe()?;
    Some(Check::new("kvm host", Status::Warn, said))
}

/// The report as text, one check per line, with fixes indented below.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!("[{}] {:<10} {}\n", c.status, c.name, c.detail));
        if let Some(fix) = &c.fix {
            s.push_str(&format!("       {:<10} fix: {fix}\n", ""));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ubuntu's AppArmor switch, as its sysctl file would read there: named, with its fix.
    #[test]
    fn the_apparmor_userns_restriction_is_named_with_its_fix() {
        let dir = std::env::temp_dir().join(format!("isolab-apparmor-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::create_dir_all(dir.join("user")).unwrap();
        std::fs::write(dir.join("user/max_user_namespaces"), "63000\n").unwrap();
        let sysctl = dir.join("kernel/apparmor_restrict_unprivileged_userns");
        std::fs::write(&sysctl, "0\n").unwrap();
        assert_eq!(host::userns_restriction_in(&dir), None, "0: no restriction");
        std::fs::write(&sysctl, "1\n").unwrap();
        let check = userns_check(host::userns_restriction_in(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(check.status, Status::Fail);
        assert!(
            check
                .detail
                .contains("kernel.apparmor_restrict_unprivileged_userns is 1"),
            "{}",
            check.detail
        );
        assert_eq!(
            check.fix.as_deref(),
            Some("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0   (or run lab with sudo)")
        );
    }
}
