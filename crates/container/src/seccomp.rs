//! Seccomp: which system calls a container may make at all.
//!
//! Namespaces decide what a container *sees*; capabilities decide which privileged operations
//! its root may attempt. Seccomp works one level lower: a small program the kernel runs on
//! **every system call** of the process, before the call does anything, which answers "allow",
//! "fail with this errno" or "kill". The program is classic BPF (the packet filter's bytecode):
//! it reads the call's number, the architecture it came from and its six arguments, never
//! memory, so it cannot be fooled by a pointer that changes under it.
//!
//! Docker (and Podman, and every runtime under them) loads a **default profile**: an allow-list of
//! about 350 calls, written as JSON. `--profile docker` loads Docker's own, `--profile podman`
//! Podman's, each from the file its Debian package installs ([`source`] says which, and why the
//! two differ). A profile entry says which calls, which action, conditions on arguments, and for
//! which capabilities, architectures and kernels it applies:
//!
//! ```json
//! {"names": ["bpf", "clone", "mount", "unshare", ...], "action": "SCMP_ACT_ALLOW",
//!  "includes": {"caps": ["CAP_SYS_ADMIN"]}}
//! ```
//!
//! So a profile is **resolved** for one container ([`Profile::load`], [`resolve`]) — its
//! capabilities, this machine's architecture, this kernel — into plain rules, then **compiled**
//! into BPF ([`Profile::compile`]) by libseccomp, the library runc, crun and Docker use: isolab
//! loads the same program they would build from the same profile. Two things libseccomp does
//! that a hand-written filter tends to forget:
//!
//! * **architectures.** An x86-64 process can also enter the kernel through the 32-bit `int 0x80`
//!   gate (x86) or with the x32 bit set, where the call numbers mean different calls. The filter
//!   checks the architecture first and has one table per architecture the profile names; a call
//!   from an architecture it does not know is killed.
//! * **the tree.** Asked for it (`optimize = 2`), libseccomp sorts the calls into a binary tree of
//!   comparisons instead of one long chain. The kernel runs the program on every call, and when
//!   it is loaded it JIT-compiles it and pre-computes which call numbers are always allowed: a
//!   tree is both faster to run and cheaper to load (measured here: 1125 instructions in a chain
//!   took ~1.06 ms to load, 1408 in a tree ~0.31 ms).
//!
//! Compiling takes milliseconds in libseccomp, so a lab compiles a profile once and every
//! container only loads the finished program: one `seccomp(2)` call, made in the container's
//! first process after `no_new_privs` and just before `execve` ([`Filter::load`]).

pub mod resolve;
pub mod source;

use nix::errno::Errno;
pub use resolve::{kernel_version, LeftOut, Target};
use resolve::{left_out, Dropped, File, SCMP_ARCH};
use serde::Deserialize;
use source::Provenance;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest profile the lab reads. Docker's and Podman's default profiles are 14–25 KiB of
/// JSON (one entry per group of system calls); 4 MiB leaves room for any profile a person
/// writes, even one rule per call and argument, while a file named by mistake (a disk image,
/// `/dev/zero`) is refused before it is read.
pub const MAX_PROFILE: u64 = 4 << 20;

/// Errors of reading, resolving and compiling a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile file could not be read.
    #[error("cannot read the seccomp profile {path}: {source} ({fix})")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
        /// What to do: install the package that ships it, or do without.
        fix: String,
    },
    /// The file was refused before it was read: not a regular file, or larger than
    /// [`MAX_PROFILE`].
    #[error(transparent)]
    Refused(isolab_host::files::FilesError),
    /// The file is not a profile in Docker's format.
    #[error("{path} is not a seccomp profile in Docker's JSON format: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// libseccomp refused the profile.
    #[error("libseccomp cannot compile {what}: {detail}")]
    Compile {
        /// Which rule or step.
        what: String,
        /// libseccomp's reason.
        detail: String,
    },
}

/// What the kernel does with a call a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the call run.
    Allow,
    /// Fail the call with this errno, without running it.
    Errno(u32),
    /// Kill the calling thread.
    KillThread,
    /// Kill the whole process.
    KillProcess,
    /// Send SIGSYS.
    Trap,
    /// Let the call run and log it.
    Log,
}

impl Action {
    fn parse(name: &str, errno: Option<u32>, default_errno: u32) -> Option<Action> {
        Some(match name {
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(default_errno)),
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_LOG" => Action::Log,
            _ => return None,
        })
    }

    fn scmp(self) -> libseccomp::ScmpAction {
        use libseccomp::ScmpAction as A;
        match self {
            Action::Allow => A::Allow,
            Action::Errno(e) => A::Errno(e as i32),
            Action::KillThread => A::KillThread,
            Action::KillProcess => A::KillProcess,
            Action::Trap => A::Trap,
            Action::Log => A::Log,
        }
    }

    /// The OCI runtime specification's name and errno of this action.
    fn oci(self) -> (&'static str, Option<u32>) {
        match self {
            Action::Allow => ("SCMP_ACT_ALLOW", None),
            Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
            Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
            Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
            Action::Trap => ("SCMP_ACT_TRAP", None),
            Action::Log => ("SCMP_ACT_LOG", None),
        }
    }
}

