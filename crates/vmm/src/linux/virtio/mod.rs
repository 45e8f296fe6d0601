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
//! # A guest is not to be trusted
//!
//! Every index, address, length and flag in the rings is the guest's to write, and a guest
//! kernel may lie there as freely as any program. The device thread must never crash, spin,
//! hang, or act on the host for it; the worst a guest gets is an error for its request, or a
//! device that gives up and says so. Four rules hold that line:
//!
//! * **A queue that cannot be trusted ends the device.** `avail.idx` further ahead of the
//!   device than the queue has entries, or a chain head outside the descriptor table, means the
//!   ring is corrupt: nothing on it can be served or returned. The thread stops and the device
//!   sets `DEVICE_NEEDS_RESET` (64) in `Status` with a configuration-change interrupt, as virtio
//!   1.x asks, until the driver resets it. (virtio-queue refuses to pop from such a ring; a loop
//!   that took "no chain" for "no work" while the index said "more work" spun at 100% for ever.)
//! * **A chain that does not end where the driver ended it is refused whole.** virtio-queue
//!   stops following a chain after as many descriptors as the queue has (a loop of `next`), at
//!   an index past the table, or where its byte count would overflow a u32 (a chain over
//!   4 GiB). What it yields then is a *cut* chain, whose last descriptor still says "next":
//!   serving it would act on a request the driver never made. It is returned with nothing
//!   written ([`whole_chain`]), and the used length a device reports is always the bytes it
//!   really wrote, computed in u64 and checked against the u32 the used ring holds.
//! * **Each wake-up serves at most [`BUDGET`] chains**, then the thread looks at its eventfds
//!   again (and comes back at once if work is left): a driver that keeps the queue full cannot
//!   keep the thread from seeing a reset.
//! * **A reset waits for the thread a bounded time** ([`STOP_WAIT`]). The vCPU thread that writes
//!   `Status` = 0 asks the device thread to stop and waits for its answer; a thread stuck inside
//!   a request (a hung disk) does not keep the vCPU: the reset returns, the device reads as
//!   needing a reset and refuses to start again until the old thread has ended, and the old
//!   thread, when it comes back, returns nothing to the queue it no longer owns. (The buffers of
//!   the request it was inside may still be written as it finishes: the price of not waiting,
//!   paid only by a driver that reset a device in the middle of its own request.)
//!
//! `hostile.rs` (a test module) drives each device through its registers with rings no honest
//! driver writes, and checks each of these.
//!
//! # The modules
//!
//! * [`mmio`] — the virtio-mmio transport (version 2): the register file a driver programs;
//! * [`block`] — virtio-blk on a raw file opened with `O_DIRECT`;
//! * [`net`] — virtio-net on a tap device;
//! * [`state`] — a device's state saved for a snapshot, and a device restored from it.

pub mod block;
pub mod mmio;
pub mod net;
pub mod state;

#[cfg(test)]
pub(crate) mod hostile;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueState, QueueT};
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
/// The most chains a device serves per wake-up before it looks at its eventfds (stop, other
/// queues) again. Large enough that a busy queue costs one extra `poll` per 64 requests, small
/// enough that a stop is seen within 64 requests' time.
pub const BUDGET: u16 = 64;
/// How long a reset (or the VMM's stop) waits for a device thread to end. The thread checks for
/// a stop between any two chains, so it answers within one request; one stuck longer than this
/// (in a hung disk) is left to end by itself, and the vCPU goes on.
pub const STOP_WAIT: Duration = Duration::from_secs(1);

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
    /// CPU time the device's threads used, in nanoseconds, added as each thread ends.
    pub thread_cpu_ns: AtomicU64,
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
///
/// It also carries the one status bit the device sets itself, `DEVICE_NEEDS_RESET`: the device
/// thread sets it when it gives up, the transport shows it in `Status`.
#[derive(Clone, Debug)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irqfd: Arc<EventFd>,
    counters: Arc<Counters>,
    needs_reset: Arc<AtomicBool>,
}

