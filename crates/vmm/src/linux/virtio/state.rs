//! A virtio device's state, saved for a snapshot and restored from it.
//!
//! # What a virtio device's state is
//!
//! Less than one might think. Everything the driver and the device *share* lives in guest
//! memory — the descriptor tables, the available and used rings with their indices, the
//! buffers, `used_event`/`avail_event` — and a snapshot saves guest memory whole. What is left
//! is what lives only in the VMM:
//!
//! * the **registers** the driver wrote ([`super::mmio`]): the features it accepted,
//!   `Status` (how far it got: is the device running?), `QueueSel` and the feature-select
//!   registers, the configuration generation, and `InterruptStatus` — an interrupt raised but
//!   not yet acknowledged;
//! * for each **queue**, what the driver told the device about it (its size, whether it is
//!   ready, where its three parts are) and the two positions only the device keeps:
//!   `next_avail`, how far into the available ring it has taken requests, and `next_used`,
//!   where its next answer goes (also in guest memory as `used.idx`, but the device does not
//!   read it back: the driver may not write there, so the device's own copy is the truth);
//! * whether the event index (`VIRTIO_RING_F_EVENT_IDX`) is in use on the queue.
//!
//! The device's *backend* — the disk file, the tap — is not state: a restored machine opens the
//! same disk file again, or a new tap with the same MAC address.
//!
//! # Why the thread's copy of a queue is the true one
//!
//! At `DRIVER_OK` the transport hands the device's thread a *copy* of each queue
//! ([`MmioTransport::activate`]), and from then on only the thread moves `next_avail` and
//! `next_used`; the registers' copies stay where set-up left them (0, 0). So a save first
//! stops the thread and takes the positions it hands back ([`super::Stop::park`]): saving the
//! registers' copies would restore a device that serves every request of the guest's life
//! again from the start.
//!
//! The thread is stopped at a **request boundary**: it finishes the request in hand, returns
//! it to the used ring, and takes no other ([`super::Stop`]'s pause). Nothing is then popped
//! but unanswered — a request the device took (`next_avail` moved past it) and never answered
//! would be lost for ever after a restore: the restored device would not take it again, and
//! the driver would wait for its answer until its timeout. A thread stuck inside a request
//! longer than [`STOP_WAIT`] makes the save fail rather than save a lie.
//!
//! # Why a restored device looks at the available ring once by itself
//!
//! A device learns of work by a notification, and a notification is an eventfd's count — host
//! state a snapshot does not carry. The driver may have made a request available and notified
//! just before the snapshot (the old thread, paused, never saw it), or not notified at all
//! because the device had said, through `avail_event` or `NO_NOTIFY`, that it was busy and
//! would look by itself. Either way the guest, restored, will not notify again for that
//! request: it believes the device knows. So a restored thread starts by looking at its rings
//! ([`super::Activation::resume`]), as if it had been notified, before its first sleep.
//!
//! An interrupt pending at the snapshot (bits of `InterruptStatus` set, not yet acknowledged)
//! is raised again after the restore: the line's pulse went to the old machine's interrupt
//! controller, and the driver's handler is what clears the bits. (Raised on the irqfd before
//! KVM knows it is fine: `KVM_IRQFD` delivers a count already pending when it is registered.)
//!
//! # The bytes
//!
//! [`TransportState::encode`] writes little-endian fields behind a magic and a version;
//! [`TransportState::decode`] reads a snapshot file that may be anyone's: every length is
//! checked, a foreign version is refused, and the values are checked again against the device
//! at [`MmioTransport::restore`]. A bad snapshot is one line of error, never a panic.

use super::mmio::MmioTransport;
use super::{Notify, VirtioDevice, VirtioError, STOP_WAIT};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::{Queue, QueueState};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// The first bytes of an encoded state: what it is.
pub const MAGIC: [u8; 8] = *b"isolabVQ";
/// The encoding's version; any other is refused.
pub const VERSION: u16 = 1;
/// The most queues a saved device may have (the lab's have 1 or 2): a bound on what a hostile
/// file can make the decoder allocate.
pub const MAX_QUEUES: usize = 8;
/// The largest queue virtio allows (a split ring's size is at most 2^15).
pub const MAX_QUEUE_SIZE: u16 = 1 << 15;

/// Bytes of the fixed part: magic, version, device ID, the two feature selects, the driver's
/// features, `QueueSel`, `Status`, the configuration generation, `InterruptStatus`, the
/// needs-reset flag, the queue count.
const HEADER_LEN: usize = 8 + 2 + 4 + 4 + 4 + 8 + 4 + 4 + 4 + 4 + 1 + 2;
/// Bytes per queue: size, ready, three addresses, `next_avail`, `next_used`, event index.
const QUEUE_LEN: usize = 2 + 1 + 3 * 8 + 2 + 2 + 1;

