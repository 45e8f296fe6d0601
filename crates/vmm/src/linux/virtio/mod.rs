//! Real devices for a Linux guest: **virtio** over memory-mapped I/O.
//!
//! An emulated PC device (a 16550 UART, an IDE disk) is a set of registers the guest pokes one
//! byte at a time, and each poke is a VM exit: a disk sector through the legacy IDE data port is
//! 256 exits. **virtio** turns that around. Driver and device share *rings* in guest memory; the
//! driver describes whole requests there and pokes a register once to say "look"; the device
//! reads and writes guest memory directly and raises one interrupt to say "done". The exits left
//! are the notifications, and with notification suppression many requests share one.
//!
//! # A split virtqueue
//!
//! ```text
//!   descriptor table (driver writes)      available ring (driver writes)   used ring (device writes)
//!   ┌────┬──────────┬─────┬──────┬────┐   ┌───────┬─────┬──────────────┐   ┌───────┬─────┬────────────────┐
//!   │ i  │ addr     │ len │flags │next│   │ flags │ idx │ ring[size]   │   │ flags │ idx │ ring[size]:    │
//!   │ 0  │ 0x7f000  │ 16  │ NEXT │ 1  │   └───────┴─────┴──────────────┘   │       │     │ (head, len)    │
//!   │ 1  │ 0x80000  │4096 │W|NEXT│ 2  │        idx: how many heads the     └───────┴─────┴────────────────┘
//!   │ 2  │ 0x7f010  │ 1   │ W    │ –  │        driver has ever offered         idx: how many the device has
//!   └────┴──────────┴─────┴──────┴────┘        (a free-running u16)            ever completed
//! ```
//!
//! A request is a **descriptor chain**: buffers linked by `next`, each readable by the device or
//! writable (`W`). The driver puts the chain's head index into the available ring and increments
//! `avail.idx`; the device, which remembers how far it got (`next_avail`), takes every head up
//! to `avail.idx`, does the work, writes `(head, bytes written)` into the used ring and increments
//! `used.idx`. Both indices only ever grow (modulo 2^16); `avail.idx − next_avail` is the work
//! waiting. The rings live in guest RAM, so the device needs no exit to read them — only to be
//! told to look, and to tell the driver it is done.
//!
//! The [`virtio_queue`] crate (rust-vmm) walks these rings: it validates every descriptor
//! against guest memory and the queue size (a chain longer than the queue, a loop of `next`, an
//! address outside RAM end the chain instead of crashing the VMM), follows indirect tables, and
//! implements notification suppression. The lab's devices only decide what a chain means.
//!
//! # Notifications both ways, and what they cost
//!
//! **Driver → device** ("look at queue n"): a 32-bit write of `n` to the transport's
//! `QueueNotify` register, an address with no memory behind it, so the CPU leaves the guest (a
//! VM exit: on VT-x/AMD-V some hundreds of nanoseconds to save and restore the guest's state,
//! more with the VMM's own work). Two ways to serve it:
//!
//! * as an **MMIO exit**: `KVM_RUN` returns to the VMM's vCPU thread, which decodes the write,
//!   does the device's work or wakes a thread for it, and calls `KVM_RUN` again — two more
//!   crossings between kernel and user space on the vCPU's own time;
//! * through an **ioeventfd** (`KVM_IOEVENTFD`): KVM itself matches the address and the value
//!   (the queue index), signals an eventfd and re-enters the guest at once; a device thread
//!   sleeping on that eventfd wakes up and does the work *while the guest runs on*.
//!
//! The lab uses ioeventfds (set [`Notify::Exit`] to compare: the exit counts of a run say where
//! the notifications went). Either way the guest pays one exit per notification; the ioeventfd
//! spares it the trip through user space and overlaps the device's work with the guest's.
//! Measured on the emulated AMD-V host (`examples/guest_devices.rs` there, two rounds each): 20 000
//! random 4 KiB reads (`disk-rand`) took 7.3–10.1 s with ioeventfds and 8.6–10.5 s with exits;
//! `disk-seq`, `net-stream` and `net-rr` differed by less than the rounds did. There every
//! exit, in KVM or in user space, is emulated and slow alike; on VT-x/AMD-V hardware the return
//! to user space and back is what the ioeventfd saves, a few microseconds per notification.
//!
//! **Device → driver** ("done"): an interrupt. The device thread writes to an **irqfd**
//! (`KVM_IRQFD`), an eventfd KVM turns into a pulse on a pin of its in-kernel I/O APIC, without
//! the VMM stopping the vCPU or making an ioctl — the UART's IRQ 4 works the same way
//! ([`crate::linux::devices`]). The interrupt handler reads `InterruptStatus` and writes it back to
//! `InterruptACK`: two more exits per interrupt, which is why fewer interrupts matter.
//!
//! **Suppression** (`VIRTIO_RING_F_EVENT_IDX`, negotiated here): each side publishes the index at
//! which it next wants to hear from the other — the driver `used_event` at the end of the
//! available ring, the device `avail_event` at the end of the used ring. The device drains a
//! queue, sets `avail_event` to what it has seen and checks once more before sleeping (so a
//! request added meanwhile is not missed); it interrupts only when `used.idx` crosses
//! `used_event`. A busy queue then costs one notification and one interrupt per batch, not per
//! request.
//!
//! # The modules
//!
//! * [`mmio`] — the virtio-mmio transport (version 2): the register file a driver programs;
//! * [`block`] — virtio-blk on a raw file opened with `O_DIRECT`;
//! * [`net`] — virtio-net on a tap device.

