//! Snapshots of a guest: a VM saved once it is ready, and restored any number of times. This
//! module is the file — its header, its RAM, and the checks a restore makes; the state it holds
//! is the bare guest's [`CpuState`], or a Linux guest's (`crate::linux::snapshot`).
//!
//! A bare VM is only two things to save: the vCPU's state and guest RAM. Everything else a cold start
//! does — create the VM, load the program, write page tables and descriptor tables — produced
//! bytes in RAM and values in registers, and a snapshot keeps exactly those. A restore then
//! skips the build: a new VM, the snapshot file *mapped* as its RAM, the registers put back.
//!
//! ```text
//!  offset 0     header: magic, format, lab version, host CPU vendor and signature,
//!               RAM size, where the rest is, which kind of guest
//!  offset 256   the machine's state: for the bare guest kvm_regs, kvm_sregs, kvm_fpu and the
//!               MSRs below; for a Linux guest much more (see `crate::linux::snapshot`)
//!  offset 4096  guest RAM that holds data, byte for byte, up to the 2 MiB boundary after its
//!  (or the      last non-zero page — sparse: pages never touched, or holding only zeros, are
//!  first page   holes that cost no disk and read back as zeros
//!  after a
//!  longer state)
//! ```
//!
//! RAM above the last data is not in the file at all: a restored VM gets it as fresh anonymous
//! memory, as a cold VM does. (Mapped from the file, each page of it the guest touched would
//! cost a page of page cache, full of zeros, besides the guest's private copy.) For the bare
//! guest saved at `ready` that is the whole arena: only the low 2 MiB — page tables, descriptor
//! tables, the program, its stack — are the snapshot's.
//!
//! # When it is taken
//!
//! At the guest's `ready` hypercall: the VMM serves it (the `ready` marker goes out) and then,
//! instead of entering the guest again, saves it — with RIP moved back onto that hypercall's
//! `out` instruction (see [`crate::machine::Machine::snapshot`] for why it has to be moved, and
//! how). A restored guest executes that `out` again, so its first act is to say `ready`
//! itself: the lab times a restore to a marker of the restored guest, not to the VMM's word.
//!
//! # Why RAM is mapped `MAP_PRIVATE`
//!
//! Mapped `MAP_PRIVATE` from the file, guest RAM starts as the file's pages in the host's page
//! cache. Reads share them; the first write to a page gives that VM a private copy
//! (copy-on-write). N VMs restored from one snapshot therefore share every page none of them
//! wrote, as containers share an image's files — and the file itself is never changed.
//! Nothing is read at restore time: each page comes in on the guest's first touch (a host page
//! fault), unless the restore is asked to **prefault**: `MADV_POPULATE_READ` then fills the
//! VMM's page tables with the file's pages before the first entry, without copying any of them
//! (`MAP_POPULATE` would not do: on a private writable mapping it faults every page *for
//! writing*, which copies them all and shares nothing).
//!
//! # What is refused
//!
//! The file is read as hostile: its size must hold what the header says, the header's sizes must
//! be the ones this VMM writes, and RAM must fit the layout ([`memory::check_size`]). A vCPU's
//! state means something only on the CPU it was saved on (CPUID, MSRs, the FPU's layout) and to
//! the VMM that wrote it, so a snapshot from another CPU model or another lab version is refused
//! with one line saying which.

use crate::memory::{self, MemoryError};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use std::fs::File;
use std::os::unix::fs::FileExt;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The first bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"ISOLABVM";
/// The layout this VMM writes and reads (2: the guest's kind in the header, and a state of
/// any length up to [`MAX_STATE_BYTES`]).
pub const FORMAT: u32 = 2;
/// Where the machine's state starts.
const STATE_OFFSET: u64 = 256;
/// The most state a snapshot may say it holds: a Linux guest's is about 10 KiB.
pub const MAX_STATE_BYTES: u64 = 1 << 20;
/// The granule of the file's part of RAM: the bare guest's large page.
const DATA_GRANULE: u64 = crate::layout::LARGE_PAGE;
/// Where guest RAM starts after a state that fits the first page (the bare guest's): it must
/// be page-aligned, as `mmap` requires of a file offset.
pub const MEMORY_OFFSET: u64 = 4096;