/// A comparison of one argument, as the profile writes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Which argument (0..=5).
    pub index: u32,
    /// The value compared with (the mask, for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The second value (what the masked argument must equal, for `SCMP_CMP_MASKED_EQ`).
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_EQ`, `SCMP_CMP_NE`, `SCMP_CMP_LT`, ..., `SCMP_CMP_MASKED_EQ`.
    pub op: String,
}

impl Condition {
    /// Conditions of which at least one holds exactly when this one does not: the opposite
    /// comparison, or for a masked comparison one per bit of the mask (`x & M == V` fails when
    /// some bit of M differs in x from V). `None` for an unknown comparison, or a mask of no
    /// bits (a comparison that never or always holds).
    pub fn negation(&self) -> Option<Vec<Condition>> {
        let op = |op: &str, value: u64, value_two: u64| Condition {
            index: self.index,
            value,
            value_two,
            op: op.to_string(),
        };
        let opposite = match self.op.as_str() {
            "SCMP_CMP_EQ" => "SCMP_CMP_NE",
            "SCMP_CMP_NE" => "SCMP_CMP_EQ",
            "SCMP_CMP_LT" => "SCMP_CMP_GE",
            "SCMP_CMP_LE" => "SCMP_CMP_GT",
            "SCMP_CMP_GT" => "SCMP_CMP_LE",
            "SCMP_CMP_GE" => "SCMP_CMP_LT",
            "SCMP_CMP_MASKED_EQ" if self.value != 0 => {
                return Some(
                    (0..64)
                        .map(|bit| 1u64 << bit)
                        .filter(|b| self.value & b != 0)
                        .map(|b| op("SCMP_CMP_MASKED_EQ", b, !self.value_two & b))
                        .collect(),
                );
            }
            _ => return None,
        };
        Some(vec![op(opposite, self.value, 0)])
    }

    fn scmp(&self) -> Option<libseccomp::ScmpArgCompare> {
        use libseccomp::ScmpCompareOp as Op;
        let (op, datum) = match self.op.as_str() {
            "SCMP_CMP_EQ" => (Op::Equal, self.value),
            "SCMP_CMP_NE" => (Op::NotEqual, self.value),
            "SCMP_CMP_LT" => (Op::Less, self.value),
            "SCMP_CMP_LE" => (Op::LessOrEqual, self.value),
            "SCMP_CMP_GT" => (Op::Greater, self.value),
            "SCMP_CMP_GE" => (Op::GreaterEqual, self.value),
            "SCMP_CMP_MASKED_EQ" => (Op::MaskedEqual(self.value), self.value_two),
            _ => return None,
        };
        Some(libseccomp::ScmpArgCompare::new(self.index, op, datum))
    }
}

/// One rule of a resolved profile: a call, what to do with it, and conditions that must all
/// hold (none: always).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The system call's name.
    pub name: String,
    /// The action.
    pub action: Action,
    /// Conditions on its arguments.
    pub args: Vec<Condition>,
}

/// How a profile answers one call ([`Profile::answer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// This action, whatever the arguments.
    Always(Action),
    /// Allowed when every condition holds; else the second action (the profile's default).
    AllowWhen(Vec<Condition>, Action),
}

/// A profile resolved for one kind of container: the rules that apply to it, in the profile's
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The file it came from: path, package, digest.
    pub source: Provenance,
    /// What happens to every call no rule matches.
    pub default: Action,
    /// The architectures the filter accepts, as libseccomp names them (x86-64 and the 32-bit
    /// ones an x86-64 kernel also runs).
    pub arches: Vec<String>,
    /// The rules.
    pub rules: Vec<Rule>,
    /// The profile's entries that do not apply to this container, and why.
    pub dropped: Vec<Dropped>,
}

impl Profile {
    /// Read the profile at `path` and resolve it for `target`.
    pub fn load(path: &Path, target: Target) -> Result<Profile, SeccompError> {
        let text = isolab_host::files::read_to_string_bounded(path, MAX_PROFILE, "seccomp profile")
            .map_err(|e| match e {
                isolab_host::files::FilesError::Io { source, .. } => SeccompError::Read {
                    path: path.to_path_buf(),
                    source,
                    fix: missing_fix(path),
                },
                e => SeccompError::Refused(e),
            })?;
        Profile::parse(path, &text, target)
    }

