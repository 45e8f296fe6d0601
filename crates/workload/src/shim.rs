//! The Linux side of the kernels' [`Shim`]: system calls.

use crate::devices::{Disk, Net};
use crate::init::MarkerPort;
use isolab_kernels::marker::Marker;
use isolab_kernels::{wire, Error, Output, Service, Shim, Spec};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// `CLOCK_MONOTONIC` in nanoseconds: the host's clock, shared with the lab because isolab never
/// creates a time namespace.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Who puts the time on marker lines.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The workload itself, with `t=`: a process or container reads the host's own clock.
    Host,
    /// The host, when a line arrives (a Linux guest's clock is not the host's). With a marker
    /// port, each edge is also one port write, which the lab's VMM stamps at once.
    Guest(Option<MarkerPort>),
}

/// System calls behind the kernels.
pub struct LinuxShim {
    clock: Clock,
    report_fd: i32,
    control_fd: i32,
    scratch_dir: PathBuf,
    scratch_fd: Option<i32>,
    scratch_path: Option<CString>,
    disk: Disk,
    net: Net,
}

impl LinuxShim {
    pub fn new(
        clock: Clock,
        report_fd: i32,
        control_fd: i32,
        scratch_dir: PathBuf,
        disk: Disk,
        net: Net,
    ) -> LinuxShim {
        LinuxShim {
            clock,
            report_fd,
            control_fd,
            scratch_dir,
            scratch_fd: None,
            scratch_path: None,
            disk,
            net,
        }
    }

    /// Write one marker line with a single `write(2)`: a pipe write of at most `PIPE_BUF` bytes is
    /// atomic, so lines from several writers never interleave.
    pub fn emit(&mut self, mut line: wire::Line) {
        let bytes = line.finish();
        // SAFETY: writing a valid buffer to an fd we were given; a failure (host gone) is ignored
        // because there is nobody left to tell.
        unsafe { libc::write(self.report_fd, bytes.as_ptr().cast(), bytes.len()) };
    }

    /// Write the marker line of a phase edge that happened at `t_ns` (on this side's clock):
    /// with `t=` when that clock is the host's, else after one write to the marker port, if any.
    pub fn mark(&mut self, marker: Marker, line: wire::Line, t_ns: u64) {
        match self.clock {
            Clock::Host => self.emit(line.field("t", t_ns)),
            Clock::Guest(port) => {
                if let Some(port) = port {
                    port.write(marker);
                }
                self.emit(line);
            }
        }
    }

    /// Report the end of a phase of the workload's own (one without a marker port code): with
    /// `t=` when this side's clock is the host's; a guest's line is stamped when it arrives.
    pub fn phase(&mut self, name: &str) {
        let line = wire::Line::new(wire::PHASE).field("name", name);
        match self.clock {
            Clock::Host => self.emit(line.field("t", now_ns())),
            Clock::Guest(_) => self.emit(line),
        }
    }

    /// Wait for the host's go-ahead (one byte, or end of file when the host closed the pipe).
    pub fn hold(&mut self) {
        let _ = self.wait_host();
    }

    /// The descriptor marker lines go to.
    pub fn report_fd(&self) -> i32 {
        self.report_fd
    }

    /// The descriptor the host's go-ahead comes on.
    pub fn control_fd(&self) -> i32 {
        self.control_fd
    }

    /// Wait up to `timeout` for the host to say stop: a byte on the control pipe, or its end
    /// (the host closed it; a guest's VMM types one last byte then). Nothing is consumed.
    pub fn told_to_stop(&mut self, timeout: std::time::Duration) -> bool {
        let mut fd = libc::pollfd {
            fd: self.control_fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd; the count says one.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        n > 0 && fd.revents != 0
    }

    /// Run a kernel in `arena` (see [`Arena::for_spec`]).
    pub fn run_kernel(&mut self, spec: &Spec, arena: &mut Arena) -> Result<Output, Error> {
        let result = isolab_kernels::run(spec, self, arena.bytes());
        self.close_scratch();
        result
    }

    /// The `io` kernel's file in the scratch directory.
    ///
    /// A name in a shared directory is a name someone else can take first: a symbolic link
    /// planted there, named like the file, would make this process (root, for the `process`
    /// backend) write wherever the link points. So the file has **no name**: `O_TMPFILE`
    /// creates an inode in the directory that no path leads to, which vanishes when it is
    /// closed. Where the file system cannot do that (`EOPNOTSUPP`), a named file is created with
    /// `O_EXCL | O_NOFOLLOW` — never an existing file, never through a link — and unlinked
    /// again when the kernel ends.
    fn open_scratch(&mut self) -> Result<i32, Error> {
        if let Some(fd) = self.scratch_fd {
            return Ok(fd);
        }
        let dir = CString::new(self.scratch_dir.as_os_str().as_bytes())
            .map_err(|_| Error::Platform(22))?;
        // SAFETY: `dir` is a valid NUL-terminated string.
        let fd = unsafe {
            libc::open(
                dir.as_ptr(),
                libc::O_RDWR | libc::O_TMPFILE | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd >= 0 {
            self.scratch_fd = Some(fd);
            return Ok(fd);
        }
        if !matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EISDIR)
        ) {
            return Err(errno());
        }
        let mut path = self.scratch_dir.clone();
        path.push(format!("isolab-io-{}", std::process::id()));
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Platform(22))?;
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        self.scratch_fd = Some(fd);
        self.scratch_path = Some(path);
        Ok(fd)
    }