pub mod block;
pub mod mmio;
pub mod net;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Where the first virtio-mmio device's registers are: 3.25 GiB, in the hole below 4 GiB where a
/// PC keeps its devices (the I/O APIC is at 0xfec0_0000), above the RAM of any guest that has
/// devices (the VMM refuses more). Each device has 4 KiB (one page: the driver maps it whole).
pub const MMIO_BASE: u64 = 0xd000_0000;
/// The size of one device's register window.
pub const MMIO_SIZE: u64 = 0x1000;
/// The interrupt line of the first device; the next device has the next line. IRQ 4 is the
/// UART's; 5 and up are free ISA lines, which KVM's I/O APIC routes to pins of the same number.
pub const FIRST_IRQ: u32 = 5;
/// The offset of `QueueNotify` in a device's window (where KVM's ioeventfds listen).
pub const QUEUE_NOTIFY: u64 = 0x50;

/// One device's place on the machine: its register window and its interrupt line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Guest-physical address of its registers.
    pub base: u64,
    /// Its I/O APIC pin (GSI).
    pub irq: u32,
}

impl Slot {
    /// The `index`-th device's slot.
    pub fn nth(index: usize) -> Slot {
        Slot {
            base: MMIO_BASE + index as u64 * MMIO_SIZE,
            irq: FIRST_IRQ + index as u32,
        }
    }

    /// How a kernel with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` is told about it:
    /// `virtio_mmio.device=<size>@<base>:<irq>`.
    pub fn cmdline(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            MMIO_SIZE >> 10,
            self.base,
            self.irq
        )
    }

    /// True when `addr` is one of its registers.
    pub fn contains(&self, addr: u64) -> bool {
        (self.base..self.base + MMIO_SIZE).contains(&addr)
    }
}

/// How the driver's "look at queue n" reaches the device (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Notify {
    /// `KVM_IOEVENTFD`: KVM signals the queue's eventfd without leaving the kernel.
    #[default]
    Ioeventfd,
    /// An MMIO exit to the vCPU thread, which signals the same eventfd.
    Exit,
}

