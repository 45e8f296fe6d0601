//! The device policy: which device nodes an instance's processes may open.
//!
//! A device node is a file that names a driver by two numbers, `major:minor` — `1:3` is
//! `/dev/null`, `10:232` is `/dev/kvm`, `7:0` the first loop device. Whoever may make a node
//! (`mknod`, with `CAP_MKNOD`, which Docker's containers keep) and open it reaches that driver,
//! wherever the node is: a container's root that made `b 7:0` could write the disk behind it.
//! File permissions do not help — the container's root owns the node it made. So the kernel
//! asks the instance's **cgroup** before every `mknod` and every `open` of a node: the
//! *devices controller*. Its answer depends only on the type (`c` character, `b` block), the
//! numbers and the access asked for (`r` read, `w` write, `m` mknod).
//!
//! [`POLICY`] is Docker's: deny everything, then allow making any node (a node alone opens
//! nothing: making one is harmless, opening it is what the policy decides), and opening only
//! the few devices every program expects. The two cgroup interfaces spell it differently:
//!
//! * **v1** has a `devices` hierarchy of its own: a fresh cgroup inherits its parent's list;
//!   writing `a` to `devices.deny` empties it, and each `devices.allow` line adds a rule
//!   ([`Hierarchy::confine_devices`] reads `devices.list` back to check they all took);
//! * **v2** has no devices files at all. Instead a small **BPF program** of type
//!   `BPF_PROG_TYPE_CGROUP_DEVICE` is attached to the cgroup: the kernel runs it on every
//!   `mknod` and `open` of a node by a process of the cgroup (or of one below it), with the
//!   request as its input, and refuses the request when it returns 0. runc and crun write such
//!   a program for every container; [`program`] writes this one, instruction by instruction.
//!
//! Either way the refusal is `EPERM`, and it holds for the instance's root too: the cgroup,
//! not the file, decides. The policy is the second wall of isolab's container: its root and
//! every other mount it writes are `nodev` already, and its `/dev` is read-only
//! ([`isolab_container::rootfs`]).
//!
//! The OCI bundles carry the same rules in `linux.resources.devices` ([`isolab_backends::oci`]),
//! which their runtime turns into one of the two forms above — after adding a list of its own
//! that no bundle can take away: runc adds `/dev/net/tun` (`c 10:200`), crun that and
//! `/dev/console` (`c 5:1`), the host's console. So the lab also puts its own program on the
//! runtime's instance cgroup in the cgroup v2 tree ([`Hierarchy::confine_runtime`]): the kernel
//! runs every program from there down to the container's cgroup, and a device is opened only if
//! all of them allow it.

use crate::cgroup::{
    ensure_dir_all, host_dir, parse_mounts, read_mountinfo, write, Cgroup, CgroupError, Hierarchy,
    Placement, Version,
};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Access a rule allows, as bits — the very bits the kernel hands a v2 program
/// (`BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`), and the letters `m`, `r`, `w` of v1.
pub mod access {
    /// `m`: make a node (`mknod`).
    pub const MKNOD: u32 = 1;
    /// `r`: open it for reading.
    pub const READ: u32 = 2;
    /// `w`: open it for writing.
    pub const WRITE: u32 = 4;
    /// `rwm`.
    pub const ALL: u32 = MKNOD | READ | WRITE;
}

/// A device's type, with the kernel's numbers for it (`BPF_DEVCG_DEV_BLOCK`, `_CHAR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A block device (a disk): `b`.
    Block = 1,
    /// A character device (everything else): `c`.
    Char = 2,
}

impl Kind {
    /// The letter v1 and the OCI specification use.
    pub fn letter(self) -> char {
        match self {
            Kind::Block => 'b',
            Kind::Char => 'c',
        }
    }
}

/// One rule that allows something: devices of `kind`, `major` and `minor` (`None`: any), for
/// `access`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Block or character.
    pub kind: Kind,
    /// The driver; `None` for any.
    pub major: Option<u32>,
    /// The device of that driver; `None` for any.
    pub minor: Option<u32>,
    /// Bits of [`access`].
    pub access: u32,
    /// What it is, in words.
    pub what: &'static str,
}

impl Rule {
    /// The rule as v1 writes it: `c 1:3 rwm`, `b *:* m`.
    pub fn v1_line(&self) -> String {
        let n = |x: Option<u32>| x.map_or_else(|| "*".to_string(), |x| x.to_string());
        format!(
            "{} {}:{} {}",
            self.kind.letter(),
            n(self.major),
            n(self.minor),
            access_letters(self.access)
        )
    }
}

