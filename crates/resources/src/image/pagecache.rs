//! What of a file the page cache holds, and how to empty it.
//!
//! `mincore(2)` says, page by page, whether a mapping's pages are resident. A file mapped
//! read-only (and never touched through the mapping) shows exactly which of its pages sit in the
//! page cache: the lab counts the image's pages there **once**, however many containers read
//! them. `posix_fadvise(POSIX_FADV_DONTNEED)` asks the kernel to drop a file's clean pages, so
//! the first instance after it starts *cold*, reading the image from the disk.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

const PAGE: usize = 4096;

/// Bytes of `path` resident in the page cache (0 for a file that cannot be read).
pub fn resident_bytes(path: &Path) -> u64 {
    let Ok(file) = File::open(path) else { return 0 };
    let Ok(len) = file.metadata().map(|m| m.len() as usize) else {
        return 0;
    };
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only shared mapping of a file we hold open; never read through, only
    // asked about; unmapped below.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return 0;
    }
    let pages = len.div_ceil(PAGE);
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the mapping, as mincore requires.
    let ok = unsafe { libc::mincore(at, len, vec.as_mut_ptr()) } == 0;
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(at, len) };
    if !ok {
        return 0;
    }
    vec.iter().filter(|b| *b & 1 == 1).count() as u64 * PAGE as u64
}

/// Ask the kernel to drop `path`'s pages from the page cache.
pub fn drop_cached(path: &Path) {
    if let Ok(file) = File::open(path) {
        // SAFETY: posix_fadvise on a descriptor we hold; advice only.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn dropped_pages_come_back_when_read() {
        let path = Path::new(crate::disks::DEFAULT_PARENT)
            .join(format!("isolab-pagecache-test-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        File::open(&path).unwrap().sync_all().unwrap();
        drop_cached(&path);
        let cold = resident_bytes(&path);
        let mut buf = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut buf).unwrap();
        let warm = resident_bytes(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(cold < 1 << 20, "after dropping: {cold}");
        assert_eq!(warm, 1 << 20, "after reading every byte");
    }
}
