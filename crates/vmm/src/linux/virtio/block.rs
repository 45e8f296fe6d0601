//! virtio-blk: a disk whose sectors are a raw file on the host.
//!
//! One request is one descriptor chain:
//!
//! ```text
//!  ┌ header (device reads, 16 bytes) ┐ ┌ data (0..n buffers) ─────────────┐ ┌ status (device writes) ┐
//!  │ type: IN 0 | OUT 1 | FLUSH 4 |  │ │ IN, GET_ID: the device writes    │ │ 1 byte: OK 0, IOERR 1, │
//!  │       GET_ID 8                  │ │ OUT: the device reads            │ │ UNSUPP 2               │
//!  │ reserved, sector (512-byte unit)│ │ a multiple of 512 bytes          │ │                        │
//!  └─────────────────────────────────┘ └──────────────────────────────────┘ └────────────────────────┘
//! ```
//!
//! The device reads from or writes to the file at `sector × 512`, straight between the file and
//! the guest's buffers, and answers in the status byte; the used ring says how many bytes it
//! wrote into the chain. A request outside the disk, or a chain of the wrong shape, is answered
//! with `IOERR` (or dropped, when there is no status byte in guest RAM to answer in — checked
//! before anything is done, so a request never reaches the disk unanswered): the guest's
//! mistakes are the guest's errors, never the VMM's crash. A chain cut short (see the parent
//! module) is dropped whole, and a request that would write more than the used ring's u32 can
//! count is refused: the used length is always the bytes really written.
//!
//! # O_DIRECT
//!
//! The VMM opens the file with `O_DIRECT`: reads and writes go between the guest's memory and
//! the host's disk without a copy in the **host's** page cache. The guest kernel has a page
//! cache of its own; a second one on the host would count the guest's disk in the host's memory,
//! make `fsync` in the guest mean nothing until the host writes back, and blur what a disk
//! benchmark measures. The price: `O_DIRECT` wants the buffer's memory address, the file offset
//! and the length aligned to the file system's direct-I/O granule (`statx` reports it:
//! `STATX_DIOALIGN`; 512 bytes on most disks, 4096 on some). The offset and the length are
//! aligned because the device tells the guest its block size (`VIRTIO_BLK_F_BLK_SIZE`), and the
//! guest's block layer then only issues whole blocks. The *memory* is aligned almost always —
//! the guest's block layer keeps buffers 512-aligned (`dma_alignment`), and guest-physical
//! addresses map to host addresses with the same alignment — but a guest is free to hand over
//! any buffer, so a misaligned one is bounced through an aligned buffer of the VMM's.
//!
//! A file system that refuses `O_DIRECT` (tmpfs before Linux 6.6) gets ordinary buffered I/O,
//! and the run says so (`disk_direct_io`).
//!
//! `FLUSH` (`VIRTIO_BLK_F_FLUSH`: the guest knows the disk has a volatile cache) becomes
//! `fdatasync`: with `O_DIRECT` the data is on the disk's own cache, and only a flush makes it
//! durable.

use super::{
    serve_queue, wait_readable, whole_chain, Activation, Counters, Kind, Served, Stop,
    VirtioDevice, VirtioError, Worker,
};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The sector: the unit of every virtio-blk address, whatever the disk's block size.
pub const SECTOR: u64 = 512;
/// The queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// The identity string `GET_ID` returns is at most 20 bytes (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
/// The bounce buffer's size: misaligned buffers are copied through it in pieces this large.
const BOUNCE: usize = 64 << 10;

/// A virtio-blk device on a file.
#[derive(Debug)]
pub struct Block {
    file: File,
    capacity_bytes: u64,
    block_size: u32,
    mem_align: usize,
    direct: bool,
    read_only: bool,
    id: [u8; ID_BYTES],
}

impl Block {
    /// Open `path` for the guest's disk: read-write (or read-only, and the guest told so),
    /// `O_DIRECT` where the file system allows.
    pub fn open(path: &Path, read_only: bool) -> Result<Block, VirtioError> {
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(!read_only);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let (file, direct) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                open(false).map_err(VirtioError::io("open the disk file"))?,
                false,
            ),
            Err(e) => {
                return Err(VirtioError::Io {
                    what: "open the disk file",
                    source: e,
                })
            }
        };
        let size = file
            .metadata()
            .map_err(VirtioError::io("stat the disk file"))?
            .len();
        let (mem_align, offset_align) = if direct {
            dio_alignment(&file)
        } else {
            (1, 512)
        };
        let block_size = offset_align.clamp(512, 4096) as u32;
        let mut id = [0u8; ID_BYTES];
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("isolab:{name}");
        let n = name.len().min(ID_BYTES);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Block {
            file,
            // Whole blocks only: a tail shorter than a block cannot be read with O_DIRECT.
            capacity_bytes: size / block_size as u64 * block_size as u64,
            block_size,
            mem_align: mem_align.max(1),
            direct,
            read_only,
            id,
        })
    }

    /// The disk's size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_bytes / SECTOR
    }

    /// The block size the guest is told.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// True when the file was opened with `O_DIRECT`.
    pub fn direct(&self) -> bool {
        self.direct
    }

    fn requests(&self) -> Result<Requests, VirtioError> {
        Ok(Requests {
            file: self
                .file
                .try_clone()
                .map_err(VirtioError::io("dup the disk file"))?,
            capacity_bytes: self.capacity_bytes,
            block_size: self.block_size as u64,
            mem_align: self.mem_align,
            direct: self.direct,
            read_only: self.read_only,
            id: self.id,
            bounce: AlignedBuf::new(BOUNCE, self.mem_align.max(self.block_size as usize)),
        })
    }
}

