//! A hostile guest: the devices driven through their MMIO registers, as a driver would, with
//! rings and requests no honest driver writes.
//!
//! A VMM's devices read memory the guest controls: every index, address, length and flag in the
//! rings is the guest's to choose, and a guest kernel is as free to lie there as any program.
//! The device must never crash, hang, spin, or touch the host's data for it: the worst a guest
//! gets is an error status, a dropped request, or a device that asks for a reset
//! (`DEVICE_NEEDS_RESET` in `Status`, with a configuration-change interrupt) and serves nothing
//! more until it gets one.
//!
//! Each test builds the rings in synthetic guest memory ([`Ring`]), drives the transport's
//! registers from the test's thread (the vCPU's part: `Notify::Exit` mode, so a `QueueNotify`
//! write signals the device's eventfd), and lets the device's own thread serve. Every wait has a
//! deadline, so a device that spins or hangs fails its test instead of hanging the suite: the
//! watchdog runs the step on a thread of its own and gives up on it when the time is over (the
//! stuck thread is left behind; the test binary's exit ends it).

use crate::linux::virtio::block::{status_at, Block, SECTOR};
use crate::linux::virtio::mmio::tests::{drive, rd, wr, Layout};
use crate::linux::virtio::mmio::MmioTransport;
use crate::linux::virtio::net::Net;
use crate::linux::virtio::{serve_queue, Counters, Notify, Served, Stop, BUDGET};
use isolab_resources::network::tap::{in_new_netns, Tap, VNET_HDR_LEN};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_INT_CONFIG,
    VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_STATUS,
};
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// What a Linux driver accepts of the lab's devices' ring features.
const LINUX: u64 =
    1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_RING_F_INDIRECT_DESC;
/// How long a step may take before the test calls the device hung.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long a reset may keep the vCPU: the transport's own wait, with room for a loaded host.
const RESET_BOUND: Duration = Duration::from_secs(3);

const N: u16 = VRING_DESC_F_NEXT as u16;
const W: u16 = VRING_DESC_F_WRITE as u16;

/// Run `f` on a thread of its own and wait at most `limit` for it: what it returned and how
/// long it took, or `None` if it did not finish (the thread is left behind, still stuck).
fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<(T, Duration)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok().map(|v| (v, started.elapsed()))
}

/// Wait until `ready` holds, at most `limit`; whether it did.
fn until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Reset the device (the driver writes 0 to `Status`) under the watchdog: the transport back
/// and how long the write kept the "vCPU", or `None` if it never returned.
fn reset(t: MmioTransport) -> Option<(MmioTransport, Duration)> {
    within(DEADLINE, move || {
        let mut t = t;
        wr(&mut t, VIRTIO_MMIO_STATUS, 0);
        t
    })
}

fn needs_reset(t: &mut MmioTransport) -> bool {
    rd(t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET != 0
}

/// One queue as the driver sees it: the driver's side of the rings, written by hand here, to
/// say what no driver says. (virtio-queue's `MockSplitQueue` lays the used ring over the second
/// half of the available ring — its `end()` counts entries, not bytes — so the tests lay the
/// rings out themselves.)
pub(crate) struct Ring<'m> {
    mem: &'m GuestMemoryMmap,
    layout: Layout,
}