/// What a device reports about its traffic, shared between its thread and the VMM.
#[derive(Debug, Default)]
pub struct Counters {
    /// Notifications from the driver (eventfd signals; each one a VM exit).
    pub notifications: AtomicU64,
    /// Interrupts raised to the driver.
    pub interrupts: AtomicU64,
    /// Requests (block) or frames (net) served.
    pub requests: AtomicU64,
    /// Requests the device refused as malformed (answered with an error status, or dropped).
    pub malformed: AtomicU64,
    /// Why the device's thread ended, if it ended before the VMM stopped it (corrupt rings,
    /// a failed `poll`), and where its queues stood: for the run's facts.
    pub ended: std::sync::Mutex<Option<String>>,
    /// Where the queues stood when the device stopped ([`describe`]).
    pub queues: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    /// Record why the device's thread ended.
    pub fn end(&self, why: String) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Record where the queues stand (when the device stops).
    pub fn queues_at_stop(&self, queues: Vec<String>) {
        *self.queues.lock().unwrap_or_else(|e| e.into_inner()) = queues;
    }

    /// Where the queues stood when the device stopped.
    pub fn queues(&self) -> Vec<String> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the device's thread ended early, if it did.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A device's interrupt: the `InterruptStatus` bits the driver reads, and the irqfd that raises
/// the line. Cloned into the device's thread.
#[derive(Clone, Debug)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irqfd: Arc<EventFd>,
    counters: Arc<Counters>,
}

impl Interrupt {
    /// An interrupt raised through `irqfd`, counted in `counters`.
    pub fn new(irqfd: EventFd, counters: Arc<Counters>) -> Interrupt {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            irqfd: Arc::new(irqfd),
            counters,
        }
    }

    /// "The used ring has new entries": set the status bit, then pulse the line. The order
    /// matters: the driver's handler reads the status when the interrupt arrives.
    pub fn used_buffers(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// "The configuration changed" (or the device needs a reset).
    pub fn config_changed(&self) {
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        Counters::add(&self.counters.interrupts, 1);
        // A full eventfd counter (2^64 − 2 pending) cannot happen: KVM consumes each signal.
        let _ = self.irqfd.write(1);
    }

    /// `InterruptStatus`.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// `InterruptACK`: the driver has seen these bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Back to no interrupt pending (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// Errors of the virtio devices.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What the device was doing.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The driver set up a queue the rings of which are not in guest memory or misaligned.
    #[error("queue {0} is set up outside guest memory or misaligned")]
    BadQueue(usize),
    /// The device needs a queue the driver did not make ready.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// virtio-queue refused a ring operation (the rings are corrupt).
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
}

impl VirtioError {
    fn io(what: &'static str) -> impl FnOnce(io::Error) -> VirtioError {
        move |source| VirtioError::Io { what, source }
    }
}

/// The device types the lab has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// virtio-blk, device ID 2.
    Block,
    /// virtio-net, device ID 1.
    Net,
}

impl Kind {
    /// The virtio device ID.
    pub fn id(self) -> u32 {
        match self {
            Kind::Block => virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK,
            Kind::Net => virtio_bindings::virtio_ids::VIRTIO_ID_NET,
        }
    }

    /// A short name, for exit counts (`exits_mmio_blk`) and thread names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Block => "blk",
            Kind::Net => "net",
        }
    }
}

/// What a device gets when the driver sets `DRIVER_OK`: everything its thread needs.
pub struct Activation {
    /// Guest memory (a cheap clone: the regions are shared).
    pub mem: GuestMemoryMmap,
    /// The queues as the driver set them up, in order.
    pub queues: Vec<Queue>,
    /// Each queue's notification eventfd.
    pub notify: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Interrupt,
    /// The features the driver accepted.
    pub features: u64,
    /// The device's counters.
    pub counters: Arc<Counters>,
}

/// One device behind the transport.
pub trait VirtioDevice: Send {
    /// Which device.
    fn kind(&self) -> Kind;
    /// The feature bits it offers.
    fn features(&self) -> u64;
    /// How many queues it has, and the largest size of each.
    fn queue_max_sizes(&self) -> &[u16];
    /// Read its configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Start serving the queues: a thread of its own, stopped by dropping the [`Worker`].
    fn activate(&mut self, activation: Activation) -> Result<Worker, VirtioError>;
}