/// Where guest RAM starts after `state_bytes` of state: the first page boundary after it.
fn memory_offset(state_bytes: u64) -> u64 {
    (STATE_OFFSET + state_bytes)
        .next_multiple_of(PAGE as u64)
        .max(MEMORY_OFFSET)
}

/// Which guest a snapshot holds: each kind's state means something only to its own machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    /// The bare guest of [`crate::machine`].
    Bare,
    /// A Linux guest of [`crate::linux::machine`].
    Linux,
}

impl GuestKind {
    fn code(self) -> u32 {
        match self {
            GuestKind::Bare => 1,
            GuestKind::Linux => 2,
        }
    }

    fn name(code: u32) -> &'static str {
        match code {
            1 => "the bare guest",
            2 => "a Linux guest",
            _ => "an unknown kind of guest",
        }
    }
}
/// Room for the lab's version in the header.
const LAB_BYTES: usize = 64;
const PAGE: usize = 4096;

/// The model-specific registers saved besides `kvm_sregs` (which holds EFER and the APIC
/// base): the page attribute table, which sets the memory type of every guest page, and the
/// system-call entry points. The bare guest enters ring 0 only through its IDT, never by
/// `syscall`/`sysenter`, but a restored vCPU must not differ from the saved one in anything it
/// could read.
pub const SAVED_MSRS: [u32; 8] = [
    0x277,       // IA32_PAT
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
];

/// Errors of taking or restoring a snapshot. Each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file does not start as a snapshot does.
    #[error("not an isolab VM snapshot (it does not start with {:?})", String::from_utf8_lossy(&MAGIC))]
    NotASnapshot,
    /// Another layout.
    #[error("snapshot format {got}, but this lab reads format {FORMAT}")]
    Format {
        /// The file's.
        got: u32,
    },
    /// Taken by another version of the lab.
    #[error("snapshot taken by isolab {theirs}, this is isolab {ours}: only the lab that took a snapshot restores it")]
    Version {
        /// The file's.
        theirs: String,
        /// This lab's.
        ours: String,
    },
    /// Taken on another CPU.
    #[error("snapshot taken on {theirs}, this host is {ours}: a vCPU's saved state is valid only on the CPU model it was saved on")]
    Cpu {
        /// The file's CPU.
        theirs: String,
        /// This host's.
        ours: String,
    },
    /// A size or offset that this VMM never writes.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// A snapshot of another kind of guest.
    #[error("the snapshot holds {theirs}, not {ours}")]
    OtherGuest {
        /// The file's.
        theirs: &'static str,
        /// The one restoring.
        ours: &'static str,
    },
    /// The restored guest would run something else than asked.
    #[error("the snapshot's guest runs {theirs}, not the {ours} asked for")]
    OtherWorkload {
        /// What the boot page in the snapshot says.
        theirs: String,
        /// What the lab asked for.
        ours: String,
    },
    /// A Linux guest booted with another command line (another workload, or an address of
    /// another instance's).
    #[error("the snapshot's guest was booted with `{theirs}`, this one would be with `{ours}`: a restored guest keeps everything its kernel was told")]
    OtherCommandLine {
        /// The first word of the snapshot's command line that differs.
        theirs: String,
        /// This guest's word there.
        ours: String,
    },
    /// Reading or writing the file failed.
    #[error("{what}: {source}")]
    Io {
        /// What the VMM was doing.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// KVM would not give or take a part of the vCPU's state.
    #[error("{op}: {source}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM could not be mapped or read.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { what, source }
}

fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Ioctl { op, source }
}

/// The CPU this process runs on, as a snapshot names it: the vendor string of CPUID leaf 0 and
/// the signature (family, model, stepping) of leaf 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCpu {
    /// `GenuineIntel`, `AuthenticAMD`, ...
    pub vendor: [u8; 12],
    /// CPUID.1:EAX.
    pub signature: u32,
}

impl HostCpu {
    /// This host's.
    pub fn here() -> HostCpu {
        let leaf0 = std::arch::x86_64::__cpuid(0);
        let mut vendor = [0u8; 12];
        for (i, w) in [leaf0.ebx, leaf0.edx, leaf0.ecx].iter().enumerate() {
            vendor[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        HostCpu {
            vendor,
            signature: std::arch::x86_64::__cpuid(1).eax,
        }
    }
}

impl std::fmt::Display for HostCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.signature;
        // The displayed family and model fold in their extended fields, as the SDM says.
        let base_family = (s >> 8) & 0xf;
        let family = base_family
            + if base_family == 0xf {
                (s >> 20) & 0xff
            } else {
                0
            };
        let model = ((s >> 4) & 0xf)
            | if base_family >= 6 {
                (s >> 12) & 0xf0
            } else {
                0
            };
        write!(
            f,
            "{} family {family:#x} model {model:#x} stepping {}",
            String::from_utf8_lossy(&self.vendor),
            s & 0xf
        )
    }
}

