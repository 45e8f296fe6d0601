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
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
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

/// KSM's settings: what the lab changes, and puts back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// `run`: 0 stopped, 1 running, 2 stopped and unmerged.
    pub run: String,
    /// Pages `ksmd` scans per wake-up.
    pub pages_to_scan: String,
    /// How long `ksmd` sleeps between wake-ups.
    pub sleep_millisecs: String,
}

impl Settings {
    /// The host's settings now.
    fn now() -> Option<Settings> {
        Some(Settings {
            run: read("run")?,
            pages_to_scan: read("pages_to_scan")?,
            sleep_millisecs: read("sleep_millisecs")?,
        })
    }

    /// What the lab runs KSM with: on, 1000 pages every 20 ms (the kernel's defaults, 100 pages
    /// every 20 ms, take minutes to merge a few guests).
    fn fast() -> Settings {
        Settings {
            run: "1".into(),
            pages_to_scan: "1000".into(),
            sleep_millisecs: "20".into(),
        }
    }

    /// Write these settings to the kernel, `run` last (so KSM starts, or stops, with the rest
    /// already in place). Returns what changed, in words. Only numbers are ever written.
    fn apply(&self) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        for (name, value) in [
            ("pages_to_scan", &self.pages_to_scan),
            ("sleep_millisecs", &self.sleep_millisecs),
            ("run", &self.run),
        ] {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("KSM {name}: {value:?} is not a number"));
            }
            if read(name).as_deref() != Some(value.as_str()) {
                write(name, value).map_err(|e| format!("set KSM {name}: {e}"))?;
                done.push(format!("set KSM {name} to {value}"));
            }
        }
        Ok(done)
    }
}

/// KSM is one setting for the whole host, and several labs may want it at once. So the labs
/// that use it share one record, `ksm.json` in the lab registry, read and written only under an
/// exclusive `flock` of `ksm.flock` beside it: the host's settings from before the first of
/// them turned KSM on, and which labs use it now. The first to come writes the settings down;
/// the last to go puts them back. A lab that simply saved "the settings before me" would save
/// another lab's, and whichever ended last would leave KSM on for good.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Users {
    /// The host's settings before any lab changed them.
    before: Settings,
    /// The ids of the labs using KSM.
    labs: Vec<String>,
}

/// The users record and its lock in the registry `registry`.
fn users_paths(registry: &Path) -> (PathBuf, PathBuf) {
    (registry.join("ksm.json"), registry.join("ksm.flock"))
}

/// Run `f` on the users record (`None`: nobody uses KSM) under the lock, and store what it
/// leaves there (`None`: remove the record).
fn with_users<T>(
    registry: &Path,
    f: impl FnOnce(Option<Users>) -> (Option<Users>, T),
) -> std::io::Result<T> {
    let (record, lock_path) = users_paths(registry);
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)?;
    // SAFETY: a blocking flock on a descriptor we own; it is released when `lock` closes.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let users = isolab_host::files::read_bounded(&record, 64 << 10, "the KSM users record")
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Users>(&bytes).ok());
    let (users, out) = f(users);
    match users {
        Some(users) => {
            let temp = registry.join("ksm.json.new");
            let _ = fs::remove_file(&temp);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)?;
            file.write_all(&serde_json::to_vec(&users).expect("the record serialises"))?;
            fs::rename(&temp, &record)?;
        }
        None => match fs::remove_file(&record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
    }
    Ok(out)
}

/// Lab `lab` starts using KSM, whose settings are `now`: the settings to put back when the last
/// user goes (`now` if nobody uses it yet, else what the first user wrote down).
fn join(users: Option<Users>, lab: &str, now: Settings) -> (Option<Users>, Settings) {
    let mut users = users.unwrap_or(Users {
        before: now,
        labs: Vec::new(),
    });
    if !users.labs.iter().any(|l| l == lab) {
        users.labs.push(lab.to_string());
    }
    let before = users.before.clone();
    (Some(users), before)
}

/// Lab `lab` stops using KSM (it ended, or it died and is being reaped); `alive` says whether
/// another user is still running. The settings to put back if it was the last (`recorded`, its
/// ledger's copy, when there is no record at all), `None` while others still use KSM.
fn leave(
    users: Option<Users>,
    lab: &str,
    recorded: Settings,
    alive: impl Fn(&str) -> bool,
) -> (Option<Users>, Option<Settings>) {
    let Some(mut users) = users else {
        return (None, Some(recorded));
    };
    // Users that died without leaving (killed; their own reaping comes later) are dropped too:
    // nothing of theirs needs KSM any more.
    users.labs.retain(|l| l != lab && alive(l));
    if users.labs.is_empty() {
        (None, Some(users.before))
    } else {
        (Some(users), None)
    }
}

/// KSM running for this lab; the host's settings come back when dropped (if no other lab still
/// uses it).
#[derive(Debug)]
pub struct Ksm {
    _restore: Owned,
}

