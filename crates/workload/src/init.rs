//! `/init` of a Linux guest: what the workload does when the guest kernel starts it as PID 1.
//!
//! A Linux kernel that has finished booting unpacks its initramfs into the root file system and
//! executes `/init` as process 1, with the words after `--` on the kernel command line as its
//! arguments and `/dev/console` (here: the serial port) as its standard input, output and error.
//! isolab's initramfs holds this very executable as `/init`, so the guest runs the same compiled
//! kernels as a process and a container do. As PID 1 it has three jobs no process has:
//!
//! 1. **Mount what it needs.** Nothing is mounted but the initramfs itself: `/proc` and `/sys`
//!    exist only once PID 1 mounts them (the `probe` kernel reads `/proc`). When the guest has
//!    devices whose drivers are modules (Debian's kernel), the initramfs carries them and PID 1
//!    loads them first ([`load_modules`]); a disk then needs its device node, `/dev/vda`.
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

/// Mount `/proc` and `/sys`, load the modules the initramfs carries, give a disk its device
/// node, and put the console into raw mode.
pub fn prepare() -> Result<(), SetupError> {
    mount(c"proc", c"/proc", c"proc").map_err(|errno| SetupError {
        step: "mount /proc",
        errno,
    })?;
    mount(c"sysfs", c"/sys", c"sysfs").map_err(|errno| SetupError {
        step: "mount /sys",
        errno,
    })?;
    if std::path::Path::new(MODULES_ORDER).exists() {
        load_modules().map_err(|errno| SetupError {
            step: "load the initramfs' kernel modules",
            errno,
        })?;
    }
    if std::path::Path::new("/sys/block/vda").exists() {
        device_nodes().map_err(|errno| SetupError {
            step: "create /dev/vda",
            errno,
        })?;
    }
    raw_console().map_err(|errno| SetupError {
        step: "console raw mode",
        errno,
    })
}

/// The list of modules the initramfs carries, in load order (see the lab's
/// `linux_guest::initramfs`).
const MODULES_ORDER: &str = "/modules/order";

/// Load every module `/modules/order` lists, in its order (dependencies first).
///
/// A kernel module is an ELF object the kernel links into itself. `finit_module(2)` takes it
/// from an open file: the kernel reads it, checks it was built for this very kernel (its
/// `vermagic`, and a signature where the kernel demands one), resolves its symbols against the
/// kernel and the modules already loaded — which is why the order matters: `virtio_blk` uses
/// symbols of `virtio`, which uses `virtio_ring` — and runs its init function. For a driver,
/// that registers it, and the driver core at once offers it every device already found that it
/// matches: loading `virtio_mmio` binds the MMIO devices the ACPI tables declared, loading
/// `virtio_blk` then binds the disk, and `/sys/block/vda` appears before the call returns.
/// A module already in the kernel (`EEXIST`) is fine.
pub fn load_modules() -> Result<(), i32> {
    let order =
        std::fs::read_to_string(MODULES_ORDER).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    for name in order.lines().filter(|l| !l.is_empty()) {
        let file = std::fs::File::open(format!("/modules/{name}"))
            .map_err(|e| e.raw_os_error().unwrap_or(0))?;
        // SAFETY: finit_module with an open descriptor, an empty NUL-terminated parameter
        // string and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                c"".as_ptr(),
                0,
            )
        };
        if rc != 0 && errno() != libc::EEXIST {
            return Err(errno());
        }
    }
    Ok(())
}

/// Give the disk its device node, `/dev/vda`.
///
/// A device node is a file that names a driver by two numbers (major, minor); the kernel
/// publishes a disk's numbers in `/sys/block/vda/dev` ("254:0"). `devtmpfs`, a file system the
/// kernel fills with a node for every device it knows, is the usual way; a kernel built
/// without it gets the one node made by hand (`mknod`).
fn device_nodes() -> Result<(), i32> {
    match mount(c"devtmpfs", c"/dev", c"devtmpfs") {
        Ok(()) => return Ok(()),
        Err(libc::ENODEV) => {}
        Err(e) => return Err(e),
    }
    let numbers = std::fs::read_to_string("/sys/block/vda/dev").map_err(|_| libc::ENOENT)?;
    let (major, minor) = numbers.trim().split_once(':').ok_or(libc::EINVAL)?;
    let (major, minor): (u32, u32) = (
        major.parse().map_err(|_| libc::EINVAL)?,
        minor.parse().map_err(|_| libc::EINVAL)?,
    );
    // SAFETY: a NUL-terminated path; a block-device mode and a device number.
    let rc = unsafe {
        libc::mknod(
            c"/dev/vda".as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    if rc != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Where a guest mounts the lab's image.
pub const IMAGE_MOUNT: &str = "/image";

/// Mount the lab's image — an ext4 file system on the disk `device` — read-only at
/// [`IMAGE_MOUNT`]: what a container's overlayfs gives it, a guest's kernel reads from its own
/// disk, into its own page cache.
pub fn mount_image(device: &std::path::Path) -> Result<(), SetupError> {
    let fail = |step| move |errno| SetupError { step, errno };
    std::fs::create_dir_all(IMAGE_MOUNT)
        .map_err(|e| fail("mkdir /image")(e.raw_os_error().unwrap_or(0)))?;
    let dev = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(device.as_os_str()))
        .map_err(|_| fail("image device name")(libc::EINVAL))?;
    // SAFETY: NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            dev.as_ptr(),
            c"/image".as_ptr(),
            c"ext4".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(fail("mount the image (ext4)")(errno()));
    }
    Ok(())
}

fn mount(source: &CStr, target: &CStr, fstype: &CStr) -> Result<(), i32> {
    // The usual flags of a minimal system: no set-uid programs, nothing to execute from these
    // pseudo file systems, and no device files — except on devtmpfs, which is nothing else.
    let mut flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    if fstype != c"devtmpfs" {
        flags |= libc::MS_NODEV;
    }
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