    /// Resolve the profile `text` (read from `path`) for `target`: keep the entries that apply
    /// to it, as Docker does ([`resolve`]), and remember the others with the reason.
    pub fn parse(path: &Path, text: &str, target: Target) -> Result<Profile, SeccompError> {
        let invalid = |detail: String| SeccompError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let file: File = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        // An ERRNO action without a number fails the call with EPERM, as runc does. Podman's
        // profile sets ENOSYS ("no such call") as the default instead: a program that tries a
        // call the profile does not know then falls back as it would on an older kernel.
        let default_errno = file.default_errno_ret.unwrap_or(libc::EPERM as u32);
        let default = Action::parse(&file.default_action, None, default_errno)
            .ok_or_else(|| invalid(format!("unknown action {}", file.default_action)))?;
        let mut arches = vec![SCMP_ARCH.to_string()];
        if let Some(map) = file.arch_map.iter().find(|m| m.architecture == SCMP_ARCH) {
            arches.extend(map.sub_architectures.iter().cloned());
        }
        arches.extend(
            file.architectures
                .iter()
                .filter(|a| *a != SCMP_ARCH)
                .cloned(),
        );
        let mut rules = Vec::new();
        let mut dropped = Vec::new();
        for entry in &file.syscalls {
            if let Some(why) = left_out(entry, &target) {
                dropped.push(Dropped {
                    names: entry.calls(),
                    action: entry.action.clone(),
                    why,
                });
                continue;
            }
            let action = Action::parse(&entry.action, entry.errno_ret, default_errno)
                .ok_or_else(|| invalid(format!("unknown action {}", entry.action)))?;
            let args = entry.args.clone().unwrap_or_default();
            if let Some(bad) = args.iter().find(|c| c.scmp().is_none()) {
                return Err(invalid(format!("unknown comparison {}", bad.op)));
            }
            rules.extend(entry.calls().into_iter().map(|name| Rule {
                name,
                action,
                args: args.clone(),
            }));
        }
        Ok(Profile {
            source: Provenance::of(path, text),
            default,
            arches,
            rules,
            dropped,
        })
    }

    /// The calls the profile gives only to containers that hold `cap`, which this one lacks.
    pub fn kept_for(&self, cap: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .dropped
            .iter()
            .filter(|d| d.why == LeftOut::Lacks(cap.to_string()))
            .flat_map(|d| d.names.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Compile the whole profile into one filter.
    pub fn compile(&self) -> Result<Filter, SeccompError> {
        compile(self.default, &self.arches, &self.rules)
    }

    /// How the profile answers a call of `name`, when that can be told without listing
    /// rules: the same action whatever the arguments, or "allowed when these conditions hold,
    /// else the default". `None` for anything more tangled (several rules with conditions).
    ///
    /// libseccomp keeps the first of two rules for the same call without conditions, so the
    /// first such rule wins; no rule at all means the default action.
    pub fn answer(&self, name: &str) -> Option<Answer> {
        let rules: Vec<&Rule> = self.rules.iter().filter(|r| r.name == name).collect();
        match rules.as_slice() {
            [] => Some(Answer::Always(self.default)),
            [only] if !only.args.is_empty() => (only.action == Action::Allow)
                .then(|| Answer::AllowWhen(only.args.clone(), self.default)),
            rules if rules.iter().all(|r| r.args.is_empty()) => {
                Some(Answer::Always(rules[0].action))
            }
            _ => None,
        }
    }

    /// The action the profile takes for every call of `name`, when it does not depend on the
    /// arguments. `None` when a rule looks at the arguments.
    pub fn unconditional(&self, name: &str) -> Option<Action> {
        match self.answer(name)? {
            Answer::Always(action) => Some(action),
            Answer::AllowWhen(..) => None,
        }
    }

    /// Split the profile in two filters whose combination is the profile: `outer`, the profile
    /// with every call of `setup` allowed, and `inner`, which allows everything but does to the
    /// `setup` calls what the profile does. `None` when a `setup` call's answer is too tangled
    /// to take back ([`Profile::answer`]).
    ///
    /// Why: the kernel runs every filter a process has and keeps the strictest answer, and a
    /// child inherits its parent's filters for free. A process that loaded `outer` once can
    /// start containers that still need the `setup` calls (mount, unshare, ...) to build
    /// themselves; each container then loads only `inner`, a few instructions, before it
    /// execs. Together they answer every call exactly as the profile does.
    ///
    /// A call the profile allows only under conditions — Docker's `clone`, allowed when
    /// `flags & 0x7e020000 == 0` (no namespace flag) — is taken back by `inner` with the
    /// opposite: the default action when **any** condition fails. A filter cannot say "not"
    /// of a masked comparison, but it can say it bit by bit: `flags & M != 0` holds exactly
    /// when one of M's bits is set, so `inner` gets one rule per bit ([`Condition::negation`]).
    pub fn split(&self, setup: &[&str]) -> Result<Option<Split>, SeccompError> {
        let mut inner = Vec::new();
        for &name in setup {
            let rule = |action, args| Rule {
                name: name.to_string(),
                action,
                args,
            };
            match self.answer(name) {
                None => return Ok(None),
                Some(Answer::Always(Action::Allow)) => {}
                Some(Answer::Always(action)) => inner.push(rule(action, Vec::new())),
                Some(Answer::AllowWhen(conditions, otherwise)) => {
                    for c in &conditions {
                        let Some(negation) = c.negation() else {
                            return Ok(None);
                        };
                        inner.extend(negation.into_iter().map(|n| rule(otherwise, vec![n])));
                    }
                }
            }
        }
        let mut outer: Vec<Rule> = self
            .rules
            .iter()
            .filter(|r| !setup.contains(&r.name.as_str()))
            .cloned()
            .collect();
        outer.extend(setup.iter().map(|name| Rule {
            name: name.to_string(),
            action: Action::Allow,
            args: Vec::new(),
        }));
        Ok(Some(Split {
            outer: compile(self.default, &self.arches, &outer)?,
            inner: compile(Action::Allow, &self.arches, &inner)?,
        }))
    }

    /// The profile as an OCI runtime's `linux.seccomp` (config.json): the same rules, already
    /// resolved, so runc, crun and runsc apply exactly what isolab's container does.
    pub fn to_oci(&self) -> serde_json::Value {
        let (default, default_errno) = self.default.oci();
        // Group calls that share an action and conditions, in the profile's order.
        type Key<'a> = (Action, &'a [Condition]);
        let mut groups: Vec<(Key, Vec<&str>)> = Vec::new();
        for r in &self.rules {
            let key = (r.action, r.args.as_slice());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, names)) => names.push(&r.name),
                None => groups.push((key, vec![&r.name])),
            }
        }
        let syscalls: Vec<serde_json::Value> = groups
            .into_iter()
            .map(|((action, args), names)| {
                let (action, errno) = action.oci();
                let mut v = serde_json::json!({ "names": names, "action": action });
                if let Some(e) = errno {
                    v["errnoRet"] = e.into();
                }
                if !args.is_empty() {
                    v["args"] = args
                        .iter()
                        .map(|c| {
                            serde_json::json!({
                                "index": c.index, "value": c.value,
                                "valueTwo": c.value_two, "op": c.op,
                            })
                        })
                        .collect();
                }
                v
            })
            .collect();
        let mut out = serde_json::json!({
            "defaultAction": default,
            "architectures": self.arches,
            "syscalls": syscalls,
        });
        if let Some(e) = default_errno {
            out["defaultErrnoRet"] = e.into();
        }
        out
    }
}