impl Ksm {
    /// Turn KSM on, scanning fast, after writing the host's settings into `ledger` and the
    /// registry's users record.
    pub fn start(ledger: &std::sync::Arc<Ledger>) -> Result<Ksm, KsmError> {
        let registry = ledger.registry().to_path_buf();
        let unavailable =
            |e: std::io::Error| KsmError::Unavailable(format!("the users record: {e}"));
        with_users(&registry, |users| {
            let Some(now) = Settings::now() else {
                return (
                    users,
                    Err(KsmError::Unavailable(format!("{DIR} is missing"))),
                );
            };
            let (users, before) = join(users, ledger.id(), now);
            // Claimed before anything changes: a lab killed from here on is reaped, and its
            // reaping puts KSM back unless another lab still uses it.
            let claimed = ledger.claim(Resource::KsmSettings {
                run: before.run.clone(),
                pages_to_scan: before.pages_to_scan.clone(),
                sleep_millisecs: before.sleep_millisecs.clone(),
                lab: ledger.id().to_string(),
                registry: registry.clone(),
            });
            let started = claimed.map_err(KsmError::from).and_then(|restore| {
                Settings::fast()
                    .apply()
                    .map_err(KsmError::Unavailable)
                    .map(|_| Ksm { _restore: restore })
            });
            (users, started)
        })
        .map_err(unavailable)?
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
                if !isolab_host::interrupt::sleep(Duration::from_millis(20)) {
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

/// Lab `lab` (of the registry `registry`) is done with KSM: put the host's settings back
/// (`recorded`, or the users record's) if no other lab still uses it. The ledger's removal of
/// [`Resource::KsmSettings`], for a lab that ends and for a dead one being reaped alike.
pub fn restore(registry: &Path, lab: &str, recorded: Settings) -> Result<Vec<String>, String> {
    let alive: Vec<String> = crate::ownership::census(registry)
        .into_iter()
        .filter(|l| l.alive && l.id != lab)
        .map(|l| l.id)
        .collect();
    let back = with_users(registry, |users| {
        leave(users, lab, recorded, |l| alive.iter().any(|a| a == l))
    })
    .map_err(|e| format!("the KSM users record in {}: {e}", registry.display()))?;
    match back {
        Some(settings) => settings.apply(),
        None => Ok(vec!["left KSM on: another lab still uses it".into()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(run: &str) -> Settings {
        Settings {
            run: run.into(),
            pages_to_scan: "100".into(),
            sleep_millisecs: "20".into(),
        }
    }

    #[test]
    fn the_first_lab_writes_the_host_settings_down_and_the_last_puts_them_back() {
        // A joins while KSM is off; B joins after A turned it on, and must not take A's "on"
        // for the host's setting.
        let (users, a_before) = join(None, "a", settings("0"));
        let (users, b_before) = join(users, "b", settings("1"));
        assert_eq!(a_before, settings("0"));
        assert_eq!(
            b_before,
            settings("0"),
            "B records the host's settings, not A's"
        );
        // A ends first: B still uses KSM, so nothing is put back.
        let (users, back) = leave(users, "a", a_before, |l| l == "b");
        assert_eq!(back, None);
        assert_eq!(users.as_ref().unwrap().labs, ["b"]);
        // B ends: the host's settings come back, and the record goes.
        let (users, back) = leave(users, "b", b_before, |_| false);
        assert_eq!(back, Some(settings("0")));
        assert_eq!(users, None);
    }

    #[test]
    fn a_user_that_died_without_leaving_does_not_keep_ksm_on() {
        let (users, _) = join(None, "dead", settings("0"));
        let (users, before) = join(users, "b", settings("1"));
        let (users, back) = leave(users, "b", before, |_| false);
        assert_eq!(back, Some(settings("0")));
        assert_eq!(users, None);
        // With no record at all (a lab killed between its claim and the record), its ledger's
        // copy is what comes back.
        assert_eq!(
            leave(None, "x", settings("2"), |_| true),
            (None, Some(settings("2")))
        );
    }

    #[test]
    fn the_record_is_kept_in_the_registry_and_removed_when_nobody_uses_ksm() {
        let dir = std::env::temp_dir().join(format!("isolab-ksm-users-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let before = with_users(&dir, |u| join(u, "a", settings("0"))).unwrap();
        let again = with_users(&dir, |u| join(u, "b", settings("1"))).unwrap();
        assert_eq!((before.clone(), again), (settings("0"), settings("0")));
        assert!(dir.join("ksm.json").is_file());
        let back = with_users(&dir, |u| leave(u, "a", before.clone(), |l| l == "b")).unwrap();
        assert_eq!(back, None);
        let back = with_users(&dir, |u| leave(u, "b", before, |_| false)).unwrap();
        assert_eq!(back, Some(settings("0")));
        assert!(!dir.join("ksm.json").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