/// One queue's state (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedQueue {
    /// The size the driver chose (a power of two, at most the device's maximum).
    pub size: u16,
    /// The driver made it ready.
    pub ready: bool,
    /// Guest-physical address of the descriptor table.
    pub desc_table: u64,
    /// … of the available ring.
    pub avail_ring: u64,
    /// … of the used ring.
    pub used_ring: u64,
    /// How far into the available ring the device has taken chains.
    pub next_avail: u16,
    /// Where the device's next used entry goes.
    pub next_used: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` in use.
    pub event_idx: bool,
}

impl From<QueueState> for SavedQueue {
    fn from(q: QueueState) -> SavedQueue {
        SavedQueue {
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
        }
    }
}

impl SavedQueue {
    /// The queue again, for a device whose largest queue is `max_size`: virtio-queue checks
    /// the size (a power of two up to the maximum) and each part's alignment.
    fn queue(&self, index: usize, max_size: u16) -> Result<Queue, VirtioError> {
        if self.size > max_size {
            return Err(VirtioError::State(format!(
                "queue {index} has {} entries, the device at most {max_size}",
                self.size
            )));
        }
        Queue::try_from(QueueState {
            max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        })
        .map_err(|e| VirtioError::State(format!("queue {index}: {e}")))
    }
}

/// Everything a restored transport needs: the registers the driver wrote and each queue's
/// state, the device thread's positions included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportState {
    /// The virtio device ID (1 net, 2 block): a state is restored only into the same kind.
    pub device_id: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// The features the driver accepted.
    pub driver_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `Status` as the driver wrote it (`DEVICE_NEEDS_RESET` is [`Self::needs_reset`]).
    pub status: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// `InterruptStatus`: interrupts raised and not yet acknowledged.
    pub interrupt_status: u32,
    /// The device had given up (a corrupt ring) and waits for the driver's reset.
    pub needs_reset: bool,
    /// Each queue, in order.
    pub queues: Vec<SavedQueue>,
}

impl TransportState {
    /// The state as bytes: [`MAGIC`], [`VERSION`], then every field little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + QUEUE_LEN * self.queues.len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        for v in [
            self.device_id,
            self.device_features_sel,
            self.driver_features_sel,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.driver_features.to_le_bytes());
        for v in [
            self.queue_sel,
            self.status,
            self.config_generation,
            self.interrupt_status,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(self.needs_reset.into());
        // A transport has as many queues as its device, at most MAX_QUEUES (checked by
        // decode and restore); a u16 holds that.
        b.extend_from_slice(&(self.queues.len() as u16).to_le_bytes());
        for q in &self.queues {
            b.extend_from_slice(&q.size.to_le_bytes());
            b.push(q.ready.into());
            for a in [q.desc_table, q.avail_ring, q.used_ring] {
                b.extend_from_slice(&a.to_le_bytes());
            }
            b.extend_from_slice(&q.next_avail.to_le_bytes());
            b.extend_from_slice(&q.next_used.to_le_bytes());
            b.push(q.event_idx.into());
        }
        b
    }

    /// The state in `bytes`, which may be anyone's: the magic, the version, the exact length
    /// for the queue count, flags that are 0 or 1, sizes that are powers of two, and interrupt
    /// bits the device can raise, or an error saying which is wrong.
    pub fn decode(bytes: &[u8]) -> Result<TransportState, VirtioError> {
        let bad = |what: String| VirtioError::State(what);
        if bytes.len() < MAGIC.len() + 2 || bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a saved virtio device (no magic)".into()));
        }
        let mut r = Reader {
            bytes: &bytes[MAGIC.len()..],
        };
        let version = r.u16()?;
        if version != VERSION {
            return Err(bad(format!(
                "saved in format version {version}, this lab reads version {VERSION}"
            )));
        }
        if bytes.len() < HEADER_LEN {
            return Err(bad(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let device_id = r.u32()?;
        let device_features_sel = r.u32()?;
        let driver_features_sel = r.u32()?;
        let driver_features = r.u64()?;
        let queue_sel = r.u32()?;
        let status = r.u32()?;
        let config_generation = r.u32()?;
        let interrupt_status = r.u32()?;
        if interrupt_status & !(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG) != 0 {
            return Err(bad(format!(
                "interrupt status {interrupt_status:#x} has bits no device raises"
            )));
        }
        let needs_reset = r.flag("the needs-reset flag")?;
        let count = r.u16()? as usize;
        if count > MAX_QUEUES {
            return Err(bad(format!(
                "{count} queues, more than the {MAX_QUEUES} a device may have"
            )));
        }
        let want = HEADER_LEN + count * QUEUE_LEN;
        if bytes.len() != want {
            return Err(bad(format!(
                "{} bytes where {count} queues take {want}",
                bytes.len()
            )));
        }
        let mut queues = Vec::with_capacity(count);
        for i in 0..count {
            let size = r.u16()?;
            if size == 0 || size > MAX_QUEUE_SIZE || !size.is_power_of_two() {
                return Err(bad(format!(
                    "queue {i} has {size} entries: not a power of two up to {MAX_QUEUE_SIZE}"
                )));
            }
            queues.push(SavedQueue {
                size,
                ready: r.flag("a queue's ready flag")?,
                desc_table: r.u64()?,
                avail_ring: r.u64()?,
                used_ring: r.u64()?,
                next_avail: r.u16()?,
                next_used: r.u16()?,
                event_idx: r.flag("a queue's event-index flag")?,
            });
        }
        Ok(TransportState {
            device_id,
            device_features_sel,
            driver_features_sel,
            driver_features,
            queue_sel,
            status,
            config_generation,
            interrupt_status,
            needs_reset,
            queues,
        })
    }
}

/// Little-endian fields read from the front of a slice; running out is an error, not a panic.
struct Reader<'b> {
    bytes: &'b [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], VirtioError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(VirtioError::State("the saved state ends early".into()));
        };
        self.bytes = rest;
        Ok(*head)
    }

    fn u16(&mut self) -> Result<u16, VirtioError> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, VirtioError> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, VirtioError> {
        self.take().map(u64::from_le_bytes)
    }

    fn flag(&mut self, what: &str) -> Result<bool, VirtioError> {
        match self.take::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            [v] => Err(VirtioError::State(format!("{what} is {v}, not 0 or 1"))),
        }
    }
}

/// The `Status` bits with which a driver has a running device.
const RUNNING: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK;

impl MmioTransport {
    /// Stop the device's thread at a request boundary (the request in hand, if any, finishes
    /// and is returned first, within [`STOP_WAIT`], else an error) and return the state, the
    /// thread's queue positions included. The transport is not used again after: its device
    /// no longer runs.
    pub fn save(&mut self) -> Result<TransportState, VirtioError> {
        if self.still_stopping() {
            return Err(VirtioError::StillStopping);
        }
        // The registers' copies: the truth only while no thread has run the queues.
        let mut queues: Vec<SavedQueue> = self
            .queues
            .iter()
            .map(|q| SavedQueue::from(q.state()))
            .collect();
        if let Some(mut worker) = self.worker.take() {
            match worker.pause(STOP_WAIT) {
                Ok(Some(thread)) if thread.len() == queues.len() => {
                    queues = thread.into_iter().map(SavedQueue::from).collect();
                }
                // The thread had given up on a corrupt ring before the pause: the device
                // waits for the driver's reset, and is saved so; its queues do not matter.
                Ok(_) if self.interrupt.reset_asked() => {}
                Ok(_) => {
                    return Err(VirtioError::State(format!(
                        "the device thread ended without handing back its queues: {}",
                        self.counters.ended().unwrap_or_default()
                    )))
                }
                Err(e) => {
                    // Still inside a request: kept aside, as after a reset, to end by itself.
                    self.lingering = Some(worker);
                    return Err(e);
                }
            }
        }
        Ok(TransportState {
            device_id: self.device.kind().id(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            needs_reset: self.interrupt.reset_asked(),
            queues,
        })
    }

    /// A transport for `device` (freshly opened: the same disk file, a new tap with the same
    /// MAC) whose registers and queues are `state`'s. If the driver had the device running,
    /// its thread starts on the saved queues — checked against `mem` as `DRIVER_OK` checks
    /// them — and looks at the available rings once by itself; an interrupt that was pending
    /// is raised again. A state that is not this device's (another kind, another queue count,
    /// a queue larger than the device's, features it does not offer) is refused.
    pub fn restore(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irqfd: EventFd,
        notify: Notify,
        state: &TransportState,
    ) -> Result<MmioTransport, VirtioError> {
        let bad = |what: String| Err(VirtioError::State(what));
        let kind = device.kind();
        if state.device_id != kind.id() {
            return bad(format!(
                "saved from device ID {}, restored into virtio-{} (ID {})",
                state.device_id,
                kind.name(),
                kind.id()
            ));
        }
        let max_sizes = device.queue_max_sizes().to_vec();
        if state.queues.len() != max_sizes.len() {
            return bad(format!(
                "{} queues saved, virtio-{} has {}",
                state.queues.len(),
                kind.name(),
                max_sizes.len()
            ));
        }
        let unoffered = state.driver_features & !device.features();
        if unoffered != 0 {
            return bad(format!(
                "the driver accepted features {unoffered:#x} virtio-{} does not offer",
                kind.name()
            ));
        }
        let mut t = MmioTransport::new(device, mem, irqfd, notify)?;
        for (i, (saved, max)) in state.queues.iter().zip(max_sizes).enumerate() {
            t.queues[i] = saved.queue(i, max)?;
        }
        t.device_features_sel = state.device_features_sel;
        t.driver_features_sel = state.driver_features_sel;
        t.driver_features = state.driver_features;
        t.queue_sel = state.queue_sel;
        t.config_generation = state.config_generation;
        if state.needs_reset {
            // It stays given up: the driver's reset is what the guest will do next.
            t.interrupt
                .needs_reset
                .store(true, std::sync::atomic::Ordering::SeqCst);
        } else if state.status & RUNNING == RUNNING && state.status & VIRTIO_CONFIG_S_FAILED == 0 {
            t.activate(true)?;
        }
        t.status = state.status;
        for bit in [VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_CONFIG] {
            if state.interrupt_status & bit != 0 {
                t.interrupt.raise(bit);
            }
        }
        Ok(t)
    }
}