impl<'m> Ring<'m> {
    /// A queue of `size` at `at`, its rings zeroed.
    pub(crate) fn new(mem: &'m GuestMemoryMmap, at: u64, size: u16) -> Ring<'m> {
        let layout = Layout::at(at, size);
        let end = layout.used + 6 + 8 * size as u64;
        mem.write_slice(&vec![0u8; (end - at) as usize], GuestAddress(at))
            .unwrap();
        Ring { mem, layout }
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    fn size(&self) -> u16 {
        self.layout.size
    }

    fn u16_at(&self, at: u64) -> u16 {
        self.mem.read_obj::<u16>(GuestAddress(at)).unwrap()
    }

    /// Descriptor `i` of the table.
    pub(crate) fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
        self.mem
            .write_obj(d, GuestAddress(self.layout.desc + 16 * i as u64))
            .unwrap();
    }

    pub(crate) fn avail_idx(&self) -> u16 {
        self.u16_at(self.layout.avail + 2)
    }

    /// Write `avail.idx` (a release: every ring entry written before is seen first).
    pub(crate) fn set_avail_idx(&self, idx: u16) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(idx, GuestAddress(self.layout.avail + 2))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Make the chain at `head` available (the ring entry first, then the index).
    pub(crate) fn offer(&self, head: u16) {
        let idx = self.avail_idx();
        let slot = self.layout.avail + 4 + 2 * (idx % self.size()) as u64;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.set_avail_idx(idx.wrapping_add(1));
    }

    pub(crate) fn used_idx(&self) -> u16 {
        self.u16_at(self.layout.used + 2)
    }

    /// The `n`-th used entry: (head, length).
    pub(crate) fn used(&self, n: u16) -> (u32, u32) {
        let at = self.layout.used + 4 + 8 * (n % self.size()) as u64;
        let id = self.mem.read_obj::<u32>(GuestAddress(at)).unwrap();
        let len = self.mem.read_obj::<u32>(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    /// `avail_event`: the index at which the device wants the next notification.
    pub(crate) fn avail_event(&self) -> u16 {
        self.u16_at(self.layout.used + 4 + 8 * self.size() as u64)
    }

    /// Forget the rings, as a driver does when it sets a device up again after a reset.
    fn clear(&self) {
        self.set_avail_idx(0);
        self.mem
            .write_obj(0u16, GuestAddress(self.layout.used + 2))
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// virtio-blk
// ---------------------------------------------------------------------------------------------

const HEADER: u64 = 0x10_0000;
const STATUS: u64 = 0x10_1000;
const DATA: u64 = 0x20_0000;
/// Outside the 4 MiB of the tests' guest RAM.
const OUTSIDE: u64 = 64 << 20;

/// A disk file of `bytes` (sparse: only what is written takes space), each of its first
/// 2048 sectors filled with its own number, so any stray write shows.
struct Disk {
    path: PathBuf,
    before: Vec<u8>,
}

impl Disk {
    fn new(name: &str, bytes: u64) -> Disk {
        let path =
            std::env::temp_dir().join(format!("isolab-hostile-{name}-{}.img", std::process::id()));
        let mut f = File::create(&path).unwrap();
        f.set_len(bytes).unwrap();
        let mut before = vec![0u8; 1 << 20];
        for (i, s) in before.chunks_mut(SECTOR as usize).enumerate() {
            s.fill(i as u8);
        }
        f.write_all(&before).unwrap();
        f.sync_all().unwrap();
        Disk { path, before }
    }

    /// True while the first MiB is as it was made.
    fn untouched(&self) -> bool {
        let mut f = File::open(&self.path).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut now = vec![0u8; self.before.len()];
        f.read_exact(&mut now).unwrap();
        now == self.before
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A disk behind the MMIO transport, driven to `DRIVER_OK` with one queue of `size` at 0x1000.
fn blk_guest(disk: &Disk, mem: &GuestMemoryMmap, ring: &Ring) -> MmioTransport {
    let block = Block::open(&disk.path, false).unwrap();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut t = MmioTransport::new(Box::new(block), mem.clone(), irq, Notify::Exit).unwrap();
    assert_eq!(drive(&mut t, LINUX, &[ring.layout()]) & 0xf, 0xf);
    t
}

/// The request header at `HEADER`, and a status byte of 0xff the device must overwrite.
fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HEADER)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
}

/// Offer the chain at `head`, notify, and wait for the device to use it: its used length, or
/// `None` if nothing came back in time.
fn submit(t: &mut MmioTransport, ring: &Ring, queue: u32, head: u16) -> Option<u32> {
    let before = ring.used_idx();
    ring.offer(head);
    wr(t, VIRTIO_MMIO_QUEUE_NOTIFY, queue);
    if !until(DEADLINE, || ring.used_idx() != before) {
        return None;
    }
    let (id, len) = ring.used(before);
    assert_eq!(id, head as u32, "the used entry names the chain");
    Some(len)
}

fn status(mem: &GuestMemoryMmap) -> u8 {
    status_at(mem, GuestAddress(STATUS)).unwrap()
}

/// The attack of the issue: `avail.idx` 1000 ahead of a 16-entry queue, then a notification.
/// virtio-queue refuses to pop from such a ring; a device that took "no chain" for "no work" and
/// "the index moved" for "more work" spun at 100% forever, and a reset (which joins the device's
/// thread) then hung the vCPU. The device asks for a reset instead, costs no CPU, and a reset
/// returns at once and leaves a working disk.
#[test]
fn an_avail_index_far_ahead_makes_the_disk_ask_for_a_reset_not_spin() {
    let disk = Disk::new("ahead", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    let cpu_before = t.device_cpu_time();
    ring.set_avail_idx(1000);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    std::thread::sleep(Duration::from_millis(300));
    let cpu = t.device_cpu_time() - cpu_before;
    let asked = needs_reset(&mut t);
    let config_irq = rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG != 0;
    let why = t.counters().ended();
    let reset = reset(t);
    eprintln!(
        "blk, avail.idx 1000 ahead: device thread CPU {cpu:?} in 300 ms; reset took {}",
        reset
            .as_ref()
            .map_or(format!("more than {DEADLINE:?} (hung)"), |r| format!(
                "{:?}",
                r.1
            ))
    );
    assert!(
        cpu < Duration::from_millis(30),
        "the device thread used {cpu:?} of CPU in 300 ms: it spins"
    );
    assert!(asked, "Status has no DEVICE_NEEDS_RESET");
    assert!(config_irq, "no configuration-change interrupt");
    assert!(
        why.as_deref().is_some_and(|w| w.contains("avail")),
        "{why:?}"
    );
    assert_eq!(ring.used_idx(), 0, "nothing was used");
    let (mut t, took) = reset.expect("the reset never returned: the vCPU would hang");
    assert!(took < RESET_BOUND, "the reset took {took:?}");
    assert!(!needs_reset(&mut t));
    // The driver sets the device up again, and the disk works.
    ring.clear();
    assert_eq!(drive(&mut t, LINUX, &[ring.layout()]) & 0xf, 0xf);
    header(&mem, VIRTIO_BLK_T_IN, 5);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, DATA, 512, N | W, 2);
    ring.desc(2, STATUS, 1, W, 0);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(513));
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(DATA)).unwrap(), 5);
}

/// A chain whose buffers add up to more than 4 GiB: virtio-queue ends such a chain where the
/// byte count would overflow its u32, so the device saw a chain cut short — the status byte in
/// the middle, the rest gone — read 4 GiB − 32 MiB from the disk into guest memory and reported
/// a used length of 4,261,412,865 for a chain the driver never made. A chain that does not end
/// where the driver ended it is refused whole: returned with nothing written.
#[test]
fn a_chain_over_4_gib_is_refused_not_cut_short() {
    let disk = Disk::new("4gib", 4 << 30);
    // The data buffers all point at the same 4 MiB of guest RAM, above the rings.
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    const BIG: u64 = 4 << 20;
    const TABLE: u64 = 0x18_0000;
    mem.write_slice(&[0x5a; 4096], GuestAddress(BIG)).unwrap();
    header(&mem, VIRTIO_BLK_T_IN, 0);
    // An indirect table: header, 1016 buffers of 4 MiB (4 GiB − 32 MiB), the status byte, and
    // one more buffer of 4 GiB − 1 that takes the chain past what a u32 counts.
    let mut table = vec![Descriptor::new(HEADER, 16, N, 1)];
    for i in 0..1016u16 {
        table.push(Descriptor::new(BIG, BIG as u32, N | W, i + 2));
    }
    table.push(Descriptor::new(STATUS, 1, N | W, 1018));
    table.push(Descriptor::new(BIG, u32::MAX, W, 0));
    for (i, d) in table.iter().enumerate() {
        mem.write_obj(RawDescriptor::from(*d), GuestAddress(TABLE + 16 * i as u64))
            .unwrap();
    }
    ring.desc(
        0,
        TABLE,
        16 * table.len() as u32,
        VRING_DESC_F_INDIRECT as u16,
        0,
    );
    let used = submit(&mut t, &ring, 0, 0);
    assert_eq!(used, Some(0), "the used length must be what was written");
    assert_eq!(status(&mem), 0xff, "no status written into a cut chain");
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(BIG)).unwrap(),
        0x5a,
        "the guest's buffers untouched"
    );
    assert_eq!(Counters::get(&t.counters().malformed), 1);
}

