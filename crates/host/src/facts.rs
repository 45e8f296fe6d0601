//! Facts about the host machine: what it is (for the results' environment record) and what it
//! can do (for `lab doctor` and for deciding which backends are available).

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// How `/dev/kvm` is implemented on this host. It decides what the VM backends measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvmKind {
    /// Intel VT-x (`kvm_intel`): guest kernel and user mode both run natively.
    HardwareVtx,
    /// AMD-V (`kvm_amd`): guest kernel and user mode both run natively.
    HardwareAmdV,
    /// `kvm_pvm`: KVM on a machine without hardware virtualization (typically itself a VM).
    /// Guest user mode runs natively; guest kernel mode is emulated and very slow.
    NestedPvm,
    /// `/dev/kvm` exists but its module is none of the above.
    Unknown,
    /// No `/dev/kvm`.
    Absent,
}

impl KvmKind {
    /// Look at `/dev/kvm` and the loaded KVM modules.
    pub fn detect() -> KvmKind {
        if !Path::new("/dev/kvm").exists() {
            return KvmKind::Absent;
        }
        let module = |m: &str| Path::new("/sys/module").join(m).exists();
        if module("kvm_pvm") {
            KvmKind::NestedPvm
        } else if module("kvm_intel") {
            KvmKind::HardwareVtx
        } else if module("kvm_amd") {
            KvmKind::HardwareAmdV
        } else {
            KvmKind::Unknown
        }
    }

    /// True when guest kernel mode runs at native speed.
    pub fn is_hardware(self) -> bool {
        matches!(self, KvmKind::HardwareVtx | KvmKind::HardwareAmdV)
    }

    /// A short label for tables and the environment record.
    pub fn label(self) -> &'static str {
        match self {
            KvmKind::HardwareVtx => "hardware (Intel VT-x)",
            KvmKind::HardwareAmdV => "hardware (AMD-V)",
            KvmKind::NestedPvm => "nested PVM (guest ring 0 emulated)",
            KvmKind::Unknown => "unknown KVM module",
            KvmKind::Absent => "no /dev/kvm",
        }
    }
}

/// The program `name` in `PATH` (or the usual system directories when `PATH` is unset).
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What the machine running `/dev/kvm` itself runs on, from its own CPUID.
///
/// A CPU that is virtual says so: CPUID leaf 1 sets ECX bit 31, the *hypervisor* bit, which no
/// physical CPU sets, and leaf 0x4000_0000 — a range Intel and AMD reserve for software — holds a
/// 12-byte signature naming who answers. QEMU's emulator (TCG) says `TCGTCGTCGTCG`, KVM
/// `KVMKVMKVM`, Hyper-V `Microsoft Hv`. So a lab can tell a laptop's VT-x from KVM that is
/// itself a guest (nested virtualization), or one whose "hardware" virtualization is an
/// emulator's — whose timings say nothing about a laptop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Underneath {
    /// No hypervisor bit: bare metal (or a hypervisor that hides itself).
    #[default]
    BareMetal,
    /// A hypervisor runs this machine: KVM here is nested virtualization.
    Hypervisor {
        /// Who, by signature.
        name: String,
        /// The CPUID signature, as read.
        signature: String,
        /// The CPU model the machine reports.
        cpu: String,
    },
    /// An emulator runs this machine: every instruction, VT-x/AMD-V included, is software.
    Emulator {
        /// Who, by signature.
        name: String,
        /// The CPUID signature, as read.
        signature: String,
        /// The CPU model the machine reports.
        cpu: String,
    },
}

impl Underneath {
    /// Read this machine's CPUID (once per process).
    pub fn detect() -> Underneath {
        static UNDER: std::sync::OnceLock<Underneath> = std::sync::OnceLock::new();
        UNDER
            .get_or_init(|| {
                let leaf1 = std::arch::x86_64::__cpuid(1);
                if leaf1.ecx & 1 << 31 == 0 {
                    return Underneath::BareMetal;
                }
                let leaf = std::arch::x86_64::__cpuid(0x4000_0000);
                let bytes: Vec<u8> = [leaf.ebx, leaf.ecx, leaf.edx]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                Underneath::classify(&bytes, &cpu_model())
            })
            .clone()
    }

