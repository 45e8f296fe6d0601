//! The devices of a Linux microVM: a UART, a keyboard controller's reset line, the marker port,
//! and an empty bus everywhere else.
//!
//! ```text
//!  port 0x3f8..0x3ff  16550 UART (vm-superio)   console in and out; IRQ 4 through an irqfd
//!  port 0x60, 0x64    i8042 (vm-superio)        only command 0xfe, "pulse the reset line"
//!  port 0x3f0         marker port               one byte per phase edge, stamped at once
//!  port 0x20.., 0x40.. PIC, PIT                 in the kernel (KVM_CREATE_IRQCHIP, _PIT2)
//!  anything else      nothing                   reads all ones, writes vanish
//! ```
//!
//! The PIC, I/O APIC, local APIC and PIT are emulated **inside KVM**: the timer ticks and
//! interrupts are delivered without leaving the kernel, and a guest that halts waiting for one
//! sleeps in KVM rather than exiting to the VMM. Only these few user-space devices cost exits.
//!
//! An unclaimed port reads as all ones, as on a PC's ISA bus where nothing drives the data lines:
//! the kernel's probes (a second UART, a floppy controller) see "no device" and move on.
//!
//! The UART raises its interrupt by writing to an **eventfd** that KVM watches (`KVM_IRQFD`):
//! KVM then asserts IRQ 4 on its in-kernel PIC without the VMM making an ioctl. The same path
//! lets a second thread (the lab's go-ahead, typed into the guest's console) wake a guest that
//! sleeps in `read(0)`.

use isolab_kernels::marker::{self, Marker};
use std::io::{self, Write};
use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The first UART's ports: COM1, as every PC has it.
pub const COM1: u16 = 0x3f8;
/// Its interrupt line.
pub const COM1_IRQ: u32 = 4;
/// The i8042's data port.
pub const I8042_DATA: u16 = 0x60;
/// The i8042's command/status port.
pub const I8042_COMMAND: u16 = 0x64;

/// An interrupt line: an eventfd KVM turns into an interrupt (`KVM_IRQFD`).
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The i8042's reset line, noticed by the VMM after the exit that pulled it.
#[derive(Default)]
pub struct ResetLine(std::cell::Cell<bool>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(true);
        Ok(())
    }
}

/// What the UART transmits, collected until the VMM hands it to the console.
#[derive(Default)]
pub struct Transmitted(pub Vec<u8>);

impl Write for Transmitted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The UART type.
pub type Uart = Serial<IrqLine, vm_superio::serial::NoEvents, Transmitted>;

/// What one port write meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortWrite {
    /// The UART took a byte (or a register write); see [`Devices::take_output`].
    Uart,
    /// A marker.
    Marker(Marker),
    /// A marker-port write with no marker code (or of the wrong width).
    BadMarker,
    /// The i8042's reset line was pulled: the guest asked to reboot.
    Reset,
    /// The i8042 took another command.
    I8042,
    /// Nothing is there.
    Unclaimed,
}

impl PortWrite {
    /// A short name for exit counts.
    pub fn cause(self) -> &'static str {
        match self {
            PortWrite::Uart => "uart_out",
            PortWrite::Marker(_) => "marker",
            PortWrite::BadMarker => "bad_marker",
            PortWrite::Reset => "i8042_reset",
            PortWrite::I8042 => "i8042",
            PortWrite::Unclaimed => "port_unclaimed",
        }
    }
}

/// The VMM-side devices (the UART is shared with the go-ahead thread, so it sits in a mutex).
pub struct Devices {
    /// The console UART.
    pub uart: std::sync::Arc<std::sync::Mutex<Uart>>,
    i8042: I8042Device<ResetLine>,
}

impl Devices {
    /// The devices, with the UART's interrupt on `irq`.
    pub fn new(irq: EventFd) -> Devices {
        Devices {
            uart: std::sync::Arc::new(std::sync::Mutex::new(Serial::new(
                IrqLine(irq),
                Transmitted::default(),
            ))),
            i8042: I8042Device::new(ResetLine::default()),
        }
    }