impl Interrupt {
    /// An interrupt raised through `irqfd`, counted in `counters`.
    pub fn new(irqfd: EventFd, counters: Arc<Counters>) -> Interrupt {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            irqfd: Arc::new(irqfd),
            counters,
            needs_reset: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The device gives up until the driver resets it: `DEVICE_NEEDS_RESET` in `Status`, and a
    /// configuration-change interrupt so the driver looks (virtio 1.x, 2.1.2).
    pub fn ask_for_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.config_changed();
    }

    /// True once the device has asked for a reset (until the reset).
    pub fn reset_asked(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
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

    /// Back to no interrupt pending and no reset asked for (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
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
    /// The driver's `avail.idx` claims more chains than the queue has entries.
    #[error(
        "avail.idx {avail} is {} chains ahead of the device's next_avail {next_avail}, \
         on a queue of {size}",
        avail.wrapping_sub(*next_avail)
    )]
    AvailAhead {
        /// The driver's index.
        avail: u16,
        /// How far the device got.
        next_avail: u16,
        /// The queue's size.
        size: u16,
    },
    /// The device's thread of before the last reset has not ended yet.
    #[error("the device's previous thread has not stopped yet")]
    StillStopping,
    /// The device's thread did not come to a request boundary in time to be saved.
    #[error("the device thread did not stop within {0:?} to be saved (stuck in a request)")]
    SaveTimeout(Duration),
    /// A saved device state that cannot be restored: damaged, foreign, or not this device's.
    #[error("virtio device state: {0}")]
    State(String),
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
    /// True when the queues come from a snapshot ([`state`]): the thread looks at the rings
    /// once before its first sleep, since the driver may have made buffers available (and
    /// notified, or been told not to) while no thread served them.
    pub resume: bool,
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

/// How the transport tells a device thread to stop: a flag the thread checks between chains
/// (an atomic load, no system call), and an eventfd that wakes it from `poll`.
///
/// Two kinds of stop. A **reset** takes the queues away: whatever the thread was doing is no
/// longer returned to them. A **pause** (a snapshot being taken, [`state`]) keeps them the
/// device's: the request in hand is finished and returned, nothing more is taken, and the
/// thread hands its queues' positions back ([`Stop::park`]) before it ends.
#[derive(Debug)]
pub struct Stop {
    event: EventFd,
    requested: AtomicBool,
    pause: AtomicBool,
    parked: Mutex<Option<Vec<QueueState>>>,
}

impl Stop {
    /// A stop not yet requested.
    pub fn new() -> Result<Stop, VirtioError> {
        Ok(Stop {
            event: EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::io("eventfd"))?,
            requested: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            parked: Mutex::new(None),
        })
    }

    /// True once the transport has asked the thread to stop (either kind): it takes no new
    /// chain.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// True once a reset has asked the thread to stop: the queues are no longer the thread's
    /// to write, and the request in hand is not returned.
    pub fn disowned(&self) -> bool {
        self.requested() && !self.pause.load(Ordering::SeqCst)
    }

    /// The thread, stopping, hands back where its queues stand: its copies are the true ones
    /// (see [`state`]). Only a pause asks for them; after a reset nobody reads them.
    pub fn park(&self, queues: &[&Queue]) {
        *self.parked.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(queues.iter().map(|q| q.state()).collect());
    }

    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // A full eventfd counter still wakes the poller: the write's failure does not matter.
        let _ = self.event.write(1);
    }

    fn request_pause(&self) {
        // Before `requested`: a thread that sees the stop must already see its kind.
        self.pause.store(true, Ordering::SeqCst);
        self.request();
    }
}

impl AsRawFd for Stop {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.event.as_raw_fd()
    }
}

/// A device's thread and the [`Stop`] that ends it. Dropping it stops the thread and waits for
/// it a bounded time ([`STOP_WAIT`]); a thread that does not end by then is left to end by
/// itself (it holds its own references to guest memory and the backing file, so nothing it
/// uses goes away under it), and the VMM's exit ends it at the latest.
#[derive(Debug)]
pub struct Worker {
    stop: Arc<Stop>,
    handle: Option<JoinHandle<()>>,
    /// Disconnected when the thread has ended: what a bounded wait for it waits on (a
    /// `JoinHandle` can only be waited for without a bound).
    ended: mpsc::Receiver<()>,
    counters: Arc<Counters>,
}

