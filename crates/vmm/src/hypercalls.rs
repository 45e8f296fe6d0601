//! The VMM's side of the hypercall ABI (`isolab_kernels::hypercall`): what it does for each call.
//!
//! A call's arguments are read from the mailbox in guest RAM, its result written back there, and
//! the guest resumed. Most calls end in the [`Host`]: a marker line on the report pipe, a
//! `pwrite` to the scratch file, a blocking `read` of the control pipe.
//!
//! # Guest addresses are untrusted input
//!
//! An `io` call names a buffer by guest address and length. Both come from the guest and could be
//! anything: past the end of RAM, wrapping around 2⁶⁴, gigabytes long. The VMM never turns them
//! into a host pointer without asking vm-memory first ([`guest_buffer`]): `get_slice` checks that
//! the whole range lies in guest RAM and hands back a bounds-carrying [`VolatileSlice`]. A bad
//! range is answered with `EFAULT` in the mailbox, exactly as Linux answers a process that passes
//! a bad pointer to `write(2)`; the VMM goes on, and the guest decides what to do.

use crate::layout::{BOOT_ADDR, MAILBOX_ADDR};
use isolab_host::clock::now_ns;
use isolab_kernels::hypercall::{self, decode_error, mailbox, status, BootInfo, Call};
use isolab_kernels::wire::{self, Line};
use isolab_kernels::{Kernel, Spec};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, VolatileSlice,
};

/// Longest panic message the VMM reads from the guest.
const MAX_MESSAGE: u64 = 4096;

/// Errors of this module: hypercalls that end the run.
#[derive(Debug, thiserror::Error)]
pub enum HypercallError {
    /// The kernel failed in the guest ([`Call::Fail`]); the guest's error, as the workload would
    /// report it.
    #[error("{kernel}: {error:?}")]
    KernelFailed {
        /// The kernel that ran.
        kernel: Kernel,
        /// Its error.
        error: isolab_kernels::Error,
    },
    /// [`Call::Fail`] with words no guest of this ABI writes.
    #[error("the guest reported a failure this VMM cannot decode: {0:?}")]
    Undecodable([u64; 3]),
    /// The guest panicked ([`Call::Panic`]).
    #[error("the guest {0}")]
    Panic(String),
    /// The mailbox or boot page could not be read or written (RAM smaller than the layout).
    #[error("the {what} is not in guest RAM: {source}")]
    Unreachable {
        /// Mailbox or boot page.
        what: &'static str,
        /// Why.
        source: GuestMemoryError,
    },
}

/// What the vCPU does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Enter the guest again.
    Resume,
    /// The guest is finished ([`Call::Exit`]).
    Exit,
}

/// The host end of the hypercalls: where marker lines go, where the host's go-ahead comes from,
/// where the scratch file lives.
#[derive(Debug)]
pub struct Host<'fd> {
    report: BorrowedFd<'fd>,
    control: BorrowedFd<'fd>,
    scratch_dir: PathBuf,
    scratch: Option<File>,
}

impl<'fd> Host<'fd> {
    /// Markers to `report`, go-ahead from `control`, `io` in a file under `scratch_dir`.
    pub fn new(report: BorrowedFd<'fd>, control: BorrowedFd<'fd>, scratch_dir: PathBuf) -> Self {
        Host {
            report,
            control,
            scratch_dir,
            scratch: None,
        }
    }