/// `rwm` for the bits of [`access`] in `bits`, in v1's order.
pub fn access_letters(bits: u32) -> String {
    [
        (access::READ, 'r'),
        (access::WRITE, 'w'),
        (access::MKNOD, 'm'),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, l)| *l)
    .collect()
}

const fn allow(kind: Kind, major: u32, minor: Option<u32>, what: &'static str) -> Rule {
    Rule {
        kind,
        major: Some(major),
        minor,
        access: access::ALL,
        what,
    }
}

/// Everything an instance may do with devices; everything else is refused.
///
/// Docker's list, as runc applies it (runc also allows `/dev/net/tun`, which no instance here
/// needs, so it is left out):
pub const POLICY: [Rule; 10] = [
    Rule {
        kind: Kind::Char,
        major: None,
        minor: None,
        access: access::MKNOD,
        what: "make any character node: a node opens nothing by itself, the rules below decide",
    },
    Rule {
        kind: Kind::Block,
        major: None,
        minor: None,
        access: access::MKNOD,
        what: "make any block node (the same)",
    },
    allow(
        Kind::Char,
        1,
        Some(3),
        "/dev/null: discards writes, reads nothing",
    ),
    allow(Kind::Char, 1, Some(5), "/dev/zero: reads zeroes"),
    allow(
        Kind::Char,
        1,
        Some(7),
        "/dev/full: a write fails with ENOSPC",
    ),
    allow(Kind::Char, 1, Some(8), "/dev/random: random bytes"),
    allow(Kind::Char, 1, Some(9), "/dev/urandom: random bytes"),
    allow(
        Kind::Char,
        5,
        Some(0),
        "/dev/tty: the opener's own controlling terminal — an instance, in a session of its own, \
         has none, so it opens nothing (ENXIO), but programs look for it",
    ),
    allow(
        Kind::Char,
        5,
        Some(2),
        "/dev/ptmx: a new pseudo-terminal pair, in the devpts file system beside it (an OCI \
         container's own)",
    ),
    allow(
        Kind::Char,
        136,
        None,
        "/dev/pts/N: the other ends of those pairs; the kernel opens one only through the devpts \
         instance that made it, so a node made elsewhere for a host terminal opens nothing",
    ),
];

/// The policy in one line, for the results (`devices`) and `lab exec`.
pub fn summary() -> String {
    "deny all but null, zero, full, random, urandom, tty, ptmx and pts/*; any node may be made, \
     no other opened"
        .into()
}

impl Hierarchy {
    /// Put [`POLICY`] in force for the instance cgroup `cg`, made by this hierarchy: on v1 in
    /// a directory of the `devices` hierarchy, added to `cg` (so its first process joins it and
    /// it goes with the rest); on v2 as a BPF program attached to its directory. Returns how,
    /// in words. Needs root (the v2 program: `CAP_SYS_ADMIN` or `CAP_BPF`).
    pub fn confine_devices(&self, cg: &mut Cgroup) -> Result<String, CgroupError> {
        let Some((_, first)) = cg.dirs.first() else {
            return Err(CgroupError::Devices("the instance has no cgroup".into()));
        };
        match self.version {
            Version::V1 => {
                let name = first.file_name().unwrap_or_default().to_owned();
                let Some((label, base)) = self
                    .bases
                    .iter()
                    .find(|(c, _)| c.split(',').any(|c| c == "devices"))
                else {
                    return Err(CgroupError::MissingController("devices"));
                };
                ensure_dir_all(base)?;
                let dir = base.join(name);
                std::fs::create_dir(&dir).map_err(CgroupError::io("create cgroup", &dir))?;
                // From here on the directory is the instance's: removed with it on any error.
                cg.dirs.push((label.clone(), dir.clone()));
                confine_v1(&dir)?;
                Ok(format!("cgroup v1 devices.list: {}", summary()))
            }
            Version::V2 => {
                confine_v2(first, &self.device_program)?;
                Ok(format!("BPF program on cgroup v2: {}", summary()))
            }
        }
    }