/// This lab's version as a snapshot records it: the crate version and the commit it was
/// built from.
pub fn lab_version() -> String {
    let mut v = format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        isolab_host::facts::commit()
    );
    v.truncate(LAB_BYTES);
    v
}

/// What a snapshot's first page says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`lab_version`] of the lab that took it.
    pub lab: String,
    /// The CPU it was taken on.
    pub cpu: HostCpu,
    /// Guest RAM in bytes.
    pub ram_bytes: u64,
    /// The first `data_bytes` of it, stored from `memory_offset`; the rest is zeros.
    pub data_bytes: u64,
    /// Where in the file guest RAM starts.
    pub memory_offset: u64,
}

/// The vCPU's state as saved.
#[derive(Clone, Debug, Default)]
pub struct CpuState {
    /// General registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segments, control registers, descriptor tables, EFER.
    pub sregs: kvm_sregs,
    /// x87 and SSE state (the FXSAVE image).
    pub fpu: kvm_fpu,
    /// (index, value) of the [`SAVED_MSRS`] KVM gave.
    pub msrs: Vec<(u32, u64)>,
}

/// The KVM structures saved as their bytes: `#[repr(C)]` structures of integers only, so any
/// bytes of their size are a value of them (a nonsense one, at worst, that KVM then refuses).
pub(crate) trait Plain: Default + Copy {}
impl Plain for kvm_regs {}
impl Plain for kvm_sregs {}
impl Plain for kvm_fpu {}

pub(crate) fn bytes_of<T: Plain>(value: &T) -> &[u8] {
    // SAFETY: `T` is a repr(C) structure of integers (see `Plain`); reading its bytes, padding
    // included, reads memory that `value` owns for as long as the borrow.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

pub(crate) fn from_bytes<T: Plain>(bytes: &[u8]) -> Option<T> {
    let mut value = T::default();
    if bytes.len() != size_of::<T>() {
        return None;
    }
    // SAFETY: exactly size_of::<T>() bytes are copied into a `T`, and any bytes are a `T`
    // (see `Plain`).
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut value as *mut T).cast::<u8>(),
            bytes.len(),
        )
    };
    Some(value)
}

/// The state section's length for `msrs` saved MSRs.
fn state_len(msrs: usize) -> usize {
    size_of::<kvm_regs>() + size_of::<kvm_sregs>() + size_of::<kvm_fpu>() + 4 + msrs * 12
}

