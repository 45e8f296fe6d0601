//! What a run reports about itself, as typed fields: [`Facts`].
//!
//! Facts reach the lab as text. A VMM child process writes `info` lines on its marker pipe
//! (`key=value`, see `kernels/src/wire.rs`), and the lab notes what it knows itself with
//! `isolab_backends::Instance::note`; both are keyed by the names in [`crate::info`]. When a
//! run becomes a record, [`Facts::from_wire`] reads those strings into the fields below, so a
//! report reads `facts.guest_ram_bytes` (a number) instead of looking up a string that someone
//! may have spelled differently.
//!
//! Adding a fact is one line in the table of [`facts!`](self) (its field, its type and its key
//! in [`crate::info`]). A key without a line yet is not lost: it is kept, as text, in
//! [`Facts::other`], and so is a value that does not parse as its field's type.

use crate::info;
use isolab_host::facts::KvmKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The operating system inside a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestOs {
    /// None: the bare guest runs the workload's kernels alone.
    None,
    /// A Linux kernel, with the workload as its `/init`.
    Linux,
}

/// A fact's value: how it is read from, and written as, the text of the wire protocol.
pub trait Fact: Sized {
    /// The value, if `text` is one.
    fn parse(text: &str) -> Option<Self>;
    /// The value as the wire protocol writes it.
    fn text(&self) -> String;
}

impl Fact for u64 {
    fn parse(text: &str) -> Option<u64> {
        text.trim().parse().ok()
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Fact for String {
    fn parse(text: &str) -> Option<String> {
        Some(text.to_string())
    }
    fn text(&self) -> String {
        self.clone()
    }
}

impl Fact for GuestOs {
    fn parse(text: &str) -> Option<GuestOs> {
        match text.trim() {
            "none" => Some(GuestOs::None),
            "linux" => Some(GuestOs::Linux),
            _ => None,
        }
    }
    fn text(&self) -> String {
        match self {
            GuestOs::None => "none",
            GuestOs::Linux => "linux",
        }
        .into()
    }
}

/// A run says how it started by [`crate::StartKind::name`].
impl Fact for crate::StartKind {
    fn parse(text: &str) -> Option<crate::StartKind> {
        match text.trim() {
            "cold" => Some(crate::StartKind::Cold),
            "restored" => Some(crate::StartKind::Restored),
            _ => None,
        }
    }
    fn text(&self) -> String {
        self.name().into()
    }
}

/// Backends report KVM's kind by its label ([`KvmKind::label`]).
impl Fact for KvmKind {
    fn parse(text: &str) -> Option<KvmKind> {
        [
            KvmKind::HardwareVtx,
            KvmKind::HardwareAmdV,
            KvmKind::NestedPvm,
            KvmKind::Unknown,
            KvmKind::Absent,
        ]
        .into_iter()
        .find(|k| k.label() == text.trim())
    }
    fn text(&self) -> String {
        self.label().into()
    }
}

/// Declares [`Facts`]: one line per fact, `field: Type = wire key`. Each field is optional in
/// results files (absent = not reported), and [`Facts::set`] and [`Facts::entries`] translate
/// between the fields and the wire's text.
macro_rules! facts {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $key:path, )*) => {
        /// Everything a run reported about itself (see the [module](self) docs). Absent fields
        /// were not reported: a report treats them as unknown, never as a default.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Facts {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// VM exits by cause (`io`, `mmio`, `hlt`, ..., and `total`), from the wire keys
            /// `exits_<cause>`.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub exits: BTreeMap<String, u64>,
            /// Facts without a field of their own (yet), and values that did not parse as their
            /// field's type, as reported.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub other: BTreeMap<String, String>,
        }

        impl Facts {
            /// Record one fact given as wire text. A later value of the same key wins.
            pub fn set(&mut self, key: &str, value: &str) {
                $(
                    if key == $key {
                        if let Some(v) = <$ty as Fact>::parse(value) {
                            self.$field = Some(v);
                            self.other.remove(key);
                            return;
                        }
                    }
                )*
                if let Some(cause) = key.strip_prefix(info::EXITS_PREFIX) {
                    if let Some(n) = <u64 as Fact>::parse(value) {
                        self.exits.insert(cause.to_string(), n);
                        return;
                    }
                }
                self.other.insert(key.to_string(), value.to_string());
            }