/// The direct-I/O alignment of `file` (memory, file offset), from `statx(STATX_DIOALIGN)`; 512
/// for both where the kernel does not say.
fn dio_alignment(file: &File) -> (usize, u64) {
    // SAFETY: statx is plain data; statx(2) fills it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor, an empty path with AT_EMPTY_PATH, a valid out-pointer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        (
            stx.stx_dio_mem_align as usize,
            stx.stx_dio_offset_align as u64,
        )
    } else {
        (512, 512)
    }
}

impl VirtioDevice for Block {
    fn kind(&self) -> Kind {
        Kind::Block
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            // Without SEG_MAX, Linux sends one segment per request: one page at a time.
            | 1 << VIRTIO_BLK_F_SEG_MAX
            // A read-only disk says so: the guest's block layer then refuses writes itself
            // (and mounts it read-only); one that writes anyway gets IOERR.
            | u64::from(self.read_only) << VIRTIO_BLK_F_RO
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    /// `struct virtio_blk_config`: capacity (u64, sectors) at 0, seg_max (u32) at 12, blk_size
    /// (u32) at 20; the rest is zero.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 24];
        config[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        // Two descriptors of every chain are the header and the status byte.
        config[12..16].copy_from_slice(&(QUEUE_SIZE as u32 - 2).to_le_bytes());
        config[20..24].copy_from_slice(&self.block_size.to_le_bytes());
        read_slice(&config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<Worker, VirtioError> {
        let mut requests = self.requests()?;
        let Activation {
            mem,
            queues,
            mut notify,
            interrupt,
            counters,
            resume,
            ..
        } = a;
        let mut queue = queues
            .into_iter()
            .next()
            .ok_or(VirtioError::QueueNotReady(0))?;
        let notify = notify.pop().ok_or(VirtioError::QueueNotReady(0))?;
        let irq = interrupt.clone();
        Worker::spawn("virtio-blk".into(), &irq, move |stop| {
            // Chains left when the last wake-up's budget ran out: look, do not sleep. A device
            // restored from a snapshot looks once before it sleeps at all.
            let mut more = resume;
            loop {
                let ready =
                    wait_readable(&[stop.as_ref(), &notify], !more).map_err(|e| e.to_string())?;
                if ready[0] || stop.requested() {
                    counters.queues_at_stop(vec![crate::linux::virtio::describe(&queue, &mem)]);
                    stop.park(&[&queue]);
                    return Ok(());
                }
                if ready[1] {
                    Counters::add(
                        &counters.notifications,
                        crate::linux::virtio::drain(&notify),
                    );
                }
                match requests.serve(&mut queue, &mem, &counters, &stop) {
                    Ok(served) => {
                        more = served.more;
                        if served.used > 0
                            && !stop.disowned()
                            && queue.needs_notification(&mem).unwrap_or(true)
                        {
                            interrupt.used_buffers();
                        }
                    }
                    // The rings are corrupt: the queue cannot go on until the driver resets it
                    // (the device asks for that as the thread ends).
                    Err(e) => {
                        return Err(format!(
                            "{e} ({})",
                            crate::linux::virtio::describe(&queue, &mem)
                        ))
                    }
                }
            }
        })
    }
}

/// Copy `data.len()` bytes of `bytes` from `offset` (zeros past its end).
pub(crate) fn read_slice(bytes: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| bytes.get(o + i))
            .copied()
            .unwrap_or(0);
    }
}

/// A buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is owned memory, used by one thread at a time (it moves into the device's).
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, align.next_power_of_two())
            .expect("a small power-of-two alignment");
        // SAFETY: a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Why a request failed: the status byte it is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    IoErr,
    Unsupported,
}