    fn close_scratch(&mut self) {
        if let Some(fd) = self.scratch_fd.take() {
            // SAFETY: `fd` is ours and closed once.
            unsafe { libc::close(fd) };
        }
        if let Some(path) = self.scratch_path.take() {
            // SAFETY: `path` is a valid NUL-terminated string.
            unsafe { libc::unlink(path.as_ptr()) };
        }
    }
}

fn errno() -> Error {
    Error::Platform(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32)
}

impl Shim for LinuxShim {
    fn enter_kernel(&mut self, x: u64) -> u64 {
        // getppid(2) is the classic "null" system call (lmbench's lat_syscall): it does almost
        // nothing in the kernel and no C library caches it, so the loop measures the entry and
        // exit of the kernel itself.
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
        x
    }

    fn mark_start(&mut self) {
        self.mark(Marker::Start, wire::Line::new(wire::START), now_ns());
    }

    fn wait_host(&mut self) -> Result<(), Error> {
        let mut byte = 0u8;
        loop {
            // A blocking read sleeps in the kernel: an idle instance costs no CPU.
            // SAFETY: reading one byte into a valid one-byte buffer.
            let n = unsafe { libc::read(self.control_fd, (&mut byte as *mut u8).cast(), 1) };
            if n >= 0 {
                return Ok(());
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Err(errno());
            }
        }
    }

    fn io_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let fd = self.open_scratch()?;
        // SAFETY: `data` is a valid buffer of `data.len()` bytes.
        let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), offset as i64) };
        if n as usize != data.len() {
            return Err(errno());
        }
        Ok(())
    }

    fn io_sync(&mut self) -> Result<(), Error> {
        let fd = self.open_scratch()?;
        // SAFETY: fsync on an open fd.
        if unsafe { libc::fsync(fd) } != 0 {
            return Err(errno());
        }
        Ok(())
    }

    fn io_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        let fd = self.open_scratch()?;
        // SAFETY: `data` is a valid, writable buffer of `data.len()` bytes.
        let n = unsafe { libc::pread(fd, data.as_mut_ptr().cast(), data.len(), offset as i64) };
        if n as usize != data.len() {
            return Err(errno());
        }
        Ok(())
    }

    fn disk_bytes(&mut self) -> Result<u64, Error> {
        self.disk.bytes()
    }

    fn disk_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.disk.write(offset, data)
    }

    fn disk_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        self.disk.read(offset, data)
    }

    fn disk_sync(&mut self) -> Result<(), Error> {
        self.disk.sync()
    }

    fn net_connect(&mut self, service: Service) -> Result<(), Error> {
        self.net.connect(service)
    }

    fn net_send(&mut self, data: &[u8]) -> Result<(), Error> {
        self.net.send(data)
    }

    fn net_recv(&mut self, data: &mut [u8]) -> Result<(), Error> {
        self.net.recv(data)
    }

    fn net_finish(&mut self) -> Result<(), Error> {
        self.net.finish()
    }

    fn net_close(&mut self) {
        self.net.close();
    }

    fn now_ns(&mut self) -> Option<u64> {
        Some(now_ns())
    }

    /// A figure travels as an `info` line, like the facts a runtime reports.
    fn figure(&mut self, name: &str, value: u64) {
        self.emit(
            wire::Line::new(wire::INFO)
                .text("key", name.as_bytes())
                .field("value", value),
        );
    }
}

/// The kernel's working memory: an anonymous private mapping. Pages cost nothing until the
/// kernel touches them, exactly like the guest RAM of a microVM.
pub struct Arena {
    ptr: *mut u8,
    len: usize,
}

impl Arena {
    /// The arena `spec`'s kernel needs.
    pub fn for_spec(spec: &Spec) -> Result<Arena, Error> {
        Arena::new(spec.arena_bytes() as usize)
    }

    fn new(len: usize) -> Result<Arena, Error> {
        if len == 0 {
            return Ok(Arena {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len,
            });
        }
        // SAFETY: an anonymous mapping with no address hint; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Arena {
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, page-aligned, and lives as
        // long as `self`; only one slice is handed out, to the one kernel that runs.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the mapping made in `new`.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}
