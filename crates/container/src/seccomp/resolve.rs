//! How a profile is resolved for one container: which of its entries apply.
//!
//! A profile file is written once for every container Docker may start, with any capabilities,
//! on any architecture and kernel. Some entries hold for all of them; others carry conditions:
//!
//! ```json
//! {"names": ["bpf", "clone", "mount", "setns", "unshare", ...], "action": "SCMP_ACT_ALLOW",
//!  "includes": {"caps": ["CAP_SYS_ADMIN"]}},
//! {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
//!  "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
//!  "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}}
//! ```
//!
//! The first entry gives the namespace and mount calls only to a container that holds
//! `CAP_SYS_ADMIN`; the second gives every other container `clone` only when its flags
//! (argument 0) have none of the namespace bits set (`flags & 0x7e020000 == 0`). Before Docker
//! hands the profile to runc it **resolves** it for the container it is starting: it keeps the
//! entries whose conditions the container meets and drops the rest, so runc only ever sees
//! plain rules. The conditions, checked in this order ([`left_out`]):
//!
//! | condition           | the entry is dropped when                                         |
//! |---------------------|-------------------------------------------------------------------|
//! | `excludes.arches`   | it names this machine's architecture                              |
//! | `excludes.caps`     | the container holds **any** of them                               |
//! | `excludes.minKernel`| the kernel is that version or newer                               |
//! | `includes.arches`   | it does not name this machine's architecture                      |
//! | `includes.caps`     | the container lacks **any** of them                               |
//! | `includes.minKernel`| the kernel is older than that                                     |
//!
//! "Holds" means the container's **bounding set**: the capabilities its root can ever have.
//! Docker's default set is 14 capabilities without `CAP_SYS_ADMIN`
//! ([`crate::capabilities::DOCKER_DEFAULT`]), so the first entry above is dropped and
//! the second kept: `unshare`, `mount`, `setns` and `clone` with a namespace flag fall to the
//! profile's default action, EPERM. That matters although the container lacks the capability
//! anyway: a user namespace needs no capability, and inside one the caller has them all.
//!
//! The lab resolves exactly this way, with the container's capability set, this machine's
//! architecture (`amd64`) and the running kernel's version, and keeps what it dropped and why
//! ([`Dropped`]): `lab doctor` says it, and the OCI bundles carry the resolved rules, as Docker
//! gives them to runc.

use serde::Deserialize;

/// Docker's name of this machine's architecture in `includes.arches` (Go's `GOARCH`).
pub const ARCH: &str = "amd64";
/// libseccomp's name of this machine's architecture in `archMap`.
pub const SCMP_ARCH: &str = "SCMP_ARCH_X86_64";

/// The profile's JSON, as Docker and Podman write it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct File {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// The architectures, each with the ones its kernel also runs (x86-64: x86 and x32).
    #[serde(default)]
    pub arch_map: Vec<ArchMap>,
    /// The older form: a plain list of architectures.
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Vec<String>,
}

/// One entry of `syscalls`: calls, an action, and the conditions under which it applies.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    #[serde(default)]
    pub names: Vec<String>,
    /// The older form of a one-call entry.
    #[serde(default)]
    pub name: Option<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<crate::seccomp::Condition>>,
    #[serde(default)]
    pub includes: Option<When>,
    #[serde(default)]
    pub excludes: Option<When>,
}

impl Entry {
    /// The calls the entry names, in either form.
    pub fn calls(&self) -> Vec<String> {
        self.names.iter().chain(&self.name).cloned().collect()
    }
}

/// An entry's `includes` (all must hold) or `excludes` (none may hold).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct When {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// The container a profile is resolved for.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The capabilities of its bounding set (names as in `CAP_CHOWN`).
    pub caps: &'a [(u32, &'a str)],
    /// The kernel's version, (major, minor).
    pub kernel: (u32, u32),
}