/// A descriptor whose `next` is itself: the chain never ends. virtio-queue stops following it
/// after as many descriptors as the queue holds; the device must not then serve the 16
/// descriptors it was given as if they were the request.
#[test]
fn a_descriptor_loop_is_refused_not_served() {
    let disk = Disk::new("loop", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    header(&mem, VIRTIO_BLK_T_IN, 3);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, DATA, 512, N | W, 1);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(0));
    let mut got = [0u8; 512];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, [0x5a; 512], "nothing read into the looping buffer");
    // A write whose chain loops through its data buffer: nothing reaches the disk.
    header(&mem, VIRTIO_BLK_T_OUT, 3);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, DATA, 512, N, 2);
    ring.desc(2, STATUS, 1, N | W, 1);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(0));
    assert_eq!(status(&mem), 0xff);
    // A `next` past the end of the table ends the chain as well.
    header(&mem, VIRTIO_BLK_T_IN, 3);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, DATA, 512, N | W, 200);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(0));
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, [0x5a; 512]);
    assert!(disk.untouched());
    assert_eq!(Counters::get(&t.counters().malformed), 3);
    assert!(
        !needs_reset(&mut t),
        "a bad chain is the request's error, not the queue's"
    );
}

/// Buffers outside guest RAM, or whose end wraps around the address space: the request fails
/// with IOERR (or is dropped when even the status byte is outside), and the disk keeps its bytes.
#[test]
fn out_of_range_addresses_get_an_error_and_leave_the_disk_alone() {
    let disk = Disk::new("range", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    let mut ask = |kind: u32, hdr: u64, data: u64, len: u32, data_flags: u16, status: u64| {
        header(&mem, kind, 2);
        ring.desc(0, hdr, 16, N, 1);
        ring.desc(1, data, len, N | data_flags, 2);
        ring.desc(2, status, 1, W, 0);
        let used = submit(&mut t, &ring, 0, 0);
        (used, status_at(&mem, GuestAddress(STATUS)).unwrap())
    };
    let ioerr = (Some(1), VIRTIO_BLK_S_IOERR as u8);
    // A data buffer outside RAM, either way.
    assert_eq!(ask(VIRTIO_BLK_T_IN, HEADER, OUTSIDE, 512, W, STATUS), ioerr);
    assert_eq!(
        ask(VIRTIO_BLK_T_OUT, HEADER, OUTSIDE, 512, 0, STATUS),
        ioerr
    );
    // One that starts in RAM and runs past its end.
    assert_eq!(
        ask(VIRTIO_BLK_T_OUT, HEADER, (4 << 20) - 512, 1024, 0, STATUS),
        ioerr
    );
    // One whose end wraps around 2^64.
    assert_eq!(
        ask(VIRTIO_BLK_T_OUT, HEADER, u64::MAX - 255, 512, 0, STATUS),
        ioerr
    );
    // The header outside RAM.
    assert_eq!(ask(VIRTIO_BLK_T_OUT, OUTSIDE, DATA, 512, 0, STATUS), ioerr);
    // The status byte outside RAM: nowhere to answer, the chain comes back empty.
    header(&mem, VIRTIO_BLK_T_OUT, 2);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, DATA, 512, N, 2);
    ring.desc(2, OUTSIDE, 1, W, 0);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(0));
    assert!(disk.untouched());
    assert!(!needs_reset(&mut t));
}