/// A device's thread and the eventfd that stops it. Dropping it stops and joins the thread, so
/// no device thread outlives its device (nor the VMM).
#[derive(Debug)]
pub struct Worker {
    stop: Arc<EventFd>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Run `body` on a thread named `name`; `body` gets the stop eventfd to wait on beside its
    /// own, and must return soon after it is signalled: `Ok` when stopped, an error when the
    /// device cannot go on. Either that error or a panic of the thread (a bug: bad guest input
    /// is answered, not panicked on) is recorded in `counters`, so the run says why the device
    /// went silent.
    pub fn spawn(
        name: String,
        counters: Arc<Counters>,
        body: impl FnOnce(Arc<EventFd>) -> Result<(), String> + Send + 'static,
    ) -> Result<Worker, VirtioError> {
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::io("eventfd"))?);
        let theirs = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(theirs)));
                match ran {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => counters.end(why),
                    Err(panic) => counters.end(format!(
                        "the device thread panicked: {}",
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("?")
                    )),
                }
            })
            .map_err(VirtioError::io("start a device thread"))?;
        Ok(Worker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Where a queue stands, in one line: its size, how far the device got (`next_avail`,
/// `next_used`) and what the driver's ring says (`avail.idx`), for a report of why a device
/// stopped.
pub fn describe(queue: &Queue, mem: &GuestMemoryMmap) -> String {
    use vm_memory::{Bytes, GuestAddress};
    let avail = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_or("unreadable".into(), |i| i.0.to_string());
    let size = queue.size() as u64;
    let u16_at = |addr: u64| {
        mem.read_obj::<u16>(GuestAddress(addr))
            .map_or("?".into(), |v| v.to_string())
    };
    format!(
        "queue size {size}, avail.idx {avail}, next_avail {}, next_used {}, used.idx {}, \
         event_idx {}: used_event {}, avail_event {}",
        queue.next_avail(),
        queue.next_used(),
        u16_at(queue.used_ring() + 2),
        queue.event_idx_enabled(),
        u16_at(queue.avail_ring() + 4 + 2 * size),
        u16_at(queue.used_ring() + 4 + 8 * size),
    )
}

/// Consume an eventfd's count (how many times it was signalled since the last read; 0 if none).
pub fn drain(event: &EventFd) -> u64 {
    event.read().unwrap_or(0)
}

/// Wait until one of `fds` is readable; which ones are. Interrupted waits are retried.
pub fn wait_readable(fds: &[&dyn AsRawFd]) -> Result<Vec<bool>, VirtioError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut polls: Vec<PollFd> = fds
            .iter()
            .map(|fd| {
                // SAFETY: each descriptor belongs to an object the caller holds borrowed for
                // the whole call, so it stays open while poll looks at it.
                let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
                PollFd::new(fd, PollFlags::POLLIN)
            })
            .collect();
        match poll(&mut polls, PollTimeout::NONE) {
            Ok(_) => return Ok(polls.iter().map(|p| p.any().unwrap_or(false)).collect()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(VirtioError::Io {
                    what: "poll",
                    source: e.into(),
                })
            }
        }
    }
}

/// Serve every chain the driver has made available on `queue` with `handle` (which returns the
/// bytes it wrote into the chain), the way notification suppression needs it: drain, then
/// re-enable notifications and look once more, so a chain added between the last look and the
/// re-enabling is never left waiting for a notification that will not come. Returns whether any
/// chain was used; the caller then asks [`QueueT::needs_notification`] whether to interrupt.
pub fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut handle: impl FnMut(virtio_queue::DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> Result<bool, VirtioError> {
    let mut used = false;
    loop {
        queue.disable_notification(mem)?;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = handle(chain);
            queue.add_used(mem, head, len)?;
            used = true;
        }
        if !queue.enable_notification(mem)? {
            return Ok(used);
        }
    }
}
