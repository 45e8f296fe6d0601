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

/// Total memory in bytes (MemTotal) and memory available to new work (MemAvailable).
pub fn meminfo() -> (u64, u64) {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| crate::measure::memory::kb_field(&text, name);
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
    let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user.max_user_namespaces is 0".into());
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some("kernel.unprivileged_userns_clone is 0 (Debian)".into());
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some("kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 23.10+)".into());
    }
    None
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
    option_env!("ISOLAB_COMMIT").unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_reads_plausible_numbers() {
        let (total, available) = meminfo();
        assert!(total > 64 << 20);
        assert!(available > 0 && available <= total);
    }
}