/// The header must be read-only for the device and 16 bytes long; a write-only, short or empty
/// one is refused with IOERR, and a write request with it reaches nothing.
#[test]
fn a_header_in_a_write_only_short_or_empty_buffer_is_refused() {
    let disk = Disk::new("header", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    mem.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
    for (len, flags) in [(16, N | W), (8, N), (0, N)] {
        header(&mem, VIRTIO_BLK_T_OUT, 1);
        ring.desc(0, HEADER, len, flags, 1);
        ring.desc(1, DATA, 512, N, 2);
        ring.desc(2, STATUS, 1, W, 0);
        assert_eq!(
            submit(&mut t, &ring, 0, 0),
            Some(1),
            "header {len} {flags:#x}"
        );
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8);
    }
    assert!(disk.untouched());
}

/// Sectors past the disk's end, and sectors whose byte offset (`sector × 512`) overflows a
/// u64 and would wrap to the start of the disk: IOERR, and the disk keeps every byte.
#[test]
fn huge_sectors_are_refused_and_the_disk_keeps_its_bytes() {
    let disk = Disk::new("sectors", 1 << 20);
    let sectors = (1u64 << 20) / SECTOR;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    mem.write_slice(&[0x77; 1024], GuestAddress(DATA)).unwrap();
    for sector in [
        sectors,
        sectors - 1,
        u64::MAX / SECTOR + 1,
        // × 512 wraps to exactly 0: the first sector, if the product were not checked.
        1 << 55,
        u64::MAX / SECTOR,
        u64::MAX,
    ] {
        for kind in [VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_IN] {
            let w = if kind == VIRTIO_BLK_T_IN { W } else { 0 };
            header(&mem, kind, sector);
            ring.desc(0, HEADER, 16, N, 1);
            ring.desc(1, DATA, 1024, N | w, 2);
            ring.desc(2, STATUS, 1, W, 0);
            assert_eq!(submit(&mut t, &ring, 0, 0), Some(1), "sector {sector}");
            assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR as u8, "sector {sector}");
        }
    }
    assert!(disk.untouched());
    let mut got = [0u8; 1024];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, [0x77; 1024], "no read landed either");
}

/// Chains of nothing: a status byte of no bytes, a lone empty descriptor, an indirect table of
/// no entries — returned empty; and a head outside the descriptor table, which the device cannot
/// even return (the used ring would name a descriptor that does not exist): the device asks for
/// a reset, without spinning, and works again after one.
#[test]
fn zero_length_chains_and_a_head_outside_the_table() {
    let disk = Disk::new("zero", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    header(&mem, VIRTIO_BLK_T_IN, 0);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, STATUS, 0, W, 0);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(0));
    ring.desc(0, HEADER, 0, 0, 0);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(0));
    ring.desc(0, 0x18_0000, 0, VRING_DESC_F_INDIRECT as u16, 0);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(0));
    // A data buffer of no bytes is a request of no bytes: done, nothing moved.
    header(&mem, VIRTIO_BLK_T_IN, 0);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, DATA, 0, N | W, 2);
    ring.desc(2, STATUS, 1, W, 0);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(1));
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK as u8);
    assert!(!needs_reset(&mut t));
    // Head 40 of a 16-entry table.
    ring.offer(40);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(
        until(DEADLINE, || needs_reset(&mut t)),
        "no DEVICE_NEEDS_RESET; the device thread: {:?}",
        t.counters().ended()
    );
    assert_ne!(
        rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG,
        0
    );
    wr(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    let (mut t, took) = reset(t).expect("the reset never returned");
    assert!(took < RESET_BOUND, "{took:?}");
    ring.clear();
    assert_eq!(drive(&mut t, LINUX, &[ring.layout()]) & 0xf, 0xf);
    header(&mem, 99, 0);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, STATUS, 1, W, 0);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(1));
    assert_eq!(status(&mem), VIRTIO_BLK_S_UNSUPP as u8);
}

/// A driver that keeps the queue full — every request it sees used, it offers again at once —
/// gives the device work for ever. The device serves a fixed number of chains per wake-up and
/// then looks at its eventfds again, so a reset in the middle of the flood is seen and answered.
#[test]
fn a_guest_that_keeps_the_queue_full_cannot_keep_the_device_from_a_reset() {
    let disk = Disk::new("flood", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 256);
    let mut t = blk_guest(&disk, &mem, &ring);
    // One request, offered over and over: read 64 KiB from the disk, some tens of microseconds
    // of work each, so the feeder has time to top the queue up.
    header(&mem, VIRTIO_BLK_T_IN, 0);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, DATA, 64 << 10, N | W, 2);
    ring.desc(2, STATUS, 1, W, 0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (served, reset) = std::thread::scope(|s| {
        // The feeder is the guest's other vCPU. It notifies after each top-up, as a driver
        // does (through the queue's eventfd, as KVM's ioeventfd would).
        let (ring, stop) = (&ring, &stop);
        let kick = t.notify_events()[0].try_clone().unwrap();
        let feeder = s.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut added = false;
                while ring.avail_idx().wrapping_sub(ring.used_idx()) < 256 {
                    ring.offer(0);
                    added = true;
                }
                if added {
                    let _ = kick.write(1);
                }
                std::hint::spin_loop();
            }
        });
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        let busy = until(DEADLINE, || ring.used_idx() > 300);
        let served = ring.used_idx();
        let reset = reset(t);
        // Stop feeding before any assertion: the scope waits for the feeder.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        feeder.join().unwrap();
        (busy.then_some(served), reset)
    });
    assert!(served.is_some(), "the device never served the flood");
    eprintln!("blk, flood: {served:?} requests served before the reset");
    let took = reset.map(|r| r.1);
    eprintln!("blk, a reset while the guest keeps 256 requests waiting: {took:?}");
    let took = took.expect("the reset never returned while the guest kept the queue full");
    assert!(took < RESET_BOUND, "the reset took {took:?}");
}