impl Status {
    fn byte(self) -> u8 {
        match self {
            Status::IoErr => VIRTIO_BLK_S_IOERR as u8,
            Status::Unsupported => VIRTIO_BLK_S_UNSUPP as u8,
        }
    }
}

/// The device thread's side: the file and what it needs to serve requests.
pub struct Requests {
    file: File,
    capacity_bytes: u64,
    block_size: u64,
    mem_align: usize,
    direct: bool,
    read_only: bool,
    id: [u8; ID_BYTES],
    bounce: AlignedBuf,
}

impl Requests {
    /// Serve the requests waiting on `queue`, at most [`super::BUDGET`] of them.
    pub fn serve(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        counters: &Counters,
        stop: &Stop,
    ) -> Result<Served, VirtioError> {
        serve_queue(queue, mem, stop, |chain| {
            Counters::add(&counters.requests, 1);
            // A chain cut short (a loop, 4 GiB of buffers) is returned with nothing done.
            let Some(descs) = whole_chain(chain) else {
                Counters::add(&counters.malformed, 1);
                return 0;
            };
            let (used, ok) = self.request(mem, &descs);
            if !ok {
                Counters::add(&counters.malformed, 1);
            }
            used
        })
    }

    /// One request: the bytes written into the chain, and whether it was well-formed.
    fn request(&mut self, mem: &GuestMemoryMmap, descs: &[Descriptor]) -> (u32, bool) {
        // The status byte is the last descriptor's first byte; without one in guest RAM there is
        // no way to answer, and the chain is returned untouched — checked first, so that the
        // disk is never written for a request that cannot be told it was.
        let Some(status_desc) = descs.last().filter(|d| {
            d.is_write_only() && d.len() >= 1 && descs.len() >= 2 && mem.address_in_range(d.addr())
        }) else {
            return (0, false);
        };
        let data = &descs[1..descs.len() - 1];
        let result = self.execute(mem, &descs[0], data);
        let (status, written, ok) = match result {
            Ok(written) => (VIRTIO_BLK_S_OK as u8, written, true),
            Err(s) => (s.byte(), 0, s == Status::Unsupported),
        };
        if mem.write_obj(status, status_desc.addr()).is_err() {
            return (0, false);
        }
        // `execute` wrote fewer than u32::MAX bytes: the status byte still fits the count.
        (written + 1, ok)
    }