impl Worker {
    /// Run `body` on a thread named `name`; `body` gets the [`Stop`] to wait on beside its own
    /// eventfds, and must return soon after it is requested: `Ok` when stopped, an error when
    /// the device cannot go on. Either that error or a panic of the thread (a bug: bad guest
    /// input is answered, not panicked on) is recorded in the interrupt's counters, so the run
    /// says why the device went silent, and the device asks the driver for a reset.
    pub fn spawn(
        name: String,
        interrupt: &Interrupt,
        body: impl FnOnce(Arc<Stop>) -> Result<(), String> + Send + 'static,
    ) -> Result<Worker, VirtioError> {
        let stop = Arc::new(Stop::new()?);
        let theirs = Arc::clone(&stop);
        let interrupt = interrupt.clone();
        let counters = Arc::clone(&interrupt.counters);
        let (alive, ended) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Dropped when this closure ends, however it ends: the transport's wait sees
                // the channel disconnect.
                let _alive = alive;
                let body_stop = Arc::clone(&theirs);
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(body_stop)));
                Counters::add(&interrupt.counters.thread_cpu_ns, thread_cpu_ns());
                let why = match ran {
                    Ok(Ok(())) => return,
                    Ok(Err(why)) => why,
                    Err(panic) => format!(
                        "the device thread panicked: {}",
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("?")
                    ),
                };
                interrupt.counters.end(why);
                // A thread the transport had already stopped asks for nothing: the device is
                // no longer its own.
                if !theirs.requested() {
                    interrupt.ask_for_reset();
                }
            })
            .map_err(VirtioError::io("start a device thread"))?;
        Ok(Worker {
            stop,
            handle: Some(handle),
            ended,
            counters,
        })
    }

    /// Ask the thread to stop and wait for it at most `wait`: true when it has ended (and is
    /// joined), false when it is still running.
    pub fn stop(&mut self, wait: Duration) -> bool {
        self.stop.request();
        match self.ended.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            // Disconnected: the thread's end of the channel is gone, so is the thread's body.
            _ => {
                if let Some(handle) = self.handle.take() {
                    let _ = handle.join();
                }
                true
            }
        }
    }

    /// Pause the thread at a request boundary and wait for it at most `wait`: the queues'
    /// state it handed back, `None` if it ended without handing any (it had already given up
    /// on a corrupt ring), or an error when it is still inside a request.
    pub fn pause(&mut self, wait: Duration) -> Result<Option<Vec<QueueState>>, VirtioError> {
        self.stop.request_pause();
        match self.ended.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => Err(VirtioError::SaveTimeout(wait)),
            _ => {
                if let Some(handle) = self.handle.take() {
                    let _ = handle.join();
                }
                Ok(self
                    .stop
                    .parked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take())
            }
        }
    }

    /// True when the thread has ended.
    pub fn has_ended(&self) -> bool {
        matches!(self.ended.try_recv(), Err(mpsc::TryRecvError::Disconnected))
    }

    /// The CPU time the thread has used so far: its own CPU clock (`pthread_getcpuclockid`),
    /// which counts only while it runs, not while it sleeps in `poll`. A device that sleeps
    /// between notifications costs almost nothing; one that spins costs a whole core. `None`
    /// once the thread has ended (its clock goes with it; see [`Counters::thread_cpu_ns`]).
    pub fn cpu_time(&self) -> Option<Duration> {
        use std::os::unix::thread::JoinHandleExt;
        let handle = self.handle.as_ref().filter(|_| !self.has_ended())?;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the pthread_t is of a thread not yet joined (the handle is held), so it is
        // valid; `clock` is a valid out-pointer.
        if unsafe { libc::pthread_getcpuclockid(handle.as_pthread_t(), &mut clock) } != 0 {
            return None;
        }
        // SAFETY: plain data, filled by clock_gettime.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a clock id from pthread_getcpuclockid and a valid out-pointer.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return None;
        }
        Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.handle.is_some() && !self.stop(STOP_WAIT) {
            // Dropping the handle detaches the thread.
            self.counters.end(format!(
                "the device thread did not stop within {STOP_WAIT:?}: left to end by itself"
            ));
        }
    }
}

