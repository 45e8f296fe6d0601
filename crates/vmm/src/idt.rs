//! Exceptions in a bare guest: an IDT, and a ring-0 handler that only reports.
//!
//! When the ring-3 guest does something the CPU refuses — reads through a null pointer (#PF),
//! executes `ud2` (#UD), divides by zero (#DE), runs a privileged instruction (#GP) — the CPU
//! raises an **exception**: it looks up the exception's vector in the interrupt descriptor table
//! (IDT), switches to ring 0 and to the ring-0 stack the TSS names (`RSP0`), pushes where the guest
//! was, and jumps to the handler.
//!
//! ```text
//!  ring 3: mov rax, [0]            ──#PF──►  CPU: IDT[14] → handler 14, CS = 0x08 (ring 0)
//!                                            RSP = TSS.RSP0, pushes SS, RSP, RFLAGS, CS, RIP, error
//!  ring 0: handler 14:  mov eax, 0x10e       ; "exception 14"
//!                       mov dx, 0x3f0
//!                       out dx, eax          ──► KVM_EXIT_IO: the VMM reads the pushed frame
//!                       jmp $                     (never resumed)
//! ```
//!
//! Without an IDT the first exception cannot be delivered, becomes a double fault, then a
//! **triple fault**, which shuts the (virtual) CPU down: `KVM_EXIT_SHUTDOWN`. Where the guest was
//! is then only in the vCPU's registers — and on AMD, KVM *resets* the vCPU after a shutdown
//! (the SVM spec leaves its state undefined), so a VMM reading them afterwards sees the reset
//! vector, `rip=0xfff0`, not the fault. The handler makes the report independent of the vendor:
//! the CPU itself has written the guest's RIP, RSP, RFLAGS and the error code into guest memory
//! before the VMM is asked anything, and CR2 (the faulting address of a #PF) is untouched.
//!
//! The handlers are the VMM's, not the guest's: 16 bytes of machine code per vector, written by
//! the VMM into a supervisor-only page, like the GDT. The guest program stays pure ring 3.

use isolab_kernels::hypercall;
use std::fmt;

/// Vectors 0..32 are the CPU's exceptions; the IDT has a gate for each.
pub const VECTORS: usize = 32;

/// Bytes of one 64-bit IDT gate.
pub const GATE_BYTES: usize = 16;

/// Bytes of machine code per handler (each starts on a 16-byte boundary).
pub const STUB_BYTES: usize = 16;

/// A handler reports exception `v` by writing `CODE_BASE + v` to the hypercall port: codes no
/// [`hypercall::Call`] uses. (In ring 0, `out` needs no permission: CPL 0 ≤ IOPL.)
pub const CODE_BASE: u32 = 0x100;

/// The code the handler of `vector` stores.
pub const fn code_of_vector(vector: u8) -> u32 {
    CODE_BASE + vector as u32
}

/// The vector an exception report's code names, if it is one.
pub fn vector_of_code(code: u32) -> Option<u8> {
    code.checked_sub(CODE_BASE)
        .filter(|v| (*v as usize) < VECTORS)
        .map(|v| v as u8)
}

/// True for the exceptions after which the CPU pushes an error code (Intel SDM vol. 3, table
/// 6-1): #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Mnemonic and meaning of an exception vector.
pub const fn name(vector: u8) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control-protection exception"),
        _ => ("#??", "reserved exception"),
    }
}

