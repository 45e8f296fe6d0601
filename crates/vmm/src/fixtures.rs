//! Tiny guests: a few bytes of machine code each, for tests and for reading.
//!
//! Each is loaded as a [`crate::loader::Guest::Raw`] image at [`IMAGE_BASE`] and entered at its first
//! byte, in ring 3, exactly like the bare guest. They speak the hypercall ABI by hand — the call
//! code in EAX, `out dx, eax` to port 0x3f0, arguments at the mailbox (0x2000) — so they show
//! the whole protocol without any Rust in between. The listings are GNU `as` (Intel syntax)
//! output; offsets are from [`IMAGE_BASE`].

use crate::layout::IMAGE_BASE;

/// `ready`, then `exit`: the smallest well-behaved guest.
pub static READY_EXIT: [u8; 17] = [
    0x66, 0xba, 0xf0, 0x03, //         0: mov  dx, 0x3f0
    0xb8, 0x01, 0x00, 0x00, 0x00, //   4: mov  eax, 1          ; ready
    0xef, //                           9: out  dx, eax
    0xb8, 0x0b, 0x00, 0x00, 0x00, //   a: mov  eax, 11         ; exit
    0xef, //                           f: out  dx, eax
    0xf4, //                          10: hlt                  ; never reached
];

/// `ready`, then a read through a null pointer: #PF, reported by the VMM's exception handler.
pub static NULL_READ: [u8; 18] = [
    0x66, 0xba, 0xf0, 0x03, //         0: mov  dx, 0x3f0
    0xb8, 0x01, 0x00, 0x00, 0x00, //   4: mov  eax, 1          ; ready
    0xef, //                           9: out  dx, eax
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // a: mov rax, qword ptr [0]
];

/// Where [`NULL_READ`] faults.
pub const NULL_READ_RIP: u64 = IMAGE_BASE + 0xa;

/// `ready`, then `1: jmp 1b` forever: no exit ever comes, only the time limit stops it.
pub static SPIN: [u8; 12] = [
    0x66, 0xba, 0xf0, 0x03, //         0: mov  dx, 0x3f0
    0xb8, 0x01, 0x00, 0x00, 0x00, //   4: mov  eax, 1          ; ready
    0xef, //                           9: out  dx, eax
    0xeb, 0xfe, //                     a: jmp  a
];

/// Where [`SPIN`] spins.
pub const SPIN_RIP: u64 = IMAGE_BASE + 0xa;

/// `ready`, then `ud2`: #UD, an exception without an error code.
pub static UD2: [u8; 12] = [
    0x66, 0xba, 0xf0, 0x03, //         0: mov  dx, 0x3f0
    0xb8, 0x01, 0x00, 0x00, 0x00, //   4: mov  eax, 1          ; ready
    0xef, //                           9: out  dx, eax
    0x0f, 0x0b, //                     a: ud2
];

/// Where [`UD2`] faults.
pub const UD2_RIP: u64 = IMAGE_BASE + 0xa;

/// `ready`, then three `io_write` calls with buffers the VMM must refuse, then `done` with the
/// three statuses as checksum, ops and bytes, then `exit`. In a 2 MiB guest:
///
/// 1. address 0xffff_ffff_ffff_0000, 4 KiB: far outside RAM (and the sum wraps) → `EFAULT`;
/// 2. address 0x1f_f000, 8 KiB: starts in RAM, crosses its end → `EFAULT`;
/// 3. address 0x10_0000, 2 MiB: longer than one transfer may be → `EINVAL`.
pub static BAD_BUFFERS: [u8; 177] = [
    0x66, 0xba, 0xf0, 0x03, //         0: mov  dx, 0x3f0
    0xb8, 0x01, 0x00, 0x00, 0x00, //   4: mov  eax, 1                       ; ready
    0xef, //                           9: out  dx, eax
    0x48, 0xc7, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    //                                 a: mov  qword ptr [0x2000], 0        ; file offset
    0x48, 0xc7, 0xc0, 0x00, 0x00, 0xff, 0xff,
    //                                16: mov  rax, 0xffffffffffff0000
    0x48, 0x89, 0x04, 0x25, 0x08, 0x20, 0x00, 0x00,
    //                                1d: mov  qword ptr [0x2008], rax      ; address
    0x48, 0xc7, 0x04, 0x25, 0x10, 0x20, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    //                                25: mov  qword ptr [0x2010], 0x1000   ; length
    0xb8, 0x06, 0x00, 0x00, 0x00, //  31: mov  eax, 6                       ; io_write
    0xef, //                          36: out  dx, eax
    0x48, 0x8b, 0x1c, 0x25, 0x28, 0x20, 0x00, 0x00,
    //                                37: mov  rbx, qword ptr [0x2028]      ; status 1
    0x48, 0xc7, 0x04, 0x25, 0x08, 0x20, 0x00, 0x00, 0x00, 0xf0, 0x1f, 0x00,
    //                                3f: mov  qword ptr [0x2008], 0x1ff000
    0x48, 0xc7, 0x04, 0x25, 0x10, 0x20, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00,
    //                                4b: mov  qword ptr [0x2010], 0x2000
    0xb8, 0x06, 0x00, 0x00, 0x00, //  57: mov  eax, 6                       ; io_write
    0xef, //                          5c: out  dx, eax
    0x48, 0x8b, 0x0c, 0x25, 0x28, 0x20, 0x00, 0x00,
    //                                5d: mov  rcx, qword ptr [0x2028]      ; status 2
    0x48, 0xc7, 0x04, 0x25, 0x08, 0x20, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
    //                                65: mov  qword ptr [0x2008], 0x100000
    0x48, 0xc7, 0x04, 0x25, 0x10, 0x20, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
    //                                71: mov  qword ptr [0x2010], 0x200000
    0xb8, 0x06, 0x00, 0x00, 0x00, //  7d: mov  eax, 6                       ; io_write
    0xef, //                          82: out  dx, eax
    0x48, 0x8b, 0x34, 0x25, 0x28, 0x20, 0x00, 0x00,
    //                                83: mov  rsi, qword ptr [0x2028]      ; status 3
    0x48, 0x89, 0x1c, 0x25, 0x00, 0x20, 0x00, 0x00,
    //                                8b: mov  qword ptr [0x2000], rbx      ; checksum
    0x48, 0x89, 0x0c, 0x25, 0x08, 0x20, 0x00, 0x00,
    //                                93: mov  qword ptr [0x2008], rcx      ; ops
    0x48, 0x89, 0x34, 0x25, 0x10, 0x20, 0x00, 0x00,
    //                                9b: mov  qword ptr [0x2010], rsi      ; bytes
    0xb8, 0x03, 0x00, 0x00, 0x00, //  a3: mov  eax, 3                       ; done
    0xef, //                          a8: out  dx, eax
    0xb8, 0x0b, 0x00, 0x00, 0x00, //  a9: mov  eax, 11                      ; exit
    0xef, //                          ae: out  dx, eax
    0x0f, 0x0b, //                    af: ud2
];

/// A hypercall with a code no [`isolab_kernels::hypercall::Call`] has (99).
pub static UNKNOWN_CALL: [u8; 10] = [
    0x66, 0xba, 0xf0, 0x03, //         0: mov  dx, 0x3f0
    0xb8, 0x63, 0x00, 0x00, 0x00, //   4: mov  eax, 99
    0xef, //                           9: out  dx, eax
];