    /// Name the hypervisor behind a hypervisor bit from its signature (the 12 bytes of EBX, ECX,
    /// EDX of leaf 0x4000_0000) and the CPU model.
    pub fn classify(signature: &[u8], cpu: &str) -> Underneath {
        let text: String = String::from_utf8_lossy(signature)
            .trim_end_matches('\0')
            .to_string();
        let cpu = cpu.to_string();
        let name = match text.as_str() {
            "TCGTCGTCGTCG" => {
                return Underneath::Emulator {
                    name: "QEMU's TCG emulator".into(),
                    signature: text,
                    cpu,
                }
            }
            "KVMKVMKVM" => "KVM",
            "Linux KVM Hv" => "KVM (with Hyper-V enlightenments)",
            "Microsoft Hv" => "Hyper-V",
            "VMwareVMware" => "VMware",
            "XenVMMXenVMM" => "Xen",
            "VBoxVBoxVBox" => "VirtualBox",
            "bhyve bhyve" => "bhyve",
            " lrpepyh  vr" => "Parallels",
            "ACRNACRNACRN" => "ACRN",
            _ => "a hypervisor",
        };
        Underneath::Hypervisor {
            name: name.into(),
            signature: text,
            cpu,
        }
    }

    /// True on bare metal: nothing to say.
    pub fn is_bare_metal(&self) -> bool {
        *self == Underneath::BareMetal
    }

    /// Where KVM runs, in a few words for a table's KVM column: `None` on bare metal.
    pub fn short(&self) -> Option<String> {
        match self {
            Underneath::BareMetal => None,
            Underneath::Hypervisor { name, .. } => Some(format!("inside a {name} virtual machine")),
            Underneath::Emulator { name, .. } => Some(format!("emulated by {name}")),
        }
    }

    /// The caveat in words, `None` on bare metal.
    pub fn describe(&self) -> Option<String> {
        match self {
            Underneath::BareMetal => None,
            Underneath::Hypervisor {
                name,
                signature,
                cpu,
            } => Some(format!(
                "this machine is itself a {name} virtual machine (CPU \"{cpu}\", hypervisor \
                 CPUID leaf \"{signature}\"): KVM here is nested virtualization"
            )),
            Underneath::Emulator {
                name,
                signature,
                cpu,
            } => Some(format!(
                "this machine is emulated by {name} (CPU \"{cpu}\", hypervisor CPUID leaf \
                 \"{signature}\"): its hardware virtualization is software, and VM timings \
                 here are an emulator's, not a laptop's"
            )),
        }
    }

    /// True when the CPU itself is emulated.
    pub fn is_emulator(&self) -> bool {
        matches!(self, Underneath::Emulator { .. })
    }
}

/// KVM's kind and, where KVM itself runs under a hypervisor or an emulator, which one, in a few
/// words.
pub fn kvm_description() -> String {
    let kind = KvmKind::detect().label();
    match Underneath::detect().short() {
        None => kind.to_string(),
        Some(under) => format!("{kind}, {under}"),
    }
}

/// The CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Online CPUs.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Which machine, and which boot of it, this is: what a results file records so that the
/// exercises' checks can tell a file measured here from one measured elsewhere.
///
/// * `boot_id`: `/proc/sys/kernel/random/boot_id`, a random UUID the kernel draws at every
///   boot: two boots never share one, two machines practically never;
/// * `machine`: a SHA-256 of `/etc/machine-id` (systemd's, written once at installation),
///   keyed with the lab's name, as systemd asks of programs that publish it: the file the lab
///   writes then names the machine without revealing the identifier other programs use for it.
///   Empty where the machine has no machine id (an initramfs, some containers).
///
/// Neither is a secret: anyone on the machine may read both. They bind a results file to the
/// machine that wrote it against copying, not against editing (`labs/instructors.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineId {
    /// This boot's `boot_id`.
    pub boot_id: String,
    /// SHA-256 of `isolab:` and the machine id, in hex; empty without a machine id.
    pub machine: String,
}