    /// Write one marker line with one `write(2)`: pipe writes under `PIPE_BUF` bytes are atomic,
    /// so lines never interleave. A failure means the lab is gone; there is nobody to tell.
    pub fn emit(&self, mut line: Line) {
        let bytes = line.finish();
        // SAFETY: writing a valid buffer to a file descriptor we borrow.
        unsafe { libc::write(self.report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    }

    /// Forward lines that are already whole marker lines (a Linux guest's console), each with
    /// one `write(2)`.
    pub fn lines(&self, lines: Vec<Vec<u8>>) {
        for line in lines {
            // SAFETY: writing a valid buffer to a file descriptor we borrow.
            unsafe { libc::write(self.report.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        }
    }

    /// The pipe the host's go-ahead arrives on.
    pub fn control(&self) -> BorrowedFd<'fd> {
        self.control
    }

    /// Stamp the end of a VMM phase with the host clock.
    pub fn phase(&self, name: &str) {
        self.emit(
            Line::new(wire::PHASE)
                .field("name", name)
                .field("t", now_ns()),
        );
    }

    /// Report a fact about the instance (it lands in `Run::info`).
    pub fn info(&self, key: &str, value: impl std::fmt::Display) {
        self.emit(
            Line::new(wire::INFO)
                .text("key", key.as_bytes())
                .text("value", value.to_string().as_bytes()),
        );
    }

    /// Report a failure: `step` is where, `msg` what.
    pub fn error(&self, step: &str, msg: &str) {
        self.emit(
            Line::new(wire::ERROR)
                .text("step", step.as_bytes())
                .text("msg", msg.as_bytes()),
        );
    }

    /// Block until the host says go: one byte on the control pipe, or its end (the lab closed
    /// it). The thread sleeps in `read(2)`, so a waiting guest costs no CPU at all.
    pub fn wait_for_go(&self) -> std::io::Result<()> {
        let mut byte = 0u8;
        loop {
            // SAFETY: reading one byte into a valid one-byte buffer.
            let n =
                unsafe { libc::read(self.control.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            if n >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// The scratch file, created on first use with no name (`O_TMPFILE`): nothing to leave
    /// behind, even if the VMM is killed, and nothing anyone could plant ahead of it — a link
    /// named like it would make the VMM, which runs as the lab's user, write where it points.
    /// Where the file system has no unnamed files, a fresh name is created with `O_EXCL |
    /// O_NOFOLLOW` (never an existing file, never through a link) and unlinked at once.
    fn scratch(&mut self) -> std::io::Result<&File> {
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if self.scratch.is_none() {
            let unnamed = File::options()
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(&self.scratch_dir);
            let file = match unnamed {
                Ok(file) => file,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                    // Unique per machine, not only per process: tests run machines in
                    // parallel threads.
                    let path = self.scratch_dir.join(format!(
                        "isolab-io-vm-{}-{}",
                        std::process::id(),
                        NEXT.fetch_add(1, Ordering::Relaxed)
                    ));
                    let file = File::options()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)?;
                    std::fs::remove_file(&path)?;
                    file
                }
                Err(e) => return Err(e),
            };
            self.scratch = Some(file);
        }
        Ok(self.scratch.as_ref().expect("just created"))
    }
}

/// What [`Call::Probe`] reports: the facts of a bare guest, which has no operating system to
/// ask. Each is true of the machine the VMM built; none is a stand-in for a value that exists.
pub fn probe_facts(ram_bytes: u64) -> Vec<(&'static str, String)> {
    let none = |why: &str| format!("none: {why}");
    vec![
        (
            "answered_by",
            "vmm: a bare guest has no OS to ask; these are facts of the machine the VMM built"
                .into(),
        ),
        ("kernel_release", none("bare guest, no OS")),
        ("kernel_version", none("bare guest, no OS")),
        ("hostname", none("no OS, no UTS name")),
        ("pid", none("no processes")),
        ("pids_visible", "0".into()),
        ("mounts", "0".into()),
        ("root_fs", none("no file system")),
        ("interfaces", none("no network device")),
        ("uid_map", none("no users")),
        (
            "root_on_host",
            "no: a bare guest has no users; the host sees a VMM process".into(),
        ),
        ("cap_eff", none("no OS privileges; ring 3, one I/O port")),
        ("no_new_privs", none("no OS")),
        ("cgroup", none("no OS")),
        ("cpus", "1".into()),
        ("memory_bytes", ram_bytes.to_string()),
        (
            "devices",
            format!("hypercall port {:#x} only", hypercall::PORT),
        ),
        ("privilege_level", "3".into()),
    ]
}

/// Write the boot page: what to run, and the arena.
pub fn write_boot_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), HypercallError> {
    let bytes: Vec<u8> = info
        .to_words()
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    mem.write_slice(&bytes, GuestAddress(BOOT_ADDR))
        .map_err(|source| HypercallError::Unreachable {
            what: "boot page",
            source,
        })
}

fn arg(mem: &GuestMemoryMmap, i: usize) -> Result<u64, HypercallError> {
    mem.read_obj(GuestAddress(MAILBOX_ADDR + mailbox::arg(i)))
        .map_err(|source| HypercallError::Unreachable {
            what: "mailbox",
            source,
        })
}

fn args<const N: usize>(mem: &GuestMemoryMmap) -> Result<[u64; N], HypercallError> {
    let mut out = [0; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = arg(mem, i)?;
    }
    Ok(out)
}

/// Answer a call: its value and status into the mailbox.
pub fn reply(mem: &GuestMemoryMmap, ret: u64, status: u64) -> Result<(), HypercallError> {
    let at = |off| GuestAddress(MAILBOX_ADDR + off);
    mem.write_obj(ret, at(mailbox::RET))
        .and_then(|()| mem.write_obj(status, at(mailbox::STATUS)))
        .map_err(|source| HypercallError::Unreachable {
            what: "mailbox",
            source,
        })
}

/// The guest buffer `addr`..`addr + len`, checked against guest RAM: `EINVAL` if it is longer
/// than [`hypercall::MAX_TRANSFER`], `EFAULT` if any byte of it is not guest RAM.
pub fn guest_buffer(
    mem: &GuestMemoryMmap,
    addr: u64,
    len: u64,
) -> Result<VolatileSlice<'_, ()>, u64> {
    if len > hypercall::MAX_TRANSFER {
        return Err(status::EINVAL);
    }
    mem.get_slice(GuestAddress(addr), len as usize)
        .map_err(|_| status::EFAULT)
}

/// An I/O error as the status the guest gets: its errno, or EIO.
fn errno(e: &std::io::Error) -> u64 {
    e.raw_os_error().map_or(status::EIO, |n| n as u64)
}

/// `pwrite` (or, with `read`, `pread`) the whole of `buf` at `offset`; an errno value on failure.
fn transfer(file: &File, buf: &VolatileSlice<'_, ()>, offset: u64, read: bool) -> Result<(), u64> {
    let len = buf.len();
    if offset
        .checked_add(len as u64)
        .is_none_or(|end| end > i64::MAX as u64)
    {
        return Err(status::EINVAL);
    }
    let guard = buf.ptr_guard_mut();
    let mut done = 0;
    while done < len {
        // SAFETY: `guard` points at `len` bytes of guest RAM that vm-memory checked and that stay
        // mapped while the guard lives; the vCPU is stopped, so nothing else touches them. The
        // kernel copies to or from them directly: no bounce buffer.
        let n = unsafe {
            let at = guard.as_ptr().add(done).cast();
            let pos = (offset + done as u64) as libc::off_t;
            if read {
                libc::pread(file.as_raw_fd(), at, len - done, pos)
            } else {
                libc::pwrite(file.as_raw_fd(), at, len - done, pos)
            }
        };
        match n {
            // Reading past the end of the file: the guest asked for data that was never written.
            0 => return Err(status::EIO),
            n if n > 0 => done += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(errno(&e));
                }
            }
        }
    }
    Ok(())
}

/// Serve an `io` call; returns the status for the mailbox.
fn io(call: Call, mem: &GuestMemoryMmap, host: &mut Host, args: [u64; 3]) -> u64 {
    let [offset, addr, len] = args;
    let file = match host.scratch() {
        Ok(f) => f,
        Err(e) => return errno(&e),
    };
    let result = match call {
        Call::IoSync => file.sync_all().map_err(|e| errno(&e)),
        Call::IoWrite | Call::IoRead => guest_buffer(mem, addr, len)
            .and_then(|buf| transfer(file, &buf, offset, call == Call::IoRead)),
        _ => Err(status::EINVAL),
    };
    result.err().unwrap_or(status::OK)
}

/// Read a message of `len` bytes at guest address `addr` (checked), lossily as UTF-8.
fn guest_text(mem: &GuestMemoryMmap, addr: u64, len: u64) -> String {
    let mut buf = vec![0u8; len.min(MAX_MESSAGE) as usize];
    match mem.read_slice(&mut buf, GuestAddress(addr)) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => format!("(message at {addr:#x}+{len} is not in guest RAM)"),
    }
}

