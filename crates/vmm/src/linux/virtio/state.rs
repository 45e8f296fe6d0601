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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::virtio::block::{Block, SECTOR};
    use crate::linux::virtio::hostile::{
        frame, frames_seen, packet_socket, send_to_guest, Ring, StuckPage, MAC,
    };
    use crate::linux::virtio::mmio::tests::{drive, rd, wr, Dummy, Layout};
    use crate::linux::virtio::net::Net;
    use crate::linux::virtio::Counters;
    use isolab_resources::network::tap::{in_new_netns, Tap, VNET_HDR_LEN};
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
    use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1};
    use virtio_bindings::virtio_mmio::{
        VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_QUEUE_NOTIFY,
        VIRTIO_MMIO_STATUS,
    };
    use virtio_bindings::virtio_ring::{
        VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use vm_memory::{Bytes, GuestAddress};

    /// What a Linux driver accepts of the lab's devices' ring features.
    const LINUX: u64 =
        1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_RING_F_INDIRECT_DESC;
    /// How long a step may take before the test calls the device hung.
    const DEADLINE: Duration = Duration::from_secs(5);
    const N: u16 = VRING_DESC_F_NEXT as u16;
    const W: u16 = VRING_DESC_F_WRITE as u16;

    /// A 1 MiB disk file whose sector i is filled with the byte i, removed when dropped.
    struct Disk(PathBuf);

    impl Disk {
        fn new(name: &str) -> Disk {
            let path = std::env::temp_dir()
                .join(format!("isolab-state-{name}-{}.img", std::process::id()));
            let mut bytes = vec![0u8; 1 << 20];
            for (i, s) in bytes.chunks_mut(SECTOR as usize).enumerate() {
                s.fill(i as u8);
            }
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(&bytes).unwrap();
            f.sync_all().unwrap();
            Disk(path)
        }

        /// The device, opened afresh on the file (as a restored machine opens it).
        fn device(&self) -> Box<dyn VirtioDevice> {
            Box::new(Block::open(&self.0, false).unwrap())
        }
    }

    impl Drop for Disk {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    fn eventfd() -> EventFd {
        EventFd::new(libc::EFD_NONBLOCK).unwrap()
    }

    /// Request slot `k` (0–4): descriptors 3k..3k+2, its header, status byte and data page.
    fn header(k: u16) -> u64 {
        0x10_0000 + k as u64 * 0x1000
    }
    fn status(k: u16) -> u64 {
        header(k) + 0x800
    }
    fn data(k: u16) -> u64 {
        0x20_0000 + k as u64 * 0x1000
    }

    /// Write a one-sector request of `kind` at `sector` in slot `k` and offer it (no notify).
    fn request(mem: &GuestMemoryMmap, ring: &Ring, k: u16, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(header(k))).unwrap();
        mem.write_obj(0xffu8, GuestAddress(status(k))).unwrap();
        let data_flags = if kind == VIRTIO_BLK_T_IN { N | W } else { N };
        let d = 3 * k;
        ring.desc(d, header(k), 16, N, d + 1);
        ring.desc(d + 1, data(k), SECTOR as u32, data_flags, d + 2);
        ring.desc(d + 2, status(k), 1, W, 0);
        ring.offer(d);
    }

    fn byte_at(mem: &GuestMemoryMmap, at: u64) -> u8 {
        mem.read_obj::<u8>(GuestAddress(at)).unwrap()
    }

    /// Wait until `ok` holds, at most [`DEADLINE`]; whether it did.
    fn wait(mut ok: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while !ok() {
            if started.elapsed() > DEADLINE {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn blk(disk: &Disk, mem: &GuestMemoryMmap, ring: &Ring) -> MmioTransport {
        let mut t =
            MmioTransport::new(disk.device(), mem.clone(), eventfd(), Notify::Exit).unwrap();
        assert_eq!(drive(&mut t, LINUX, &[ring.layout()]) & 0xf, 0xf);
        t
    }

    /// Requests served, the device saved, restored into a new transport on the same file:
    /// the thread's positions are what was saved, the used ring goes on where it was (and
    /// wraps), a sector written before the save reads back after it, and the interrupt the
    /// driver had not acknowledged is raised again.
    #[test]
    fn a_disk_saved_and_restored_on_its_file_serves_on_where_it_stopped() {
        let disk = Disk::new("resume");
        let mem = memory();
        let ring = Ring::new(&mem, 0x1000, 16);
        let mut t = blk(&disk, &mem, &ring);
        for i in 0..3u16 {
            request(&mem, &ring, i, VIRTIO_BLK_T_IN, 10 + i as u64);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
            assert!(wait(|| ring.used_idx() == i + 1), "request {i}");
            assert_eq!(byte_at(&mem, data(i)), 10 + i as u8);
        }
        mem.write_slice(&[0x5a; SECTOR as usize], GuestAddress(data(3)))
            .unwrap();
        request(&mem, &ring, 3, VIRTIO_BLK_T_OUT, 1000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(wait(|| ring.used_idx() == 4));
        assert_eq!(byte_at(&mem, status(3)), VIRTIO_BLK_S_OK as u8);
        // The driver has not acknowledged the last interrupt yet.
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_VRING
        );

        let saved = t.save().unwrap();
        assert!(!t.is_active(), "the device still runs after its save");
        let q = saved.queues[0];
        assert_eq!(
            (q.next_avail, q.next_used),
            (4, 4),
            "the thread's positions, not the registers' (0, 0)"
        );
        assert_eq!(saved.interrupt_status, VIRTIO_MMIO_INT_VRING);
        assert_eq!(saved.status, RUNNING);
        drop(t);

        let state = TransportState::decode(&saved.encode()).unwrap();
        assert_eq!(state, saved);
        let irq = eventfd();
        let mut t = MmioTransport::restore(
            disk.device(),
            mem.clone(),
            irq.try_clone().unwrap(),
            Notify::Exit,
            &state,
        )
        .unwrap();
        assert!(t.is_active());
        assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), RUNNING);
        assert!(
            irq.read().unwrap() >= 1,
            "the pending interrupt was not raised"
        );
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_VRING
        );
        wr(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);

        // The sector written before the save.
        request(&mem, &ring, 4, VIRTIO_BLK_T_IN, 1000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(wait(|| ring.used_idx() == 5));
        assert_eq!(ring.used(4), (12, SECTOR as u32 + 1));
        assert_eq!(byte_at(&mem, data(4)), 0x5a);
        // Twenty more: the used ring's 16 entries wrap, and every answer is in its place.
        for i in 5..25u16 {
            let k = i % 5;
            request(&mem, &ring, k, VIRTIO_BLK_T_IN, i as u64);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
            assert!(wait(|| ring.used_idx() == i + 1), "request {i}");
            assert_eq!(ring.used(i), (3 * k as u32, SECTOR as u32 + 1));
            assert_eq!(byte_at(&mem, data(k)), i as u8);
            assert_eq!(byte_at(&mem, status(k)), VIRTIO_BLK_S_OK as u8);
        }
        assert_eq!(Counters::get(&t.counters().requests), 21);
        assert_eq!(Counters::get(&t.counters().malformed), 0);
    }

    /// The driver offered a request and notified the device of before the snapshot, whose
    /// thread never saw it: the restored device serves it without any notification.
    #[test]
    fn a_request_offered_before_the_save_and_never_seen_is_served_after_restore() {
        let disk = Disk::new("unseen");
        let mem = memory();
        let ring = Ring::new(&mem, 0x1000, 16);
        let mut t = blk(&disk, &mem, &ring);
        request(&mem, &ring, 0, VIRTIO_BLK_T_IN, 7);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(wait(|| ring.used_idx() == 1));
        // Offered; its notification goes to the old machine's eventfd, or nowhere.
        request(&mem, &ring, 1, VIRTIO_BLK_T_IN, 8);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ring.used_idx(), 1, "served without being told");
        let state = t.save().unwrap();
        assert_eq!(state.queues[0].next_avail, 1, "taken by the old thread");
        drop(t);

        let t = MmioTransport::restore(disk.device(), mem.clone(), eventfd(), Notify::Exit, &state)
            .unwrap();
        assert!(
            wait(|| ring.used_idx() == 2),
            "the restored device waits for a notification the guest already sent"
        );
        assert_eq!(ring.used(1), (3, SECTOR as u32 + 1));
        assert_eq!(byte_at(&mem, data(1)), 8);
        assert_eq!(Counters::get(&t.counters().notifications), 0);
    }

    /// Where the held request's data buffer is.
    const STUCK: u64 = 0x30_0000;

    /// A disk whose thread is inside a read request: its data buffer is a page whose first
    /// touch stops the toucher (a slow disk's stand-in), misaligned so the thread's own copy
    /// touches it. Dropping the page lets the thread go on.
    fn inside_a_request(
        disk: &Disk,
        mem: &GuestMemoryMmap,
        ring: &Ring,
    ) -> (MmioTransport, StuckPage) {
        let mut t = blk(disk, mem, ring);
        let page = StuckPage::new(mem, GuestAddress(STUCK));
        request(mem, ring, 0, VIRTIO_BLK_T_IN, 3);
        ring.desc(1, STUCK + 8, SECTOR as u32, N | W, 2);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(
            page.wait_for_toucher(DEADLINE),
            "the device never touched the page"
        );
        (t, page)
    }

    /// A request the thread is inside when the save comes: the save waits for it, and it is
    /// answered before the state is taken — nothing is popped and left unanswered.
    #[test]
    fn a_save_lets_the_request_in_hand_finish_and_answers_it() {
        let (disk, mem) = (Disk::new("inhand"), memory());
        let ring = Ring::new(&mem, 0x1000, 16);
        let (mut t, page) = inside_a_request(&disk, &mem, &ring);
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(page);
        });
        let state = t.save().expect("the request in hand ends within STOP_WAIT");
        release.join().unwrap();
        assert_eq!(ring.used_idx(), 1, "the request in hand was not answered");
        assert_eq!(ring.used(0), (0, SECTOR as u32 + 1));
        assert_eq!(byte_at(&mem, STUCK + 8), 3);
        let q = state.queues[0];
        assert_eq!((q.next_avail, q.next_used), (1, 1));
    }

    /// A thread stuck in a request longer than STOP_WAIT: the save fails within that bound
    /// rather than save positions that would lose the request.
    #[test]
    fn a_save_fails_when_the_thread_stays_stuck_in_a_request() {
        let (disk, mem) = (Disk::new("stuck"), memory());
        let ring = Ring::new(&mem, 0x1000, 16);
        let (mut t, page) = inside_a_request(&disk, &mem, &ring);
        let started = Instant::now();
        let e = t.save().unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, VirtioError::SaveTimeout(_)), "{e}");
        assert!(took < STOP_WAIT * 3, "the save took {took:?}");
        drop(page);
        drop(t);
    }

    /// A state like a block device's with one 16-entry queue at 0x1000, running.
    fn dummy_state() -> TransportState {
        let l = Layout::at(0x1000, 16);
        TransportState {
            device_id: virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK,
            device_features_sel: 1,
            driver_features_sel: 1,
            driver_features: 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX,
            queue_sel: 0,
            status: RUNNING,
            config_generation: 3,
            interrupt_status: VIRTIO_MMIO_INT_VRING,
            needs_reset: false,
            queues: vec![SavedQueue {
                size: 16,
                ready: true,
                desc_table: l.desc,
                avail_ring: l.avail,
                used_ring: l.used,
                next_avail: 65535,
                next_used: 7,
                event_idx: true,
            }],
        }
    }

    fn restore_dummy(
        state: &TransportState,
    ) -> (Result<MmioTransport, VirtioError>, Arc<AtomicUsize>) {
        let activations = Arc::new(AtomicUsize::new(0));
        let device = Dummy {
            activations: Arc::clone(&activations),
        };
        let mem = crate::linux::virtio::mmio::tests::memory();
        let t = MmioTransport::restore(Box::new(device), mem, eventfd(), Notify::Exit, state);
        (t, activations)
    }

    #[test]
    fn a_state_decodes_to_itself_and_damaged_bytes_are_refused_in_one_line() {
        let mut s = dummy_state();
        s.queues.push(SavedQueue {
            size: 256,
            ..s.queues[0]
        });
        let b = s.encode();
        assert_eq!(b.len(), HEADER_LEN + 2 * QUEUE_LEN);
        assert_eq!(TransportState::decode(&b).unwrap(), s);
        for n in 0..b.len() {
            assert!(TransportState::decode(&b[..n]).is_err(), "{n} bytes taken");
        }
        let refused = |bytes: &[u8], why: &str| {
            let e = TransportState::decode(bytes).unwrap_err().to_string();
            assert!(e.contains(why), "{e:?} does not say {why:?}");
            assert!(!e.contains('\n'), "{e:?}");
        };
        let with = |at: usize, patch: &[u8]| {
            let mut c = b.clone();
            c[at..at + patch.len()].copy_from_slice(patch);
            c
        };
        let mut long = b.clone();
        long.push(0);
        refused(&long, "bytes where 2 queues take");
        refused(&with(0, b"X"), "magic");
        refused(&with(8, &2u16.to_le_bytes()), "version 2");
        refused(&with(HEADER_LEN - 2, &9u16.to_le_bytes()), "9 queues");
        refused(&with(HEADER_LEN - 2, &1u16.to_le_bytes()), "where 1 queues");
        refused(&with(HEADER_LEN - 3, &[7]), "not 0 or 1");
        refused(&with(HEADER_LEN - 7, &4u32.to_le_bytes()), "bits no device");
        refused(&with(HEADER_LEN, &3u16.to_le_bytes()), "3 entries");
        refused(&with(HEADER_LEN, &0u16.to_le_bytes()), "0 entries");
        refused(&with(HEADER_LEN + 2, &[2]), "not 0 or 1");
        refused(&vec![0u8; b.len()], "magic");
        // Garbage of many lengths, behind the right magic too: refused, never a panic.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let mut g: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = TransportState::decode(&g);
            if g.len() >= 10 {
                g[..8].copy_from_slice(&MAGIC);
                g[8..10].copy_from_slice(&VERSION.to_le_bytes());
                let _ = TransportState::decode(&g);
            }
        }
    }

    /// Every one-byte change of a valid state: decoded and, where it decodes, restored into a
    /// device — refused or restored, never a panic.
    #[test]
    fn no_one_byte_change_of_a_state_panics_decode_or_restore() {
        let b = dummy_state().encode();
        let mut restored = 0;
        for at in 0..b.len() {
            for v in [0x00, 0x01, 0x80, 0xff, b[at] ^ 0x04] {
                let mut c = b.clone();
                c[at] = v;
                if let Ok(s) = TransportState::decode(&c) {
                    if restore_dummy(&s).0.is_ok() {
                        restored += 1;
                    }
                }
            }
        }
        assert!(
            restored > 0,
            "no change was restorable: the test tests nothing"
        );
    }

    /// A state that is not this device's, or whose queues do not fit it or guest memory.
    #[test]
    fn restore_refuses_a_state_that_is_not_the_devices() {
        let (t, activations) = restore_dummy(&dummy_state());
        let mut t = t.unwrap();
        assert_eq!(activations.load(Ordering::SeqCst), 1, "not started");
        assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), RUNNING);
        let refused = |change: &dyn Fn(&mut TransportState), why: &str| {
            let mut s = dummy_state();
            change(&mut s);
            let (t, activations) = restore_dummy(&s);
            let e = t
                .err()
                .unwrap_or_else(|| panic!("restored; wanted {why:?}"));
            let e = e.to_string();
            assert!(e.contains(why), "{e:?} does not say {why:?}");
            assert!(!e.contains('\n'), "{e:?}");
            assert_eq!(activations.load(Ordering::SeqCst), 0, "{why}: started");
        };
        refused(&|s| s.device_id = 1, "restored into virtio-blk");
        refused(&|s| s.queues.push(s.queues[0]), "2 queues saved");
        refused(&|s| s.queues.clear(), "0 queues saved");
        refused(&|s| s.queues[0].size = 32, "at most 16");
        refused(&|s| s.driver_features |= 1 << 5, "does not offer");
        refused(&|s| s.queues[0].desc_table += 8, "queue 0");
        refused(&|s| s.queues[0].used_ring = 1 << 32, "outside guest memory");
        refused(&|s| s.queues[0].ready = false, "not ready");
        // Not running: nothing starts. Needs a reset: it still does, and nothing starts.
        let mut s = dummy_state();
        s.status &= !VIRTIO_CONFIG_S_DRIVER_OK;
        let (t, activations) = restore_dummy(&s);
        assert!(!t.unwrap().is_active());
        assert_eq!(activations.load(Ordering::SeqCst), 0);
        let mut s = dummy_state();
        s.needs_reset = true;
        let (t, activations) = restore_dummy(&s);
        let mut t = t.unwrap();
        assert!(!t.is_active());
        assert_eq!(activations.load(Ordering::SeqCst), 0);
        assert_ne!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
    }

    /// A network card saved with receive buffers waiting, one frame sent and one offered but not
    /// sent, restored on a new tap with the same MAC: the second frame (only) goes out without
    /// a notification, and
    /// a frame from the host lands in a buffer the driver offered before the save.
    #[test]
    fn a_network_card_restored_on_a_new_tap_sends_and_receives_on_the_saved_queues() {
        in_new_netns(|| {
            // No IPv6 on new interfaces: its router solicitations would be frames too.
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
            let mem = memory();
            let rx = Ring::new(&mem, 0x1000, 16);
            let tx = Ring::new(&mem, 0x8000, 16);
            let old_tap = Tap::create("isolab-vs0").unwrap();
            old_tap.set_up().unwrap();
            let card = Box::new(Net::new(&old_tap, MAC).unwrap());
            let mut t = MmioTransport::new(card, mem.clone(), eventfd(), Notify::Exit).unwrap();
            assert_eq!(drive(&mut t, LINUX, &[rx.layout(), tx.layout()]) & 0xf, 0xf);
            rx.desc(0, 0x20_0000, 1526, W, 0);
            rx.desc(1, 0x21_0000, 1526, W, 0);
            rx.offer(0);
            rx.offer(1);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
            // One frame sent before the save, one offered and not yet sent.
            mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x10_0000))
                .unwrap();
            let first = frame(0x41, 100);
            mem.write_slice(&first, GuestAddress(0x11_0000)).unwrap();
            tx.desc(0, 0x10_0000, VNET_HDR_LEN as u32, N, 1);
            tx.desc(1, 0x11_0000, first.len() as u32, 0, 0);
            tx.offer(0);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
            assert!(wait(|| tx.used_idx() == 1), "the first frame never left");
            let f = frame(0x42, 100);
            mem.write_slice(&f, GuestAddress(0x12_0000)).unwrap();
            tx.desc(2, 0x10_0000, VNET_HDR_LEN as u32, N, 3);
            tx.desc(3, 0x12_0000, f.len() as u32, 0, 0);
            tx.offer(2);
            let state = t.save().unwrap();
            let q = state.queues[1];
            assert_eq!(
                (q.next_avail, q.next_used),
                (1, 1),
                "the thread's positions"
            );
            assert_eq!(state.queues[0].next_avail, 0, "a buffer taken and kept");
            drop(t);
            drop(old_tap);

            let tap = Tap::create("isolab-vs1").unwrap();
            tap.set_up().unwrap();
            let index = tap.index().unwrap();
            let sock = packet_socket(index, true);
            let card = Box::new(Net::new(&tap, MAC).unwrap());
            let t =
                MmioTransport::restore(card, mem.clone(), eventfd(), Notify::Exit, &state).unwrap();
            let mut seen = Vec::new();
            assert!(
                wait(|| {
                    seen.extend(frames_seen(&sock));
                    !seen.is_empty()
                }),
                "the offered frame never left"
            );
            assert_eq!(
                seen,
                vec![f],
                "the frame sent before the save was sent again"
            );
            assert!(wait(|| tx.used_idx() == 2));
            assert_eq!(tx.used(1), (2, 0));
            let g = frame(0x17, 200);
            send_to_guest(&sock, index, &g);
            assert!(
                wait(|| rx.used_idx() == 1),
                "the frame never reached the guest"
            );
            assert_eq!(rx.used(0), (0, (VNET_HDR_LEN + g.len()) as u32));
            let mut got = vec![0u8; g.len()];
            mem.read_slice(&mut got, GuestAddress(0x20_0000 + VNET_HDR_LEN as u64))
                .unwrap();
            assert_eq!(got, g);
            assert_eq!(Counters::get(&t.counters().notifications), 0);
        });
    }
}