impl MachineId {
    /// This machine, in this boot.
    pub fn here() -> MachineId {
        let read = |p: &str| {
            fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let id = Some(read("/etc/machine-id"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| read("/var/lib/dbus/machine-id"));
        MachineId {
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            machine: Self::hash(&id),
        }
    }

    /// The keyed hash of a machine id (empty for none).
    fn hash(id: &str) -> String {
        use sha2::Digest;
        if id.is_empty() {
            return String::new();
        }
        let digest = sha2::Sha256::new()
            .chain_update(b"isolab:")
            .chain_update(id.as_bytes())
            .finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Nothing recorded (a file written before the lab recorded machines).
    pub fn is_empty(&self) -> bool {
        self.boot_id.is_empty() && self.machine.is_empty()
    }

    /// Was `other` (a results file's) recorded on this machine? `Err` says why not, in words.
    ///
    /// With a machine id on both sides, the machines must be the same (any boot of it); where
    /// there is none, only the same boot proves the same machine.
    pub fn same_machine(&self, other: &MachineId) -> Result<(), String> {
        if other.is_empty() {
            return Err("it records no machine identity (an older lab wrote it)".into());
        }
        if !self.machine.is_empty() && !other.machine.is_empty() {
            return if self.machine == other.machine {
                Ok(())
            } else {
                Err("its machine id hash is another machine's".into())
            };
        }
        if self.boot_id == other.boot_id {
            Ok(())
        } else {
            Err("it was written in another boot, and no machine id says which machine (no /etc/machine-id)".into())
        }
    }
}

/// Total memory in bytes (MemTotal) and memory available to new work (MemAvailable).
pub fn meminfo() -> (u64, u64) {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| crate::memory::kb_field(&text, name);
    (field("MemTotal"), field("MemAvailable"))
}

/// Whether the host has any swap space (read once: swap is rarely switched on mid-run).
pub fn has_swap() -> bool {
    static SWAP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SWAP.get_or_init(|| {
        fs::read_to_string("/proc/swaps")
            .map(|s| s.lines().count() > 1)
            .unwrap_or(true)
    })
}

/// Whether unprivileged processes may create user namespaces, and if not, why.
pub fn userns_restriction() -> Option<String> {
    userns_restriction_in(Path::new("/proc/sys"))
}

/// [`userns_restriction`], reading the sysctls under `proc_sys` (tests give a directory of their
/// own: this machine has no AppArmor to switch on).
///
/// Ubuntu's AppArmor restriction (`kernel.apparmor_restrict_unprivileged_userns`, 23.10+) does
/// not refuse `clone(CLONE_NEWUSER)` itself: the new namespace is confined by an AppArmor
/// profile that denies every capability in it, so the container fails a step later — writing its
/// uid map, or its first mount — with EPERM or EACCES.
pub fn userns_restriction_in(proc_sys: &Path) -> Option<String> {
    let read = |p: &str| {
        fs::read_to_string(proc_sys.join(p))
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user.max_user_namespaces is 0".into());
    }
    if read("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some("kernel.unprivileged_userns_clone is 0 (Debian)".into());
    }
    if read("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some(
            "kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 23.10+: AppArmor denies \
             capabilities in new user namespaces)"
                .into(),
        );
    }
    None
}

/// The command that lifts the restriction [`userns_restriction`] found.
pub fn userns_fix(why: &str) -> &'static str {
    if why.contains("apparmor") {
        "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0   (or run lab with sudo)"
    } else if why.contains("unprivileged_userns_clone") {
        "sudo sysctl -w kernel.unprivileged_userns_clone=1   (or run lab with sudo)"
    } else {
        "sudo sysctl -w user.max_user_namespaces=15000   (or run lab with sudo)"
    }
}

/// The highest capability number this kernel knows.
pub fn cap_last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The git commit isolab was built from, if it was built in a git checkout.
pub fn commit() -> &'static str {
    isolab_payload::COMMIT.unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_is_its_machine_id_and_without_one_its_boot() {
        let here = MachineId::here();
        assert_eq!(here.boot_id.len(), 36, "{here:?}");
        assert_eq!(here.same_machine(&here), Ok(()));
        let m = |boot: &str, id: &str| MachineId {
            boot_id: boot.into(),
            machine: MachineId::hash(id),
        };
        // Another boot of the same machine; another machine in the same boot (a copy).
        assert_eq!(m("a", "m1").same_machine(&m("b", "m1")), Ok(()));
        assert!(m("a", "m1").same_machine(&m("a", "m2")).is_err());
        // No machine id on one side: only the boot tells.
        assert_eq!(m("a", "").same_machine(&m("a", "m1")), Ok(()));
        assert!(m("a", "").same_machine(&m("b", "m1")).is_err());
        assert!(here.same_machine(&MachineId::default()).is_err());
        // The id itself is never what is written.
        assert!(!m("a", "m1").machine.contains("m1"));
        assert_eq!(m("a", "m1").machine.len(), 64);
    }

    #[test]
    fn hypervisor_signatures_are_named() {
        let cpu = "QEMU Virtual CPU version 2.5+";
        assert!(Underneath::classify(b"TCGTCGTCGTCG", cpu).is_emulator());
        match Underneath::classify(b"KVMKVMKVM\0\0\0", "Intel(R) Xeon(R) Processor") {
            Underneath::Hypervisor {
                name, signature, ..
            } => assert_eq!((name.as_str(), signature.as_str()), ("KVM", "KVMKVMKVM")),
            other => panic!("{other:?}"),
        }
        let said = Underneath::classify(b"TCGTCGTCGTCG", cpu)
            .describe()
            .unwrap();
        assert!(said.contains("emulated") && said.contains(cpu), "{said}");
        assert_eq!(Underneath::BareMetal.describe(), None);
        // Whatever this machine is, the description names KVM's kind first.
        assert!(kvm_description().starts_with(KvmKind::detect().label()));
    }

    #[test]
    fn meminfo_reads_plausible_numbers() {
        let (total, available) = meminfo();
        assert!(total > 64 << 20);
        assert!(available > 0 && available <= total);
    }
}