impl Target<'_> {
    fn holds(&self, cap: &str) -> bool {
        self.caps.iter().any(|(_, name)| *name == cap)
    }
}

/// Why an entry was left out for a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeftOut {
    /// `includes.caps`: the container lacks this capability.
    Lacks(String),
    /// `excludes.caps`: the container holds this capability (another entry serves it).
    Holds(String),
    /// `includes.arches`: only for these architectures.
    OtherArches(Vec<String>),
    /// `excludes.arches`: not for this machine's architecture.
    NotThisArch,
    /// `includes.minKernel`: needs this kernel or newer.
    OlderKernel(String),
    /// `excludes.minKernel`: only for kernels older than this.
    NewerKernel(String),
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOut::Lacks(cap) => write!(f, "needs {cap}, which the container lacks"),
            LeftOut::Holds(cap) => write!(f, "for containers without {cap}, which it holds"),
            LeftOut::OtherArches(a) => write!(f, "for {} only", a.join(", ")),
            LeftOut::NotThisArch => write!(f, "not for {ARCH}"),
            LeftOut::OlderKernel(v) => write!(f, "needs Linux {v} or newer"),
            LeftOut::NewerKernel(v) => write!(f, "for kernels before Linux {v} only"),
        }
    }
}

/// An entry the resolution dropped: its calls and action, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The calls it named.
    pub names: Vec<String>,
    /// Its action, as the profile writes it (`SCMP_ACT_ALLOW`, ...).
    pub action: String,
    /// Why it does not apply to this container.
    pub why: LeftOut,
}

/// Why `entry` does not apply to `target` on this machine, or `None` when it applies: Docker's
/// rules, in Docker's order (the table of the module's documentation).
pub(super) fn left_out(entry: &Entry, target: &Target) -> Option<LeftOut> {
    let none = When::default();
    let exc = entry.excludes.as_ref().unwrap_or(&none);
    let inc = entry.includes.as_ref().unwrap_or(&none);
    if exc.arches.iter().any(|a| a == ARCH) {
        return Some(LeftOut::NotThisArch);
    }
    if let Some(cap) = exc.caps.iter().find(|c| target.holds(c)) {
        return Some(LeftOut::Holds(cap.clone()));
    }
    if let Some(v) = &exc.min_kernel {
        if target.kernel >= version(v) {
            return Some(LeftOut::NewerKernel(v.clone()));
        }
    }
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == ARCH) {
        return Some(LeftOut::OtherArches(inc.arches.clone()));
    }
    if let Some(cap) = inc.caps.iter().find(|c| !target.holds(c)) {
        return Some(LeftOut::Lacks(cap.clone()));
    }
    if let Some(v) = &inc.min_kernel {
        if target.kernel < version(v) {
            return Some(LeftOut::OlderKernel(v.clone()));
        }
    }
    None
}