impl CpuState {
    /// Read the state of a vCPU that has stopped at an exit (not inside `KVM_RUN`).
    pub fn of(vcpu: &VcpuFd) -> Result<CpuState, SnapshotError> {
        let mut msrs = Msrs::from_entries(
            &SAVED_MSRS
                .iter()
                .map(|&index| kvm_bindings::kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect::<Vec<_>>(),
        )
        .map_err(|e| SnapshotError::Malformed(format!("MSR list: {e:?}")))?;
        // KVM_GET_MSRS stops at the first MSR it does not know and says how many it read:
        // those are saved, and put back.
        let read = vcpu.get_msrs(&mut msrs).map_err(ioctl("KVM_GET_MSRS"))?;
        Ok(CpuState {
            regs: vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?,
            fpu: vcpu.get_fpu().map_err(ioctl("KVM_GET_FPU"))?,
            msrs: msrs.as_slice()[..read]
                .iter()
                .map(|m| (m.index, m.data))
                .collect(),
        })
    }

    /// Give this state to `vcpu` (whose CPUID is already set: KVM checks some of the state
    /// against it). Special registers first: they decide the mode the others are read in.
    pub fn apply(&self, vcpu: &VcpuFd) -> Result<(), SnapshotError> {
        vcpu.set_sregs(&self.sregs)
            .map_err(ioctl("KVM_SET_SREGS"))?;
        let entries: Vec<_> = self
            .msrs
            .iter()
            .map(|&(index, data)| kvm_bindings::kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|e| SnapshotError::Malformed(format!("MSR list: {e:?}")))?;
        let set = vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        if set != entries.len() {
            return Err(SnapshotError::Malformed(format!(
                "KVM refused MSR {:#x}",
                entries[set].index
            )));
        }
        vcpu.set_fpu(&self.fpu).map_err(ioctl("KVM_SET_FPU"))?;
        vcpu.set_regs(&self.regs).map_err(ioctl("KVM_SET_REGS"))
    }

    /// The state as the snapshot file holds it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(state_len(self.msrs.len()));
        out.extend_from_slice(bytes_of(&self.regs));
        out.extend_from_slice(bytes_of(&self.sregs));
        out.extend_from_slice(bytes_of(&self.fpu));
        out.extend_from_slice(&(self.msrs.len() as u32).to_le_bytes());
        for (index, value) in &self.msrs {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// The state from a snapshot file's bytes, checked.
    pub fn decode(bytes: &[u8]) -> Result<CpuState, SnapshotError> {
        let bad = |what: &str| SnapshotError::Malformed(format!("the vCPU state's {what}"));
        let (regs, rest) = bytes
            .split_at_checked(size_of::<kvm_regs>())
            .ok_or_else(|| bad("registers"))?;
        let (sregs, rest) = rest
            .split_at_checked(size_of::<kvm_sregs>())
            .ok_or_else(|| bad("special registers"))?;
        let (fpu, rest) = rest
            .split_at_checked(size_of::<kvm_fpu>())
            .ok_or_else(|| bad("FPU state"))?;
        let (count, mut rest) = rest.split_at_checked(4).ok_or_else(|| bad("MSR count"))?;
        let count = u32::from_le_bytes(count.try_into().map_err(|_| bad("MSR count"))?) as usize;
        if count > SAVED_MSRS.len() {
            return Err(bad("MSR count"));
        }
        let mut msrs = Vec::with_capacity(count);
        for _ in 0..count {
            let (entry, more) = rest.split_at_checked(12).ok_or_else(|| bad("MSRs"))?;
            let index = u32::from_le_bytes(entry[..4].try_into().map_err(|_| bad("MSRs"))?);
            let value = u64::from_le_bytes(entry[4..].try_into().map_err(|_| bad("MSRs"))?);
            if !SAVED_MSRS.contains(&index) {
                return Err(SnapshotError::Malformed(format!(
                    "MSR {index:#x} is not one this VMM saves"
                )));
            }
            msrs.push((index, value));
            rest = more;
        }
        Ok(CpuState {
            regs: from_bytes(regs).ok_or_else(|| bad("registers"))?,
            sregs: from_bytes(sregs).ok_or_else(|| bad("special registers"))?,
            fpu: from_bytes(fpu).ok_or_else(|| bad("FPU state"))?,
            msrs,
        })
    }
}

/// What writing a snapshot cost, in its steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes of guest RAM written (pages that were resident and not all zeros).
    pub ram_written: u64,
}

/// Write the snapshot of a stopped machine — `kind`'s encoded `state_bytes` and its RAM — into
/// `file` (empty, opened for writing). Only resident pages are looked at (`mincore`: a page the
/// guest never touched is a hole) and only those holding a non-zero byte are written.
pub fn write(
    file: &File,
    kind: GuestKind,
    state_bytes: &[u8],
    mem: &GuestMemoryMmap,
    ram_bytes: u64,
) -> Result<Written, SnapshotError> {
    if state_bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(SnapshotError::Malformed(format!(
            "a state of {} bytes (at most {MAX_STATE_BYTES})",
            state_bytes.len()
        )));
    }
    let mut head = vec![0u8; STATE_OFFSET as usize];
    let lab = lab_version();
    let cpu = HostCpu::here();
    let memory_at = memory_offset(state_bytes.len() as u64);
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        head[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&MAGIC);
    put(&FORMAT.to_le_bytes());
    put(&cpu.signature.to_le_bytes());
    put(&cpu.vendor);
    put(&(lab.len() as u16).to_le_bytes());
    let mut lab_field = [0u8; LAB_BYTES];
    lab_field[..lab.len()].copy_from_slice(lab.as_bytes());
    put(&lab_field);
    // Which pages hold data: resident (`mincore`) and not all zeros.
    let mut pages: Vec<(u64, &[u8])> = Vec::new();
    for region in mem.iter() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|source| MemoryError::Write {
                what: "snapshot",
                source,
            })?;
        let len = region.len() as usize;
        let mut resident = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: `host` is the page-aligned start of a live mapping of `len` bytes, and
        // `resident` has one byte per page of it, as mincore requires.
        if unsafe { libc::mincore(host.cast(), len, resident.as_mut_ptr()) } != 0 {
            return Err(MemoryError::Resident(std::io::Error::last_os_error()).into());
        }
        for (page, _) in resident.iter().enumerate().filter(|(_, r)| *r & 1 == 1) {
            // SAFETY: the page lies inside the mapping (page < len / PAGE); the vCPU is stopped,
            // so nothing writes it while it is read.
            let bytes = unsafe { std::slice::from_raw_parts(host.add(page * PAGE), PAGE) };
            if bytes.iter().all(|&b| b == 0) {
                continue;
            }
            pages.push((region.start_addr().0 + (page * PAGE) as u64, bytes));
        }
    }
    let data_bytes = pages
        .last()
        .map_or(0, |(at, _)| {
            (at + PAGE as u64).next_multiple_of(DATA_GRANULE)
        })
        .min(ram_bytes);
    put(&ram_bytes.to_le_bytes());
    put(&data_bytes.to_le_bytes());
    put(&(state_bytes.len() as u64).to_le_bytes());
    put(&kind.code().to_le_bytes());
    file.set_len(memory_at + data_bytes)
        .map_err(io("size the snapshot file"))?;
    file.write_all_at(&head, 0)
        .map_err(io("write the snapshot's header"))?;
    file.write_all_at(state_bytes, STATE_OFFSET)
        .map_err(io("write the machine's state"))?;
    let mut written = Written::default();
    for (at, bytes) in pages {
        file.write_all_at(bytes, memory_at + at)
            .map_err(io("write guest RAM into the snapshot"))?;
        written.ram_written += PAGE as u64;
    }
    Ok(written)
}

