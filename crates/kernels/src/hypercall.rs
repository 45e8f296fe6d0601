//! The hypercall ABI between the bare guest (`guest/`) and isolab's VMM (`src/backend/vm/`).
//!
//! A bare guest has no operating system, so whatever the kernels need from "below" (a marker, a
//! file write, a wait for the host) is a **hypercall**: the guest stops, the VMM does the work on
//! the host and lets the guest go on. This module is the one definition of that contract; both
//! programs link it, so the numbers cannot drift apart.
//!
//! # The instruction: `out dx, eax`
//!
//! The guest runs in ring 3, where port I/O is privileged; the VMM's task-state segment carries an
//! I/O-permission bitmap that allows ring 3 exactly this one port (see the VMM's `cpu` module for
//! why a bitmap and not RFLAGS.IOPL). KVM stops the guest on every port access — on VT-x and AMD-V
//! the CPU exits, on PVM the `out` traps and is emulated — and `KVM_RUN` returns to the VMM with
//! `KVM_EXIT_IO`, the port number and the bytes written, all in the shared `kvm_run` page, so
//! reading them costs no further system call.
//!
//! Port I/O is the cheapest exit there is (the CPU names the port and the value; KVM decodes
//! nothing), and one port serves both of isolab's guests: a Linux guest's `/init` writes its
//! markers to it too (`crate::marker`). The other way to leave a ring-3 guest without a system
//! call — a store to a page with no RAM behind it, an MMIO exit — needs no I/O bitmap, but makes
//! KVM decode every call's instruction. The bitmap has one catch, which the VMM's `cpu` module
//! handles: the task-state segment's *type* that each vendor's CPU accepts differs (VT-x insists
//! on a busy TSS; the AMD-V of QEMU's emulator reads the bitmap only of an available one).
//!
//! ```text
//!   mov  dx,  PORT          ; 0x3f0
//!   mov  eax, call code     ; a [`Call`] as u32
//!   out  dx,  eax           ; VM exit → KVM_EXIT_IO(port 0x3f0, 4 bytes = the call code)
//! ```
//!
//! # The arguments: a mailbox page
//!
//! Arguments and results do not travel in registers. Registers would cost the VMM a
//! `KVM_GET_REGS` ioctl to read them and a `KVM_SET_REGS` to answer, two more system calls on
//! every exit. Instead the guest writes its arguments into the **mailbox**, a page of guest RAM
//! at a fixed address, before the `out`; the VMM reads them straight from its mapping of guest
//! RAM and writes the result back there. One hypercall is therefore exactly one VM exit and one
//! `KVM_RUN` ioctl, the least any exit can cost.
//!
//! ```text
//!   MAILBOX_ADDR + 0x00  arg 0     guest → VMM
//!                + 0x08  arg 1     guest → VMM
//!                + 0x10  arg 2     guest → VMM
//!                + 0x18  arg 3     guest → VMM
//!                + 0x20  ret       VMM → guest: the call's value
//!                + 0x28  status    VMM → guest: 0, or an errno value (see [`status`])
//! ```
//!
//! Guest addresses passed as arguments (the buffer of an `io` call, say) are guest-physical
//! addresses: the guest's page tables map virtual = physical, so a guest pointer *is* one. The VMM
//! checks every address and length against guest RAM; a bad one is answered with
//! [`status::EFAULT`], never followed.
//!
//! # The boot page
//!
//! Before the first entry the VMM writes a [`BootInfo`] at [`BOOT_ADDR`]: what to run (the
//! [`Spec`] as [`Spec::to_words`]) and where the kernel's arena is. The guest maps it read-only.
//!
//! # Who stamps the time
//!
//! The guest never reads a clock. [`Call::Ready`], [`Call::Start`] and [`Call::Done`] are stamped
//! by the VMM with the host's `CLOCK_MONOTONIC` the moment the exit reaches it, so a guest's
//! timeline sits on the same clock as every other backend's.

use crate::{Error, Spec};

/// The I/O port of every hypercall. The bare guest has no devices, so any port would do; this
/// one is isolab's.
pub const PORT: u16 = 0x3f0;

/// Guest-physical address of the boot page ([`BootInfo`]), written by the VMM, read-only to the
/// guest.
pub const BOOT_ADDR: u64 = 0x1000;

/// Guest-physical address of the mailbox page (arguments and results of hypercalls).
pub const MAILBOX_ADDR: u64 = 0x2000;

/// Where the guest program is linked and loaded (`crates/guest/link.ld` says the same).
pub const IMAGE_BASE: u64 = 0x10_0000;