            /// Every fact as (wire key, text), typed fields first: what the wire carried.
            pub fn entries(&self) -> Vec<(String, String)> {
                let mut out: Vec<(String, String)> = Vec::new();
                $(
                    if let Some(v) = &self.$field {
                        out.push(($key.to_string(), Fact::text(v)));
                    }
                )*
                out.extend(
                    self.exits
                        .iter()
                        .map(|(cause, n)| (format!("{}{cause}", info::EXITS_PREFIX), n.to_string())),
                );
                out.extend(self.other.iter().map(|(k, v)| (k.clone(), v.clone())));
                out
            }
        }
    };
}

facts! {
    /// How the instance started (absent: cold; see [`crate::StartKind`]).
    start: crate::StartKind = info::START,
    /// A restored instance: whether its memory was touched in full before it ran (`yes`, `no`).
    prefault: String = info::PREFAULT,
    /// A restored instance: bytes of the snapshot it came from.
    snapshot_bytes: u64 = info::SNAPSHOT_BYTES,
    /// The operating system inside a VM (`none` for the bare guest, `linux`).
    guest_os: GuestOs = info::GUEST_OS,
    /// Set when the run's numbers come from emulation (e.g. QEMU TCG), not virtualization: how.
    emulated: String = info::EMULATED,
    /// How `/dev/kvm` was implemented for this run.
    kvm: KvmKind = info::KVM,
    /// What KVM itself ran on, when a hypervisor or an emulator: then VM timings are not a
    /// laptop's.
    kvm_host: String = info::KVM_HOST,
    /// Guest RAM the VMM mapped (configured size).
    guest_ram_bytes: u64 = info::GUEST_RAM_BYTES,
    /// Guest RAM backed by host pages by the end of the run (touched by the guest or the VMM).
    guest_ram_touched_bytes: u64 = info::GUEST_TOUCHED_BYTES,
    /// Unique set size of the VMM process.
    vmm_uss_bytes: u64 = info::VMM_USS_BYTES,
    /// Resident set size of the VMM process (mostly pages shared copy-on-write with the lab).
    vmm_rss_bytes: u64 = info::VMM_RSS_BYTES,
    /// Proportional set size of the VMM process.
    vmm_pss_bytes: u64 = info::VMM_PSS_BYTES,
    /// VMM USS minus the guest RAM it touched: what the hypervisor itself costs.
    vmm_overhead_bytes: u64 = info::VMM_OVERHEAD_BYTES,
    /// Bytes of the image the backend boots or starts.
    image_bytes: u64 = info::IMAGE_BYTES,
    /// What the image consists of, in words.
    image: String = info::IMAGE,
    /// Who answered a kernel that needs an OS, when it was not the workload's own kernel.
    served_by: String = info::SERVED_BY,
    /// The Linux kernel a guest booted: its file, its shape and why the lab chose it.
    guest_kernel: String = info::GUEST_KERNEL,
    /// The command line a Linux guest's kernel was given.
    guest_cmdline: String = info::GUEST_CMDLINE,
    /// How a container was configured beyond its namespaces (`minimal`, `docker`, `podman`).
    profile: String = info::PROFILE,
    /// The seccomp profile it ran under: file, package and version, SHA-256.
    seccomp_profile: String = info::SECCOMP_PROFILE,
    /// Who a container's root is on the host (isolab's container): `uid 0: the host's root …`
    /// or `uid N: …` behind a user namespace.
    container_root: String = info::CONTAINER_ROOT,
    /// Which device nodes a container may open and what enforces it, or why nothing does.
    devices: String = info::DEVICES,
    /// The median latency of one request (disk-rand, net-rr).
    latency_p50_ns: u64 = info::LATENCY_P50_NS,
    /// The 99th-percentile latency of one request.
    latency_p99_ns: u64 = info::LATENCY_P99_NS,
    /// disk-seq: how long the writes and their sync took.
    write_ns: u64 = info::WRITE_NS,
    /// disk-seq: how long the reads took.
    read_ns: u64 = info::READ_NS,
    /// Bytes the lab's peer received from a network kernel's instance.
    peer_bytes: u64 = info::PEER_BYTES,
    /// The external runtime's version, as it reports it (runc, crun, runsc, docker).
    runtime_version: String = info::RUNTIME_VERSION,
    /// Proportional set size of the per-container helper the runtime keeps outside the
    /// container (Docker's containerd-shim), at `ready`.
    shim_pss_bytes: u64 = info::SHIM_PSS_BYTES,
    /// Proportional set size of the daemons all the runtime's containers share (dockerd and
    /// containerd), at `ready`.
    daemon_pss_bytes: u64 = info::DAEMON_PSS_BYTES,
    /// Why the memory figures are missing or partial, in words.
    memory_note: String = info::MEMORY_NOTE,
    /// How a sandbox intercepts the workload's system calls (gVisor: `ptrace`, `kvm`).
    sandbox_platform: String = info::SANDBOX_PLATFORM,
    /// Forks and new threads the instance's cgroup refused at its `pids.max`.
    pids_max_refused: u64 = info::PIDS_MAX_REFUSED,
    /// Processes of the instance's cgroup the kernel's OOM killer killed (the host's count).
    oom_kills: u64 = info::OOM_KILLS,
    /// `fork-bomb`: forks that succeeded.
    forks: u64 = info::FORKS,
    /// `fork-bomb`: forks refused, as its processes counted them.
    forks_refused: u64 = info::FORKS_REFUSED,
    /// `fork-bomb` in a guest: its process limit there.
    fork_limit: u64 = info::FORK_LIMIT,
    /// `mem-hog`: the most bytes one of its children touched.
    hog_bytes: u64 = info::HOG_BYTES,
    /// `mem-hog`: how many of its children a signal killed (each was started again).
    hog_kills: u64 = info::HOG_KILLS,
    /// `fork-bomb`, `mem-hog`: the signal that ended the workload's child before it was told
    /// to stop.
    child_signal: String = info::CHILD_SIGNAL,
    /// The same, when the child exited by itself: its status.
    child_exit: u64 = info::CHILD_EXIT,
    /// `mem-hog` in a Linux guest: OOM kills the guest's kernel counted meanwhile.
    guest_oom_kills: u64 = info::GUEST_OOM_KILLS,
    /// The memory limit in force for the instance's processes, read back from their cgroups.
    memory_limit_in_force_bytes: u64 = info::MEMORY_LIMIT_IN_FORCE_BYTES,
    /// The `pids.max` in force, read back.
    pids_limit_in_force: u64 = info::PIDS_LIMIT_IN_FORCE,
    /// The CPU limit in force, in cores, read back.
    cpu_limit_in_force: String = info::CPU_LIMIT_IN_FORCE,
    /// The disk bandwidth limit in force, in bytes per second, read back.
    io_limit_in_force_bps: u64 = info::IO_LIMIT_IN_FORCE_BPS,
    /// Where the limits in force were read: a process and its cgroups.
    limits_read_from: String = info::LIMITS_READ_FROM,
}