/// Serve `call` for a guest running `spec` with `ram_bytes` of RAM. [`Call::WaitHost`] blocks
/// until the host says go; the caller pauses the guest's time limit around it (see
/// [`crate::vcpu`]).
pub fn serve(
    call: Call,
    mem: &GuestMemoryMmap,
    host: &mut Host,
    spec: &Spec,
    ram_bytes: u64,
) -> Result<Flow, HypercallError> {
    // Markers are stamped first thing: the exit happened a few hundred nanoseconds ago.
    let t = now_ns();
    let (ret, status) = match call {
        Call::Ready => {
            host.emit(Line::new(wire::READY).field("t", t));
            (0, status::OK)
        }
        Call::Start => {
            host.emit(Line::new(wire::START).field("t", t));
            (0, status::OK)
        }
        Call::Done => {
            let [checksum, ops, bytes] = args(mem)?;
            host.emit(
                Line::new(wire::DONE)
                    .field("t", t)
                    .hex("checksum", checksum)
                    .field("ops", ops)
                    .field("bytes", bytes),
            );
            (0, status::OK)
        }
        Call::Fail => {
            let words = args(mem)?;
            return Err(match decode_error(words) {
                Some(error) => HypercallError::KernelFailed {
                    kernel: spec.kernel,
                    error,
                },
                None => HypercallError::Undecodable(words),
            });
        }
        // The round trip of the `syscall` kernel: the cheapest answer there is.
        Call::EnterKernel => (arg(mem, 0)?, status::OK),
        Call::IoWrite | Call::IoRead | Call::IoSync => (0, io(call, mem, host, args(mem)?)),
        Call::WaitHost => {
            let status = match host.wait_for_go() {
                Ok(()) => status::OK,
                Err(e) => errno(&e),
            };
            (0, status)
        }
        Call::Probe => {
            let facts = probe_facts(ram_bytes);
            for (key, value) in &facts {
                host.emit(
                    Line::new(wire::PROBE)
                        .text("key", key.as_bytes())
                        .text("value", value.as_bytes()),
                );
            }
            (facts.len() as u64, status::OK)
        }
        Call::Exit => return Ok(Flow::Exit),
        Call::Panic => {
            let [addr, len] = args(mem)?;
            return Err(HypercallError::Panic(guest_text(mem, addr, len)));
        }
    };
    reply(mem, ret, status)?;
    Ok(Flow::Resume)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory;

    #[test]
    fn guest_buffers_are_checked_against_guest_ram() {
        let ram = crate::layout::MIN_RAM;
        let mem = memory::create(ram).unwrap();
        // Inside RAM, up to its very last byte.
        assert_eq!(
            guest_buffer(&mem, 0x20_0000 - 4096, 4096).unwrap().len(),
            4096
        );
        assert!(guest_buffer(&mem, ram - 1, 1).is_ok());
        assert_eq!(guest_buffer(&mem, 0, 0).unwrap().len(), 0);
        // One byte over the end, entirely outside, wrapping around 2^64: EFAULT.
        for (addr, len) in [
            (ram - 1, 2),
            (ram, 1),
            (u64::MAX - 10, 100),
            (u64::MAX, 1),
            (1 << 47, 4096),
        ] {
            assert_eq!(
                guest_buffer(&mem, addr, len).err(),
                Some(status::EFAULT),
                "{addr:#x}+{len}"
            );
        }
        // Longer than one transfer may be: EINVAL, before looking at RAM.
        assert_eq!(
            guest_buffer(&mem, 0, hypercall::MAX_TRANSFER + 1).err(),
            Some(status::EINVAL)
        );
    }

    #[test]
    fn probe_facts_cover_what_the_workload_reports() {
        let keys: Vec<&str> = probe_facts(1 << 21).iter().map(|(k, _)| *k).collect();
        // The keys of workload/src/probe.rs, so the isolation experiment can line them up.
        for key in [
            "kernel_release",
            "kernel_version",
            "hostname",
            "pid",
            "pids_visible",
            "mounts",
            "root_fs",
            "interfaces",
            "uid_map",
            "root_on_host",
            "cap_eff",
            "no_new_privs",
            "cgroup",
            "cpus",
        ] {
            assert!(keys.contains(&key), "{key}");
        }
        assert_eq!(keys[0], "answered_by");
    }
}