/// The end of the window the guest program must fit in: 1 MiB of code and data.
pub const IMAGE_END: u64 = 0x20_0000;

/// The mailbox's words, as byte offsets from [`MAILBOX_ADDR`].
pub mod mailbox {
    /// Arguments a hypercall can take.
    pub const ARGS: usize = 4;

    /// Byte offset of argument `i` (0..[`ARGS`]).
    pub const fn arg(i: usize) -> u64 {
        assert!(i < ARGS);
        (i * 8) as u64
    }

    /// Byte offset of the call's result.
    pub const RET: u64 = 0x20;

    /// Byte offset of the call's status: 0 for success, else an errno value.
    pub const STATUS: u64 = 0x28;
}

/// Status values the VMM writes to the mailbox. They are Linux's errno numbers, so a failure in
/// the guest reads like the same failure in the Linux workload ([`Error::Platform`]).
pub mod status {
    /// Success.
    pub const OK: u64 = 0;
    /// The host's I/O failed without a more precise errno (e.g. a read past the end of file).
    pub const EIO: u64 = 5;
    /// An address or length the guest passed lies outside its RAM.
    pub const EFAULT: u64 = 14;
    /// An argument is out of range (e.g. a transfer longer than [`super::MAX_TRANSFER`]).
    pub const EINVAL: u64 = 22;
}

/// The longest buffer one `io` hypercall may move. The `io` kernel moves 64 KiB at a time; the
/// limit keeps a confused guest from asking the VMM for gigabytes in one exit.
pub const MAX_TRANSFER: u64 = 1 << 20;

/// What the guest asks of the VMM: the value written to [`PORT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Call {
    /// Marker: the guest's first instruction ran. No arguments.
    Ready = 1,
    /// Marker: the kernel's set-up is over. No arguments.
    Start = 2,
    /// Marker: the kernel finished. Args: checksum, ops, bytes.
    Done = 3,
    /// The kernel failed; the VMM reports it and ends the run. Args: [`encode_error`]'s words.
    Fail = 4,
    /// The `syscall` kernel's round trip. Arg 0: a value; ret: the same value.
    EnterKernel = 5,
    /// Write to the scratch file. Args: file offset, guest address, length.
    IoWrite = 6,
    /// fsync the scratch file. No arguments.
    IoSync = 7,
    /// Read from the scratch file. Args: file offset, guest address, length.
    IoRead = 8,
    /// Block until the host says go (`sleep`, holds). The VMM sleeps in `read(2)`; an idle guest
    /// costs no CPU. No arguments.
    WaitHost = 9,
    /// The `probe` kernel: the VMM reports what is true of a bare guest. Ret: facts reported.
    Probe = 10,
    /// The guest is finished; the VMM ends the run. No arguments.
    Exit = 11,
    /// The guest panicked; the VMM reports it and ends the run. Args: guest address and length
    /// of the panic message (UTF-8).
    Panic = 12,
}

impl Call {
    /// Every call, in code order.
    pub const ALL: [Call; 12] = [
        Call::Ready,
        Call::Start,
        Call::Done,
        Call::Fail,
        Call::EnterKernel,
        Call::IoWrite,
        Call::IoSync,
        Call::IoRead,
        Call::WaitHost,
        Call::Probe,
        Call::Exit,
        Call::Panic,
    ];

    /// The call with code `code`, if any.
    pub fn from_code(code: u32) -> Option<Call> {
        Call::ALL.into_iter().find(|c| *c as u32 == code)
    }

    /// The value the guest writes to [`PORT`].
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// A short name, for exit counts.
    pub const fn name(self) -> &'static str {
        match self {
            Call::Ready => "ready",
            Call::Start => "start",
            Call::Done => "done",
            Call::Fail => "fail",
            Call::EnterKernel => "enter_kernel",
            Call::IoWrite => "io_write",
            Call::IoSync => "io_sync",
            Call::IoRead => "io_read",
            Call::WaitHost => "wait_host",
            Call::Probe => "probe",
            Call::Exit => "exit",
            Call::Panic => "panic",
        }
    }
}

/// What the VMM tells the guest before its first instruction, at [`BOOT_ADDR`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// What to run.
    pub spec: Spec,
    /// Guest address of the kernel's working memory (2 MiB aligned).
    pub arena_addr: u64,
    /// Its length in bytes: at least [`Spec::arena_bytes`].
    pub arena_len: u64,
}

/// Why the boot page did not hold a [`BootInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// The first word is not [`BootInfo::MAGIC`]: the VMM did not write this page, or speaks
    /// another version of this ABI.
    BadMagic,
    /// The spec names no known kernel.
    BadSpec,
}