    /// Do what the header asks; the bytes written into the data buffers (less than `u32::MAX`:
    /// the used ring's count, with the status byte, must hold them).
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        header: &Descriptor,
        data: &[Descriptor],
    ) -> Result<u32, Status> {
        if header.is_write_only() || header.len() < 16 {
            return Err(Status::IoErr);
        }
        // struct virtio_blk_outhdr: type (le32), ioprio (le32), sector (le64).
        let mut hdr = [0u8; 16];
        mem.read_slice(&mut hdr, header.addr())
            .map_err(|_| Status::IoErr)?;
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
        match kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
                let reading = kind == VIRTIO_BLK_T_IN;
                // The file is not even open for writing; the guest was told.
                if !reading && self.read_only {
                    return Err(Status::IoErr);
                }
                // Every data buffer goes the one direction the request type says.
                if data.iter().any(|d| d.is_write_only() != reading) {
                    return Err(Status::IoErr);
                }
                // Counted in u64: 256 buffers of up to 4 GiB each overflow a u32.
                let total: u64 = data.iter().map(|d| d.len() as u64).sum();
                let start = sector.checked_mul(SECTOR).ok_or(Status::IoErr)?;
                let end = start.checked_add(total).ok_or(Status::IoErr)?;
                if total % SECTOR != 0 || end > self.capacity_bytes {
                    return Err(Status::IoErr);
                }
                // What a read writes must fit the used ring's u32 with the status byte.
                let written = match u32::try_from(total) {
                    Ok(n) if n < u32::MAX => n,
                    _ => return Err(Status::IoErr),
                };
                // The whole request in one system call when every buffer allows it — as the
                // guest meant it: one request, one I/O on the host's disk. One call per buffer
                // would be one disk I/O per 4 KiB page of the guest's under O_DIRECT.
                if !self.vectored(mem, data, start, reading)? {
                    let mut offset = start;
                    for d in data {
                        self.transfer(mem, d, offset, reading)?;
                        offset += d.len() as u64;
                    }
                }
                Ok(if reading { written } else { 0 })
            }
            VIRTIO_BLK_T_FLUSH => {
                // SAFETY: fdatasync on an open descriptor.
                if unsafe { libc::fdatasync(self.file.as_raw_fd()) } != 0 {
                    return Err(Status::IoErr);
                }
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let d = data
                    .first()
                    .filter(|d| d.is_write_only())
                    .ok_or(Status::IoErr)?;
                let n = (d.len() as usize).min(ID_BYTES);
                mem.write_slice(&self.id[..n], d.addr())
                    .map_err(|_| Status::IoErr)?;
                Ok(n as u32)
            }
            _ => Err(Status::Unsupported),
        }
    }

    /// Move every data buffer of a request between guest memory and the file, starting at
    /// `offset`, with one `preadv`/`pwritev`: false (nothing done) when a buffer is not aligned
    /// for `O_DIRECT`, for [`Requests::transfer`] to move them one by one.
    fn vectored(
        &mut self,
        mem: &GuestMemoryMmap,
        data: &[Descriptor],
        offset: u64,
        reading: bool,
    ) -> Result<bool, Status> {
        let data: Vec<&Descriptor> = data.iter().filter(|d| d.len() > 0).collect();
        if data.is_empty() || data.len() > IOV_MAX {
            return Ok(data.is_empty());
        }
        // Each buffer must lie wholly in guest RAM (one region: the lab maps RAM in one piece).
        let slices = data
            .iter()
            .map(|d| mem.get_slice(d.addr(), d.len() as usize))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Status::IoErr)?;
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
        let mut iov: Vec<libc::iovec> = guards
            .iter()
            .zip(&slices)
            .map(|(g, s)| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: s.len(),
            })
            .collect();
        let aligned = iov.iter().all(|v| {
            v.iov_base as usize % self.mem_align == 0 && v.iov_len as u64 % self.block_size == 0
        }) && offset % self.block_size == 0;
        if self.direct && !aligned {
            return Ok(false);
        }
        io_vectored(&self.file, &mut iov, offset, reading).map_err(|_| Status::IoErr)?;
        Ok(true)
    }

    /// Move one data buffer between guest memory and the file at `offset`.
    fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        d: &Descriptor,
        offset: u64,
        reading: bool,
    ) -> Result<(), Status> {
        let len = d.len() as usize;
        if len == 0 {
            return Ok(());
        }
        // The buffer must lie wholly in guest RAM (one region: the lab maps RAM in one piece).
        let slice = mem.get_slice(d.addr(), len).map_err(|_| Status::IoErr)?;
        let guard = slice.ptr_guard_mut();
        let ptr = guard.as_ptr();
        let aligned = ptr as usize % self.mem_align == 0
            && len as u64 % self.block_size == 0
            && offset % self.block_size == 0;
        if !self.direct || aligned {
            // Straight between the file and the guest's memory: no copy in the VMM.
            return io_at(&self.file, ptr, len, offset, reading).map_err(|_| Status::IoErr);
        }
        if len as u64 % self.block_size != 0 || offset % self.block_size != 0 {
            // O_DIRECT cannot do a partial block; a guest told the block size never asks.
            return Err(Status::IoErr);
        }
        // A misaligned buffer: through the bounce buffer, one piece at a time.
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BOUNCE);
            let piece = slice.subslice(done, n).map_err(|_| Status::IoErr)?;
            let buf = &mut self.bounce.as_mut()[..n];
            if reading {
                io_at(&self.file, buf.as_mut_ptr(), n, offset + done as u64, true)
                    .map_err(|_| Status::IoErr)?;
                piece.copy_from(buf);
            } else {
                piece.copy_to(buf);
                io_at(&self.file, buf.as_mut_ptr(), n, offset + done as u64, false)
                    .map_err(|_| Status::IoErr)?;
            }
            done += n;
        }
        Ok(())
    }
}

/// The most buffers one `preadv`/`pwritev` takes (Linux's `UIO_MAXIOV`); a chain is at most
/// [`QUEUE_SIZE`] long, so this is never the limit in practice.
const IOV_MAX: usize = 1024;

/// `preadv`/`pwritev` every byte `iov` describes at `offset`, retrying short transfers (by
/// moving past what was done) and interruptions.
fn io_vectored(
    file: &File,
    mut iov: &mut [libc::iovec],
    mut offset: u64,
    reading: bool,
) -> io::Result<()> {
    while !iov.is_empty() {
        // SAFETY: every iovec describes guest RAM the caller checked and holds mapped for the
        // call; the kernel reads or writes only within them.
        let n = unsafe {
            if reading {
                libc::preadv(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as i32,
                    offset as i64,
                )
            } else {
                libc::pwritev(
                    file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as i32,
                    offset as i64,
                )
            }
        };
        let mut n = match n {
            n if n > 0 => n as usize,
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
        };
        offset += n as u64;
        // Drop the buffers done, and start the next call inside a buffer done in part.
        while let Some(first) = iov.first_mut() {
            if n < first.iov_len {
                // SAFETY: `n` is less than the buffer's length, so the new base stays inside it.
                first.iov_base = unsafe { first.iov_base.cast::<u8>().add(n) }.cast();
                first.iov_len -= n;
                break;
            }
            n -= first.iov_len;
            iov = &mut iov[1..];
        }
    }
    Ok(())
}