    /// For an OCI runtime's instance cgroup `cg`, whose first process joins it through
    /// `placement`: the policy's BPF program on its cgroup in the v2 tree, below which the
    /// runtime makes its container's — on v2 `cg` itself; on a hybrid machine a cgroup of the
    /// unified tree at the same path, added to `cg` and to `placement` (it holds no
    /// controller: it only carries the program). Where no v2 tree is mounted there is none, and
    /// the runtime's own list decides. Returns how, in words.
    ///
    /// Not on v1's devices hierarchy: there a child cgroup may allow no more than its parent,
    /// and a runtime whose own list (crun's console) was refused would fail to start.
    pub fn confine_runtime(
        &self,
        cg: &mut Cgroup,
        placement: &mut Placement,
    ) -> Result<String, CgroupError> {
        if self.version == Version::V2 {
            confine_v2(&cg.dirs[0].1, &self.device_program)?;
            return Ok("BPF program on the instance's cgroup (v2), above the container's".into());
        }
        let mounts = parse_mounts(&read_mountinfo());
        let unified = mounts.iter().find(|m| m.fs_type == "cgroup2");
        let Some((unified, relative)) = unified.zip(cg.relative_path()) else {
            return Ok("no v2 tree for a BPF program here: the runtime's own list".into());
        };
        let dir = host_dir(unified, &relative);
        ensure_dir_all(&dir)?;
        // From here on the directory is the instance's: removed with it on any error.
        cg.dirs.push(("unified".into(), dir.clone()));
        confine_v2(&dir, &self.device_program)?;
        let procs = dir.join("cgroup.procs");
        let join = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(CgroupError::io("open", &procs))?;
        placement.join.push(join.into());
        Ok("BPF program on the instance's cgroup in the unified (v2) tree".into())
    }
}

/// The cgroup at `relative` from the root of the unified (v2) tree that a hybrid machine mounts
/// beside its v1 hierarchies, if it has one.
pub fn unified_dir(relative: &Path) -> Option<std::path::PathBuf> {
    let mounts = parse_mounts(&read_mountinfo());
    let unified = mounts.iter().find(|m| m.fs_type == "cgroup2")?;
    Some(host_dir(unified, &relative.to_string_lossy()))
}

impl Hierarchy {
    /// The policy's BPF program on the cgroup `dir` of the unified tree of a hybrid machine,
    /// made here (empty: it holds no controller, only the program). For runc, which puts its
    /// container there at the path the bundle names *from the tree's root*, whatever cgroup it
    /// was started in: the program on the instance's unified cgroup would not be above it. The
    /// caller claims `dir` before (it is outside the lab's subtree). Returns how, in words.
    pub fn confine_unified(&self, dir: &Path) -> Result<String, CgroupError> {
        ensure_dir_all(dir)?;
        confine_v2(dir, &self.device_program)?;
        Ok(
            "BPF program on the container's cgroup in the unified (v2) tree, where runc puts it"
                .into(),
        )
    }
}

/// v1: an empty list (`a` denied), then one `devices.allow` write per rule, then the list read
/// back: each rule must be there, and nothing else (a parent cgroup that refuses a rule would
/// leave it out silently).
fn confine_v1(dir: &Path) -> Result<(), CgroupError> {
    write(&dir.join("devices.deny"), "a")?;
    for rule in &POLICY {
        write(&dir.join("devices.allow"), &rule.v1_line())?;
    }
    let list = std::fs::read_to_string(dir.join("devices.list"))
        .map_err(CgroupError::io("read", &dir.join("devices.list")))?;
    let mut have: Vec<&str> = list.lines().map(str::trim).collect();
    let mut want: Vec<String> = POLICY.iter().map(Rule::v1_line).collect();
    have.sort_unstable();
    want.sort_unstable();
    if have != want {
        return Err(CgroupError::Devices(format!(
            "{} lists {have:?}, not {want:?}",
            dir.join("devices.list").display()
        )));
    }
    Ok(())
}

/// v2: attach the policy's program (loaded once per lab, see [`ProgramCache`]) to the cgroup
/// `dir`, then ask the kernel which programs the cgroup runs: ours must be among them.
fn confine_v2(dir: &Path, programs: &ProgramCache) -> Result<(), CgroupError> {
    let program = programs
        .get()
        .map_err(|e| CgroupError::Devices(e.clone()))?;
    let cgroup = std::fs::File::open(dir).map_err(CgroupError::io("open", dir))?;
    let failed = |step: &str| {
        let e = Errno::last();
        CgroupError::Devices(format!("{step} {}: {e}", dir.display()))
    };
    // BPF_F_ALLOW_MULTI: programs attached below (an OCI runtime's, for the container's own
    // cgroup) run *as well as* this one, and a device is allowed only if every program allows
    // it. Without it the kernel would refuse their attachment, or let them override this one.
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: program.fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    if bpf(BPF_PROG_ATTACH, &mut attr) < 0 {
        return Err(failed("attach the device program to"));
    }
    let mut ids = [0u32; 64];
    let mut query = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        _pad: 0,
    };
    if bpf(BPF_PROG_QUERY, &mut query) < 0 {
        return Err(failed("list the device programs of"));
    }
    if !ids[..query.prog_cnt as usize].contains(&program.id) {
        return Err(CgroupError::Devices(format!(
            "{} does not run the device program (id {}) after attaching it",
            dir.display(),
            program.id
        )));
    }
    // The cgroup holds the program now; it goes when the cgroup is removed.
    Ok(())
}

