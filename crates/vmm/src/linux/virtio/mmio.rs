//! The virtio-mmio transport, version 2 (virtio 1.x, "modern"): the register file through which
//! a driver finds a device, agrees on features, hands over its queues and is told of interrupts.
//!
//! ```text
//!  offset  register                 driver   what it is for
//!  0x000   MagicValue   "virt"      read     is anything here?
//!  0x004   Version      2           read     the modern layout (1 was the legacy one)
//!  0x008   DeviceID     1 net, 2 blk read    which driver binds (0: no device)
//!  0x010   DeviceFeatures           read     32 of the device's feature bits, chosen by ↓
//!  0x014   DeviceFeaturesSel        write    0: bits 0–31, 1: bits 32–63
//!  0x020   DriverFeatures           write    the bits the driver accepts, chosen by ↓
//!  0x024   DriverFeaturesSel        write
//!  0x030   QueueSel                 write    which queue the next registers are about
//!  0x034   QueueNumMax              read     its largest size (0: no such queue)
//!  0x038   QueueNum                 write    the size the driver chose (a power of 2)
//!  0x044   QueueReady               r/w      1: the queue's addresses are set, use it
//!  0x050   QueueNotify              write    "look at queue n" (KVM's ioeventfd listens here)
//!  0x060   InterruptStatus          read     bit 0: used buffers, bit 1: configuration change
//!  0x064   InterruptACK             write    the bits the handler has seen
//!  0x070   Status                   r/w      the driver's progress, see below; 0 resets
//!  0x080   QueueDescLow/High        write    guest-physical address of the descriptor table
//!  0x090   QueueDriverLow/High      write    … of the available ring
//!  0x0a0   QueueDeviceLow/High      write    … of the used ring
//!  0x0fc   ConfigGeneration         read     changes when the configuration space does
//!  0x100   configuration space      r/w      the device's own: a disk's capacity, a NIC's MAC
//! ```
//!
//! **Status** records how far the driver got, one bit at a time: `ACKNOWLEDGE` (1: "I see a
//! device"), `DRIVER` (2: "I can drive it"), `FEATURES_OK` (8: "these features" — the device
//! refuses by leaving the bit clear when the driver asked for something it does not offer, or
//! did not accept `VIRTIO_F_VERSION_1`, which every modern device requires), `DRIVER_OK` (4: the
//! queues are set up, go). Only then does the device start its thread ([`crate::linux::virtio::Worker`]).
//! `FAILED` (128) is the driver giving up; `DEVICE_NEEDS_RESET` (64) the device giving up: it
//! cannot start as set up, or its thread found a queue it cannot trust (see the parent module);
//! it then serves nothing more and raises a configuration-change interrupt so the driver looks.
//! Writing 0 **resets** the device: it stops, forgets features and queues, and is as new. The
//! vCPU thread that writes the 0 waits for the device's thread only [`crate::linux::virtio::STOP_WAIT`]: a
//! thread stuck in a request is left to end by itself, and until it has, the reset is not
//! complete — `Status` reads `DEVICE_NEEDS_RESET`, not 0, and `DRIVER_OK` is refused.
//!
//! Every access is one MMIO exit to the vCPU thread ([`crate::linux::machine`] counts them per
//! device: `exits_mmio_blk`, `exits_mmio_net`). A driver touches these registers when it probes
//! and in each interrupt handler (status, ack); its I/O itself goes through the rings. A guest
//! writing nonsense gets nonsense back or is ignored — never a VMM crash.

use super::{
    Activation, Counters, Interrupt, Notify, VirtioDevice, VirtioError, Worker, STOP_WAIT,
};
use std::sync::Arc;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// "virt", little-endian: the first thing a driver reads.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern register layout.
pub const VERSION: u32 = 2;
/// The vendor ID the lab's devices report (drivers ignore it): "isol".
pub const VENDOR: u32 = u32::from_le_bytes(*b"isol");