/// `pread`/`pwrite` all `len` bytes at `ptr`, retrying short transfers and interruptions.
fn io_at(file: &File, ptr: *mut u8, len: usize, offset: u64, reading: bool) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let at = (offset + done as u64) as libc::off_t;
        // SAFETY: `ptr..ptr+len` is memory the caller has checked (guest RAM or the bounce
        // buffer) and that stays mapped for the call; the kernel reads or writes only within it.
        let n = unsafe {
            if reading {
                libc::pread(file.as_raw_fd(), ptr.add(done).cast(), len - done, at)
            } else {
                libc::pwrite(file.as_raw_fd(), ptr.add(done).cast(), len - done, at)
            }
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// The status byte a request at `status` got (for tests and the curious).
pub fn status_at(mem: &GuestMemoryMmap, status: GuestAddress) -> Option<u8> {
    mem.read_obj(status).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    const DISK: u64 = 1 << 20;
    const HEADER: u64 = 0x10_0000;
    const DATA: u64 = 0x11_0000;
    const STATUS: u64 = 0x12_0000;

    /// A temp file of `DISK` bytes, preallocated (`fallocate`), with a pattern in sector 3.
    fn disk(name: &str) -> (std::path::PathBuf, Block) {
        let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("isolab-blk-{name}-{}.img", std::process::id()));
        let mut f = File::create(&path).unwrap();
        // SAFETY: fallocate on an open descriptor.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, DISK as i64) };
        assert_eq!(rc, 0);
        f.seek(SeekFrom::Start(3 * SECTOR)).unwrap();
        f.write_all(&[0xab; 512]).unwrap();
        drop(f);
        let block = Block::open(&path, false).unwrap();
        (path, block)
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HEADER)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, 0))
    }

    /// Read one 512-byte sector `sector` into guest memory at `at`; (used len, status byte).
    fn read_sector(mem: &GuestMemoryMmap, block: &Block, sector: u64, at: u64) -> (u32, u8) {
        header(mem, VIRTIO_BLK_T_IN, sector);
        run(
            mem,
            block,
            &[
                desc(HEADER, 16, N),
                desc(at, 512, N | W),
                desc(STATUS, 1, W),
            ],
        )
    }

    /// Put one chain on a fresh queue, serve it; (used len, status byte).
    fn run(mem: &GuestMemoryMmap, block: &Block, chain: &[RawDescriptor]) -> (u32, u8) {
        let q = MockSplitQueue::create(mem, GuestAddress(0), 16);
        // Link the chain: each descriptor's `next` is the one after it.
        let linked: Vec<RawDescriptor> = chain
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let d = Descriptor::from(*d);
                RawDescriptor::from(Descriptor::new(
                    d.addr().0,
                    d.len(),
                    d.flags(),
                    i as u16 + 1,
                ))
            })
            .collect();
        q.add_desc_chains(&linked, 0).unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        let counters = Counters::default();
        let mut requests = block.requests().unwrap();
        let stop = Stop::new().unwrap();
        let served = requests.serve(&mut queue, mem, &counters, &stop).unwrap();
        assert_eq!(served.used, 1);
        let used = q.used().ring().ref_at(0).unwrap().load();
        assert_eq!(q.used().idx().load(), 1);
        (used.len(), status_at(mem, GuestAddress(STATUS)).unwrap())
    }

    const N: u32 = VRING_DESC_F_NEXT;
    const W: u32 = VRING_DESC_F_WRITE;

    #[test]
    fn the_config_space_tells_capacity_segments_and_block_size() {
        let (path, block) = disk("config");
        let mut cap = [0u8; 8];
        block.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), DISK / 512);
        let mut seg = [0u8; 4];
        block.read_config(12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), QUEUE_SIZE as u32 - 2);
        let mut bs = [0u8; 4];
        block.read_config(20, &mut bs);
        assert!(u32::from_le_bytes(bs) >= 512);
        let mut past = [0xffu8; 4];
        block.read_config(100, &mut past);
        assert_eq!(past, [0; 4]);
        assert_ne!(block.features() & 1 << VIRTIO_BLK_F_FLUSH, 0);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_read_lands_in_guest_memory() {
        let (path, block) = disk("read");
        let mem = memory();
        let (used, status) = read_sector(&mem, &block, 3, DATA);
        assert_eq!((used, status), (513, VIRTIO_BLK_S_OK as u8));
        let mut got = [0u8; 512];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, [0xab; 512]);
        std::fs::remove_file(path).unwrap();
    }

    /// A shared disk is offered read-only: the guest is told (`VIRTIO_BLK_F_RO`), a write is
    /// refused with IOERR and the file keeps its bytes, and reads still work.
    #[test]
    fn a_read_only_disk_says_so_and_refuses_writes() {
        let (path, writable) = disk("ro");
        assert_eq!(writable.features() & 1 << VIRTIO_BLK_F_RO, 0);
        let block = Block::open(&path, true).unwrap();
        assert_ne!(block.features() & 1 << VIRTIO_BLK_F_RO, 0);
        let mem = memory();
        mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
        header(&mem, VIRTIO_BLK_T_OUT, 3);
        let chain = [desc(HEADER, 16, N), desc(DATA, 512, N), desc(STATUS, 1, W)];
        let (_, status) = run(&mem, &block, &chain);
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
        let (used, status) = read_sector(&mem, &block, 3, DATA);
        assert_eq!((used, status), (513, VIRTIO_BLK_S_OK as u8));
        let mut got = [0u8; 512];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, [0xab; 512], "the refused write changed nothing");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_write_reaches_the_file_and_a_flush_succeeds() {
        let (path, block) = disk("write");
        let mem = memory();
        mem.write_slice(&[0x5a; 1024], GuestAddress(DATA)).unwrap();
        header(&mem, VIRTIO_BLK_T_OUT, 8);
        let (used, status) = run(
            &mem,
            &block,
            &[desc(HEADER, 16, N), desc(DATA, 1024, N), desc(STATUS, 1, W)],
        );
        assert_eq!((used, status), (1, VIRTIO_BLK_S_OK as u8));
        header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        let (used, status) = run(&mem, &block, &[desc(HEADER, 16, N), desc(STATUS, 1, W)]);
        assert_eq!((used, status), (1, VIRTIO_BLK_S_OK as u8));
        let mut f = File::open(&path).unwrap();
        f.seek(SeekFrom::Start(8 * SECTOR)).unwrap();
        let mut got = vec![0u8; 1024];
        f.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 0x5a));
        std::fs::remove_file(path).unwrap();
    }

    /// A request of several buffers (a guest's pages) lands in order as one stretch of the
    /// file, and reads back into differently cut buffers the same.
    #[test]
    fn a_request_of_many_buffers_is_one_stretch_of_the_disk() {
        let (path, block) = disk("vectored");
        let mem = memory();
        let pages = [DATA, DATA + 0x3000, DATA + 0x1000];
        for (i, at) in pages.iter().enumerate() {
            mem.write_slice(&[i as u8 + 1; 4096], GuestAddress(*at))
                .unwrap();
        }
        header(&mem, VIRTIO_BLK_T_OUT, 16);
        let mut chain = vec![desc(HEADER, 16, N)];
        chain.extend(pages.iter().map(|at| desc(*at, 4096, N)));
        chain.push(desc(STATUS, 1, W));
        let (used, status) = run(&mem, &block, &chain);
        assert_eq!((used, status), (1, VIRTIO_BLK_S_OK as u8));
        let mut f = File::open(&path).unwrap();
        f.seek(SeekFrom::Start(16 * SECTOR)).unwrap();
        let mut got = vec![0u8; 3 * 4096];
        f.read_exact(&mut got).unwrap();
        for (i, page) in got.chunks(4096).enumerate() {
            assert!(page.iter().all(|&b| b == i as u8 + 1), "page {i}");
        }
        // Read back into two buffers cut elsewhere: 6 KiB, then 6 KiB.
        const BACK: u64 = 0x20_0000;
        header(&mem, VIRTIO_BLK_T_IN, 16);
        let (used, status) = run(
            &mem,
            &block,
            &[
                desc(HEADER, 16, N),
                desc(BACK, 6144, N | W),
                desc(BACK + 0x2000, 6144, N | W),
                desc(STATUS, 1, W),
            ],
        );
        assert_eq!((used, status), (3 * 4096 + 1, VIRTIO_BLK_S_OK as u8));
        let mut back = vec![0u8; 3 * 4096];
        mem.read_slice(&mut back[..6144], GuestAddress(BACK))
            .unwrap();
        mem.read_slice(&mut back[6144..], GuestAddress(BACK + 0x2000))
            .unwrap();
        assert_eq!(back, got);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_misaligned_guest_buffer_is_bounced() {
        let (path, block) = disk("bounce");
        let mem = memory();
        let (used, status) = read_sector(&mem, &block, 3, DATA + 3);
        assert_eq!((used, status), (513, VIRTIO_BLK_S_OK as u8));
        let mut got = [0u8; 512];
        mem.read_slice(&mut got, GuestAddress(DATA + 3)).unwrap();
        assert_eq!(got, [0xab; 512]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn get_id_names_the_disk() {
        let (path, block) = disk("id");
        let mem = memory();
        header(&mem, VIRTIO_BLK_T_GET_ID, 0);
        let (used, status) = run(
            &mem,
            &block,
            &[
                desc(HEADER, 16, N),
                desc(DATA, 20, N | W),
                desc(STATUS, 1, W),
            ],
        );
        assert_eq!((used, status), (21, VIRTIO_BLK_S_OK as u8));
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert!(id.starts_with(b"isolab:isolab-blk-id"), "{id:?}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn out_of_range_malformed_and_unknown_requests_get_an_error_status() {
        let (path, block) = disk("errors");
        let mem = memory();
        // Past the end of the disk.
        header(&mem, VIRTIO_BLK_T_IN, DISK / 512 - 1);
        let (used, status) = run(
            &mem,
            &block,
            &[
                desc(HEADER, 16, N),
                desc(DATA, 1024, N | W),
                desc(STATUS, 1, W),
            ],
        );
        assert_eq!((used, status), (1, VIRTIO_BLK_S_IOERR as u8));
        // A sector number that overflows when turned into bytes.
        let (_, status) = read_sector(&mem, &block, u64::MAX / 2, DATA);
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
        // A read into a buffer the device may not write.
        header(&mem, VIRTIO_BLK_T_IN, 0);
        let (_, status) = run(
            &mem,
            &block,
            &[desc(HEADER, 16, N), desc(DATA, 512, N), desc(STATUS, 1, W)],
        );
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
        // A data buffer outside guest RAM.
        header(&mem, VIRTIO_BLK_T_IN, 0);
        let (_, status) = run(
            &mem,
            &block,
            &[
                desc(HEADER, 16, N),
                desc(64 << 20, 512, N | W),
                desc(STATUS, 1, W),
            ],
        );
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
        // A partial sector.
        header(&mem, VIRTIO_BLK_T_OUT, 0);
        let (_, status) = run(
            &mem,
            &block,
            &[desc(HEADER, 16, N), desc(DATA, 100, N), desc(STATUS, 1, W)],
        );
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
        // A request type the device does not know.
        header(&mem, 77, 0);
        let (_, status) = run(&mem, &block, &[desc(HEADER, 16, N), desc(STATUS, 1, W)]);
        assert_eq!(status, VIRTIO_BLK_S_UNSUPP as u8);
        // A header the device would have to write: no.
        header(&mem, VIRTIO_BLK_T_IN, 0);
        let (_, status) = run(&mem, &block, &[desc(HEADER, 16, N | W), desc(STATUS, 1, W)]);
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_chain_without_a_status_byte_is_returned_unanswered() {
        let (path, block) = disk("nostatus");
        let mem = memory();
        header(&mem, VIRTIO_BLK_T_IN, 0);
        let (used, status) = run(&mem, &block, &[desc(HEADER, 16, N), desc(DATA, 512, 0)]);
        assert_eq!((used, status), (0, 0xff));
        std::fs::remove_file(path).unwrap();
    }
}

#[cfg(test)]
mod driven {
    use super::*;
    use crate::linux::virtio::hostile::Ring;
    use crate::linux::virtio::mmio::tests::{drive, rd, wr};
    use crate::linux::virtio::mmio::MmioTransport;
    use crate::linux::virtio::Notify;
    use std::time::{Duration, Instant};
    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use vmm_sys_util::eventfd::EventFd;

    /// Requests posted one after another as Linux's driver posts them — avail ring, then a
    /// notification only when `avail_event` asks for one — are all served by the device's thread.
    #[test]
    fn a_driver_that_notifies_only_when_asked_is_never_left_waiting() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("isolab-blk-driven-{}.img", std::process::id()));
        let f = File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        drop(f);
        let block = Block::open(&path, false).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let q = Ring::new(&mem, 0x1000, 16);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(block), mem.clone(), irq, Notify::Exit).unwrap();
        let features = 1u64 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX;
        assert_eq!(drive(&mut t, features, &[q.layout()]) & 0xf, 0xf);
        let mut kicks = 0;
        for i in 0..40u16 {
            // Three descriptors per request, in slots 3i%16.., head at 3*(i%5).
            let base = (i % 5) * 3;
            let header = 0x10_0000 + i as u64 * 0x1000;
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
            h[8..].copy_from_slice(&(i as u64).to_le_bytes());
            mem.write_slice(&h, GuestAddress(header)).unwrap();
            let (n, w) = (VRING_DESC_F_NEXT as u16, VRING_DESC_F_WRITE as u16);
            q.desc(base, header, 16, n, base + 1);
            q.desc(base + 1, header + 0x100, 512, n | w, base + 2);
            q.desc(base + 2, header + 0x800, 1, w, 0);
            let old = q.avail_idx();
            q.offer(base);
            let new = old.wrapping_add(1);
            let event = q.avail_event();
            // vring_need_event(event, new, old)
            if new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old) {
                wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
                kicks += 1;
            }
            let started = Instant::now();
            while q.used_idx() != new {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "request {i} never served: {kicks} kicks, avail_event {event}, used {}",
                    q.used_idx()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = rd(&mut t, 0);
        std::fs::remove_file(path).unwrap();
    }

    /// A driver with up to 200 requests in flight on a 256-entry queue, notifying only when
    /// `avail_event` asks, as Linux's does: every request is served, through wake-ups that each
    /// serve at most `BUDGET` chains and come back for the rest without a notification.
    #[test]
    fn many_requests_in_flight_are_all_served_a_budget_at_a_time() {
        const REQUESTS: u32 = 5000;
        const SLOTS: u16 = 200;
        let path =
            std::env::temp_dir().join(format!("isolab-blk-inflight-{}.img", std::process::id()));
        // Sector i holds the byte i as u8.
        let mut disk = vec![0u8; 1 << 20];
        for (i, s) in disk.chunks_mut(SECTOR as usize).enumerate() {
            s.fill(i as u8);
        }
        std::fs::write(&path, &disk).unwrap();
        let block = Block::open(&path, false).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let q = Ring::new(&mem, 0x1000, 256);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(block), mem.clone(), irq, Notify::Exit).unwrap();
        let features = 1u64 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC;
        assert_eq!(drive(&mut t, features, &[q.layout()]) & 0xf, 0xf);
        // Slot s: an indirect table of header, one 4 KiB page, status; head descriptor s.
        let table = |s: u16| 0x10_0000 + s as u64 * 48;
        let header = |s: u16| 0x11_0000 + s as u64 * 16;
        let status = |s: u16| 0x12_0000 + s as u64;
        let data = |s: u16| 0x20_0000 + s as u64 * 4096;
        let (n, w) = (VRING_DESC_F_NEXT as u16, VRING_DESC_F_WRITE as u16);
        let mut free: Vec<u16> = (0..SLOTS).rev().collect();
        let mut sector_of = vec![0u64; SLOTS as usize];
        let (mut posted, mut done, mut kicks, mut seen_used) = (0u32, 0u32, 0u32, 0u16);
        let mut last_progress = Instant::now();
        while done < REQUESTS {
            // Reap.
            while seen_used != q.used_idx() {
                let (head, len) = q.used(seen_used);
                let s = head as u16;
                assert_eq!(len, 4097, "request in slot {s}");
                assert_eq!(mem.read_obj::<u8>(GuestAddress(status(s))).unwrap(), 0);
                let sector = sector_of[s as usize];
                assert_eq!(
                    mem.read_obj::<u8>(GuestAddress(data(s))).unwrap(),
                    sector as u8
                );
                free.push(s);
                seen_used = seen_used.wrapping_add(1);
                done += 1;
                last_progress = Instant::now();
            }
            // Post as many as there are free slots, then notify if the device asks.
            let old = q.avail_idx();
            while posted < REQUESTS {
                let Some(s) = free.pop() else { break };
                let sector = (posted as u64 * 7919 % 256) * 8;
                sector_of[s as usize] = sector;
                let mut h = [0u8; 16];
                h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
                h[8..].copy_from_slice(&sector.to_le_bytes());
                mem.write_slice(&h, GuestAddress(header(s))).unwrap();
                mem.write_obj(0xffu8, GuestAddress(status(s))).unwrap();
                for (k, d) in [
                    Descriptor::new(header(s), 16, n, 1),
                    Descriptor::new(data(s), 4096, n | w, 2),
                    Descriptor::new(status(s), 1, w, 0),
                ]
                .iter()
                .enumerate()
                {
                    mem.write_obj(
                        virtio_queue::desc::RawDescriptor::from(*d),
                        GuestAddress(table(s) + 16 * k as u64),
                    )
                    .unwrap();
                }
                q.desc(s, table(s), 48, VRING_DESC_F_INDIRECT as u16, 0);
                q.offer(s);
                posted += 1;
            }
            let new = q.avail_idx();
            let event = q.avail_event();
            if new != old && new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old) {
                wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
                kicks += 1;
            }
            assert!(
                last_progress.elapsed() < Duration::from_secs(5),
                "stalled: {done} of {REQUESTS} done, {posted} posted, {kicks} kicks, \
                 avail_event {event}, used {}",
                q.used_idx()
            );
            std::thread::yield_now();
        }
        assert_eq!(Counters::get(&t.counters().malformed), 0);
        eprintln!(
            "{REQUESTS} requests, {kicks} notifications, {} interrupts",
            Counters::get(&t.counters().interrupts)
        );
        std::fs::remove_file(path).unwrap();
    }
}
