//! What a VM exit means: a **pure** function from the exit KVM reported to what the VMM must do.
//!
//! `KVM_RUN` runs the guest until something needs the VMM, then returns with an exit reason in
//! the shared `kvm_run` page. For this VMM there are four kinds of exit:
//!
//! * a **hypercall**: `out` to [`hypercall::PORT`] with a 4-byte call code — the guest wants
//!   something done;
//! * an **exception report**: the same `out`, made by the VMM's own ring-0 exception handler
//!   ([`crate::idt`]) with a code that names the exception — the guest faulted;
//! * an **interruption**: a signal arrived for the vCPU thread (`EINTR`) — the time limit's kick,
//!   or any other signal; the VMM decides whether to go on;
//! * a **fault**: anything else. A bare guest has no devices, so port I/O elsewhere, an access to
//!   an address that is not RAM (`KVM_EXIT_MMIO`), a triple fault (`KVM_EXIT_SHUTDOWN`), a state
//!   the CPU refuses to enter (`KVM_EXIT_FAIL_ENTRY`) or that KVM cannot emulate
//!   (`KVM_EXIT_INTERNAL_ERROR`) all end the run, with the registers in the error.
//!
//! [`handle_exit`] decides which, and nothing else: it reads no memory, makes no system call and
//! keeps no state, so a test can feed it synthetic exits. Doing what it decided is the job of
//! [`crate::machine`] and [`crate::hypercalls`].

use crate::idt;
use isolab_kernels::hypercall::{self, Call};
use kvm_ioctls::VcpuExit;
use std::collections::BTreeMap;
use std::fmt;

/// What the VMM must do about one exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Serve this hypercall, then resume the guest.
    Hypercall(Call),
    /// The VMM's exception handler reports exception `vector`: read the guest's exception frame.
    Exception(u8),
    /// A signal interrupted `KVM_RUN`; nothing happened in the guest.
    Interrupted,
    /// The guest cannot go on.
    Fault(Fault),
}