/// Read and check a snapshot of a `kind` guest: its header and its state's bytes (which the
/// kind's machine decodes and checks), everything but its RAM.
pub fn read(file: &File, kind: GuestKind) -> Result<(Header, Vec<u8>), SnapshotError> {
    let size = file.metadata().map_err(io("stat the snapshot file"))?.len();
    let mut head = vec![0u8; MEMORY_OFFSET as usize];
    if size < MEMORY_OFFSET {
        return Err(if size >= MAGIC.len() as u64 {
            let mut magic = [0u8; 8];
            file.read_exact_at(&mut magic, 0)
                .map_err(io("read the snapshot"))?;
            if magic == MAGIC {
                SnapshotError::Malformed(format!("{size} bytes are too few for its header"))
            } else {
                SnapshotError::NotASnapshot
            }
        } else {
            SnapshotError::NotASnapshot
        });
    }
    file.read_exact_at(&mut head, 0)
        .map_err(io("read the snapshot's header"))?;
    if head[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or([0; 8]));
    let format = u32_at(8);
    if format != FORMAT {
        return Err(SnapshotError::Format { got: format });
    }
    let mut vendor = [0u8; 12];
    vendor.copy_from_slice(&head[16..28]);
    let cpu = HostCpu {
        vendor,
        signature: u32_at(12),
    };
    let lab_len = u16::from_le_bytes([head[28], head[29]]) as usize;
    if lab_len > LAB_BYTES {
        return Err(SnapshotError::Malformed(format!(
            "a lab version of {lab_len} bytes"
        )));
    }
    let lab = String::from_utf8_lossy(&head[30..30 + lab_len]).into_owned();
    let after_lab = 30 + LAB_BYTES;
    let ram_bytes = u64_at(after_lab);
    let data_bytes = u64_at(after_lab + 8);
    let state_bytes = u64_at(after_lab + 16);
    let their_kind = u32_at(after_lab + 24);
    // The lab first: a snapshot of another version may have another layout altogether.
    if lab != lab_version() {
        return Err(SnapshotError::Version {
            theirs: lab,
            ours: lab_version(),
        });
    }
    let here = HostCpu::here();
    if cpu != here {
        return Err(SnapshotError::Cpu {
            theirs: cpu.to_string(),
            ours: here.to_string(),
        });
    }
    if their_kind != kind.code() {
        return Err(SnapshotError::OtherGuest {
            theirs: GuestKind::name(their_kind),
            ours: GuestKind::name(kind.code()),
        });
    }
    memory::check_size(ram_bytes)?;
    if state_bytes > MAX_STATE_BYTES {
        return Err(SnapshotError::Malformed(format!(
            "a state of {state_bytes} bytes (at most {MAX_STATE_BYTES})"
        )));
    }
    let memory_at = memory_offset(state_bytes);
    if data_bytes == 0 || data_bytes > ram_bytes || data_bytes % DATA_GRANULE != 0 {
        return Err(SnapshotError::Malformed(format!(
            "{data_bytes} bytes of RAM data in {ram_bytes} of RAM (a multiple of {DATA_GRANULE}, \
             at least one, is written)"
        )));
    }
    let need = memory_at + data_bytes;
    if size < need {
        return Err(SnapshotError::Malformed(format!(
            "{size} bytes, but its header promises {need} ({data_bytes} bytes of RAM)"
        )));
    }
    let mut state = vec![0u8; state_bytes as usize];
    file.read_exact_at(&mut state, STATE_OFFSET)
        .map_err(io("read the machine's state"))?;
    Ok((
        Header {
            lab,
            cpu,
            ram_bytes,
            data_bytes,
            memory_offset: memory_at,
        },
        state,
    ))
}

