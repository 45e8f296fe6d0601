//! `/dev/kvm`: open it and check that it offers what the VMM relies on.
//!
//! KVM is three kinds of file descriptor, each created from the one before: the **system** fd
//! (`open("/dev/kvm")`, this module), a **VM** fd (`KVM_CREATE_VM`: guest memory, the machine) and
//! a **vCPU** fd (`KVM_CREATE_VCPU`: registers, `KVM_RUN`). Everything the VMM does is an `ioctl`
//! on one of them; kvm-ioctls wraps each in a method.
//!
//! Before using any of it, a VMM checks two things: the API version (KVM's ABI has been 12 since
//! Linux 2.6.22; anything else is not a KVM this code knows) and the optional **capabilities** it
//! needs (`KVM_CHECK_EXTENSION`), so that a missing feature is a clear error at start-up rather
//! than a strange failure in the middle of a run.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};
use std::sync::OnceLock;

/// The only KVM API version there is.
pub const API_VERSION: i32 = 12;

/// What this VMM needs from KVM, and why.
pub const REQUIRED: [(Cap, &str); 3] = [
    (
        Cap::UserMemory,
        "KVM_CAP_USER_MEMORY (guest RAM is memory of the VMM process)",
    ),
    (
        Cap::ImmediateExit,
        "KVM_CAP_IMMEDIATE_EXIT (the guest time limit stops the vCPU without a race)",
    ),
    (
        Cap::ExtCpuid,
        "KVM_CAP_EXT_CPUID (the guest's CPUID comes from KVM_GET_SUPPORTED_CPUID)",
    ),
];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// No KVM on this host.
    #[error("no /dev/kvm: enable VT-x/AMD-V in the firmware, then load kvm_intel or kvm_amd")]
    Missing,
    /// KVM exists but this user may not use it.
    #[error("no permission to open /dev/kvm (fix: sudo usermod -aG kvm $USER, then log in again)")]
    Permission,
    /// Opening failed for another reason.
    #[error("cannot open /dev/kvm: {0}")]
    Open(kvm_ioctls::Error),
    /// Not the API this code speaks.
    #[error("KVM API version {found}, but this VMM speaks version {API_VERSION}")]
    ApiVersion {
        /// What `KVM_GET_API_VERSION` said.
        found: i32,
    },
    /// A capability the VMM relies on is missing.
    #[error("KVM lacks {0}")]
    MissingCapability(&'static str),
    /// An ioctl on the system fd failed.
    #[error("{op}: {source}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
}

/// Open `/dev/kvm` (close-on-exec) and check its API version and [`REQUIRED`] capabilities.
pub fn open() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => KvmError::Missing,
        libc::EACCES | libc::EPERM => KvmError::Permission,
        _ => KvmError::Open(e),
    })?;
    let found = kvm.get_api_version();
    if found != API_VERSION {
        return Err(KvmError::ApiVersion { found });
    }
    for (cap, what) in REQUIRED {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability(what));
        }
    }
    Ok(kvm)
}

/// What KVM can virtualise on this host (`KVM_GET_SUPPORTED_CPUID`), asked once per process.
///
/// The answer depends only on the host's CPU and KVM, so it is the same for every VM; asking is
/// slow (about 0.4 ms here, a fifth of a microVM's whole start-up) because KVM builds the table
/// afresh each time. The lab asks once, before it forks its first VMM ([`cache_supported_cpuid`]),
/// and every VMM child inherits the answer in its copy of the lab's memory.
pub fn supported_cpuid(kvm: &Kvm) -> Result<&'static CpuId, KvmError> {
    static SUPPORTED: OnceLock<CpuId> = OnceLock::new();
    if let Some(cpuid) = SUPPORTED.get() {
        return Ok(cpuid);
    }
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| KvmError::Ioctl {
            op: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
    Ok(SUPPORTED.get_or_init(|| cpuid))
}

/// Ask KVM for its supported CPUID now, in this process, unless that was done already.
pub fn cache_supported_cpuid() -> Result<(), KvmError> {
    supported_cpuid(&open()?).map(drop)
}

/// What KVM says about a `KVM_EXIT_INTERNAL_ERROR` — typically, on nested PVM, that it could
/// not emulate a guest instruction — as "suberror N: what".
pub fn internal_error(vcpu: &mut kvm_ioctls::VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: called after an exit whose reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is the
    // union member KVM filled in.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let what = match internal.suberror {
        1 => "emulation failure",
        2 => "exception while delivering an exception",
        3 => "event delivery failed",
        4 => "unexpected exit reason",
        _ => "unknown",
    };
    format!("suberror {}: {what}", internal.suberror)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs /dev/kvm (CI runs it)"]
    fn this_host_has_a_usable_kvm() {
        let kvm = open().unwrap_or_else(|e| panic!("needs /dev/kvm: {e}"));
        assert_eq!(kvm.get_api_version(), API_VERSION);
        let first = supported_cpuid(&kvm).unwrap();
        assert!(first.as_slice().iter().any(|leaf| leaf.function == 1));
        assert!(
            std::ptr::eq(first, supported_cpuid(&kvm).unwrap()),
            "asked once"
        );
    }
}