/// Requests beyond one wake-up's share are served all the same: after its share the device
/// comes back to the queue by itself, without another notification.
#[test]
fn more_requests_than_one_wake_up_serves_all_complete_after_one_notification() {
    let disk = Disk::new("many", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 256);
    let mut t = blk_guest(&disk, &mem, &ring);
    // 250 reads of one sector each, sector i into a buffer and a status byte of its own; each
    // request is an indirect table of three descriptors, so 250 fit a 256-entry queue.
    for i in 0..250u16 {
        let base = 0x10_0000 + i as u64 * 0x1000;
        let table = 0x30_0000 + i as u64 * 64;
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        h[8..].copy_from_slice(&(i as u64).to_le_bytes());
        mem.write_slice(&h, GuestAddress(base)).unwrap();
        let descs = [
            Descriptor::new(base, 16, N, 1),
            Descriptor::new(base + 0x200, 512, N | W, 2),
            Descriptor::new(base + 0x800, 1, W, 0),
        ];
        for (k, d) in descs.iter().enumerate() {
            mem.write_obj(RawDescriptor::from(*d), GuestAddress(table + 16 * k as u64))
                .unwrap();
        }
        ring.desc(i, table, 48, VRING_DESC_F_INDIRECT as u16, 0);
        ring.offer(i);
    }
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(
        until(DEADLINE, || ring.used_idx() == 250),
        "only {} of 250 served after one notification",
        ring.used_idx()
    );
    for i in 0..250u16 {
        let base = 0x10_0000 + i as u64 * 0x1000;
        assert_eq!(ring.used(i).1, 513);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(base + 0x800)).unwrap(),
            VIRTIO_BLK_S_OK as u8
        );
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(base + 0x200)).unwrap(),
            i as u8
        );
    }
}

/// The loop every device serves its queues with does at most [`BUDGET`] chains per call, says
/// when it stopped with work left, and returns no chain it served after a stop was requested.
/// (Before the budget it served all 200 in one call, and a guest refilling the queue kept it
/// there for ever.)
#[test]
fn one_pass_over_a_queue_serves_at_most_a_budget_of_chains() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 256);
    for i in 0..200u16 {
        ring.desc(i, 0x10_0000, 16, 0, 0);
        ring.offer(i);
    }
    let l = ring.layout();
    let mut queue = Queue::new(256).unwrap();
    queue.set_size(256);
    queue.set_desc_table_address(Some(l.desc as u32), Some(0));
    queue.set_avail_ring_address(Some(l.avail as u32), Some(0));
    queue.set_used_ring_address(Some(l.used as u32), Some(0));
    queue.set_ready(true);
    let stop = Stop::new().unwrap();
    let mut calls = Vec::new();
    loop {
        let served = serve_queue(&mut queue, &mem, &stop, |_| 0).unwrap();
        calls.push(served.used);
        if !served.more {
            break;
        }
    }
    assert_eq!(calls, [BUDGET, BUDGET, BUDGET, 200 - 3 * BUDGET]);
    assert_eq!(ring.used_idx(), 200);
    // A stop requested while a chain is being served: that chain is not returned.
    ring.offer(0);
    let served = serve_queue(&mut queue, &mem, &stop, |_| {
        stop.request();
        0
    })
    .unwrap();
    assert_eq!(served, Served::default());
    assert_eq!(ring.used_idx(), 200);
}

// ---------------------------------------------------------------------------------------------
// The transport: a reset while the device's thread is inside a request
// ---------------------------------------------------------------------------------------------

/// A page of guest RAM whose first touch stops the toucher until the fault is resolved:
/// `userfaultfd(2)` in "missing" mode. It is how a test makes a device thread stuck inside a
/// request for as long as it likes, the way a hung disk or NFS server would. Dropping it
/// closes the descriptor, which lets every stopped toucher go on (the page is then filled with
/// zeros, as any first touch of anonymous memory).
pub(crate) struct StuckPage(OwnedFd);

impl StuckPage {
    /// `struct uffdio_api`, `struct uffdio_register` of `<linux/userfaultfd.h>`.
    const API: u64 = 0xaa;
    const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
    const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
    const MODE_MISSING: u64 = 1;

    pub(crate) fn new(mem: &GuestMemoryMmap, at: GuestAddress) -> StuckPage {
        // SAFETY: a plain system call; the result is checked.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert!(
            fd >= 0,
            "userfaultfd: {} (the tests run as root)",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor, ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = [Self::API, 0, 0];
        // SAFETY: UFFDIO_API takes a struct uffdio_api { api, features, ioctls }: three u64s.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), Self::UFFDIO_API, api.as_mut_ptr()) };
        assert_eq!(rc, 0, "UFFDIO_API: {}", std::io::Error::last_os_error());
        let host = mem.get_host_address(at).unwrap() as u64;
        assert_eq!(host % 4096, 0);
        // struct uffdio_register { struct uffdio_range { start, len }, mode, ioctls }.
        let mut register = [host, 4096, Self::MODE_MISSING, 0];
        // SAFETY: as above, four u64s; the range is a page of the guest RAM mapping, which
        // outlives the registration (closing the descriptor ends it).
        let rc =
            unsafe { libc::ioctl(fd.as_raw_fd(), Self::UFFDIO_REGISTER, register.as_mut_ptr()) };
        assert_eq!(
            rc,
            0,
            "UFFDIO_REGISTER: {}",
            std::io::Error::last_os_error()
        );
        StuckPage(fd)
    }