/// Map a checked snapshot's RAM as guest RAM: its data `MAP_PRIVATE` from the file, the rest
/// anonymous (see the module documentation) — two regions, which become two KVM memory slots;
/// with `prefault`, the file's pages populated for reading before the guest runs.
/// (`MADV_POPULATE_READ` is Linux 5.14; on an older kernel one byte of each page is read, which
/// does the same.)
pub fn map(file: &File, header: &Header, prefault: bool) -> Result<GuestMemoryMmap, SnapshotError> {
    let too_large =
        |_| SnapshotError::Malformed("guest RAM larger than this host's address space".into());
    let data = usize::try_from(header.data_bytes).map_err(too_large)?;
    let rest = usize::try_from(header.ram_bytes - header.data_bytes).map_err(too_large)?;
    let copy = file
        .try_clone()
        .map_err(io("duplicate the snapshot's descriptor"))?;
    let mapped = |file: Option<FileOffset>, len: usize, at: u64| {
        let region = MmapRegion::build(
            file.clone(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE
                | libc::MAP_NORESERVE
                | if file.is_some() {
                    0
                } else {
                    libc::MAP_ANONYMOUS
                },
        )
        .map_err(|e| SnapshotError::Io {
            what: "map the snapshot's RAM",
            source: std::io::Error::other(e.to_string()),
        })?;
        vm_memory::GuestRegionMmap::new(region, GuestAddress(at))
            .ok_or_else(|| SnapshotError::Malformed("guest RAM overflows the address space".into()))
    };
    let mut regions = vec![mapped(
        Some(FileOffset::new(copy, header.memory_offset)),
        data,
        0,
    )?];
    if prefault {
        populate(&regions[0])?;
    }
    if rest > 0 {
        regions.push(mapped(None, rest, header.data_bytes)?);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| SnapshotError::Io {
        what: "make guest RAM of the snapshot",
        source: std::io::Error::other(e.to_string()),
    })
}

/// `MADV_POPULATE_READ` (Linux 5.14): fault in every page of a mapping for reading.
const MADV_POPULATE_READ: libc::c_int = 22;

/// Fault in every page of `region` for reading, sharing the file's pages.
fn populate(region: &vm_memory::GuestRegionMmap) -> Result<(), SnapshotError> {
    let host = region.as_ptr();
    let len = region.len() as usize;
    // SAFETY: advice on a live mapping this process owns, of exactly its length.
    if unsafe { libc::madvise(host.cast(), len, MADV_POPULATE_READ) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(io("MADV_POPULATE_READ on the snapshot's RAM")(e));
    }
    // An older kernel: read one byte of each page.
    for page in (0..len).step_by(PAGE) {
        // SAFETY: `page` is inside the mapping; a volatile read so it is not optimised away.
        unsafe { host.add(page).read_volatile() };
    }
    Ok(())
}
