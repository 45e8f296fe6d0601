//! Attacks through terminals, device nodes and capabilities (`tests/security/devices.rs`).
//!
//! | key                 | attempt                                                              |
//! |---------------------|----------------------------------------------------------------------|
//! | `attack.tiocsti`    | open `/dev/tty` — the terminal of whoever started the lab, if the   |
//! |                     | container still belongs to its session — and type a command into it |
//! |                     | with `TIOCSTI`, which the shell reading that terminal runs next      |
//! | `attack.device.*`   | make nodes for `/dev/kvm`, `tty1`, `console`, `/dev/fuse` and       |
//! |                     | `/dev/net/tun` wherever it can write, and open each read-write      |
//! | `attack.disk`       | make a node for every loop device (block major 7) and open it: one  |
//! | `attack.disk.wrote` | whose first bytes are [`DISK_MARKER`] is the test's "host disk",    |
//! |                     | over a root-only file; overwrite its first sector                    |
//! | `attack.caps`       | the capability sets the workload runs with (`/proc/self/status`)    |
//!
//! Each value fits one report line of the marker protocol (512 bytes).
//!
//! Both the terminal and the disk attack are aimed: the command is typed only into a terminal
//! whose window size is [`TTY_ROWS`] × [`TTY_COLS`] (the pseudo-terminal the test made), and
//! only a disk that starts with the marker is written. A developer running the suite from their
//! own terminal, or a loop device of someone else's, is never touched — only tried.

use std::ffi::CString;

/// The window size of the test's pseudo-terminal: the terminal attack types only into it.
pub const TTY_ROWS: u16 = 1234;
/// See [`TTY_ROWS`].
pub const TTY_COLS: u16 = 4321;
/// What the terminal attack types (a command a shell would run).
pub const TYPED: &[u8] = b"echo isolab-typed-this-into-your-terminal\n";
/// The first bytes of the test's victim disk.
pub const DISK_MARKER: &[u8] = b"ISOLAB-SECURITY-TEST-DISK";
/// What the disk attack writes over the marker.
pub const DISK_OVERWRITE: &[u8] = b"OVERWRITTEN FROM INSIDE A CONTAINER";
/// How many minors of the loop driver the disk attack tries.
const LOOP_MINORS: u32 = 4096;
/// The loop driver's block major.
const LOOP_MAJOR: u32 = 7;

/// Where the attacks try to make nodes: every place a container may be able to write.
const DIRS: [&str; 6] = ["/dev", "/tmp", "/", "/scratch", "/dev/shm", "/run"];

/// `attack.tiocsti`.
pub fn tiocsti() -> String {
    let tty = c("/dev/tty");
    // O_NOCTTY: opening a terminal must never make it ours; /dev/tty is the one we have, if any.
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            tty.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return format!("open-/dev/tty:errno={}", errno());
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let got = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    let result = if got != 0 || (size.ws_row, size.ws_col) != (TTY_ROWS, TTY_COLS) {
        format!(
            "opened-/dev/tty:{}x{}:not-the-test's-terminal:nothing-typed",
            size.ws_row, size.ws_col
        )
    } else {
        let mut typed = 0;
        let mut failed = 0;
        for byte in TYPED {
            // SAFETY: TIOCSTI reads one byte from the pointer given.
            if unsafe { libc::ioctl(fd, libc::TIOCSTI, byte as *const u8) } == 0 {
                typed += 1;
            } else {
                failed = errno();
                break;
            }
        }
        format!(
            "opened /dev/tty, typed {typed} of {} bytes errno={failed}",
            TYPED.len()
        )
    };
    close(fd);
    result
}

/// `attack.device.<name>`: for each device, in each directory, what making its node and
/// opening it did (`/dev:opened`, `/tmp:errno=13`, `/:mknod-errno=30`).
pub fn device_nodes() -> Vec<(String, String)> {
    let devices: [(&str, u32, u32); 5] = [
        ("kvm", 10, 232),
        ("tty1", 4, 1),
        ("console", 5, 1),
        ("fuse", 10, 229),
        ("tun", 10, 200),
    ];
    devices
        .iter()
        .map(|&(name, major, minor)| {
            let tries: Vec<String> = DIRS
                .iter()
                .map(|dir| {
                    let path = format!("{}/isolab-attack-{name}", dir.trim_end_matches('/'));
                    let outcome = make_and_open(&path, libc::S_IFCHR, major, minor, |_| ());
                    format!("{dir}:{outcome}")
                })
                .collect();
            (format!("attack.device.{name}"), tries.join(","))
        })
        .collect()
}

