//! The wire names of the facts backends report (`isolab_backends::Instance::note`, `info`
//! marker lines), read into [`crate::Facts`] when a run becomes a record.

/// Bytes of the image the backend boots or starts: a container's root file system, a guest's
/// ELF, a Linux guest's kernel plus initramfs.
pub const IMAGE_BYTES: &str = "image_bytes";
/// Forks and new threads the instance's cgroup refused at its `pids.max` (`pids.events`).
pub const PIDS_MAX_REFUSED: &str = "pids_max_refused";
/// Processes of the instance's cgroup (or below it) the kernel's OOM killer killed.
pub const OOM_KILLS: &str = "oom_kills";
/// `fork-bomb`: forks that succeeded.
pub const FORKS: &str = "forks";
/// `fork-bomb`: forks refused, as the bomb's processes counted them (EAGAIN).
pub const FORKS_REFUSED: &str = "forks_refused";
/// `fork-bomb` in a Linux guest: the most processes it could have there (`RLIMIT_NPROC`).
pub const FORK_LIMIT: &str = "fork_limit";
/// `mem-hog`: the most bytes one of its children touched.
pub const HOG_BYTES: &str = "hog_bytes";
/// `mem-hog`: how many of its children a signal killed (each was started again).
pub const HOG_KILLS: &str = "hog_kills";
/// `fork-bomb`, `mem-hog`: the signal that ended the workload's child before the host said
/// stop (`SIGKILL`: the OOM killer, say).
pub const CHILD_SIGNAL: &str = "child_signal";
/// The same, when the child exited by itself: its exit status.
pub const CHILD_EXIT: &str = "child_exit";
/// `mem-hog` in a Linux guest: the OOM kills the guest's own kernel counted meanwhile.
pub const GUEST_OOM_KILLS: &str = "guest_oom_kills";
/// What the image consists of, in words.
pub const IMAGE: &str = "image";
/// How the instance started: `cold` or `restored` ([`crate::StartKind`]). Absent: cold.
pub const START: &str = "start";
/// A restored instance: whether its memory was touched in full before its first entry
/// (`--prefault`): `yes` or `no`.
pub const PREFAULT: &str = "prefault";
/// A restored instance: bytes of the snapshot it was restored from.
pub const SNAPSHOT_BYTES: &str = "snapshot_bytes";
/// Guest RAM the VMM mapped (configured size).
pub const GUEST_RAM_BYTES: &str = "guest_ram_bytes";
/// Guest RAM actually backed by host pages (touched by the guest or the VMM).
pub const GUEST_TOUCHED_BYTES: &str = "guest_touched_bytes";
/// Unique set size of the VMM process.
pub const VMM_USS_BYTES: &str = "vmm_uss_bytes";
/// Resident set size of the VMM process (mostly pages shared copy-on-write with the lab).
pub const VMM_RSS_BYTES: &str = "vmm_rss_bytes";
/// Proportional set size of the VMM process.
pub const VMM_PSS_BYTES: &str = "vmm_pss_bytes";
/// VMM USS minus the guest RAM it touched: what the hypervisor itself costs.
pub const VMM_OVERHEAD_BYTES: &str = "vmm_overhead_bytes";
/// How /dev/kvm is implemented (hardware or nested PVM): `host::KvmKind`'s label.
pub const KVM: &str = "kvm";
/// What KVM itself runs on, when that is a hypervisor (nested virtualization) or an
/// emulator (QEMU TCG): `host::Underneath`'s words. Absent on bare metal.
pub const KVM_HOST: &str = "kvm_host";

