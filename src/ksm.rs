//! KSM, the kernel's same-page merging: the VM world's answer to a shared page cache.
//!
//! Containers on one image share its pages through the host's page cache. VMs cannot: each
//! guest reads the image into its own memory. KSM (kernel samepage merging) claws some of that
//! back: a kernel thread, `ksmd`, scans memory that processes marked `MADV_MERGEABLE` (a VMM
//! marks its guest's RAM), finds pages with identical contents, and maps them all to one
//! copy-on-write page. It costs CPU to scan, and time: a page is merged only after it stayed the
//! same for two scans. The lab turns it on for a run only, faster than its defaults, and puts
//! the host's settings back after — written in its ledger first, so even a killed lab's are.

use crate::ownership::{Ledger, Owned, OwnershipError, Resource};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

const DIR: &str = "/sys/kernel/mm/ksm";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum KsmError {
    /// The kernel has no KSM, or it cannot be changed.
    #[error("KSM: {0} (it needs a kernel with CONFIG_KSM and root)")]
    Unavailable(String),
    /// The ledger could not be written.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
}

fn read(name: &str) -> Option<String> {
    fs::read_to_string(Path::new(DIR).join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

fn write(name: &str, value: &str) -> std::io::Result<()> {
    fs::write(Path::new(DIR).join(name), value)
}

/// KSM's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Pages KSM keeps as the one copy of merged pages.
    pub pages_shared: u64,
    /// Pages mapped to one of those: the pages saved.
    pub pages_sharing: u64,
    /// Full passes over the mergeable memory so far.
    pub full_scans: u64,
}

/// The counters now.
pub fn counters() -> Counters {
    let n = |f: &str| read(f).and_then(|v| v.parse().ok()).unwrap_or(0);
    Counters {
        pages_shared: n("pages_shared"),
        pages_sharing: n("pages_sharing"),
        full_scans: n("full_scans"),
    }
}

/// KSM running for this lab; the host's settings come back when dropped.
#[derive(Debug)]
pub struct Ksm {
    _restore: Owned,
}

impl Ksm {
    /// Turn KSM on, scanning fast (1000 pages every 20 ms), after writing the current settings
    /// into `ledger`.
    pub fn start(ledger: &std::sync::Arc<Ledger>) -> Result<Ksm, KsmError> {
        let (Some(run), Some(pages_to_scan), Some(sleep_millisecs)) =
            (read("run"), read("pages_to_scan"), read("sleep_millisecs"))
        else {
            return Err(KsmError::Unavailable(format!("{DIR} is missing")));
        };
        let restore = ledger.claim(Resource::KsmSettings {
            run,
            pages_to_scan,
            sleep_millisecs,
        })?;
        for (name, value) in [
            ("pages_to_scan", "1000"),
            ("sleep_millisecs", "20"),
            ("run", "1"),
        ] {
            write(name, value).map_err(|e| KsmError::Unavailable(format!("write {name}: {e}")))?;
        }
        Ok(Ksm { _restore: restore })
    }

    /// Wait until merging has settled — two full scans in a row that merged nothing more — or
    /// `limit` passed. Returns how long it took and the counters then.
    pub fn settle(&self, limit: Duration) -> (Duration, Counters) {
        let started = Instant::now();
        let mut last = counters();
        let mut quiet = 0;
        while started.elapsed() < limit && quiet < 2 {
            let scans = last.full_scans;
            while counters().full_scans == scans && started.elapsed() < limit {
                if !crate::interrupt::sleep(Duration::from_millis(20)) {
                    return (started.elapsed(), counters());
                }
            }
            let now = counters();
            quiet = if now.pages_sharing == last.pages_sharing {
                quiet + 1
            } else {
                0
            };
            last = now;
        }
        (started.elapsed(), last)
    }
}

/// Put KSM's settings back (the ledger's removal of [`Resource::KsmSettings`]). Only numbers are
/// ever written.
pub fn restore(
    run: &str,
    pages_to_scan: &str,
    sleep_millisecs: &str,
) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for (name, value) in [
        ("pages_to_scan", pages_to_scan),
        ("sleep_millisecs", sleep_millisecs),
        ("run", run),
    ] {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("KSM {name}: {value:?} is not a number"));
        }
        if read(name).as_deref() != Some(value) {
            write(name, value).map_err(|e| format!("restore KSM {name}: {e}"))?;
            done.push(format!("restored KSM {name} to {value}"));
        }
    }
    Ok(done)
}