    /// Wait until some thread has touched the page and is stopped there.
    pub(crate) fn wait_for_toucher(&self, limit: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(limit.as_millis() as i32).unwrap();
        matches!(poll(&mut fds, ms), Ok(1))
    }
}

/// The driver resets the disk while its thread is stuck inside a request (reading into a page
/// that does not come). The reset keeps the vCPU only a bounded while, then returns; until the
/// stuck thread has ended the device says it needs a reset and refuses to start again, and once
/// it has ended (without touching the used ring of the queue the driver took back) the device
/// works as new.
#[test]
fn a_reset_in_the_middle_of_a_request_returns_and_the_device_waits_for_its_thread() {
    let disk = Disk::new("midreq", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    const STUCK: u64 = 0x30_0000;
    let page = StuckPage::new(&mem, GuestAddress(STUCK));
    header(&mem, VIRTIO_BLK_T_IN, 3);
    ring.desc(0, HEADER, 16, N, 1);
    // Misaligned, so even with O_DIRECT the VMM copies into it itself (through its bounce
    // buffer): the touch is the device thread's own.
    ring.desc(1, STUCK + 8, 512, N | W, 2);
    ring.desc(2, STATUS, 1, W, 0);
    ring.offer(0);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(
        page.wait_for_toucher(DEADLINE),
        "the device never touched the page"
    );
    let reset = reset(t);
    let took = reset.as_ref().map(|r| r.1);
    eprintln!("blk, reset while the device thread is stuck in a request: {took:?}");
    // (Before the fix the reset never returns; the page is released as the test unwinds.)
    let (mut t, took) = reset.expect("the reset never returned while the device was stuck");
    assert!(took < RESET_BOUND, "the reset took {took:?}");
    // The reset returned without the old thread: until it ends, the reset is not done — Status
    // says the device needs one — and the device refuses to start again.
    assert!(
        needs_reset(&mut t),
        "Status reads as reset while the thread still runs"
    );
    ring.clear();
    let status = drive(&mut t, LINUX, &[ring.layout()]);
    assert_ne!(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0, "{status:#x}");
    assert!(
        !t.is_active(),
        "a second thread started beside the stuck one"
    );
    drop(page);
    // The thread goes on, ends the request without returning it, and ends; the next reset is
    // then complete.
    assert!(
        until(DEADLINE, || {
            wr(&mut t, VIRTIO_MMIO_STATUS, 0);
            !needs_reset(&mut t)
        }),
        "the device still waits for its old thread"
    );
    assert_eq!(
        ring.used_idx(),
        0,
        "the stopped thread returned a chain into a queue it no longer owned"
    );
    ring.clear();
    assert_eq!(drive(&mut t, LINUX, &[ring.layout()]) & 0xf, 0xf);
    header(&mem, VIRTIO_BLK_T_IN, 4);
    ring.desc(1, DATA, 512, N | W, 2);
    assert_eq!(submit(&mut t, &ring, 0, 0), Some(513));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(DATA)).unwrap(), 4);
}

/// The VMM's own end (dropping the devices) with a device thread stuck in a request: it waits
/// for the thread a bounded time, says so in the run's facts, and goes on.
#[test]
fn the_vmm_stops_even_when_a_device_thread_is_stuck() {
    let disk = Disk::new("stuckstop", 1 << 20);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let ring = Ring::new(&mem, 0x1000, 16);
    let mut t = blk_guest(&disk, &mem, &ring);
    const STUCK: u64 = 0x30_0000;
    let page = StuckPage::new(&mem, GuestAddress(STUCK));
    header(&mem, VIRTIO_BLK_T_IN, 3);
    ring.desc(0, HEADER, 16, N, 1);
    ring.desc(1, STUCK + 8, 512, N | W, 2);
    ring.desc(2, STATUS, 1, W, 0);
    ring.offer(0);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(page.wait_for_toucher(DEADLINE));
    let counters = std::sync::Arc::clone(t.counters());
    let stopped = within(DEADLINE, move || drop(t));
    drop(page);
    let ((), took) = stopped.expect("dropping the device never returned");
    assert!(took < RESET_BOUND, "{took:?}");
    let why = counters.ended();
    assert!(
        why.as_deref().is_some_and(|w| w.contains("did not stop")),
        "{why:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// virtio-net
// ---------------------------------------------------------------------------------------------

const RXQ: u64 = 0x1000;
const TXQ: u64 = 0x8000;
/// An EtherType for local experiments (IEEE 802): nothing else on a test's tap uses it.
pub(crate) const ETHERTYPE: u16 = 0x88b5;
pub(crate) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A network card on a new tap, in the calling thread's network namespace, driven to
/// `DRIVER_OK` with 16-entry receive and transmit queues; and a packet socket on the tap that
/// sees the frames the guest sends.
fn net_guest(
    mem: &GuestMemoryMmap,
    rx: &Ring,
    tx: &Ring,
    name: &str,
) -> (MmioTransport, OwnedFd, u32) {
    // No IPv6 on new interfaces: its router solicitations would be frames on the tap too.
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    let tap = Tap::create(name).unwrap();
    tap.set_up().unwrap();
    let index = tap.index().unwrap();
    let sock = packet_socket(index, true);
    let net = Net::new(&tap, MAC).unwrap();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut t = MmioTransport::new(Box::new(net), mem.clone(), irq, Notify::Exit).unwrap();
    assert_eq!(drive(&mut t, LINUX, &[rx.layout(), tx.layout()]) & 0xf, 0xf);
    (t, sock, index)
}

/// A raw packet socket bound to interface `index`, seeing and sending whole frames of the
/// test's EtherType; reads return at once when `nonblocking`.
pub(crate) fn packet_socket(index: u32, nonblocking: bool) -> OwnedFd {
    let flags = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket(2) arguments; checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            (ETHERTYPE as i32).to_be(),
        )
    };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETHERTYPE.to_be();
    addr.sll_ifindex = index as i32;
    // SAFETY: a valid address of its own size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    fd
}