/// The IDT: one 64-bit interrupt gate per vector, pointing at handler `v` at
/// `handlers + v * STUB_BYTES` in the ring-0 code segment `selector`.
///
/// ```text
///  bytes 0..2   handler address bits 0..15      bytes 4     IST = 0: use RSP0 from the TSS
///  bytes 2..4   code segment selector            byte 5      0x8e: present, DPL 0, type 0xe
///  bytes 6..8   handler address bits 16..31                  (64-bit interrupt gate)
///  bytes 8..12  handler address bits 32..63      bytes 12..16 reserved, zero
/// ```
///
/// DPL 0: an `int n` from ring 3 may not use these gates (it raises #GP instead, which is then
/// reported as such). An interrupt gate also clears RFLAGS.IF, which is clear anyway.
pub fn idt(handlers: u64, selector: u16) -> [u8; VECTORS * GATE_BYTES] {
    let mut table = [0u8; VECTORS * GATE_BYTES];
    for (v, gate) in table.chunks_exact_mut(GATE_BYTES).enumerate() {
        let at = handlers + (v * STUB_BYTES) as u64;
        gate[0..2].copy_from_slice(&(at as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&selector.to_le_bytes());
        gate[4] = 0;
        gate[5] = 0x8e;
        gate[6..8].copy_from_slice(&((at >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((at >> 32) as u32).to_le_bytes());
    }
    table
}

/// The handlers: for each vector, 16 bytes of code that report it and stop.
///
/// ```text
///  b8 <code:4>        mov  eax, CODE_BASE + vector
///  66 ba <port:2>     mov  dx, hypercall::PORT
///  ef                 out  dx, eax          ; → KVM_EXIT_IO
///  eb fe              jmp  $                ; the VMM never resumes it
///  90 90 90 90        nop (padding to 16 bytes)
/// ```
///
/// Only EAX and DX change; the rest of the guest's registers stay as the fault left them.
pub fn handlers() -> [u8; VECTORS * STUB_BYTES] {
    let mut code = [0x90u8; VECTORS * STUB_BYTES];
    for (v, stub) in code.chunks_exact_mut(STUB_BYTES).enumerate() {
        stub[0] = 0xb8;
        stub[1..5].copy_from_slice(&code_of_vector(v as u8).to_le_bytes());
        stub[5..7].copy_from_slice(&[0x66, 0xba]);
        stub[7..9].copy_from_slice(&hypercall::PORT.to_le_bytes());
        stub[9] = 0xef;
        stub[10..12].copy_from_slice(&[0xeb, 0xfe]);
    }
    code
}

/// An exception the guest raised, as its handler's stack frame records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector.
    pub vector: u8,
    /// The error code the CPU pushed, for the vectors that have one.
    pub error_code: Option<u64>,
    /// Where the guest was: the faulting instruction (for a fault) or the next one (for a trap).
    pub rip: u64,
    /// The guest's code segment selector: its low two bits are the ring it ran in.
    pub cs: u64,
    /// The guest's flags.
    pub rflags: u64,
    /// The guest's stack pointer.
    pub rsp: u64,
    /// CR2: for a #PF, the address the guest could not access.
    pub cr2: u64,
}

impl Exception {
    /// Decode the frame the CPU pushed for `vector`, read from the handler's stack: the words at
    /// RSP upwards — `[error code,] RIP, CS, RFLAGS, RSP, SS`. `None` if `frame` is short.
    pub fn from_frame(vector: u8, frame: &[u64], cr2: u64) -> Option<Exception> {
        let (error_code, rest) = if has_error_code(vector) {
            let (code, rest) = frame.split_first()?;
            (Some(*code), rest)
        } else {
            (None, frame)
        };
        let [rip, cs, rflags, rsp, ..] = *rest else {
            return None;
        };
        Some(Exception {
            vector,
            error_code,
            rip,
            cs,
            rflags,
            rsp,
            cr2,
        })
    }

    /// Words of the frame to read for `vector`.
    pub const fn frame_words(vector: u8) -> usize {
        5 + has_error_code(vector) as usize
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mnemonic, what) = name(self.vector);
        write!(f, "{what} ({mnemonic}, vector {})", self.vector)?;
        match (self.vector, self.error_code) {
            // The page-fault error code (SDM vol. 3, §4.7): what kind of access failed and why.
            (14, Some(e)) => write!(
                f,
                " on {} {:#x}: {}{}",
                if e & 1 << 4 != 0 {
                    "an instruction fetch at"
                } else if e & 1 << 1 != 0 {
                    "a write to"
                } else {
                    "a read of"
                },
                self.cr2,
                if e & 1 != 0 {
                    "the page does not allow it"
                } else {
                    "the page is not mapped"
                },
                if e & 1 << 3 != 0 {
                    " (reserved bit set in a page-table entry)"
                } else {
                    ""
                },
            )?,
            (_, Some(e)) if e != 0 => write!(f, ", error code {e:#x}")?,
            _ => {}
        }
        write!(f, ", in ring {}", self.cs & 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_name_vectors_and_stay_clear_of_the_calls() {
        for v in 0..VECTORS as u8 {
            assert_eq!(vector_of_code(code_of_vector(v)), Some(v));
        }
        assert_eq!(vector_of_code(CODE_BASE + VECTORS as u32), None);
        for call in hypercall::Call::ALL {
            assert_eq!(vector_of_code(call.code()), None);
        }
    }

    #[test]
    fn gates_point_at_their_handlers() {
        let table = idt(0x6000, 0x08);
        let gate = &table[14 * GATE_BYTES..15 * GATE_BYTES];
        let offset = u16::from_le_bytes([gate[0], gate[1]]) as u64
            | (u16::from_le_bytes([gate[6], gate[7]]) as u64) << 16
            | (u32::from_le_bytes(gate[8..12].try_into().unwrap()) as u64) << 32;
        assert_eq!(offset, 0x6000 + 14 * STUB_BYTES as u64);
        assert_eq!(u16::from_le_bytes([gate[2], gate[3]]), 0x08);
        assert_eq!(gate[5], 0x8e, "present, DPL 0, 64-bit interrupt gate");
    }

    #[test]
    fn a_handler_writes_its_code_to_the_hypercall_port() {
        let code = handlers();
        let stub = &code[13 * STUB_BYTES..14 * STUB_BYTES];
        assert_eq!(stub[0], 0xb8, "mov eax, imm32");
        assert_eq!(u32::from_le_bytes(stub[1..5].try_into().unwrap()), 0x10d);
        assert_eq!(&stub[5..7], &[0x66, 0xba], "mov dx, imm16");
        assert_eq!(u16::from_le_bytes([stub[7], stub[8]]), hypercall::PORT);
        assert_eq!(stub[9], 0xef, "out dx, eax");
        assert_eq!(&stub[10..12], &[0xeb, 0xfe], "jmp $");
    }

    #[test]
    fn a_page_fault_frame_reads_as_a_sentence() {
        // As the CPU pushes it for `mov rax, [0]` in ring 3: error code 4 (user, read, not
        // present), RIP, CS 0x1b, RFLAGS, RSP, SS.
        let e = Exception::from_frame(14, &[4, 0x10_000a, 0x1b, 0x2, 0x7_fff8, 0x23], 0).unwrap();
        assert_eq!((e.rip, e.rsp, e.error_code), (0x10_000a, 0x7_fff8, Some(4)));
        assert_eq!(
            e.to_string(),
            "page fault (#PF, vector 14) on a read of 0x0: the page is not mapped, in ring 3"
        );
        let ud = Exception::from_frame(6, &[0x10_0010, 0x1b, 0x2, 0x7_fff0, 0x23], 0).unwrap();
        assert_eq!(ud.error_code, None);
        assert_eq!(ud.to_string(), "invalid opcode (#UD, vector 6), in ring 3");
        assert!(Exception::from_frame(13, &[0, 1, 2], 0).is_none(), "short");
        assert_eq!(Exception::frame_words(14), 6);
        assert_eq!(Exception::frame_words(6), 5);
    }
}