/// Why a guest cannot go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `KVM_EXIT_SHUTDOWN`: an exception that could not be delivered (no IDT) became a double
    /// fault, then a triple fault, which shuts a real CPU down.
    TripleFault,
    /// `KVM_EXIT_INTERNAL_ERROR`: KVM could not handle an exit itself (on PVM: an instruction it
    /// cannot emulate).
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY`: the CPU refused to enter the guest with this state.
    FailEntry {
        /// The hardware's reason code.
        reason: u64,
    },
    /// `out` to the hypercall port with a code that is no [`Call`].
    UnknownCall(u32),
    /// The guest raised a CPU exception, reported by the VMM's handler (see [`crate::idt`]).
    Exception(idt::Exception),
    /// Port I/O the VMM has no device for (or a hypercall of the wrong width).
    StrayIo {
        /// The port.
        port: u16,
        /// `out` (true) or `in` (false).
        write: bool,
        /// Bytes.
        size: usize,
    },
    /// `KVM_EXIT_MMIO`: an access to a guest-physical address that is not RAM.
    Mmio {
        /// The address.
        addr: u64,
        /// A write (true) or a read.
        write: bool,
    },
    /// `KVM_EXIT_HLT`: only ring 0 can halt; in ring 3 `hlt` is a #GP (→ triple fault).
    Halt,
    /// An exit this VMM never asks for.
    Unexpected(String),
}

impl Fault {
    /// A short name for exit counts.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::TripleFault => "shutdown",
            Fault::InternalError => "internal_error",
            Fault::FailEntry { .. } => "fail_entry",
            Fault::UnknownCall(_) => "unknown_hypercall",
            Fault::Exception(_) => "exception",
            Fault::StrayIo { .. } => "stray_io",
            Fault::Mmio { .. } => "mmio",
            Fault::Halt => "hlt",
            Fault::Unexpected(_) => "unexpected",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::TripleFault => f.write_str(
                "triple fault (KVM_EXIT_SHUTDOWN): the guest raised an exception and has no handler",
            ),
            Fault::InternalError => f.write_str(
                "KVM internal error (KVM_EXIT_INTERNAL_ERROR): KVM could not handle the guest's instruction",
            ),
            Fault::FailEntry { reason } => write!(
                f,
                "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x}): invalid vCPU state"
            ),
            Fault::UnknownCall(code) => write!(f, "unknown hypercall code {code}"),
            Fault::Exception(e) => write!(f, "{e}"),
            Fault::StrayIo { port, write, size } => write!(
                f,
                "port I/O with no device: {} {size} bytes at port {port:#x}",
                if *write { "out" } else { "in" }
            ),
            Fault::Mmio { addr, write } => write!(
                f,
                "{} of guest-physical {addr:#x}, which is not RAM (KVM_EXIT_MMIO)",
                if *write { "write" } else { "read" }
            ),
            Fault::Halt => f.write_str("hlt (KVM_EXIT_HLT)"),
            Fault::Unexpected(what) => write!(f, "unexpected exit {what}"),
        }
    }
}

/// Decide what an exit means.
pub fn handle_exit(exit: &VcpuExit<'_>) -> Outcome {
    match exit {
        VcpuExit::IoOut(port, data) if *port == hypercall::PORT => {
            match <[u8; 4]>::try_from(*data) {
                Ok(code) => call_or_exception(u32::from_le_bytes(code)),
                Err(_) => Outcome::Fault(Fault::StrayIo {
                    port: *port,
                    write: true,
                    size: data.len(),
                }),
            }
        }
        VcpuExit::IoOut(port, data) => Outcome::Fault(Fault::StrayIo {
            port: *port,
            write: true,
            size: data.len(),
        }),
        VcpuExit::IoIn(port, data) => Outcome::Fault(Fault::StrayIo {
            port: *port,
            write: false,
            size: data.len(),
        }),
        VcpuExit::MmioRead(addr, _) => Outcome::Fault(Fault::Mmio {
            addr: *addr,
            write: false,
        }),
        VcpuExit::MmioWrite(addr, _) => Outcome::Fault(Fault::Mmio {
            addr: *addr,
            write: true,
        }),
        VcpuExit::Intr => Outcome::Interrupted,
        VcpuExit::Shutdown => Outcome::Fault(Fault::TripleFault),
        VcpuExit::InternalError => Outcome::Fault(Fault::InternalError),
        VcpuExit::FailEntry(reason, _cpu) => Outcome::Fault(Fault::FailEntry { reason: *reason }),
        VcpuExit::Hlt => Outcome::Fault(Fault::Halt),
        other => Outcome::Fault(Fault::Unexpected(format!("{other:?}"))),
    }
}

/// A code written to the hypercall port: a call, an exception report, or nonsense.
fn call_or_exception(code: u32) -> Outcome {
    if let Some(call) = Call::from_code(code) {
        return Outcome::Hypercall(call);
    }
    match idt::vector_of_code(code) {
        Some(vector) => Outcome::Exception(vector),
        None => Outcome::Fault(Fault::UnknownCall(code)),
    }
}

impl Outcome {
    /// The exit's cause, for [`ExitCounts`].
    pub fn cause(&self) -> &'static str {
        match self {
            Outcome::Hypercall(call) => call.name(),
            Outcome::Exception(_) => "exception",
            Outcome::Interrupted => "interrupted",
            Outcome::Fault(fault) => fault.name(),
        }
    }
}

/// How many exits of each cause a run took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Hypercalls, indexed by call code − 1: an array, because the `syscall` kernel makes tens of
    /// thousands and counting must cost next to nothing.
    hypercalls: [u64; Call::ALL.len()],
    /// Every other cause, by name.
    other: BTreeMap<&'static str, u64>,
}

impl ExitCounts {
    /// Count one exit of the bare guest.
    pub fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Hypercall(call) => self.hypercalls[call.code() as usize - 1] += 1,
            other => self.count_cause(other.cause()),
        }
    }

    /// Count one exit by the name of its cause (a Linux guest's devices name theirs).
    pub fn count_cause(&mut self, cause: &'static str) {
        *self.other.entry(cause).or_default() += 1;
    }

    /// Count `n` exits of one cause at once (a device thread's tally, e.g. the notifications
    /// KVM turned into ioeventfd signals).
    pub fn add(&mut self, cause: &'static str, n: u64) {
        if n > 0 {
            *self.other.entry(cause).or_default() += n;
        }
    }

    /// Every cause seen, with its count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Call::ALL
            .iter()
            .map(|c| (c.name(), self.hypercalls[c.code() as usize - 1]))
            .chain(self.other.iter().map(|(k, v)| (*k, *v)))
            .filter(|(_, n)| *n > 0)
    }

    /// All exits.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(port: u16, data: &[u8]) -> Outcome {
        handle_exit(&VcpuExit::IoOut(port, data))
    }

    #[test]
    fn a_four_byte_out_to_the_port_is_a_hypercall() {
        for call in Call::ALL {
            assert_eq!(
                out(hypercall::PORT, &call.code().to_le_bytes()),
                Outcome::Hypercall(call)
            );
        }
    }

    #[test]
    fn the_handlers_codes_are_exception_reports() {
        for vector in [0u8, 13, 14, 31] {
            assert_eq!(
                out(hypercall::PORT, &idt::code_of_vector(vector).to_le_bytes()),
                Outcome::Exception(vector)
            );
        }
    }

    #[test]
    fn anything_else_is_a_fault_or_an_interruption() {
        assert_eq!(
            out(hypercall::PORT, &999u32.to_le_bytes()),
            Outcome::Fault(Fault::UnknownCall(999))
        );
        assert_eq!(
            out(hypercall::PORT, &[1]),
            Outcome::Fault(Fault::StrayIo {
                port: hypercall::PORT,
                write: true,
                size: 1
            })
        );
        assert_eq!(
            out(0x80, &1u32.to_le_bytes()),
            Outcome::Fault(Fault::StrayIo {
                port: 0x80,
                write: true,
                size: 4
            })
        );
        let mut buf = [0u8; 2];
        assert_eq!(
            handle_exit(&VcpuExit::IoIn(hypercall::PORT, &mut buf)),
            Outcome::Fault(Fault::StrayIo {
                port: hypercall::PORT,
                write: false,
                size: 2
            })
        );
        assert_eq!(
            handle_exit(&VcpuExit::MmioWrite(0xfee0_0000, &[0; 4])),
            Outcome::Fault(Fault::Mmio {
                addr: 0xfee0_0000,
                write: true
            })
        );
        assert_eq!(
            handle_exit(&VcpuExit::Shutdown),
            Outcome::Fault(Fault::TripleFault)
        );
        assert_eq!(
            handle_exit(&VcpuExit::FailEntry(0x21, 0)),
            Outcome::Fault(Fault::FailEntry { reason: 0x21 })
        );
        assert_eq!(
            handle_exit(&VcpuExit::InternalError),
            Outcome::Fault(Fault::InternalError)
        );
        assert_eq!(handle_exit(&VcpuExit::Intr), Outcome::Interrupted);
        assert_eq!(handle_exit(&VcpuExit::Hlt), Outcome::Fault(Fault::Halt));
        assert!(matches!(
            handle_exit(&VcpuExit::Watchdog),
            Outcome::Fault(Fault::Unexpected(_))
        ));
    }

    #[test]
    fn exits_are_counted_by_cause() {
        let mut counts = ExitCounts::default();
        for _ in 0..3 {
            counts.count(&Outcome::Hypercall(Call::EnterKernel));
        }
        counts.count(&Outcome::Hypercall(Call::Ready));
        counts.count(&Outcome::Interrupted);
        counts.count(&Outcome::Fault(Fault::TripleFault));
        let seen: Vec<_> = counts.iter().collect();
        assert_eq!(
            seen,
            [
                ("ready", 1),
                ("enter_kernel", 3),
                ("interrupted", 1),
                ("shutdown", 1)
            ]
        );
        assert_eq!(counts.total(), 6);
    }
}
