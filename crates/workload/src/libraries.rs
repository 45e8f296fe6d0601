//! "Shared libraries": what a dynamically linked program's loader does before `main`, done by
//! the workload when it is given `libs=DIR`.
//!
//! The loader maps each library into the process (`mmap` of the file) and touches its pages as
//! it relocates them. The workload does the same to every file of `DIR`: maps it read-only and
//! reads one byte of every page, so each page must be in memory — in the page cache of whatever
//! kernel reads the file — and stays mapped while the workload lives. Where that page cache is,
//! and who shares it, is what the images experiment measures.

/// Map every file of `dir` (in name order) and read every page of it. Returns the bytes mapped
/// and a sum of the bytes read (one per page), so a wrong or missing library shows.
pub fn load(dir: &std::path::Path) -> Result<(u64, u64), (&'static str, i32)> {
    let os = |what: &'static str| move |e: std::io::Error| (what, e.raw_os_error().unwrap_or(0));
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(os("list the libraries"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let (mut bytes, mut sum) = (0u64, 0u64);
    for path in names {
        let file = std::fs::File::open(&path).map_err(os("open a library"))?;
        let len = file.metadata().map_err(os("stat a library"))?.len() as usize;
        if len == 0 {
            continue;
        }
        // SAFETY: a read-only private mapping of a file we hold open; the result is checked.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err((
                "map a library",
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        for offset in (0..len).step_by(4096) {
            // SAFETY: `offset` is inside the mapping of `len` bytes; a volatile read makes the
            // page fault in, as a loader's touch would.
            let b = unsafe { std::ptr::read_volatile(at.cast::<u8>().add(offset)) };
            sum = sum.rotate_left(5) ^ u64::from(b);
        }
        bytes += len as u64;
        // The mapping stays for the process's life, as a loaded library does.
    }
    Ok((bytes, sum))
}