/// What to do when the profile file at `path` cannot be read.
fn missing_fix(path: &Path) -> String {
    match source::Shipped::at(path) {
        Some(s) => format!(
            "{} ships {}; Debian/Ubuntu: sudo apt install {}; or run with --profile minimal",
            s.package, s.what, s.package
        ),
        None => "or run with --profile minimal".into(),
    }
}

/// The outer and inner halves of a profile ([`Profile::split`]).
#[derive(Debug)]
pub struct Split {
    /// The profile, with the set-up calls allowed: loaded once, inherited.
    pub outer: Filter,
    /// Only the set-up calls, as the profile treats them: loaded by each container.
    pub inner: Filter,
}

/// A compiled filter: classic BPF instructions, ready for `seccomp(2)`.
#[derive(Clone, Debug)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
}

// SECCOMP_SET_MODE_FILTER (linux/seccomp.h).
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;

impl Filter {
    /// Instructions in the program.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// True for a program without instructions (never produced by [`Profile::compile`]).
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// **Child side** (no allocation). Install the filter on the calling thread. The kernel
    /// accepts a filter from a process without `CAP_SYS_ADMIN` only when it has `no_new_privs`
    /// set, so that a filter cannot be used to trick a setuid program.
    pub fn load(&self) -> Result<(), Errno> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) copies `prog`, which points into our own live Vec.
        Errno::result(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                &prog as *const libc::sock_fprog,
            )
        })
        .map(drop)
    }
}

fn compile(default: Action, arches: &[String], rules: &[Rule]) -> Result<Filter, SeccompError> {
    use libseccomp::{ScmpArch, ScmpFilterContext, ScmpSyscall};
    let err = |what: &str| {
        let what = what.to_string();
        move |e: libseccomp::error::SeccompError| SeccompError::Compile {
            what,
            detail: e.to_string(),
        }
    };
    let mut ctx = ScmpFilterContext::new(default.scmp()).map_err(err("a new filter"))?;
    for arch in arches {
        let Some(arch) = scmp_arch(arch) else {
            continue;
        };
        if arch != ScmpArch::X8664 {
            ctx.add_arch(arch).map_err(err("an architecture"))?;
        }
    }
    ctx.set_ctl_optimize(2).map_err(err("the binary tree"))?;
    // `no_new_privs` is the container's own business (it sets it before loading).
    ctx.set_ctl_nnp(false).map_err(err("no_new_privs"))?;
    // libseccomp refuses a rule whose action is the default one (it would change nothing), and
    // keeps the first of two rules for the same call with no conditions; calls this
    // architecture does not have (arm's, s390's, ...) are left out, as Docker does.
    let mut seen: BTreeMap<&str, ()> = BTreeMap::new();
    for rule in rules {
        if rule.action == default {
            continue;
        }
        let Ok(call) = ScmpSyscall::from_name(&rule.name) else {
            continue;
        };
        let what = format!("the rule for {}", rule.name);
        if rule.args.is_empty() {
            if seen.insert(&rule.name, ()).is_some() {
                continue;
            }
            ctx.add_rule(rule.action.scmp(), call).map_err(err(&what))?;
        } else {
            let conds: Vec<_> = rule.args.iter().filter_map(Condition::scmp).collect();
            ctx.add_rule_conditional(rule.action.scmp(), call, &conds)
                .map_err(err(&what))?;
        }
    }
    Ok(Filter {
        program: export(&ctx)?,
    })
}

