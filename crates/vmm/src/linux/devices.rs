//! The devices of a Linux microVM: a UART, a keyboard controller's reset line, the marker port,
//! and an empty bus everywhere else.
//!
//! ```text
//!  port 0x3f8..0x3ff  16550 UART (vm-superio)   console in and out; IRQ 4 through an irqfd
//!  port 0x60, 0x64    i8042 (vm-superio)        only command 0xfe, "pulse the reset line"
//!  port 0x70, 0x71    CMOS real-time clock      the host's time, read-only, never updating
//!  port 0x3f0         marker port               one byte per phase edge, stamped at once
//!  port 0x20.., 0x40.. PIC, PIT                 in the kernel (KVM_CREATE_IRQCHIP, _PIT2)
//!  anything else      nothing                   reads all ones, writes vanish
//! ```
//!
//! # Devices a kernel waits for
//!
//! A device that is missing can cost more than one that is there. Linux reads the wall-clock time
//! from the CMOS RTC at boot, and before each read it waits for the chip's "update in progress"
//! bit to clear — for up to a second, polling. An empty bus reads all ones, so the bit never
//! clears: a second of every boot, and 20 000 exits, for "Unable to read current time from RTC".
//! A dozen lines of [`Rtc`] answer at once, with the host's time. Likewise the kernel's i8042
//! driver polls the controller 10 000 times, 50 µs apart, for an answer vm-superio's reset-only
//! i8042 never gives: the command line skips that driver (`initcall_blacklist=i8042_init`, see
//! [`isolab_linux_guest::cmdline`]), which `reboot=k` does not need.
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
/// The CMOS index port (bit 7 of the value written masks NMIs, an old PC's habit).
pub const CMOS_INDEX: u16 = 0x70;
/// The CMOS data port: the register the index names.
pub const CMOS_DATA: u16 = 0x71;

/// A Motorola MC146818-style CMOS real-time clock with the host's time: what a PC's firmware
/// keeps ticking on a battery, and what Linux reads once at boot (and `hwclock` later).
///
/// Registers 0..=9 hold the time in BCD; register A's bit 7 ("update in progress") is always
/// clear, register B says 24-hour BCD with no interrupts, register D's bit 7 says the time is
/// valid. Writes are accepted and forgotten: the guest cannot set the host's clock.
#[derive(Debug, Default)]
pub struct Rtc {
    index: u8,
}

impl Rtc {
    /// Register A: divider 010 (32.768 kHz), rate 0110 (1024 Hz), not updating.
    const REG_A: u8 = 0x26;
    /// Register B: 24-hour mode (bit 1), BCD (bit 2 clear), no interrupts.
    const REG_B: u8 = 0x02;
    /// Register D: valid RAM and time (bit 7).
    const REG_D: u8 = 0x80;

    /// A write to the index port selects a register (the NMI-mask bit is ignored).
    pub fn select(&mut self, value: u8) {
        self.index = value & 0x7f;
    }

    /// The selected register, for a guest reading at Unix time `unix_secs`.
    pub fn read(&self, unix_secs: u64) -> u8 {
        let bcd = |v: u64| (((v / 10) << 4) | (v % 10)) as u8;
        let days = unix_secs / 86_400;
        let secs = unix_secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        match self.index {
            0x00 => bcd(secs % 60),
            0x02 => bcd(secs / 60 % 60),
            0x04 => bcd(secs / 3600),
            // Day of the week, 1 = Sunday: 1970-01-01 was a Thursday.
            0x06 => bcd((days + 4) % 7 + 1),
            0x07 => bcd(day),
            0x08 => bcd(month),
            0x09 => bcd(year % 100),
            // The century byte the PC/AT put at 0x32 (Linux takes it from ACPI, when it has it).
            0x32 => bcd(year / 100),
            0x0a => Self::REG_A,
            0x0b => Self::REG_B,
            0x0d => Self::REG_D,
            _ => 0,
        }
    }
}

/// The date of day `days` since 1970-01-01 (proleptic Gregorian): Howard Hinnant's
/// `civil_from_days`, which counts in 400-year eras starting on 1 March so leap days come last.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

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
    /// The RTC took an index or a (forgotten) value.
    Rtc,
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
            PortWrite::Rtc => "rtc",
            PortWrite::Unclaimed => "port_unclaimed",
        }
    }
}

/// The VMM-side devices (the UART is shared with the go-ahead thread, so it sits in a mutex).
pub struct Devices {
    /// The console UART.
    pub uart: std::sync::Arc<std::sync::Mutex<Uart>>,
    i8042: I8042Device<ResetLine>,
    rtc: Rtc,
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
            rtc: Rtc::default(),
        }
    }

    /// The devices as a snapshot saved them ([`Devices::state`]), the UART's interrupt on
    /// `irq` (raised again at once if one was pending).
    pub fn restored(
        irq: EventFd,
        state: &crate::linux::snapshot::DeviceState,
    ) -> Result<Devices, crate::snapshot::SnapshotError> {
        let uart = Serial::from_state(
            &state.serial,
            IrqLine(irq),
            vm_superio::serial::NoEvents,
            Transmitted::default(),
        )
        .map_err(|e| {
            crate::snapshot::SnapshotError::Malformed(format!("the UART's state: {e:?}"))
        })?;
        let mut rtc = Rtc::default();
        rtc.select(state.rtc_index);
        Ok(Devices {
            uart: std::sync::Arc::new(std::sync::Mutex::new(uart)),
            i8042: I8042Device::new(ResetLine::default()),
            rtc,
        })
    }

    /// What a snapshot keeps of these devices (the i8042 has no state: only its reset line is
    /// served). The console's line and the virtio devices are the caller's to add.
    pub fn state(&self) -> crate::linux::snapshot::DeviceState {
        let uart = self.uart.lock().unwrap_or_else(|e| e.into_inner());
        crate::linux::snapshot::DeviceState {
            serial: uart.state(),
            rtc_index: self.rtc.index,
            ..Default::default()
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
            CMOS_INDEX if data.len() == 1 => {
                self.rtc.select(data[0]);
                PortWrite::Rtc
            }
            CMOS_DATA => PortWrite::Rtc,
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
            CMOS_DATA if data.len() == 1 => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                data[0] = self.rtc.read(now);
                "rtc"
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
    fn the_rtc_tells_the_time_in_bcd_and_never_updates() {
        // 2026-11-28 20:33:07 UTC, a Saturday.
        let t = 1_795_897_987;
        let mut rtc = Rtc::default();
        let mut reg = |r: u8| {
            rtc.select(r | 0x80);
            rtc.read(t)
        };
        assert_eq!(
            [reg(9), reg(8), reg(7), reg(4), reg(2), reg(0), reg(6)],
            [0x26, 0x11, 0x28, 0x20, 0x33, 0x07, 0x07]
        );
        assert_eq!(reg(0x32), 0x20, "century");
        assert_eq!(reg(0x0a) & 0x80, 0, "no update in progress");
        assert_eq!(reg(0x0b), 0x02, "24-hour, BCD");
        assert_eq!(reg(0x0d) & 0x80, 0x80, "valid");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29), "a leap day");
    }

    #[test]
    fn the_cmos_ports_reach_the_rtc() {
        let mut d = devices();
        assert_eq!(d.write(CMOS_INDEX, &[0x0a]), PortWrite::Rtc);
        let mut a = [0xffu8];
        assert_eq!(d.read(CMOS_DATA, &mut a), "rtc");
        assert_eq!(a[0], 0x26);
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