impl BootInfo {
    /// "isolab" + ABI version 1: a VMM and a guest built from different versions of this module
    /// refuse each other instead of misreading each other.
    pub const MAGIC: u64 = u64::from_le_bytes(*b"isolab\x00\x01");

    /// Words on the boot page.
    pub const WORDS: usize = 7;

    /// The page's contents: magic, the four spec words, arena address, arena length.
    pub const fn to_words(&self) -> [u64; BootInfo::WORDS] {
        let s = self.spec.to_words();
        [
            BootInfo::MAGIC,
            s[0],
            s[1],
            s[2],
            s[3],
            self.arena_addr,
            self.arena_len,
        ]
    }

    /// The inverse of [`BootInfo::to_words`].
    pub fn from_words(w: [u64; BootInfo::WORDS]) -> Result<BootInfo, BootError> {
        if w[0] != BootInfo::MAGIC {
            return Err(BootError::BadMagic);
        }
        Ok(BootInfo {
            spec: Spec::from_words([w[1], w[2], w[3], w[4]]).ok_or(BootError::BadSpec)?,
            arena_addr: w[5],
            arena_len: w[6],
        })
    }
}

/// A kernel [`Error`] as the three argument words of [`Call::Fail`].
pub const fn encode_error(e: Error) -> [u64; 3] {
    match e {
        Error::ArenaTooSmall { needed, available } => [1, needed, available],
        Error::Unsupported => [2, 0, 0],
        Error::Platform(code) => [3, code as u64, 0],
        Error::Corrupt => [4, 0, 0],
        Error::NeedsOs => [5, 0, 0],
        Error::DiskTooSmall { needed, available } => [6, needed, available],
    }
}

/// The inverse of [`encode_error`]; `None` for words no guest of this ABI writes.
pub fn decode_error(w: [u64; 3]) -> Option<Error> {
    Some(match w[0] {
        1 => Error::ArenaTooSmall {
            needed: w[1],
            available: w[2],
        },
        2 => Error::Unsupported,
        3 => Error::Platform(u32::try_from(w[1]).ok()?),
        4 => Error::Corrupt,
        5 => Error::NeedsOs,
        6 => Error::DiskTooSmall {
            needed: w[1],
            available: w[2],
        },
        _ => return None,
    })
}

// The layout's promises, checked by the compiler in every build of the guest and the VMM.
const _: () = {
    assert!(mailbox::arg(mailbox::ARGS - 1) < mailbox::RET);
    assert!(mailbox::STATUS + 8 <= 4096, "the mailbox fits one page");
    assert!(BootInfo::WORDS * 8 <= 4096, "the boot info fits one page");
    assert!(BOOT_ADDR != MAILBOX_ADDR && BOOT_ADDR >= 4096 && MAILBOX_ADDR >= 4096);
    assert!(IMAGE_BASE.is_multiple_of(4096) && IMAGE_END.is_multiple_of(2 << 20));
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kernel;

    #[test]
    fn call_codes_round_trip_and_are_distinct() {
        for (i, call) in Call::ALL.into_iter().enumerate() {
            assert_eq!(Call::from_code(call.code()), Some(call));
            assert_eq!(call.code(), i as u32 + 1, "codes are dense, from 1");
        }
        assert_eq!(Call::from_code(0), None);
        assert_eq!(Call::from_code(Call::ALL.len() as u32 + 1), None);
    }

    #[test]
    fn boot_info_round_trips_and_refuses_strangers() {
        let info = BootInfo {
            spec: Spec::default_for(Kernel::Mem),
            arena_addr: 0x20_0000,
            arena_len: 64 << 20,
        };
        assert_eq!(BootInfo::from_words(info.to_words()), Ok(info));
        let mut w = info.to_words();
        w[0] ^= 1;
        assert_eq!(BootInfo::from_words(w), Err(BootError::BadMagic));
        let mut w = info.to_words();
        w[1] = 99;
        assert_eq!(BootInfo::from_words(w), Err(BootError::BadSpec));
    }

    #[test]
    fn errors_round_trip() {
        for e in [
            Error::ArenaTooSmall {
                needed: 5,
                available: 3,
            },
            Error::Unsupported,
            Error::Platform(status::EFAULT as u32),
            Error::Corrupt,
            Error::NeedsOs,
            Error::DiskTooSmall {
                needed: 9,
                available: 4,
            },
        ] {
            assert_eq!(decode_error(encode_error(e)), Some(e));
        }
        assert_eq!(decode_error([0, 0, 0]), None);
        assert_eq!(decode_error([3, u64::MAX, 0]), None);
    }
}
