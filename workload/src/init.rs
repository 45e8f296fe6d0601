//! `/init` of a Linux guest: what the workload does when the guest kernel starts it as PID 1.
//!
//! A Linux kernel that has finished booting unpacks its initramfs into the root file system and
//! executes `/init` as process 1, with the words after `--` on the kernel command line as its
//! arguments and `/dev/console` (here: the serial port) as its standard input, output and error.
//! isolab's initramfs holds this very executable as `/init`, so the guest runs the same compiled
//! kernels as a process and a container do. As PID 1 it has three jobs no process has:
//!
//! 1. **Mount what it needs.** Nothing is mounted but the initramfs itself: `/proc` and `/sys`
//!    exist only once PID 1 mounts them (the `probe` kernel reads `/proc`).
//! 2. **Report on the console.** There is no pipe to the lab. Marker lines go to the console
//!    *without* `t=`: the guest's clock is not the host's, so the host stamps each line when it
//!    arrives, or — for the lab's own VMM, which asks for it with `port=N` — stamps the write
//!    of one byte to an I/O port (see `isolab_kernels::marker`).
//! 3. **Stop the machine.** PID 1 must never exit: the kernel would panic ("Attempted to kill
//!    init"). It asks the kernel to reboot instead; the VMM (or QEMU, run with `-no-reboot`)
//!    turns the reboot into the end of the run.

use isolab_kernels::marker::Marker;
use std::ffi::CStr;

/// True when this process is a Linux guest's `/init`: PID 1, started under that name. A
/// container's PID 1 is started as `/workload` (or `isolab-workload`), so it never matches.
pub fn is_guest_init(argv0: &[u8]) -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    pid == 1 && argv0 == b"/init"
}

/// A failed step of the set-up: what was being done and the errno.
#[derive(Debug)]
pub struct SetupError {
    /// The step, for the `error` marker line.
    pub step: &'static str,
    /// errno.
    pub errno: i32,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Mount `/proc` and `/sys`, and put the console into raw mode.
pub fn prepare() -> Result<(), SetupError> {
    mount(c"proc", c"/proc", c"proc").map_err(|errno| SetupError {
        step: "mount /proc",
        errno,
    })?;
    mount(c"sysfs", c"/sys", c"sysfs").map_err(|errno| SetupError {
        step: "mount /sys",
        errno,
    })?;
    raw_console().map_err(|errno| SetupError {
        step: "console raw mode",
        errno,
    })
}

fn mount(source: &CStr, target: &CStr, fstype: &CStr) -> Result<(), i32> {
    // The usual flags of a minimal system: no set-uid programs, no device files, nothing to
    // execute from these pseudo file systems.
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: all strings are NUL-terminated; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Let one byte from the host through at once, unechoed.
///
/// The console is a terminal, and a terminal starts in *canonical* mode: the kernel's line
/// discipline collects input until a newline, echoes every byte back to the output, and turns
/// `^C` into SIGINT. The host's go-ahead (for `hold` and `sleep`) is a single byte with no
/// newline, and an echo would land in the middle of the marker lines. Raw input fixes all three;
/// output keeps its processing (`\n` → `\r\n`), which only makes the log readable.
fn raw_console() -> Result<(), i32> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is the console the kernel opened for us; `t` is valid.
    if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
        return Err(errno());
    }
    t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ECHONL | libc::ISIG | libc::IEXTEN);
    t.c_iflag &= !(libc::ICRNL | libc::IXON | libc::INLCR | libc::IGNCR);
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    // SAFETY: as above, with the modified copy.
    if unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// The VMM's marker port, opened for this process.
#[derive(Clone, Copy, Debug)]
pub struct MarkerPort(u16);

impl MarkerPort {
    /// Ask the guest kernel to let this process (ring 3) use `port`: `ioperm(2)` clears the
    /// port's bit in the task's I/O-permission bitmap, which the CPU checks on every `in`/`out`
    /// from user mode.
    pub fn open(port: u16) -> Result<MarkerPort, i32> {
        // SAFETY: ioperm with plain integer arguments.
        if unsafe { libc::ioperm(port as libc::c_ulong, 1, 1) } != 0 {
            return Err(errno());
        }
        Ok(MarkerPort(port))
    }

    /// Write `marker`'s code to the port: one `out`, one VM exit, stamped by the VMM.
    pub fn write(self, marker: Marker) {
        // SAFETY: `ioperm` granted this port; `out` touches no memory, only the port, and a
        // port with no device behind it ignores the write.
        unsafe {
            std::arch::asm!(
                "out dx, al",
                in("dx") self.0,
                in("al") marker.code(),
                options(nomem, nostack, preserves_flags)
            );
        }
    }
}

/// Stop the guest: wait until the console has sent everything, then reboot. Never returns.
///
/// `write(2)` to a serial console returns once the bytes are in the tty's buffer; the UART sends
/// them later, from interrupts. `tcdrain` waits for that, so the last marker line reaches the
/// host before the machine goes away. The kernel then restarts the machine as its command line
/// says (`reboot=k`: the keyboard controller's reset line; `reboot=t`: a triple fault), which the
/// VMM sees and reports as the end of the run.
pub fn stop() -> ! {
    // SAFETY: tcdrain and sync take no pointers; failures change nothing about what follows.
    unsafe {
        libc::tcdrain(1);
        libc::sync();
    }
    // SAFETY: reboot(2) with a valid command; as PID 1 with CAP_SYS_BOOT it does not return.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    // Only reached without CAP_SYS_BOOT (never, as the guest's PID 1). Exiting would panic the
    // kernel, which also stops a guest booted with panic=-1.
    std::process::exit(1)
}