/// One virtio-mmio device: the registers, the queues being set up, and the device behind them.
///
/// (Its fields are the parent module's to see: [`super::state`] saves and restores them.)
pub struct MmioTransport {
    pub(super) device: Box<dyn VirtioDevice>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Interrupt,
    pub(super) counters: Arc<Counters>,
    pub(super) queues: Vec<Queue>,
    pub(super) notify: Vec<EventFd>,
    pub(super) notify_mode: Notify,
    pub(super) device_features_sel: u32,
    pub(super) driver_features_sel: u32,
    pub(super) driver_features: u64,
    pub(super) queue_sel: u32,
    pub(super) status: u32,
    pub(super) config_generation: u32,
    pub(super) worker: Option<Worker>,
    /// The thread of before the last reset (or a failed save), if it did not end within
    /// [`STOP_WAIT`].
    pub(super) lingering: Option<Worker>,
}

impl MmioTransport {
    /// `device` behind a fresh register file, raising its interrupt through `irqfd`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irqfd: EventFd,
        notify_mode: Notify,
    ) -> Result<MmioTransport, VirtioError> {
        let counters = Arc::new(Counters::default());
        let queues = new_queues(device.as_ref())?;
        let notify = (0..queues.len())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::io("eventfd")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            interrupt: Interrupt::new(irqfd, Arc::clone(&counters)),
            device,
            mem,
            counters,
            queues,
            notify,
            notify_mode,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            worker: None,
            lingering: None,
        })
    }

    /// Which device this is.
    pub fn kind(&self) -> crate::linux::virtio::Kind {
        self.device.kind()
    }

    /// Each queue's notification eventfd, in queue order: what the VMM registers with
    /// `KVM_IOEVENTFD` (datamatch = the queue index) in [`Notify::Ioeventfd`] mode.
    pub fn notify_events(&self) -> &[EventFd] {
        &self.notify
    }

    /// How notifications arrive.
    pub fn notify_mode(&self) -> Notify {
        self.notify_mode
    }

    /// The device's traffic counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The status bits: the driver's, and `DEVICE_NEEDS_RESET` when the device has given up or
    /// its previous thread has not ended yet.
    pub fn status(&mut self) -> u32 {
        if self.interrupt.reset_asked() || self.still_stopping() {
            self.status | VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// True once the device's thread runs.
    pub fn is_active(&self) -> bool {
        self.worker.is_some()
    }

    /// The CPU time the device's threads have used: those ended, and the running one so far.
    pub fn device_cpu_time(&self) -> std::time::Duration {
        let ended = Counters::get(&self.counters.thread_cpu_ns);
        let running = self.worker.as_ref().and_then(Worker::cpu_time);
        std::time::Duration::from_nanos(ended) + running.unwrap_or_default()
    }

    /// Stop the device's thread, waiting for it at most [`STOP_WAIT`]; one that does not end
    /// by then is kept aside until it does.
    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            if !worker.stop(STOP_WAIT) {
                self.counters.end(format!(
                    "the device thread did not stop within {STOP_WAIT:?} of a reset"
                ));
                self.lingering = Some(worker);
            }
        }
    }

    /// True while the thread of before the last reset is still running.
    pub(super) fn still_stopping(&mut self) -> bool {
        match &self.lingering {
            Some(worker) if worker.has_ended() => {
                // Ended: dropping it joins it at once.
                self.lingering = None;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// The driver reads `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= VIRTIO_MMIO_CONFIG as u64 {
            data.fill(0);
            self.device
                .read_config(offset - VIRTIO_MMIO_CONFIG as u64, data);
            return;
        }
        // The common registers are 32 bits wide and must be read whole.
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let features = self.device.features();
        let value: u32 = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.kind().id(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => features as u32,
                1 => (features >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size() as u32),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready() as u32),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status(),
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            // No shared memory regions: their length reads as "none" (all ones).
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// The driver writes `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        // The configuration spaces of blk and net are read-only for the features the lab offers
        // (a disk's write-cache switch needs VIRTIO_BLK_F_CONFIG_WCE): writes there vanish.
        if offset >= VIRTIO_MMIO_CONFIG as u64 {
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        // Queue set-up is allowed between FEATURES_OK and DRIVER_OK, on a queue not yet ready.
        let setting_up = self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        let set_queue = |t: &mut MmioTransport, f: &dyn Fn(&mut Queue)| {
            if setting_up {
                if let Some(q) = t.selected_queue().filter(|q| !q.ready()) {
                    f(q);
                }
            }
        };
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            // Only while the driver is negotiating: after FEATURES_OK they are fixed.
            VIRTIO_MMIO_DRIVER_FEATURES
                if self.status & VIRTIO_CONFIG_S_DRIVER != 0
                    && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 =>
            {
                let (keep, shift) = match self.driver_features_sel {
                    0 => (!0xffff_ffffu64, 0),
                    1 => (0xffff_ffff, 32),
                    _ => return,
                };
                self.driver_features = (self.driver_features & keep) | (value as u64) << shift;
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            // virtio-queue ignores sizes that are not a power of two up to the maximum.
            VIRTIO_MMIO_QUEUE_NUM => set_queue(self, &|q| q.set_size(value as u16)),
            VIRTIO_MMIO_QUEUE_READY if setting_up => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW => {
                set_queue(self, &|q| q.set_desc_table_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                set_queue(self, &|q| q.set_desc_table_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => {
                set_queue(self, &|q| q.set_avail_ring_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                set_queue(self, &|q| q.set_avail_ring_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_USED_LOW => {
                set_queue(self, &|q| q.set_used_ring_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_USED_HIGH => {
                set_queue(self, &|q| q.set_used_ring_address(None, Some(value)))
            }
            // Reached only in Notify::Exit mode (an ioeventfd catches the write inside KVM):
            // the vCPU thread wakes the device's thread itself.
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                if let Some(event) = self.notify.get(value as usize) {
                    let _ = event.write(1);
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => self.set_status(value),
            _ => {}
        }
    }

    /// The driver writes `Status`.
    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = value;
        // FEATURES_OK stays clear when the driver asked for what the device does not offer,
        // or for a legacy device (no VERSION_1): the driver reads it back and gives up.
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 && old & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            let offered = self.device.features();
            let version_1 = self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0;
            if self.driver_features & !offered != 0 || !version_1 {
                new &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if new & VIRTIO_CONFIG_S_FAILED != 0 {
            // The driver gave up: stop serving.
            self.stop_worker();
        }
        let ready = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK;
        if new & ready == ready && old & VIRTIO_CONFIG_S_DRIVER_OK == 0 {
            if let Err(e) = self.activate(false) {
                // The device cannot run as set up: it asks the driver for a reset, and the run
                // says why.
                self.counters.end(format!("not started: {e}"));
                self.status = new;
                self.interrupt.ask_for_reset();
                return;
            }
        }
        self.status = new;
    }

    /// `DRIVER_OK`: hand the queues to the device's thread (`resume`: restored from a
    /// snapshot, see [`Activation::resume`]).
    pub(super) fn activate(&mut self, resume: bool) -> Result<(), VirtioError> {
        // A driver that clears DRIVER_OK and sets it again gets a new thread, never two.
        self.stop_worker();
        if self.still_stopping() {
            return Err(VirtioError::StillStopping);
        }
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter_mut().enumerate() {
            if !q.ready() {
                return Err(VirtioError::QueueNotReady(i));
            }
            if !q.is_valid(&self.mem) {
                return Err(VirtioError::BadQueue(i));
            }
            q.set_event_idx(event_idx);
            // The thread gets its own copy of the queue's state; the registers keep theirs.
            queues.push(Queue::try_from(q.state()).map_err(|_| VirtioError::BadQueue(i))?);
        }
        let notify = self
            .notify
            .iter()
            .map(|e| e.try_clone().map_err(VirtioError::io("dup eventfd")))
            .collect::<Result<Vec<_>, _>>()?;
        let worker = self.device.activate(Activation {
            mem: self.mem.clone(),
            queues,
            notify,
            interrupt: self.interrupt.clone(),
            features: self.driver_features,
            counters: Arc::clone(&self.counters),
            resume,
        })?;
        self.worker = Some(worker);
        Ok(())
    }

    /// Status 0: stop the device and forget everything the driver set up.
    fn reset(&mut self) {
        self.stop_worker();
        if let Ok(queues) = new_queues(self.device.as_ref()) {
            self.queues = queues;
        }
        for event in &self.notify {
            crate::linux::virtio::drain(event);
        }
        self.interrupt.clear();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
    }
}

fn new_queues(device: &dyn VirtioDevice) -> Result<Vec<Queue>, VirtioError> {
    device
        .queue_max_sizes()
        .iter()
        .map(|&max| Queue::new(max).map_err(VirtioError::Queue))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::linux::virtio::Kind;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vm_memory::GuestAddress;

    /// A device that counts its activations and does nothing.
    pub(crate) struct Dummy {
        pub(crate) activations: Arc<AtomicUsize>,
    }

    impl VirtioDevice for Dummy {
        fn kind(&self) -> Kind {
            Kind::Block
        }
        fn features(&self) -> u64 {
            1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << 9
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as usize + i) as u8;
            }
        }
        fn activate(&mut self, a: Activation) -> Result<Worker, VirtioError> {
            assert_eq!(a.queues.len(), 1);
            self.activations.fetch_add(1, Ordering::SeqCst);
            Worker::spawn("dummy".into(), &a.interrupt, |_stop| Ok(()))
        }
    }

    pub(crate) fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    pub(crate) fn transport(mem: &GuestMemoryMmap) -> (MmioTransport, Arc<AtomicUsize>) {
        let activations = Arc::new(AtomicUsize::new(0));
        let device = Dummy {
            activations: Arc::clone(&activations),
        };
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (
            MmioTransport::new(Box::new(device), mem.clone(), irq, Notify::Exit).unwrap(),
            activations,
        )
    }

    pub(crate) fn rd(t: &mut MmioTransport, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        t.read(reg as u64, &mut b);
        u32::from_le_bytes(b)
    }

    pub(crate) fn wr(t: &mut MmioTransport, reg: u32, value: u32) {
        t.write(reg as u64, &value.to_le_bytes());
    }

    /// Where a queue's three parts are in guest memory, and its size.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Layout {
        pub(crate) desc: u64,
        pub(crate) avail: u64,
        pub(crate) used: u64,
        pub(crate) size: u16,
    }

    impl Layout {
        /// A queue of `size` at `start`: the descriptor table, then the available ring (flags,
        /// idx, `size` heads, used_event), then the used ring (flags, idx, `size` elements,
        /// avail_event) at the next 4-byte boundary, as the split ring's alignment rules ask.
        pub(crate) fn at(start: u64, size: u16) -> Layout {
            let avail = start + 16 * size as u64;
            let used = (avail + 6 + 2 * size as u64).next_multiple_of(4);
            Layout {
                desc: start,
                avail,
                used,
                size,
            }
        }
    }

    /// What Linux's virtio_mmio driver does, up to DRIVER_OK, for queues laid out as `queues`.
    pub(crate) fn drive(t: &mut MmioTransport, features: u64, queues: &[Layout]) -> u32 {
        wr(t, VIRTIO_MMIO_STATUS, 0);
        wr(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        wr(
            t,
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        wr(t, VIRTIO_MMIO_STATUS, s);
        if rd(t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            return rd(t, VIRTIO_MMIO_STATUS);
        }
        for (i, q) in queues.iter().enumerate() {
            wr(t, VIRTIO_MMIO_QUEUE_SEL, i as u32);
            let max = rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX);
            assert!(max >= q.size as u32, "queue {i} max {max}");
            wr(t, VIRTIO_MMIO_QUEUE_NUM, q.size as u32);
            let split = |a: u64| (a as u32, (a >> 32) as u32);
            let (lo, hi) = split(q.desc);
            wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, lo);
            wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, hi);
            let (lo, hi) = split(q.avail);
            wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, lo);
            wr(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, hi);
            let (lo, hi) = split(q.used);
            wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, lo);
            wr(t, VIRTIO_MMIO_QUEUE_USED_HIGH, hi);
            wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
        }
        wr(t, VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
        rd(t, VIRTIO_MMIO_STATUS)
    }

    const MODERN: u64 = 1 << VIRTIO_F_VERSION_1;

    #[test]
    fn a_driver_finds_a_modern_device_and_its_features() {
        let mem = memory();
        let (mut t, _) = transport(&mem);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_ID), 2);
        wr(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 1 << 29 | 1 << 9);
        wr(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_DEVICE_FEATURES),
            1,
            "VERSION_1 is bit 32"
        );
        wr(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no second queue");
        // Configuration space, byte-wide reads included.
        let mut b = [0u8; 1];
        t.read(0x102, &mut b);
        assert_eq!(b, [2]);
        // A register read of the wrong width reads zeros.
        let mut w = [0xffu8; 2];
        t.read(0, &mut w);
        assert_eq!(w, [0, 0]);
    }

    #[test]
    fn negotiation_refuses_unoffered_and_legacy_features() {
        let mem = memory();
        let q = Layout::at(0x1000, 16);
        let (mut t, activations) = transport(&mem);
        // Bit 5 is not offered.
        let status = drive(&mut t, MODERN | 1 << 5, &[q]);
        assert_eq!(status & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        // Without VERSION_1: a legacy driver.
        let status = drive(&mut t, 1 << 9, &[q]);
        assert_eq!(status & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        assert_eq!(activations.load(Ordering::SeqCst), 0);
        // What is offered is accepted, and DRIVER_OK starts the device.
        let status = drive(&mut t, MODERN | 1 << VIRTIO_RING_F_EVENT_IDX, &[q]);
        assert_eq!(status & 0xf, 0xf, "{status:#x}");
        assert_eq!(activations.load(Ordering::SeqCst), 1);
        assert!(t.is_active());
        assert_eq!(t.driver_features(), MODERN | 1 << VIRTIO_RING_F_EVENT_IDX);
        // Features are fixed after FEATURES_OK.
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0);
        assert_eq!(t.driver_features(), MODERN | 1 << VIRTIO_RING_F_EVENT_IDX);
    }

    #[test]
    fn queue_registers_are_taken_only_while_setting_up() {
        let mem = memory();
        let q = Layout::at(0x1000, 16);
        let (mut t, _) = transport(&mem);
        // Before FEATURES_OK the queue cannot be made ready.
        wr(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
        drive(&mut t, MODERN, &[q]);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
        // After DRIVER_OK the queue's addresses cannot move under the device.
        wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
        assert_eq!(t.queues[0].desc_table(), q.desc);
    }

    #[test]
    fn a_queue_outside_guest_memory_makes_the_device_ask_for_a_reset() {
        let mem = memory();
        let (mut t, activations) = transport(&mem);
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        // A driver that sets DRIVER_OK without making queue 0 ready.
        drive(&mut t, MODERN, &[]);
        assert_eq!(activations.load(Ordering::SeqCst), 0);
        assert_ne!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_CONFIG
        );
        // A queue whose used ring lies past the end of RAM.
        wr(&mut t, VIRTIO_MMIO_STATUS, 0);
        wr(
            &mut t,
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, s);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 16);
        wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x1000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_USED_HIGH, 1);
        wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
        assert_ne!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
        assert!(!t.is_active());
    }

    #[test]
    fn reset_forgets_everything_and_stops_the_device() {
        let mem = memory();
        let q = Layout::at(0x1000, 16);
        let (mut t, activations) = transport(&mem);
        drive(&mut t, MODERN, &[q]);
        assert!(t.is_active());
        t.interrupt.used_buffers();
        assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 1);
        wr(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, 1);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        t.interrupt.used_buffers();
        wr(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert!(!t.is_active());
        assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
        assert_eq!(t.driver_features(), 0);
        // And it can be driven again.
        drive(&mut t, MODERN, &[q]);
        assert_eq!(activations.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_notify_exit_signals_the_queue_eventfd() {
        let mem = memory();
        let (mut t, _) = transport(&mem);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 9);
        assert_eq!(t.notify_events()[0].read().unwrap(), 2);
    }
}