/// A frame to the guest's MAC, of the test's EtherType, `len` bytes of payload.
pub(crate) fn frame(fill: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(MAC);
    f.extend([0x02, 0, 0, 0, 0, 1]);
    f.extend(ETHERTYPE.to_be_bytes());
    f.extend(std::iter::repeat_n(fill, len));
    f
}

/// Frames waiting on the packet socket (it does not block).
pub(crate) fn frames_seen(sock: &OwnedFd) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    loop {
        let mut buf = vec![0u8; 1 << 17];
        // SAFETY: a valid buffer of its own length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return seen;
        }
        buf.truncate(n as usize);
        seen.push(buf);
    }
}

/// Send `f` into the tap from the host's side (to the guest).
pub(crate) fn send_to_guest(sock: &OwnedFd, index: u32, f: &[u8]) {
    // SAFETY: sockaddr_ll is plain data.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&MAC);
    // SAFETY: a valid buffer and address.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            f.as_ptr().cast(),
            f.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        sent as usize,
        f.len(),
        "{}",
        std::io::Error::last_os_error()
    );
}

/// The attack of the issue on the network card, on either queue: the device asks for a reset
/// instead of spinning, and a reset returns at once.
#[test]
fn an_avail_index_far_ahead_on_either_net_queue_makes_the_card_ask_for_a_reset() {
    for (queue, name) in [(1u32, "isolab-hn0"), (0, "isolab-hn1")] {
        let reports = in_new_netns(move || {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
            let rx = Ring::new(&mem, RXQ, 16);
            let tx = Ring::new(&mem, TXQ, 16);
            let (mut t, _sock, _) = net_guest(&mem, &rx, &tx, name);
            let cpu_before = t.device_cpu_time();
            let ring = if queue == 0 { &rx } else { &tx };
            ring.set_avail_idx(1000);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, queue);
            std::thread::sleep(Duration::from_millis(300));
            let cpu = t.device_cpu_time() - cpu_before;
            let asked = needs_reset(&mut t);
            let why = t.counters().ended();
            let reset = reset(t).map(|(_, took)| took);
            (cpu, asked, why, reset)
        });
        let (cpu, asked, why, reset) = reports;
        let which = if queue == 0 { "receive" } else { "transmit" };
        eprintln!(
            "net {which} queue, avail.idx 1000 ahead: device thread CPU {cpu:?} in 300 ms; \
             reset took {}",
            reset.map_or(format!("more than {DEADLINE:?} (hung)"), |r| format!(
                "{r:?}"
            ))
        );
        assert!(
            cpu < Duration::from_millis(30),
            "{which}: the device thread used {cpu:?} of CPU in 300 ms: it spins"
        );
        assert!(asked, "{which}: no DEVICE_NEEDS_RESET");
        assert!(
            why.as_deref().is_some_and(|w| w.contains("avail")),
            "{which}: {why:?}"
        );
        let took = reset.expect("the reset never returned");
        assert!(took < RESET_BOUND, "{which}: the reset took {took:?}");
    }
}

/// Transmit chains the device must not send: one that loops (virtio-queue cuts it after 16
/// descriptors; sending the cut would put on the wire a frame the guest never made), and one
/// with a buffer outside guest RAM. Both come back unsent; a good frame after them goes out.
#[test]
fn transmit_chains_that_loop_or_leave_ram_are_not_sent() {
    in_new_netns(|| {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let rx = Ring::new(&mem, RXQ, 16);
        let tx = Ring::new(&mem, TXQ, 16);
        let (mut t, sock, _) = net_guest(&mem, &rx, &tx, "isolab-hn2");
        let f = frame(0x42, 100);
        mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x10_0000))
            .unwrap();
        mem.write_slice(&f, GuestAddress(0x11_0000)).unwrap();
        // The frame's buffer points back at itself.
        tx.desc(0, 0x10_0000, VNET_HDR_LEN as u32, N, 1);
        tx.desc(1, 0x11_0000, f.len() as u32, N, 1);
        assert_eq!(submit(&mut t, &tx, 1, 0), Some(0));
        // The frame outside RAM.
        tx.desc(1, OUTSIDE, f.len() as u32, 0, 0);
        assert_eq!(submit(&mut t, &tx, 1, 0), Some(0));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(frames_seen(&sock).len(), 0, "a bad chain reached the wire");
        tx.desc(1, 0x11_0000, f.len() as u32, 0, 0);
        assert_eq!(submit(&mut t, &tx, 1, 0), Some(0));
        assert!(until(DEADLINE, || {
            let seen = frames_seen(&sock);
            assert!(seen.iter().all(|s| s == &f), "{seen:?}");
            !seen.is_empty()
        }));
        assert_eq!(Counters::get(&t.counters().malformed), 2);
        assert!(!needs_reset(&mut t));
    });
}