/// One BPF instruction, as the kernel reads it (`struct bpf_insn`): an opcode, two registers
/// in one byte (destination in the low four bits, source in the high four), a 16-bit jump
/// offset and a 32-bit immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes: an instruction class, an operation and a source (`K`: the immediate; `X`: a register).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X: dst = src
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K: dst &= imm
const RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K: dst >>= imm
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K: if dst != imm, skip `off` instructions
const JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K: if dst & imm, skip `off` instructions
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT: return r0

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// The registers the program uses. r1 holds the input when it starts; r0 is what it returns.
const R0: u8 = 0;
const CTX: u8 = 1;
const ACCESS: u8 = 2;
const TYPE: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;

/// The policy as a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
///
/// Its input (r1) points at the request, `struct bpf_cgroup_dev_ctx`: three 32-bit words,
/// `access_type` (the access bits in its upper half, the device type in its lower half),
/// `major`, `minor`. It returns 1 to allow, 0 to refuse. In C it would read:
///
/// ```c
/// u32 type = ctx->access_type & 0xffff, access = ctx->access_type >> 16;
/// for each rule:
///     if (type == rule.type && (rule.major is any || ctx->major == rule.major)
///         && (rule.minor is any || ctx->minor == rule.minor)
///         && (access & ~rule.access) == 0)
///         return 1;
/// return 0;
/// ```
///
/// BPF has no loops the verifier would accept here and needs none: the rules are unrolled, one
/// block per rule, and every "no" jumps to the start of the next block.
pub fn program() -> Vec<Insn> {
    // Unpack the request into registers, once.
    let mut p = vec![
        insn(LDX_MEM_W, ACCESS, CTX, 0, 0), //  access = ctx->access_type
        insn(MOV64_X, TYPE, ACCESS, 0, 0),  //  type = access
        insn(AND64_K, TYPE, 0, 0, 0xffff),  //  type &= 0xffff          (lower half: b or c)
        insn(RSH64_K, ACCESS, 0, 0, 16),    //  access >>= 16           (upper half: m, r, w)
        insn(LDX_MEM_W, MAJOR, CTX, 4, 0),  //  major = ctx->major
        insn(LDX_MEM_W, MINOR, CTX, 8, 0),  //  minor = ctx->minor
    ];
    for rule in &POLICY {
        // The tests of one rule, each "if not this, go to the next rule".
        let mut tests = vec![(JNE_K, TYPE, rule.kind as i32)];
        if let Some(major) = rule.major {
            tests.push((JNE_K, MAJOR, major as i32));
        }
        if let Some(minor) = rule.minor {
            tests.push((JNE_K, MINOR, minor as i32));
        }
        // Any access bit the rule does not grant sends the request on to the next rule.
        let refused = !rule.access & access::ALL;
        if refused != 0 {
            tests.push((JSET_K, ACCESS, refused as i32));
        }
        // Every test jumps over what follows it in this block: the tests after it and the
        // two instructions that allow (`r0 = 1; exit`).
        let n = tests.len();
        for (i, (code, reg, imm)) in tests.into_iter().enumerate() {
            p.push(insn(code, reg, 0, (n - i - 1 + 2) as i16, imm));
        }
        p.push(insn(MOV64_K, R0, 0, 0, 1)); //  return 1: allowed
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, R0, 0, 0, 0)); //  no rule allowed it: return 0
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands, program and attachment types and flags (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The first fields of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel reads the rest as zero.
#[repr(C)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `union bpf_attr` for `BPF_PROG_QUERY`, up to the count of programs.
#[repr(C)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// bpf(2) with `attr`, whose size the kernel is told. Mutable: some commands write their
/// answer back into it (a query's count, an object's size of information).
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` for `cmd`, valid for its size;
    // pointers inside it point to buffers the caller keeps alive across the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) }
}

/// The loaded program: its descriptor and the id the kernel gave it.
#[derive(Debug)]
struct Loaded {
    fd: OwnedFd,
    id: u32,
}

/// The program, loaded on first use and attached to each instance's cgroup: one copy in the
/// kernel serves every instance of a lab (loading it — the verifier's checks, compiling it to
/// machine code — takes about a millisecond here). A [`Hierarchy`] and its clones share it;
/// it is unloaded with the last of them, once no cgroup holds it either.
#[derive(Clone, Debug, Default)]
pub struct ProgramCache(Arc<OnceLock<Result<Loaded, String>>>);

impl ProgramCache {
    /// The program, loaded now if it is not yet. The error says why it could not be.
    fn get(&self) -> Result<&Loaded, &String> {
        self.0.get_or_init(load).as_ref()
    }
}

/// Hand [`program`] to the kernel, whose verifier checks it first; if it refuses, ask again
/// with its log, which says why.
fn load() -> Result<Loaded, String> {
    let insns = program();
    let license = c"MIT OR Apache-2.0";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"isolab_dev");
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    let mut fd = bpf(BPF_PROG_LOAD, &mut attr);
    if fd < 0 && Errno::last() != Errno::EPERM {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
        fd = bpf(BPF_PROG_LOAD, &mut attr);
    }
    if fd < 0 {
        let e = Errno::last();
        let said = String::from_utf8_lossy(&log);
        let said = said.trim_end_matches('\0').trim();
        return Err(match e {
            Errno::EPERM => "loading a BPF program needs root (CAP_SYS_ADMIN or CAP_BPF)".into(),
            _ if said.is_empty() => format!("the kernel refused the device program: {e}"),
            _ => format!("the kernel's verifier refused the device program ({e}): {said}"),
        });
    }
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // `struct bpf_prog_info` begins with the program's type and id; the kernel fills as much of
    // it as `info_len` says.
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) < 0 {
        return Err(format!("the device program's id: {}", Errno::last()));
    }
    Ok(Loaded { fd, id: info[1] })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run [`program`] on one request, as the kernel would, with a tiny interpreter of the
    /// instructions it uses: every rule checked without a kernel in the loop.
    fn run(kind: Kind, major: u32, minor: u32, access: u32) -> bool {
        let p = program();
        let ctx = [(access << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let imm = i.imm as i64 as u64;
            let mut next = pc + 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, CTX as usize);
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                MOV64_X => r[dst] = r[src],
                MOV64_K => r[dst] = imm,
                AND64_K => r[dst] &= imm,
                RSH64_K => r[dst] >>= imm,
                JNE_K if r[dst] != imm => next += i.off as usize,
                JSET_K if r[dst] & imm != 0 => next += i.off as usize,
                JNE_K | JSET_K => {}
                EXIT => return r[0] == 1,
                other => panic!("opcode {other:#x}"),
            }
            pc = next;
        }
    }

    const RW: u32 = access::READ | access::WRITE;

    #[test]
    fn the_program_allows_the_standard_nodes_and_nothing_else() {
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 7),
        ] {
            assert!(run(Kind::Char, major, minor, RW), "c {major}:{minor}");
            assert!(run(Kind::Char, major, minor, access::READ));
        }
        for (kind, major, minor) in [
            (Kind::Char, 10, 232), // /dev/kvm
            (Kind::Char, 4, 1),    // tty1
            (Kind::Char, 5, 1),    // console
            (Kind::Char, 10, 229), // fuse
            (Kind::Char, 1, 1),    // /dev/mem
            (Kind::Char, 10, 200), // tun: runc's, not ours
            (Kind::Block, 7, 0),   // a loop device
            (Kind::Block, 1, 3),   // null's numbers, but a block device
            (Kind::Block, 8, 0),   // a disk
        ] {
            assert!(!run(kind, major, minor, RW), "{kind:?} {major}:{minor}");
            assert!(!run(kind, major, minor, access::READ));
            // Any node may be made; opening it is what counts.
            assert!(run(kind, major, minor, access::MKNOD));
        }
    }

    #[test]
    fn v1_lines_spell_the_same_rules() {
        let lines: Vec<String> = POLICY.iter().map(Rule::v1_line).collect();
        assert_eq!(lines[0], "c *:* m");
        assert_eq!(lines[1], "b *:* m");
        assert!(lines.contains(&"c 1:3 rwm".to_string()));
        assert!(lines.contains(&"c 136:* rwm".to_string()));
    }

    /// The real kernel's verifier accepts the program, and the kernel runs it: loaded here,
    /// attached by the security tests (`tests/security/devices.rs`).
    #[test]
    fn the_kernel_accepts_the_program() {
        let programs = ProgramCache::default();
        let loaded = programs.get().unwrap();
        assert!(loaded.id > 0);
    }
}