/// The facts every VM run records about its KVM ([`KVM`], and [`KVM_HOST`] where KVM itself
/// runs under a hypervisor or an emulator), as (key, value).
pub fn kvm_facts() -> Vec<(&'static str, String)> {
    use isolab_host::facts::{KvmKind, Underneath};
    let mut facts = vec![(KVM, KvmKind::detect().label().to_string())];
    if let Some(under) = Underneath::detect().describe() {
        facts.push((KVM_HOST, under));
    }
    facts
}
/// Prefix of the per-cause VM exit counters, e.g. `exits_io`.
pub const EXITS_PREFIX: &str = "exits_";
/// The Linux kernel a guest booted: its file, its shape and why the lab chose it.
pub const GUEST_KERNEL: &str = "guest_kernel";
/// The command line a Linux guest's kernel was given.
pub const GUEST_CMDLINE: &str = "guest_cmdline";
/// The operating system inside a VM: `none` (the bare guest) or `linux`.
pub const GUEST_OS: &str = "guest_os";
/// Set when the backend's numbers come from emulation (e.g. QEMU TCG), not virtualization.
pub const EMULATED: &str = "emulated";
/// Who answered a kernel that needs an OS, when it was not the workload's own kernel (e.g.
/// "vmm" for the bare guest's `io` and `probe`).
pub const SERVED_BY: &str = "served_by";
/// How a container was configured beyond its namespaces: `minimal`, `docker` (masks,
/// Docker's seccomp profile) or `podman` (masks, Podman's).
pub const PROFILE: &str = "profile";
/// The seccomp profile a container ran under: its file, the package and version that
/// installed it, and the SHA-256 of its bytes.
pub const SECCOMP_PROFILE: &str = "seccomp_profile";
/// Who a container's root is on the host, in words: the host's root (uid 0) or a uid of
/// its own behind a user namespace.
pub const CONTAINER_ROOT: &str = "container_root";
/// Which device nodes a container may open, and what enforces it (a devices cgroup, a BPF
/// program, the OCI bundle's rules), in words; or why no policy is in force.
pub const DEVICES: &str = "devices";
/// The external runtime's own version (`runc --version`, `docker version`, ...).
pub const RUNTIME_VERSION: &str = "runtime_version";
/// Proportional set size of the per-container helper a runtime keeps outside the container
/// (Docker's `containerd-shim`).
pub const SHIM_PSS_BYTES: &str = "shim_pss_bytes";
/// Proportional set size of the daemons every container of the runtime shares (`dockerd`
/// and `containerd`).
pub const DAEMON_PSS_BYTES: &str = "daemon_pss_bytes";
/// How gVisor's runsc intercepts the workload's system calls: `ptrace` or `kvm`.
pub const SANDBOX_PLATFORM: &str = "sandbox_platform";
/// Why a backend's memory figures are missing or partial, in words.
pub const MEMORY_NOTE: &str = "memory_note";
/// The median latency of one request (disk-rand, net-rr), as the workload timed it.
pub const LATENCY_P50_NS: &str = "latency_p50_ns";
/// The 99th-percentile latency of one request.
pub const LATENCY_P99_NS: &str = "latency_p99_ns";
/// How long disk-seq's writes (with their sync) took.
pub const WRITE_NS: &str = "write_ns";
/// How long disk-seq's reads took.
pub const READ_NS: &str = "read_ns";
/// A student's program installed from a step before its track's last (`student:container`,
/// `student:vmm`): what it is, for labels — "your VMM (step 2 of 5)".
pub const UNFINISHED: &str = "unfinished";
/// The memory limit in force for the instance's processes at `ready`, read back from their
/// own cgroups (the smallest up each hierarchy; the loosest over the processes), in bytes.
pub const MEMORY_LIMIT_IN_FORCE_BYTES: &str = "memory_limit_in_force_bytes";
/// The same for `pids.max`.
pub const PIDS_LIMIT_IN_FORCE: &str = "pids_limit_in_force";
/// The same for CPU bandwidth, in cores.
pub const CPU_LIMIT_IN_FORCE: &str = "cpu_limit_in_force";
/// The same for disk bandwidth, in bytes per second.
pub const IO_LIMIT_IN_FORCE_BPS: &str = "io_limit_in_force_bps";
/// Where the limits in force were read: a process and its cgroups, e.g. `pid 812
/// (workload): pids:/isolab/3f9a/3f9a-0/isolab-3f9a-0 memory:/…`.
pub const LIMITS_READ_FROM: &str = "limits_read_from";
/// Bytes the lab's peer received from the instance, and whether their sum matched what the
/// kernel sent (`peer_bytes`, `peer_checked`): the host side's check of a network kernel.
pub const PEER_BYTES: &str = "peer_bytes";