    /// The guest wrote `data` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PortWrite {
        match port {
            p if (COM1..COM1 + 8).contains(&p) && data.len() == 1 => {
                let mut uart = self.uart.lock().unwrap_or_else(|e| e.into_inner());
                // An interrupt that cannot be signalled only delays the guest's driver, which
                // polls as a fallback; the byte itself is already transmitted.
                let _ = uart.write((p - COM1) as u8, data[0]);
                PortWrite::Uart
            }
            marker::PORT => match data {
                [code] => Marker::from_code(*code).map_or(PortWrite::BadMarker, PortWrite::Marker),
                _ => PortWrite::BadMarker,
            },
            I8042_DATA | I8042_COMMAND if data.len() == 1 => {
                let _ = self.i8042.write((port - I8042_DATA) as u8, data[0]);
                if self.i8042.reset_evt().0.get() {
                    PortWrite::Reset
                } else {
                    PortWrite::I8042
                }
            }
            _ => PortWrite::Unclaimed,
        }
    }

    /// The guest reads `data.len()` bytes from `port`; returns the exit's cause.
    pub fn read(&mut self, port: u16, data: &mut [u8]) -> &'static str {
        match port {
            p if (COM1..COM1 + 8).contains(&p) && data.len() == 1 => {
                let mut uart = self.uart.lock().unwrap_or_else(|e| e.into_inner());
                data[0] = uart.read((p - COM1) as u8);
                "uart_in"
            }
            I8042_DATA | I8042_COMMAND if data.len() == 1 => {
                // Status 0: no data waiting, input buffer empty — "ready for a command".
                data[0] = self.i8042.read((port - I8042_DATA) as u8);
                "i8042"
            }
            _ => {
                data.fill(0xff);
                "port_unclaimed"
            }
        }
    }

    /// The bytes the UART transmitted since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut uart = self.uart.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut uart.writer_mut().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> Devices {
        Devices::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())
    }

    #[test]
    fn the_uart_transmits_what_the_guest_writes_and_raises_its_interrupt() {
        let mut d = devices();
        // Enable the "transmitter empty" interrupt (IER bit 1), as the kernel's driver does.
        assert_eq!(d.write(COM1 + 1, &[0x02]), PortWrite::Uart);
        for &b in b"hi\n" {
            assert_eq!(d.write(COM1, &[b]), PortWrite::Uart);
        }
        assert_eq!(d.take_output(), b"hi\n");
        assert!(d.take_output().is_empty());
        let irq = d.uart.lock().unwrap().interrupt_evt().0.read().unwrap();
        assert!(irq > 0, "the eventfd KVM watches was signalled");
        // Line status: transmitter empty (bit 5 and 6), so the driver keeps sending.
        let mut lsr = [0u8];
        d.read(COM1 + 5, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60);
    }

    #[test]
    fn input_queued_by_the_host_reaches_the_guest() {
        let mut d = devices();
        d.uart.lock().unwrap().enqueue_raw_bytes(b"g").unwrap();
        let mut lsr = [0u8];
        d.read(COM1 + 5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        d.read(COM1, &mut rbr);
        assert_eq!(rbr[0], b'g');
    }

    #[test]
    fn markers_resets_and_empty_ports() {
        let mut d = devices();
        assert_eq!(
            d.write(marker::PORT, &[Marker::Ready.code()]),
            PortWrite::Marker(Marker::Ready)
        );
        assert_eq!(d.write(marker::PORT, &[0x99]), PortWrite::BadMarker);
        assert_eq!(
            d.write(marker::PORT, &[0x11, 0, 0, 0]),
            PortWrite::BadMarker
        );
        assert_eq!(d.write(I8042_COMMAND, &[0xaa]), PortWrite::I8042);
        assert_eq!(d.write(I8042_COMMAND, &[0xfe]), PortWrite::Reset);
        assert_eq!(d.write(0x2f8, &[0x41]), PortWrite::Unclaimed);
        let mut data = [0u8; 2];
        assert_eq!(d.read(0xcfc, &mut data), "port_unclaimed");
        assert_eq!(data, [0xff, 0xff], "nothing drives the bus");
        let mut status = [0xffu8];
        d.read(I8042_COMMAND, &mut status);
        assert_eq!(status[0], 0, "the controller is ready for a command");
    }
}