/// The calling thread's CPU time so far, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> u64 {
    // SAFETY: plain data, filled by clock_gettime.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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

/// Wait until one of `fds` is readable (or, unless `block`, only look); which ones are.
/// Interrupted waits are retried.
pub fn wait_readable(fds: &[&dyn AsRawFd], block: bool) -> Result<Vec<bool>, VirtioError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let timeout = if block {
        PollTimeout::NONE
    } else {
        PollTimeout::ZERO
    };
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
        match poll(&mut polls, timeout) {
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

/// The next chain the driver has made available on `queue`, or `None`; an error when the ring
/// cannot be trusted: `avail.idx` further ahead of the device than the queue has entries.
/// (virtio-queue's own `pop_descriptor_chain` answers such a ring with `None`, which a loop
/// cannot tell from "no work" — while `enable_notification` keeps saying "more work".)
pub fn pop<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
) -> Result<Option<DescriptorChain<&'m GuestMemoryMmap>>, VirtioError> {
    let avail = queue.avail_idx(mem, Ordering::Acquire)?.0;
    let next_avail = queue.next_avail();
    if avail.wrapping_sub(next_avail) > queue.size() {
        return Err(VirtioError::AvailAhead {
            avail,
            next_avail,
            size: queue.size(),
        });
    }
    Ok(queue.iter(mem)?.next())
}

/// The descriptors of `chain`, if it ends where the driver ended it: `None` for a chain with
/// no descriptor at all (an empty indirect table, a head outside the table) or one cut short
/// (its last descriptor still says "next": virtio-queue stopped following it at a loop, an
/// index past the table, or 4 GiB of buffers). A cut chain is refused whole; serving what was
/// left of it would act on a request the driver never made.
pub fn whole_chain(chain: DescriptorChain<&GuestMemoryMmap>) -> Option<Vec<Descriptor>> {
    let descs: Vec<Descriptor> = chain.collect();
    match descs.last() {
        Some(last) if !last.has_next() => Some(descs),
        _ => None,
    }
}

/// What one call of [`serve_queue`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Chains returned to the used ring.
    pub used: u16,
    /// The [`BUDGET`] ran out: chains may be waiting, so the caller looks at its eventfds
    /// without sleeping and calls again. (Notifications stay disabled meanwhile: the driver
    /// need not notify a device that is coming back anyway.)
    pub more: bool,
}

/// Serve the chains the driver has made available on `queue` with `handle` (which returns the
/// bytes it wrote into the chain), at most [`BUDGET`] of them, the way notification suppression
/// needs it: drain, then re-enable notifications and look once more, so a chain added between
/// the last look and the re-enabling is never left waiting for a notification that will not
/// come. A chain served after `stop` was requested is not returned: the queue is no longer the
/// device's; after a pause was requested, the chain in hand is returned and no other is taken
/// (a request boundary, for a snapshot). The caller then asks [`QueueT::needs_notification`]
/// whether to interrupt.
pub fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    stop: &Stop,
    mut handle: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> Result<Served, VirtioError> {
    let mut served = Served::default();
    // Each chain, and each second look after re-enabling notifications, spends one of the
    // budget: a driver that moves avail.idx back and forth cannot keep the loop going either.
    let mut budget = BUDGET;
    loop {
        queue.disable_notification(mem)?;
        while let Some(chain) = pop(queue, mem)? {
            let head = chain.head_index();
            let len = handle(chain);
            if stop.disowned() {
                return Ok(served);
            }
            queue.add_used(mem, head, len)?;
            served.used += 1;
            if stop.requested() {
                return Ok(served);
            }
            budget -= 1;
            if budget == 0 {
                served.more = true;
                return Ok(served);
            }
        }
        if !queue.enable_notification(mem)? {
            return Ok(served);
        }
        budget -= 1;
        if budget == 0 {
            served.more = true;
            return Ok(served);
        }
    }
}
