//! As a student's program: a container runtime or a VMM that `lab check` and the `student:*`
//! backends start (`labs/abi.md`), which tries the host instead of building a container or a VM.
//!
//! It recognises its command line by the first word the lab gives each kind (`--rootfs` for a
//! runtime, `--ram-mib` for a VMM) and finds the lab's work directory from it: the container's
//! root and the VMM's scratch directory are made there. The test puts a root-owned file and a
//! root-only secret in that directory, then looks at what this program managed:
//!
//! | key               | attempt                                                             |
//! |-------------------|---------------------------------------------------------------------|
//! | `student.uid`     | who it is on the host: its uid, and its user namespace's uid map    |
//! | `student.victim`  | overwrite `<workdir>/victim`, a root-owned file (mode 0644)          |
//! | `student.secret`  | read `<workdir>/secret`, a root-only file (mode 0600)                |
//! | `student.root`    | list `/root`, root's home (mode 0700)                                |
//! | `student.setuid`  | copy itself to `<workdir>/suid-<pid>` and `chmod 4755`               |
//! | `student.kvm`     | open `/dev/kvm` (a VMM must; a runtime need not)                     |
//!
//! Then it says `ready` on the report pipe (fd 3), waits for the go-ahead on fd 4 so that the
//! test can try the setuid copy while it lives, and says `done`.

use crate::{chmod, emit, now_ns, open};
use isolab_kernels::wire::{self, Line};
use std::path::{Path, PathBuf};

/// The file the test overwrites nothing of, and the text an overwrite leaves.
pub const OVERWRITTEN: &str = "overwritten by a student's program\n";

/// Is this the command line of a student's runtime or VMM?
pub fn is_student(args: &[String]) -> bool {
    matches!(
        args.first().map(String::as_str),
        Some("--rootfs" | "--ram-mib")
    )
}

/// The lab's work directory, from the runtime's `--rootfs <workdir>/student-<name>` or the
/// VMM's `--scratch <workdir>/student-<name>/scratch`.
fn workdir(args: &[String]) -> Option<PathBuf> {
    let value = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).map(PathBuf::from)
    };
    if let Some(root) = value("--rootfs") {
        return root.parent().map(Path::to_path_buf);
    }
    let scratch = value("--scratch")?;
    scratch.parent()?.parent().map(Path::to_path_buf)
}

/// Try everything, report, wait for the host, end.
pub fn run(args: &[String]) {
    let (report, control) = (3, 4);
    let Some(dir) = workdir(args) else {
        emit(
            report,
            Line::new(wire::PROBE)
                .field("key", "student.error")
                .text("value", b"no work directory on the command line"),
        );
        return;
    };
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let facts = [
        ("student.uid", format!("uid={uid} map={map}")),
        ("student.victim", overwrite(&dir.join("victim"))),
        ("student.secret", read(&dir.join("secret"))),
        ("student.root", list("/root")),
        ("student.setuid", setuid_copy(&dir)),
        (
            "student.kvm",
            match open("/dev/kvm", libc::O_RDWR) {
                Ok(fd) => {
                    crate::close(fd);
                    "opened".into()
                }
                Err(e) => format!("errno={e}"),
            },
        ),
    ];
    for (key, value) in &facts {
        emit(
            report,
            Line::new(wire::PROBE)
                .field("key", key)
                .text("value", value.as_bytes()),
        );
    }
    emit(report, Line::new(wire::READY).field("t", now_ns()));
    let mut byte = [0u8; 1];
    // SAFETY: reading into a valid one-byte buffer from an inherited fd.
    unsafe { libc::read(control, byte.as_mut_ptr().cast(), 1) };
    emit(
        report,
        Line::new(wire::DONE)
            .field("t", now_ns())
            .hex("checksum", 0)
            .field("ops", 0)
            .field("bytes", 0),
    );
}

fn overwrite(path: &Path) -> String {
    match std::fs::write(path, OVERWRITTEN) {
        Ok(()) => "overwritten".into(),
        Err(e) => format!("errno={}", e.raw_os_error().unwrap_or(0)),
    }
}

fn read(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => format!("read: {}", text.trim()),
        Err(e) => format!("errno={}", e.raw_os_error().unwrap_or(0)),
    }
}

fn list(path: &str) -> String {
    match std::fs::read_dir(path) {
        Ok(entries) => format!("listed {} entries", entries.count()),
        Err(e) => format!("errno={}", e.raw_os_error().unwrap_or(0)),
    }
}

/// Copy this program into `dir` and make it setuid: it runs as whoever owns the copy.
fn setuid_copy(dir: &Path) -> String {
    // SAFETY: getpid cannot fail.
    let path = dir.join(format!("suid-{}", unsafe { libc::getpid() }));
    let exe = match std::fs::read("/proc/self/exe") {
        Ok(exe) => exe,
        Err(e) => return format!("read self: {e}"),
    };
    if let Err(e) = std::fs::write(&path, exe) {
        return format!("errno={}", e.raw_os_error().unwrap_or(0));
    }
    match chmod(&path.to_string_lossy(), 0o4755) {
        Ok(()) => format!("planted {}", path.display()),
        Err(e) => format!("chmod errno={e}"),
    }
}