/// `attack.disk`: per directory where block nodes could be made, how the opens of the loop
/// devices went (`/dev:errno=1*4096`); `attack.disk.wrote`: the disks with the marker that
/// were overwritten (`7:0`), or `none`.
pub fn disk() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut written = Vec::new();
    for dir in DIRS {
        let path = format!("{}/isolab-attack-loop", dir.trim_end_matches('/'));
        let mut outcomes: std::collections::BTreeMap<String, u32> = Default::default();
        for minor in 0..LOOP_MINORS {
            let outcome = make_and_open(&path, libc::S_IFBLK, LOOP_MAJOR, minor, |fd| {
                if overwrite_marked(fd) {
                    written.push(format!("{LOOP_MAJOR}:{minor}"));
                }
            });
            let unmade = outcome.starts_with("mknod");
            *outcomes.entry(outcome).or_default() += 1;
            // A directory where no node can be made at all is not worth 4096 tries.
            if unmade && minor == 0 {
                break;
            }
        }
        let summary: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o}*{n}")).collect();
        out.push(format!("{dir}:{}", summary.join("+")));
    }
    if written.is_empty() {
        written.push("none".into());
    }
    vec![
        ("attack.disk".into(), out.join(",")),
        ("attack.disk.wrote".into(), written.join(",")),
    ]
}

/// Every fact of this module's attacks, each short enough for one report line.
pub fn facts() -> Vec<(String, String)> {
    let mut facts = vec![
        ("attack.tiocsti".to_string(), tiocsti()),
        ("attack.caps".to_string(), caps()),
    ];
    facts.extend(device_nodes());
    facts.extend(disk());
    facts
}

/// `attack.caps`: `inh=… prm=… eff=… bnd=… amb=…`, as `/proc/self/status` gives them.
pub fn caps() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let set = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "inh={},prm={},eff={},bnd={},amb={}",
        set("CapInh:"),
        set("CapPrm:"),
        set("CapEff:"),
        set("CapBnd:"),
        set("CapAmb:")
    )
}

/// Make a node of `kind` (`S_IFCHR`, `S_IFBLK`) for `major:minor` at `path`, open it read-write,
/// hand the descriptor to `opened`, and remove the node. Returns `opened`, `errno=N` (the open
/// failed) or `mknod errno=N`.
fn make_and_open(
    path: &str,
    kind: libc::mode_t,
    major: u32,
    minor: u32,
    opened: impl FnOnce(i32),
) -> String {
    let p = c(path);
    // SAFETY: unlink and mknod with a NUL-terminated path and plain integers.
    let made = unsafe {
        libc::unlink(p.as_ptr());
        libc::mknod(p.as_ptr(), kind | 0o600, libc::makedev(major, minor))
    };
    if made != 0 {
        return format!("mknod-errno={}", errno());
    }
    // O_NONBLOCK: a terminal or a device without a medium must not hang the attacker.
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    let result = if fd < 0 {
        format!("errno={}", errno())
    } else {
        opened(fd);
        close(fd);
        "opened".to_string()
    };
    // SAFETY: as above.
    unsafe { libc::unlink(p.as_ptr()) };
    result
}

/// If the disk open at `fd` starts with [`DISK_MARKER`], write [`DISK_OVERWRITE`] over it.
fn overwrite_marked(fd: i32) -> bool {
    let mut head = [0u8; 64];
    // SAFETY: reading into a buffer we own, from an fd we opened.
    let n = unsafe { libc::pread(fd, head.as_mut_ptr().cast(), head.len(), 0) };
    if n < DISK_MARKER.len() as isize || !head.starts_with(DISK_MARKER) {
        return false;
    }
    // SAFETY: writing a constant buffer to the same fd, then flushing it to the file.
    unsafe {
        let w = libc::pwrite(fd, DISK_OVERWRITE.as_ptr().cast(), DISK_OVERWRITE.len(), 0);
        libc::fsync(fd);
        w == DISK_OVERWRITE.len() as isize
    }
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn close(fd: i32) {
    // SAFETY: an fd this module opened, closed once.
    unsafe { libc::close(fd) };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
