//! # The isolab workload kernels
//!
//! isolab compares isolation mechanisms (a plain process, a container, a microVM) by running the
//! **same** work in each of them. "The same" is meant literally: this crate holds the compute
//! kernels, and it is `no_std` so that one source, compiled with one set of compiler flags, ends up
//! in two programs:
//!
//! * the static Linux executable `isolab-workload` (see `workload/`), which runs as a plain process,
//!   as PID 1 of a container and as `/init` of a Linux guest;
//! * the freestanding bare guest (see `guest/`), which runs in a microVM with no operating system.
//!
//! A kernel never talks to an operating system directly. Whatever it needs from "below" (a cheap
//! kernel entry, file I/O, waiting for the host) goes through the [`Shim`] trait, which each
//! program implements: with system calls in the Linux executable, with hypercalls (VM exits) in the
//! bare guest. A difference in speed between backends is therefore the isolation model's, not the
//! compiler's.
//!
//! Every kernel returns an [`Output`] with a checksum, so a wrong or skipped computation shows up
//! as a checksum that differs from the native one.
//!
//! ```
//! use isolab_kernels::{run, Kernel, Shim, Spec};
//!
//! struct Native;
//! impl Shim for Native {
//!     fn enter_kernel(&mut self, x: u64) -> u64 { x }
//! }
//!
//! let spec = Spec::new(Kernel::Cpu, 0, 1000);
//! let a = run(&spec, &mut Native, &mut []).unwrap();
//! let b = run(&spec, &mut Native, &mut []).unwrap();
//! assert_eq!(a.checksum, b.checksum);
//! ```
// Tests run on the host and may use std; the library itself never does.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod common;
pub mod compute;
pub mod disk;
pub mod hypercall;
pub mod marker;
pub mod net;
pub mod rng;
pub mod run;
pub mod spec;
pub mod sum;
pub mod wire;

pub use run::run;
pub use spec::{Kernel, Resource, Spec};

/// What a kernel produced: the checksum proves the work was done, `ops` and `bytes` let the host
/// turn the measured time into a rate (operations per second, bytes per second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// A fold of the kernel's results; identical on every backend for the same [`Spec`].
    pub checksum: u64,
    /// Kernel-defined operations performed (iterations, accesses, kernel entries, ...).
    pub ops: u64,
    /// Bytes of memory or file data the kernel moved.
    pub bytes: u64,
}

/// Why a kernel could not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The kernel needs more memory than the arena it was given.
    ArenaTooSmall {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The platform does not offer this service (e.g. file I/O on a platform without files).
    Unsupported,
    /// A platform call failed; the value is an errno-like code from the shim.
    Platform(u32),
    /// Data read back differs from the data written (the `io` kernel's self-check).
    Corrupt,
    /// This kernel needs an operating system and is run by the program itself, not by [`run`].
    NeedsOs,
    /// The instance's disk is smaller than the kernel's working set.
    DiskTooSmall {
        /// Bytes needed.
        needed: u64,
        /// Bytes the disk has.
        available: u64,
    },
}

/// Where the servers of the field's tools listen, beside the lab's peer (`lab validate`): their
/// usual ports.
pub mod tool_ports {
    /// `netserver`, netperf's server.
    pub const NETSERVER: u16 = 12865;
    /// `iperf3 -s`.
    pub const IPERF3: u16 = 5201;
}

/// A service of the lab's network peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Reads everything until the sender closes its side, then answers with the 8-byte
    /// [`sum::StreamSum`] of what arrived (TCP port 9, the old "discard" port).
    Sink,
    /// Sends back every byte it receives (TCP port 7, "echo").
    Echo,
}

impl Service {
    /// The service's TCP port on the peer.
    pub const fn port(self) -> u16 {
        match self {
            Service::Sink => 9,
            Service::Echo => 7,
        }
    }
}

/// What a kernel needs from the world below it.
///
/// The Linux executable implements it with system calls; the bare guest with hypercalls. Every
/// method but [`Shim::enter_kernel`] has a default meaning "this platform cannot do that".
pub trait Shim {
    /// Enter the kernel (or the hypervisor) once, as cheaply as the platform allows, and return `x`
    /// unchanged. The `syscall` kernel calls this in a loop: it measures the price of crossing the
    /// isolation boundary, which is a system call in a process or container and a VM exit in a
    /// bare microVM.
    fn enter_kernel(&mut self, x: u64) -> u64;

    /// Tell the host that the kernel's set-up is over and the measured part begins.
    fn mark_start(&mut self) {}

    /// Block until the host says go. The `sleep` kernel is this call; it must not spin, so that
    /// an idle instance costs no CPU.
    fn wait_host(&mut self) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Write `data` at byte `offset` of the instance's scratch file.
    fn io_write(&mut self, _offset: u64, _data: &[u8]) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Make everything written so far durable (fsync).
    fn io_sync(&mut self) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Read `data.len()` bytes at byte `offset` of the scratch file.
    fn io_read(&mut self, _offset: u64, _data: &mut [u8]) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// The size of the instance's disk in bytes. The disk is read and written with `O_DIRECT`:
    /// offsets and lengths are multiples of [`disk::BLOCK`], buffers are page-aligned (the
    /// arena is).
    fn disk_bytes(&mut self) -> Result<u64, Error> {
        Err(Error::Unsupported)
    }

    /// Write `data` at byte `offset` of the disk.
    fn disk_write(&mut self, _offset: u64, _data: &[u8]) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Read `data.len()` bytes at byte `offset` of the disk.
    fn disk_read(&mut self, _offset: u64, _data: &mut [u8]) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Make what was written to the disk durable (fdatasync; a flush request on a virtio disk).
    fn disk_sync(&mut self) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Open a TCP connection to `service` on the lab's peer (one connection at a time).
    fn net_connect(&mut self, _service: Service) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Send all of `data` on the connection.
    fn net_send(&mut self, _data: &[u8]) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Receive exactly `data.len()` bytes; the peer closing first is an error.
    fn net_recv(&mut self, _data: &mut [u8]) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Close the sending side (the peer reads end of file) but keep receiving.
    fn net_finish(&mut self) -> Result<(), Error> {
        Err(Error::Unsupported)
    }

    /// Close the connection.
    fn net_close(&mut self) {}

    /// A monotonic clock in nanoseconds, for the latency of single requests. The instance's own
    /// clock (a guest's, in a VM): only differences are used.
    fn now_ns(&mut self) -> Option<u64> {
        None
    }

    /// Report a figure the kernel measured besides its [`Output`] (latency percentiles, the
    /// time of one phase), in nanoseconds or plain numbers as its name says.
    fn figure(&mut self, _name: &str, _value: u64) {}
}