/// Receive chains the device must not fill: a looping one (cut short by virtio-queue) is
/// returned empty, and the frame lands in the next, honest buffer, whole, with a used length
/// that is what the device wrote.
#[test]
fn a_looping_receive_chain_is_returned_empty_and_the_frame_goes_to_the_next() {
    in_new_netns(|| {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let rx = Ring::new(&mem, RXQ, 16);
        let tx = Ring::new(&mem, TXQ, 16);
        let (mut t, sock, index) = net_guest(&mem, &rx, &tx, "isolab-hn3");
        mem.write_slice(&[0x5a; 64], GuestAddress(0x20_0000))
            .unwrap();
        // Head 0: a 64-byte buffer that loops; head 1: 1526 bytes, a whole frame's room.
        rx.desc(0, 0x20_0000, 64, N | W, 0);
        rx.desc(1, 0x21_0000, 1526, W, 0);
        rx.offer(0);
        rx.offer(1);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        let f = frame(0x17, 200);
        send_to_guest(&sock, index, &f);
        assert!(
            until(DEADLINE, || rx.used_idx() == 2),
            "used {}",
            rx.used_idx()
        );
        assert_eq!(rx.used(0), (0, 0), "the looping chain comes back empty");
        assert_eq!(rx.used(1), (1, (VNET_HDR_LEN + f.len()) as u32));
        let mut got = vec![0u8; f.len()];
        mem.read_slice(&mut got, GuestAddress(0x21_0000 + VNET_HDR_LEN as u64))
            .unwrap();
        assert_eq!(got, f);
        let mut looped = [0u8; 64];
        mem.read_slice(&mut looped, GuestAddress(0x20_0000))
            .unwrap();
        assert_eq!(looped, [0x5a; 64], "nothing written into the looping chain");
    });
}

/// The control case: an honest driver's traffic at volume still flows, a budget at a time.
/// 300 frames from the host into 200 receive buffers the driver refills as they come back, and
/// 300 frames from the guest out of the tap: every one arrives, whole.
#[test]
fn honest_traffic_at_volume_flows_both_ways() {
    in_new_netns(|| {
        const FRAMES: usize = 300;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let rx = Ring::new(&mem, RXQ, 256);
        let tx = Ring::new(&mem, 0x1_0000, 256);
        let (mut t, sock, index) = net_guest(&mem, &rx, &tx, "isolab-hn4");
        // Receive buffer b (of 200) at 0x10_0000 + b × 2 KiB: room for the header and a frame.
        let buffer = |b: u16| 0x10_0000 + b as u64 * 2048;
        for b in 0..200u16 {
            rx.desc(b, buffer(b), 1526, W, 0);
            rx.offer(b);
        }
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        let (mut got, mut seen) = (Vec::new(), 0u16);
        let mut last = Instant::now();
        let mut sent = 0;
        while got.len() < FRAMES {
            // The tap holds a thousand frames (its txqueuelen): send in bursts of 50.
            while sent < FRAMES && sent < got.len() + 50 {
                send_to_guest(&sock, index, &frame(sent as u8, 100 + sent));
                sent += 1;
            }
            while seen != rx.used_idx() {
                let (b, len) = rx.used(seen);
                let b = b as u16;
                let mut f = vec![0u8; len as usize - VNET_HDR_LEN];
                mem.read_slice(&mut f, GuestAddress(buffer(b) + VNET_HDR_LEN as u64))
                    .unwrap();
                got.push(f);
                rx.offer(b);
                wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
                seen = seen.wrapping_add(1);
                last = Instant::now();
            }
            assert!(
                last.elapsed() < DEADLINE,
                "stalled after {} of {FRAMES} frames",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f, &frame(i as u8, 100 + i), "frame {i}");
        }
        // Transmit: 300 chains of [header | frame], a hundred at a time, one notification each.
        let out = |i: usize| 0x30_0000 + i as u64 * 1024;
        let mut received = Vec::new();
        for burst in 0..3 {
            for k in 0..100 {
                let i = burst * 100 + k;
                let f = frame(i as u8, 200);
                mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(out(i)))
                    .unwrap();
                mem.write_slice(&f, GuestAddress(out(i) + VNET_HDR_LEN as u64))
                    .unwrap();
                tx.desc(k as u16, out(i), (VNET_HDR_LEN + f.len()) as u32, 0, 0);
                tx.offer(k as u16);
            }
            wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
            let target = (burst as u16 + 1) * 100;
            assert!(
                until(DEADLINE, || {
                    received.extend(frames_seen(&sock));
                    tx.used_idx() == target
                }),
                "transmit stalled at {} of {target}",
                tx.used_idx()
            );
        }
        assert!(until(DEADLINE, || {
            received.extend(frames_seen(&sock));
            received.len() >= FRAMES
        }));
        assert_eq!(received.len(), FRAMES);
        for (i, f) in received.iter().enumerate() {
            assert_eq!(f, &frame(i as u8, 200), "frame {i}");
        }
        assert_eq!(Counters::get(&t.counters().malformed), 0);
        assert!(!needs_reset(&mut t));
    });
}