fn scmp_arch(name: &str) -> Option<libseccomp::ScmpArch> {
    use libseccomp::ScmpArch;
    Some(match name {
        "SCMP_ARCH_X86_64" => ScmpArch::X8664,
        "SCMP_ARCH_X86" => ScmpArch::X86,
        "SCMP_ARCH_X32" => ScmpArch::X32,
        _ => return None,
    })
}

/// The BPF program libseccomp generated, read back through an in-memory file (libseccomp 2.5
/// exports only to a file descriptor).
fn export(ctx: &libseccomp::ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |detail: String| SeccompError::Compile {
        what: "the export of the program".into(),
        detail,
    };
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"isolab-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(fail(Errno::last().to_string()));
    }
    // SAFETY: a new fd that nothing else owns.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    ctx.export_bpf(&mut file).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| fail(e.to_string()))?;
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % size != 0 {
        return Err(fail(format!("{} bytes is not a BPF program", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::DOCKER_DEFAULT;

    const TARGET: Target = Target {
        caps: &DOCKER_DEFAULT,
        kernel: (6, 1),
    };

    /// A profile in Docker's format with one entry of each kind that needs resolving.
    const SAMPLE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
          {"names": ["read", "write", "getpid", "exit_group", "seccomp"], "action": "SCMP_ACT_ALLOW"},
          {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
           "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
          {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
           "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
          {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
          {"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
          {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
          {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
           "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
          {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
          {"names": ["io_uring_setup"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.0"}},
          {"names": ["setns"], "action": "SCMP_ACT_ALLOW"},
          {"names": ["setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
          {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
          {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
           "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
           "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
        ]}"#;

    /// clone's namespace flags, as Docker's profile masks them.
    const NAMESPACE_FLAGS: u64 = 0x7e02_0000;

    fn sample() -> Profile {
        Profile::parse(Path::new("sample.json"), SAMPLE, TARGET).unwrap()
    }

    #[test]
    fn a_profile_resolves_for_the_containers_capabilities_arch_and_kernel() {
        let p = sample();
        let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "read",
                "write",
                "getpid",
                "exit_group",
                "seccomp",
                "personality",
                "personality",
                "arch_prctl",
                "bpf",
                "chroot",
                "setns",
                "setns",
                "clone"
            ],
            "arm's cacheflush, CAP_SYS_ADMIN's bpf and clone, a call of a future kernel are \
             left out"
        );
        let dropped: Vec<(&str, &LeftOut)> = p
            .dropped
            .iter()
            .map(|d| (d.names[0].as_str(), &d.why))
            .collect();
        assert_eq!(
            dropped,
            [
                ("cacheflush", &LeftOut::OtherArches(vec!["arm64".into()])),
                ("bpf", &LeftOut::Lacks("CAP_SYS_ADMIN".into())),
                ("io_uring_setup", &LeftOut::OlderKernel("9.0".into())),
                ("clone", &LeftOut::Lacks("CAP_SYS_ADMIN".into())),
            ]
        );
        assert_eq!(p.kept_for("CAP_SYS_ADMIN"), ["bpf", "clone"]);
        assert_eq!(p.default, Action::Errno(38));
        assert_eq!(
            p.arches,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        let bpf = p.rules.iter().find(|r| r.name == "bpf").unwrap();
        assert_eq!(
            bpf.action,
            Action::Errno(1),
            "bpf is refused without CAP_SYS_ADMIN"
        );
        assert_eq!(p.unconditional("setns"), Some(Action::Allow), "first wins");
        assert_eq!(p.unconditional("mount"), Some(Action::Errno(38)));
        assert_eq!(p.unconditional("personality"), None);
        assert_eq!(
            p.answer("clone"),
            Some(Answer::AllowWhen(
                vec![Condition {
                    index: 0,
                    value: NAMESPACE_FLAGS,
                    value_two: 0,
                    op: "SCMP_CMP_MASKED_EQ".into()
                }],
                Action::Errno(38)
            ))
        );
        assert_eq!(p.answer("personality"), None, "one rule per allowed value");
    }

    #[test]
    fn a_negation_holds_exactly_when_the_condition_does_not() {
        let holds = |c: &Condition, x: u64| match c.op.as_str() {
            "SCMP_CMP_EQ" => x == c.value,
            "SCMP_CMP_NE" => x != c.value,
            "SCMP_CMP_LT" => x < c.value,
            "SCMP_CMP_LE" => x <= c.value,
            "SCMP_CMP_GT" => x > c.value,
            "SCMP_CMP_GE" => x >= c.value,
            "SCMP_CMP_MASKED_EQ" => x & c.value == c.value_two,
            op => panic!("{op}"),
        };
        let cases = [
            ("SCMP_CMP_EQ", 8, 0),
            ("SCMP_CMP_NE", 8, 0),
            ("SCMP_CMP_LT", 8, 0),
            ("SCMP_CMP_LE", 8, 0),
            ("SCMP_CMP_GT", 8, 0),
            ("SCMP_CMP_GE", 8, 0),
            ("SCMP_CMP_MASKED_EQ", NAMESPACE_FLAGS, 0),
            ("SCMP_CMP_MASKED_EQ", 0xf0, 0x30),
        ];
        let samples = [
            0,
            7,
            8,
            9,
            0x30,
            0x3f,
            0xf0,
            libc::SIGCHLD as u64,
            libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64,
            libc::CLONE_NEWNET as u64,
            libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64,
            u64::MAX,
        ];
        for (op, value, value_two) in cases {
            let c = Condition {
                index: 0,
                value,
                value_two,
                op: op.into(),
            };
            let not = c.negation().unwrap();
            for x in samples {
                assert_eq!(
                    not.iter().any(|n| holds(n, x)),
                    !holds(&c, x),
                    "{op} {value:#x} {value_two:#x} at {x:#x}"
                );
            }
        }
        let namespaces = Condition {
            index: 0,
            value: NAMESPACE_FLAGS,
            value_two: 0,
            op: "SCMP_CMP_MASKED_EQ".into(),
        };
        assert_eq!(
            namespaces.negation().unwrap().len(),
            7,
            "one per namespace flag"
        );
    }

    #[test]
    fn dockers_profile_gives_namespaces_and_mounts_only_to_cap_sys_admin() {
        let p =
            Profile::load(Path::new(source::DOCKER.path), TARGET).unwrap_or_else(|e| panic!("{e}"));
        let eperm = Some(Answer::Always(Action::Errno(libc::EPERM as u32)));
        for call in [
            "unshare",
            "mount",
            "umount2",
            "setns",
            "keyctl",
            "bpf",
            "perf_event_open",
        ] {
            assert_eq!(p.answer(call), eperm, "{call}");
        }
        assert_eq!(
            p.answer("clone"),
            Some(Answer::AllowWhen(
                vec![Condition {
                    index: 0,
                    value: NAMESPACE_FLAGS,
                    value_two: 0,
                    op: "SCMP_CMP_MASKED_EQ".into()
                }],
                Action::Errno(libc::EPERM as u32)
            )),
            "clone only without namespace flags"
        );
        assert_eq!(
            p.answer("clone3"),
            Some(Answer::Always(Action::Errno(libc::ENOSYS as u32))),
            "clone3 passes its flags in memory, where a filter cannot read them: ENOSYS, so \
             libc falls back to clone"
        );
        assert_eq!(
            p.answer("ptrace"),
            Some(Answer::Always(Action::Allow)),
            "Linux >= 4.8"
        );
        let admin = p.kept_for("CAP_SYS_ADMIN");
        for call in [
            "bpf", "clone", "clone3", "mount", "setns", "unshare", "umount2",
        ] {
            assert!(admin.contains(&call), "{call} in {admin:?}");
        }
        // Podman's profile allows what Docker's keeps for CAP_SYS_ADMIN.
        let podman =
            Profile::load(Path::new(source::PODMAN.path), TARGET).unwrap_or_else(|e| panic!("{e}"));
        for call in ["unshare", "mount", "keyctl", "clone"] {
            assert_eq!(
                podman.answer(call),
                Some(Answer::Always(Action::Allow)),
                "{call}"
            );
        }
    }

    #[test]
    fn a_missing_profile_names_the_package_that_ships_it() {
        let fix = missing_fix(Path::new(source::DOCKER.path));
        assert_eq!(
            fix,
            "golang-github-docker-docker-dev ships Docker's default profile; Debian/Ubuntu: \
             sudo apt install golang-github-docker-docker-dev; or run with --profile minimal"
        );
        let e = Profile::load(Path::new("/nonexistent/isolab-profile.json"), TARGET).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read the seccomp profile /nonexistent/isolab-profile.json: No such file or \
             directory (os error 2) (or run with --profile minimal)"
        );
    }

    #[test]
    fn a_profile_that_is_not_one_says_so() {
        let bad = Profile::parse(Path::new("x.json"), "{\"syscalls\": 3}", TARGET);
        assert!(matches!(bad, Err(SeccompError::Invalid { .. })), "{bad:?}");
        let op = SAMPLE.replace("SCMP_CMP_EQ", "SCMP_CMP_SOMETIMES");
        let bad = Profile::parse(Path::new("x.json"), &op, TARGET).unwrap_err();
        assert!(bad.to_string().contains("SCMP_CMP_SOMETIMES"), "{bad}");
    }

    #[test]
    fn the_oci_form_lists_the_resolved_rules() {
        let oci = sample().to_oci();
        assert_eq!(oci["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(oci["defaultErrnoRet"], 38);
        assert_eq!(oci["syscalls"][0]["names"][0], "read");
        assert_eq!(oci["syscalls"][0]["names"][2], "getpid");
        assert_eq!(oci["syscalls"][1]["args"][0]["op"], "SCMP_CMP_EQ");
        // It is what oci-spec (and so runc) reads.
        let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(oci.clone()).unwrap();
        // Allowed calls, personality's two conditions, the EPERM calls, clone's condition.
        assert_eq!(parsed.syscalls().as_ref().unwrap().len(), 5);
        assert_eq!(oci["syscalls"][4]["names"][0], "clone");
        assert_eq!(oci["syscalls"][4]["args"][0]["value"], NAMESPACE_FLAGS);
    }

    /// Run `f` in a forked child and return its exit status (the child's errno or 0).
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the test process forks; the child only makes system calls and exits.
        match unsafe { libc::fork() } {
            0 => isolab_spawn::child::exit_now(f()),
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status), "child status {status:#x}");
                libc::WEXITSTATUS(status)
            }
        }
    }

    fn errno_of(r: libc::c_long) -> i32 {
        if r < 0 {
            Errno::last() as i32
        } else {
            0
        }
    }

    #[test]
    fn a_loaded_filter_answers_as_the_profile_says() {
        let filter = sample().compile().unwrap();
        assert!(filter.len() > 10);
        let status = in_child(|| {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if filter.load().is_err() {
                return 100;
            }
            // getpid is allowed; bpf fails with EPERM; mount is not in the profile: ENOSYS.
            // SAFETY: raw system calls with harmless arguments.
            let pid = unsafe { libc::syscall(libc::SYS_getpid) };
            // SAFETY: as above.
            let bpf = errno_of(unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) });
            // SAFETY: as above.
            let mount = errno_of(unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) });
            if pid <= 0 {
                101
            } else if bpf != libc::EPERM {
                102
            } else if mount != libc::ENOSYS {
                103
            } else {
                0
            }
        });
        assert_eq!(status, 0);
    }

    #[test]
    fn the_two_halves_of_a_split_answer_as_the_whole() {
        let p = sample();
        let split = p.split(&["setns", "bpf", "mount"]).unwrap().unwrap();
        assert!(split.inner.len() < split.outer.len());
        let status = in_child(|| {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if split.outer.load().is_err() {
                return 100;
            }
            // Between the halves, the set-up calls are allowed: mount runs (and fails for its
            // arguments, EFAULT, not ENOSYS).
            // SAFETY: a mount with null pointers, which the kernel refuses.
            let mount = errno_of(unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) });
            if mount == libc::ENOSYS {
                return 101;
            }
            if split.inner.load().is_err() {
                return 102;
            }
            // SAFETY: as above.
            let mount = errno_of(unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) });
            // SAFETY: a bpf call with no attributes.
            let bpf = errno_of(unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) });
            if mount != libc::ENOSYS {
                103
            } else if bpf != libc::EPERM {
                104
            } else {
                0
            }
        });
        assert_eq!(status, 0);
        assert!(
            p.split(&["personality"]).unwrap().is_none(),
            "a call whose action depends on its arguments cannot be split off"
        );
    }

    /// The raw `clone` with `flags` (no new stack: the child returns on a copy of ours, as
    /// from fork) whose child exits at once: 0 or the errno.
    fn clone_errno(flags: libc::c_int) -> i32 {
        // SAFETY: clone without CLONE_VM is a fork; the child only calls _exit.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        match pid {
            // SAFETY: the clone's child ends at once.
            0 => unsafe { libc::_exit(0) },
            p if p > 0 => {
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(p as i32, std::ptr::null_mut(), 0) };
                0
            }
            _ => Errno::last() as i32,
        }
    }

    #[test]
    fn dockers_clone_condition_survives_the_split() {
        use crate::profile::SETUP_CALLS;
        let p =
            Profile::load(Path::new(source::DOCKER.path), TARGET).unwrap_or_else(|e| panic!("{e}"));
        let split = p
            .split(&SETUP_CALLS)
            .unwrap()
            .expect("Docker's profile splits");
        let status = in_child(|| {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if split.outer.load().is_err() {
                return 100;
            }
            // The launcher's half: clone with a namespace flag, as it starts a container.
            if clone_errno(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) != 0 {
                return 101;
            }
            if split.inner.load().is_err() {
                return 102;
            }
            // Both halves: the profile. A plain fork still works, namespaces do not.
            if clone_errno(0) != 0 {
                return 103;
            }
            for flag in [
                libc::CLONE_NEWUSER,
                libc::CLONE_NEWNS,
                libc::CLONE_NEWNET,
                libc::CLONE_NEWUTS,
                libc::CLONE_NEWPID,
                libc::CLONE_NEWIPC,
                libc::CLONE_NEWCGROUP,
            ] {
                if clone_errno(flag) != libc::EPERM {
                    return 104;
                }
                // SAFETY: unshare with a flag, refused by the filter.
                if errno_of(unsafe { libc::syscall(libc::SYS_unshare, flag) }) != libc::EPERM {
                    return 105;
                }
            }
            // SAFETY: a mount with null pointers, refused before the kernel reads them.
            if errno_of(unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) }) != libc::EPERM {
                return 106;
            }
            // SAFETY: clone3 with no arguments, refused before the kernel reads them.
            if errno_of(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) }) != libc::ENOSYS {
                return 107;
            }
            0
        });
        assert_eq!(status, 0);
    }

    /// What the kernel does with a filter, in a few lines: run the classic BPF program over
    /// the call's `struct seccomp_data` (nr, arch, instruction pointer, six arguments) and
    /// return its verdict. Only the instructions libseccomp emits.
    fn run_bpf(program: &[libc::sock_filter], data: &[u8; 64]) -> u32 {
        let word = |k: u32| {
            let k = k as usize;
            u32::from_ne_bytes(data[k..k + 4].try_into().unwrap())
        };
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0;
        loop {
            let i = program[pc];
            pc += 1;
            let jump = |taken: bool| if taken { i.jt as usize } else { i.jf as usize };
            match i.code {
                0x20 => a = word(i.k),            // ld [k]
                0x00 => a = i.k,                  // ld #k
                0x60 => a = mem[i.k as usize],    // ld M[k]
                0x61 => x = mem[i.k as usize],    // ldx M[k]
                0x02 => mem[i.k as usize] = a,    // st M[k]
                0x03 => mem[i.k as usize] = x,    // stx M[k]
                0x07 => x = a,                    // tax
                0x87 => a = x,                    // txa
                0x54 => a &= i.k,                 // and #k
                0x44 => a |= i.k,                 // or #k
                0x05 => pc += i.k as usize,       // ja
                0x15 => pc += jump(a == i.k),     // jeq #k
                0x25 => pc += jump(a > i.k),      // jgt #k
                0x35 => pc += jump(a >= i.k),     // jge #k
                0x45 => pc += jump(a & i.k != 0), // jset #k
                0x06 => return i.k,               // ret #k
                0x16 => return a,                 // ret a
                code => panic!("BPF instruction {code:#x} at {}", pc - 1),
            }
        }
    }

    /// The verdict of several filters, as the kernel combines them: the most severe action
    /// (actions compare as signed numbers, kill lowest, allow highest).
    fn strictest(verdicts: &[u32]) -> u32 {
        *verdicts
            .iter()
            .min_by_key(|v| (**v & 0xffff_0000) as i32)
            .unwrap()
    }

    #[test]
    fn the_two_halves_answer_every_call_as_the_whole_profile() {
        use crate::profile::SETUP_CALLS;
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        for shipped in source::SHIPPED {
            let p =
                Profile::load(Path::new(shipped.path), TARGET).unwrap_or_else(|e| panic!("{e}"));
            let full = p.compile().unwrap();
            let split = p.split(&SETUP_CALLS).unwrap().expect("the profile splits");
            let mut args: Vec<u64> = vec![0, u64::MAX, NAMESPACE_FLAGS, libc::SIGCHLD as u64];
            for (_, flag) in [
                ("user", libc::CLONE_NEWUSER),
                ("mnt", libc::CLONE_NEWNS),
                ("net", libc::CLONE_NEWNET),
                ("cgroup", libc::CLONE_NEWCGROUP),
                (
                    "threads",
                    libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND,
                ),
            ] {
                args.push(flag as u64 | libc::SIGCHLD as u64);
            }
            let mut checked = 0;
            for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386] {
                for nr in 0..480u32 {
                    for &arg in &args {
                        let mut data = [0u8; 64];
                        data[0..4].copy_from_slice(&nr.to_ne_bytes());
                        data[4..8].copy_from_slice(&arch.to_ne_bytes());
                        for i in 0..6 {
                            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
                        }
                        let whole = run_bpf(&full.program, &data);
                        let halves = strictest(&[
                            run_bpf(&split.inner.program, &data),
                            run_bpf(&split.outer.program, &data),
                        ]);
                        assert_eq!(
                            whole, halves,
                            "{}: call {nr} (arch {arch:#x}) with arguments {arg:#x}",
                            shipped.what
                        );
                        checked += 1;
                    }
                }
            }
            assert!(checked > 8000);
        }
    }

    #[test]
    fn the_installed_profiles_compile_to_a_tree() {
        for shipped in source::SHIPPED {
            let p = Profile::load(
                Path::new(shipped.path),
                Target {
                    caps: &DOCKER_DEFAULT,
                    kernel: kernel_version(),
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                p.rules.len() > 300,
                "{}'s allow-list: {}",
                shipped.what,
                p.rules.len()
            );
            let f = p.compile().unwrap();
            assert!(f.len() > 300, "{}", shipped.what);
        }
    }
}
