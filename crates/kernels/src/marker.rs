//! The marker port: how a Linux guest's `/init` tells the lab's VMM where it is, on the host's
//! clock.
//!
//! A Linux guest prints its marker lines on the serial console (see [`crate::wire`]), and that is
//! enough for a host that only reads the console (QEMU): it stamps each line when it arrives. But
//! a 16550 UART moves one byte per `out` instruction, each one a VM exit, and the kernel's serial
//! driver sends them from an interrupt handler some time after `write(2)` returned — so a line's
//! arrival is a late and blurred view of the moment it describes.
//!
//! The lab's own VMM can do better, with the idea Firecracker's boot timer uses: the guest writes
//! **one byte to one I/O port** at each phase edge. `out` from guest user mode traps to the VMM at
//! once (`KVM_EXIT_IO`), and the VMM stamps the exit with the host's `CLOCK_MONOTONIC` before
//! anything else. The console line that follows still carries the data (the checksum of `done`);
//! the port write carries the time.
//!
//! ```text
//!   /init (ring 3, after ioperm(PORT, 1, 1))      VMM
//!   mov dx, 0x3f0 ; mov al, code ; out dx, al ──► KVM_EXIT_IO(0x3f0, [code]) → stamp now
//!   write(1, "isolab done checksum=…\n")     ──► serial bytes → line → take the stamp above
//! ```
//!
//! User mode may touch an I/O port only where the task's I/O-permission bitmap allows it;
//! `ioperm(2)` asks the guest kernel to open exactly this port for `/init` (it needs
//! `CAP_SYS_RAWIO`, which PID 1 has). Under an emulator with no device at the port (QEMU), the
//! write goes nowhere and costs nothing, so `/init` only writes the port when the VMM asks for it
//! on the kernel command line.
//!
//! The port is the bare guest's hypercall port (`hypercall::PORT`, Firecracker's boot-timer
//! port): one port number for "talk to isolab's VMM". The two never meet — a bare guest writes
//! 4-byte call codes, a Linux guest 1-byte markers — and the codes below are chosen apart from the
//! call codes anyway, so a byte that reached the wrong VMM reads as nonsense, not as a call.

/// The I/O port of the markers.
pub const PORT: u16 = 0x3f0;

/// What a guest marks. The value is the byte written to [`PORT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Marker {
    /// `/init`'s first instruction: the kernel has booted and started user space.
    Init = 0x10,
    /// The workload is ready (file systems mounted, console set up): the same edge as a
    /// process's `ready`.
    Ready = 0x11,
    /// The kernel's set-up is over; the measured part begins.
    Start = 0x12,
    /// The kernel finished (its result follows on the console).
    Done = 0x13,
    /// Something failed (the reason follows on the console).
    Failed = 0x14,
}

impl Marker {
    /// Every marker, in the order a guest writes them.
    pub const ALL: [Marker; 5] = [
        Marker::Init,
        Marker::Ready,
        Marker::Start,
        Marker::Done,
        Marker::Failed,
    ];

    /// The marker written as `code`, if any.
    pub fn from_code(code: u8) -> Option<Marker> {
        Marker::ALL.into_iter().find(|m| *m as u8 == code)
    }

    /// The byte the guest writes.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The marker line's event (see [`crate::wire`]) that this port write stamps. `Init` is the
    /// phase edge `init`, reported as `isolab phase name=init`.
    pub const fn event(self) -> &'static str {
        match self {
            Marker::Init => crate::wire::PHASE,
            Marker::Ready => crate::wire::READY,
            Marker::Start => crate::wire::START,
            Marker::Done => crate::wire::DONE,
            Marker::Failed => crate::wire::ERROR,
        }
    }

    /// The name of the phase edge this marker ends, as it appears in timelines.
    pub const fn phase(self) -> &'static str {
        match self {
            Marker::Init => INIT_PHASE,
            Marker::Ready => "ready",
            Marker::Start => "start",
            Marker::Done => "done",
            Marker::Failed => "error",
        }
    }
}

/// The phase that ends when `/init` starts: kernel entry → `/init` is the guest kernel's boot.
pub const INIT_PHASE: &str = "init";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_stay_clear_of_the_hypercall_codes() {
        for m in Marker::ALL {
            assert_eq!(Marker::from_code(m.code()), Some(m));
            // Hypercall codes are 1..=12; markers are their own range.
            assert!(m.code() >= 0x10);
        }
        assert_eq!(Marker::from_code(0), None);
        assert_eq!(Marker::from_code(123), None, "Firecracker's boot magic");
        for call in crate::hypercall::Call::ALL {
            assert!(Marker::from_code(call.code() as u8).is_none());
        }
    }

    #[test]
    fn one_port_for_isolabs_vmm() {
        assert_eq!(PORT, crate::hypercall::PORT);
    }
}