impl Facts {
    /// The facts of a key/value map as the wire protocol and `isolab_backends::Instance::note`
    /// collect them.
    pub fn from_wire<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Facts {
        let mut facts = Facts::default();
        for (k, v) in pairs {
            facts.set(k, v);
        }
        facts
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        *self == Facts::default()
    }

    /// How the run started: the `start` fact, and cold without it (files written before
    /// restores existed, and every backend's ordinary start).
    pub fn start_kind(&self) -> crate::StartKind {
        self.start.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text_becomes_typed_fields_and_back() {
        let wire: BTreeMap<String, String> = [
            (info::GUEST_OS, "none"),
            (info::GUEST_RAM_BYTES, "2097152"),
            (info::GUEST_TOUCHED_BYTES, "65536"),
            (info::KVM, KvmKind::NestedPvm.label()),
            ("exits_io", "3"),
            ("exits_total", "4"),
            ("boot_protocol", "pvh"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let facts = Facts::from_wire(&wire);
        assert_eq!(facts.guest_os, Some(GuestOs::None));
        assert_eq!(facts.guest_ram_bytes, Some(2 << 20));
        assert_eq!(facts.guest_ram_touched_bytes, Some(65536));
        assert_eq!(facts.kvm, Some(KvmKind::NestedPvm));
        assert_eq!(facts.exits["io"], 3);
        assert_eq!(facts.other["boot_protocol"], "pvh");
        let back: BTreeMap<String, String> = facts.entries().into_iter().collect();
        assert_eq!(back, wire);
    }

    #[test]
    fn a_value_that_does_not_parse_is_kept_as_text_not_guessed() {
        let mut facts = Facts::default();
        facts.set(info::GUEST_OS, "plan9");
        facts.set(info::IMAGE_BYTES, "big");
        assert_eq!(facts.guest_os, None);
        assert_eq!(facts.image_bytes, None);
        assert_eq!(facts.other[info::GUEST_OS], "plan9");
        assert_eq!(facts.other[info::IMAGE_BYTES], "big");
    }

    #[test]
    fn facts_serialise_with_their_units_and_only_what_was_reported() {
        let mut facts = Facts::default();
        facts.set(info::IMAGE_BYTES, "26624");
        facts.set(info::GUEST_OS, "linux");
        assert_eq!(
            serde_json::to_string(&facts).unwrap(),
            r#"{"guest_os":"linux","image_bytes":26624}"#
        );
        assert!(Facts::default().is_empty());
    }
}