/// "5.8" → (5, 8); only the first two numbers count, as in Docker ("3.12.25-gentoo" is 3.12).
pub fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split(['.', '-']).map(|p| {
        let digits: String = p.trim().chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    });
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The running kernel's version, (major, minor).
pub fn kernel_version() -> (u32, u32) {
    version(&isolab_host::facts::kernel_release())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::DOCKER_DEFAULT;

    const DOCKER: Target = Target {
        caps: &DOCKER_DEFAULT,
        kernel: (6, 1),
    };

    fn entry(json: &str) -> Entry {
        serde_json::from_str(json).unwrap()
    }

    /// Docker's 14 plus `CAP_SYS_ADMIN`, as `docker run --cap-add SYS_ADMIN` gives.
    fn with_sys_admin() -> Vec<(u32, &'static str)> {
        let mut caps = DOCKER_DEFAULT.to_vec();
        caps.push((21, "CAP_SYS_ADMIN"));
        caps
    }

    #[test]
    fn a_call_kept_for_a_capability_is_dropped_without_it() {
        let e = entry(
            r#"{"names": ["unshare", "mount"], "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_SYS_ADMIN"]}}"#,
        );
        assert_eq!(
            left_out(&e, &DOCKER),
            Some(LeftOut::Lacks("CAP_SYS_ADMIN".into()))
        );
        let caps = with_sys_admin();
        let admin = Target {
            caps: &caps,
            kernel: (6, 1),
        };
        assert_eq!(left_out(&e, &admin), None);
        // Every listed capability is needed.
        let both = entry(
            r#"{"names": ["x"], "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_CHOWN", "CAP_SYS_PTRACE"]}}"#,
        );
        assert_eq!(
            left_out(&both, &DOCKER),
            Some(LeftOut::Lacks("CAP_SYS_PTRACE".into()))
        );
    }

    #[test]
    fn an_excluded_capability_drops_the_entry_for_those_who_hold_it() {
        // Docker's clone rule for containers without CAP_SYS_ADMIN (and not on s390).
        let e = entry(
            r#"{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
                "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}}"#,
        );
        assert_eq!(left_out(&e, &DOCKER), None, "kept without CAP_SYS_ADMIN");
        let caps = with_sys_admin();
        let admin = Target {
            caps: &caps,
            kernel: (6, 1),
        };
        assert_eq!(
            left_out(&e, &admin),
            Some(LeftOut::Holds("CAP_SYS_ADMIN".into()))
        );
        // Any one excluded capability held is enough to drop it.
        let any = entry(
            r#"{"names": ["x"], "action": "SCMP_ACT_ALLOW",
                "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_CHOWN"]}}"#,
        );
        assert_eq!(
            left_out(&any, &DOCKER),
            Some(LeftOut::Holds("CAP_CHOWN".into()))
        );
    }

    #[test]
    fn architectures_select_entries() {
        let arm = entry(
            r#"{"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW",
                "includes": {"arches": ["arm", "arm64"]}}"#,
        );
        assert_eq!(
            left_out(&arm, &DOCKER),
            Some(LeftOut::OtherArches(vec!["arm".into(), "arm64".into()]))
        );
        let amd = entry(
            r#"{"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
                "includes": {"arches": ["amd64", "x32"]}}"#,
        );
        assert_eq!(left_out(&amd, &DOCKER), None);
        let not_here = entry(
            r#"{"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                "excludes": {"arches": ["amd64"]}}"#,
        );
        assert_eq!(left_out(&not_here, &DOCKER), Some(LeftOut::NotThisArch));
    }

    #[test]
    fn kernel_versions_select_entries() {
        // Docker allows ptrace from 4.8 on, where seccomp can no longer be bypassed with it.
        let ptrace = entry(
            r#"{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW",
                "includes": {"minKernel": "4.8"}}"#,
        );
        assert_eq!(left_out(&ptrace, &DOCKER), None);
        let old = Target {
            kernel: (4, 4),
            ..DOCKER
        };
        assert_eq!(
            left_out(&ptrace, &old),
            Some(LeftOut::OlderKernel("4.8".into()))
        );
        let before = entry(
            r#"{"names": ["x"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}}"#,
        );
        assert_eq!(left_out(&before, &old), None);
        assert_eq!(
            left_out(&before, &DOCKER),
            Some(LeftOut::NewerKernel("5.10".into()))
        );
        // 6.1 is newer than 5.10 though "1" < "10" as text.
        assert!(version("6.1") > version("5.10"));
        assert_eq!(version("6.18.3-amd64"), (6, 18));
        assert_eq!(version("3.12-1-amd64"), (3, 12));
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            LeftOut::Lacks("CAP_SYS_ADMIN".into()).to_string(),
            "needs CAP_SYS_ADMIN, which the container lacks"
        );
        assert_eq!(
            LeftOut::OtherArches(vec!["s390".into(), "s390x".into()]).to_string(),
            "for s390, s390x only"
        );
    }
}