/// Property tests of the hypercall handler: whatever call and arguments a guest writes, the VMM
/// answers with a status or ends the run with an error, never panics, and never touches memory
/// outside guest RAM.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::memory;
    use isolab_payload::Event;
    use proptest::prelude::*;
    use std::io::Read;
    use std::os::fd::{AsFd, OwnedFd};

    /// Guest RAM, the lab's ends of the pipes, a scratch directory.
    struct Rig {
        mem: GuestMemoryMmap,
        ram: u64,
        report: File,
        report_w: OwnedFd,
        /// Its write end is closed: a guest that waits for the host is let go at once.
        control_r: OwnedFd,
        scratch: PathBuf,
    }

    impl Rig {
        fn new(name: &str) -> Rig {
            let ram = crate::layout::MIN_RAM;
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
            let (control_r, _) = nix::unistd::pipe().unwrap();
            let scratch = std::env::temp_dir()
                .join(format!("isolab-prop-hyper-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&scratch).unwrap();
            Rig {
                mem: memory::create(ram).unwrap(),
                ram,
                report: File::from(r),
                report_w: w,
                control_r,
                scratch,
            }
        }

        fn call(&self, call: Call, args: [u64; 4]) -> (Result<Flow, HypercallError>, u64, u64) {
            for (i, a) in args.iter().enumerate() {
                self.mem
                    .write_obj(*a, GuestAddress(MAILBOX_ADDR + mailbox::arg(i)))
                    .unwrap();
            }
            reply(&self.mem, 0xdead, 0xdead).unwrap();
            let mut host = Host::new(
                self.report_w.as_fd(),
                self.control_r.as_fd(),
                self.scratch.clone(),
            );
            let spec = Spec::default_for(Kernel::Io);
            let result = serve(call, &self.mem, &mut host, &spec, self.ram);
            let at = |off| GuestAddress(MAILBOX_ADDR + off);
            let ret: u64 = self.mem.read_obj(at(mailbox::RET)).unwrap();
            let status: u64 = self.mem.read_obj(at(mailbox::STATUS)).unwrap();
            (result, ret, status)
        }

        /// The marker lines the call wrote.
        fn lines(&self) -> Vec<Event> {
            let mut text = Vec::new();
            let _ = (&self.report).read_to_end(&mut text);
            String::from_utf8_lossy(&text)
                .lines()
                .filter_map(Event::parse)
                .collect()
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
    }

    /// `n` cases; failures are reported, not saved to a file beside the source.
    fn cases(n: u32) -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(n)
        }
    }

    /// Addresses and lengths near the edges that matter (0, the mailbox, the end of RAM, 2^64)
    /// as well as anywhere at all.
    fn word() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0u64..64,
            (crate::layout::MIN_RAM - 8192)..(crate::layout::MIN_RAM + 8192),
            (u64::MAX - 8192)..=u64::MAX,
            (hypercall::MAX_TRANSFER - 4)..(hypercall::MAX_TRANSFER + 4),
            0u64..crate::layout::MIN_RAM,
        ]
    }

    #[test]
    fn any_call_with_any_arguments_is_answered_or_ends_the_run() {
        let rig = Rig::new("any");
        let mut runner = proptest::test_runner::TestRunner::new(cases(512));
        let cases = (
            proptest::sample::select(Call::ALL.to_vec()),
            [word(), word(), word(), word()],
        );
        let result = runner.run(&cases, |(call, args)| {
            let (result, ret, status) = rig.call(call, args);
            let events = rig.lines();
            match call {
                Call::Exit => prop_assert!(matches!(result, Ok(Flow::Exit)), "{:?}", result),
                Call::Fail => {
                    let ended = matches!(
                        result,
                        Err(HypercallError::KernelFailed { .. } | HypercallError::Undecodable(_))
                    );
                    prop_assert!(ended, "{:?}", result)
                }
                Call::Panic => match result {
                    // Lossy UTF-8 makes at most 3 bytes of one; the message is bounded.
                    Err(HypercallError::Panic(text)) => {
                        prop_assert!(text.len() <= 3 * MAX_MESSAGE as usize + 64)
                    }
                    other => prop_assert!(false, "{other:?}"),
                },
                _ => {
                    prop_assert!(matches!(result, Ok(Flow::Resume)), "{result:?}");
                    prop_assert!(status < 4096, "an errno value, not {status:#x}");
                }
            }
            let [a, b, c, _] = args;
            match call {
                Call::EnterKernel => prop_assert_eq!((ret, status), (a, status::OK)),
                Call::Done => prop_assert_eq!(
                    &events[..],
                    &[Event::Done {
                        t_ns: events.first().and_then(|e| match e {
                            Event::Done { t_ns, .. } => *t_ns,
                            _ => None,
                        }),
                        output: isolab_kernels::Output {
                            checksum: a,
                            ops: b,
                            bytes: c,
                        },
                    }][..]
                ),
                Call::IoWrite | Call::IoRead => {
                    let (addr, len) = (b, c);
                    let in_ram = addr.checked_add(len).is_some_and(|end| end <= rig.ram);
                    let expected = if len > hypercall::MAX_TRANSFER {
                        status::EINVAL
                    } else if !in_ram {
                        status::EFAULT
                    } else {
                        status
                    };
                    prop_assert_eq!(status, expected, "{:?} at {:#x}+{:#x}", call, addr, len);
                    if call == Call::IoWrite
                        && in_ram
                        && len <= hypercall::MAX_TRANSFER
                        && a < 1 << 30
                    {
                        // A buffer in RAM, at an offset any file system can hold: written.
                        prop_assert_eq!(status, status::OK);
                    }
                }
                _ => {}
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn what_a_guest_writes_to_the_scratch_file_it_reads_back() {
        let rig = Rig::new("roundtrip");
        let mut runner = proptest::test_runner::TestRunner::new(cases(64));
        let cases = (
            proptest::collection::vec(any::<u8>(), 1..8192),
            0u64..(1 << 20),
            0x10_0000u64..(crate::layout::MIN_RAM - 8192),
        );
        let result = runner.run(&cases, |(data, offset, addr)| {
            let len = data.len() as u64;
            // One Host, one scratch file, for the write and the read.
            let mut host = Host::new(
                rig.report_w.as_fd(),
                rig.control_r.as_fd(),
                rig.scratch.clone(),
            );
            rig.mem.write_slice(&data, GuestAddress(addr)).unwrap();
            prop_assert_eq!(
                io(Call::IoWrite, &rig.mem, &mut host, [offset, addr, len]),
                status::OK
            );
            rig.mem
                .write_slice(&vec![0; data.len()], GuestAddress(addr))
                .unwrap();
            prop_assert_eq!(
                io(Call::IoRead, &rig.mem, &mut host, [offset, addr, len]),
                status::OK
            );
            let mut back = vec![0; data.len()];
            rig.mem.read_slice(&mut back, GuestAddress(addr)).unwrap();
            prop_assert_eq!(back, data);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
