//! Building a student's crate.
//!
//! Every step crate lives in the `labs/` workspace, so `cargo build` shares that workspace's
//! lock file, and one target directory serves every step: the dependencies (nix, caps,
//! kvm-ioctls) are compiled once, for the first step, and every later step is a few seconds.
//! The program's path comes from cargo's own JSON messages (`compiler-artifact`), so it is right
//! whatever target directory cargo chose.
//!
//! # Whom the build runs as
//!
//! Building runs the crate's code: its build script (`build.rs`) and its procedural macros are
//! programs that cargo compiles and runs on the spot. An instructor checking a crate a student
//! handed in (`lab check STEP --crate DIR`) would run that code as root. So a lab that runs as
//! root never builds as root ([`Builder`]): it builds as the crate's owner, or as `nobody` when
//! root owns the crate (a copy), and the build runs with
//!
//! * **a mount namespace of its own**, in which the toolchain is bind-mounted read-only at
//!   `<labs>/.lab/build/<uid>/toolchain`: rustup puts it under root's home, which is mode 0700,
//!   so no other user reaches it where it is. The mount is private to the build: the host never
//!   sees it, and it ends with the build's last process;
//! * **a cargo home and a target directory of that user's own** (`…/<uid>/home`,
//!   `…/<uid>/target`, mode 0700): cargo downloads the crates the step needs (nix, caps,
//!   kvm-ioctls) from crates.io into the first, once, and compiles into the second. Root's cargo
//!   home, with its credentials and its cache, is not lent: the build could write into it;
//! * **nothing more of root's**: no supplementary groups, `no_new_privs` (no setuid program
//!   raises it again), a session of its own (no terminal of root's to type into), and an
//!   environment of a few variables — root's own may hold tokens.
//!
//! What the build leaves in its target directory is that user's to change at any moment, so
//! root takes the program out with care: opened below the target directory's descriptor with
//! no link followed ([`isolab_host::files::open_regular_beneath`]), read once into memory, and from
//! then on used from the lab's own copy. And the program itself runs unprivileged too
//! ([`isolab_backends::student`]).
//!
//! A lab that is not root builds as itself, exactly as `cargo build` would: the student's own
//! toolchain, cargo home and target directory.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Why a crate did not build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No `Cargo.toml` there.
    #[error("no crate at {0} (no Cargo.toml)")]
    NoCrate(PathBuf),
    /// cargo could not be started.
    #[error("cannot run cargo ({0}): is Rust installed, and is cargo in root's PATH?")]
    NoCargo(std::io::Error),
    /// No toolchain where rustc says its sysroot is.
    #[error("no Rust toolchain to build with: {0}")]
    NoToolchain(String),
    /// The user the build runs as cannot read the crate.
    #[error(
        "{who} cannot read {dir}: the lab builds as {who}, not as root (labs/instructors.md); \
         put the crate (and the labs/ and kernels/ it uses) where {who} can read it"
    )]
    Unreadable {
        /// The crate.
        dir: PathBuf,
        /// Whom the build runs as, in words.
        who: String,
    },
    /// The build's own directories or mount namespace could not be made.
    #[error("cannot prepare the build as {who} ({what}): {source}")]
    Prepare {
        /// Whom the build runs as, in words.
        who: String,
        /// What was being made.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The compiler said no; the first error, as the compiler wrote it.
    #[error("it does not compile:\n{0}")]
    Compile(String),
    /// cargo built nothing runnable.
    #[error("cargo built no program for {0}")]
    NoProgram(PathBuf),
    /// The program cargo named could not be read, or was refused (a link, not a file, too large).
    #[error("the built program: {0}")]
    Program(#[from] isolab_host::files::FilesError),
    /// A stop was requested during the build; cargo and its compilers were stopped.
    #[error("the build was stopped")]
    Interrupted,
    /// Waiting for cargo failed.
    #[error("waiting for cargo: {0}")]
    Wait(std::io::Error),
}

/// What a build made: the program, read into memory the moment the build ended.
#[derive(Clone, Debug)]
pub struct Built {
    /// Where cargo wrote it (for messages: what is there now may be something else).
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The user a root lab builds a crate as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Builder {
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its name (or `uid N` for an owner with no account here).
    pub name: String,
}

impl Builder {
    /// Whom root builds the crate at `dir` as: the directory's owner, or `nobody` where root
    /// owns it — a crate handed in and copied by root is still the student's code.
    pub fn for_crate(dir: &Path) -> Result<Builder, BuildError> {
        let owner = std::fs::metadata(dir)
            .map_err(|_| BuildError::NoCrate(dir.to_path_buf()))?
            .uid();
        if owner == 0 {
            return Ok(Builder::nobody());
        }
        let account = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner))
            .ok()
            .flatten();
        Ok(match account {
            Some(user) => Builder {
                uid: owner,
                gid: user.gid.as_raw(),
                name: user.name,
            },
            // Files copied from another machine keep a uid no account here has: build as
            // that uid all the same, in its own group.
            None => Builder {
                uid: owner,
                gid: owner,
                name: format!("uid {owner}"),
            },
        })
    }

    /// `nobody`, the account that owns no file (65534 where there is no such account).
    pub fn nobody() -> Builder {
        match nix::unistd::User::from_name("nobody").ok().flatten() {
            Some(user) => Builder {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                name: user.name,
            },
            None => Builder {
                uid: 65534,
                gid: 65534,
                name: "nobody".into(),
            },
        }
    }
}

/// The few variables of root's environment a build gets: how to reach crates.io through a
/// proxy, and which certificates to trust. Everything else of root's stays with root.
const PASSED_ON: [&str; 12] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CARGO_HTTP_CAINFO",
    "CARGO_NET_OFFLINE",
];

/// `cargo build --release` the crate at `dir`, using `labs` (the labs directory) for the
/// build's own directories when root; the program it made.
pub fn build(dir: &Path, labs: &Path, say: &mut dyn FnMut(&str)) -> Result<Built, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoCrate(dir.to_path_buf()));
    }
    if !nix::unistd::geteuid().is_root() {
        say(&format!(
            "building {} (the first build of a track compiles its dependencies: a minute or two)",
            dir.display()
        ));
        // `lab` run by `cargo run` knows its cargo; otherwise PATH's.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            // Settings of an outer build (`cargo test` of the lab) must not leak into this one.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTC_WORKSPACE_WRAPPER");
        // SAFETY: setsid is async-signal-safe and touches nothing of the parent's.
        unsafe { command.pre_exec(new_session) };
        let path = run_cargo(command, &manifest, dir)?;
        let bytes = isolab_host::files::read_bounded(&path, crate::MAX_PROGRAM, "built program")?;
        return Ok(Built { path, bytes });
    }
    let builder = Builder::for_crate(dir)?;
    let who = format!("{} (uid {})", builder.name, builder.uid);
    let toolchain = toolchain()?;
    let area = Area::prepare(labs, &builder, &who)?;
    say(&format!(
        "building {} as {who}, not as root (the first build of a track downloads and compiles \
         its dependencies: a minute or two)",
        dir.display()
    ));
    let manifest = std::path::absolute(&manifest).unwrap_or(manifest);
    let bin = area.toolchain.join("bin");
    let mut command = Command::new(bin.join("cargo"));
    command
        .env_clear()
        .env("PATH", {
            let mut path = bin.clone().into_os_string();
            path.push(":/usr/local/bin:/usr/bin:/bin");
            path
        })
        .env("HOME", &area.home)
        .env("CARGO_HOME", area.home.join("cargo"))
        .env("CARGO_TARGET_DIR", &area.target)
        .env("TMPDIR", &area.home)
        .env("RUSTC", bin.join("rustc"))
        .envs(
            PASSED_ON
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        );
    let cstring = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| BuildError::Prepare {
            who: who.clone(),
            what: format!("the path {}", p.display()),
            source: std::io::ErrorKind::InvalidInput.into(),
        })
    };
    let unprivileged = Unprivileged {
        toolchain: cstring(&toolchain)?,
        mount_point: cstring(&area.toolchain)?,
        manifest: cstring(&manifest)?,
        uid: builder.uid,
        gid: builder.gid,
    };
    // SAFETY: `Unprivileged::enter` makes only system calls on data prepared here, then returns; see it.
    unsafe { command.pre_exec(move || unprivileged.enter()) };
    let path = match run_cargo(command, &manifest, dir) {
        Err(BuildError::NoCargo(e)) if e.raw_os_error() == Some(libc::EACCES) => {
            return Err(BuildError::Unreadable {
                dir: dir.to_path_buf(),
                who,
            })
        }
        Err(BuildError::NoCargo(source)) => {
            return Err(BuildError::Prepare {
                who,
                what: "its mount namespace and user".into(),
                source,
            })
        }
        // cargo may write beside the crate too: a missing or outdated Cargo.lock.
        Err(BuildError::Compile(e)) if e.contains("Permission denied") => {
            return Err(BuildError::Compile(format!(
                "{e}\n(the build runs as {who}, not as root: what it must write beside the \
                 crate, such as a Cargo.lock, must be writable by {who} or be there already)"
            )))
        }
        other => other?,
    };
    // The program is in a directory the builder owns: only a file of the target directory,
    // reached through no link, is read, and only once.
    let target = area
        .target
        .canonicalize()
        .unwrap_or_else(|_| area.target.clone());
    let rel = path
        .strip_prefix(&area.target)
        .or_else(|_| path.strip_prefix(&target))
        .map_err(|_| BuildError::NoProgram(dir.to_path_buf()))?;
    let bytes = isolab_host::files::read_bounded_at(
        area.target_fd.as_fd(),
        &area.target,
        rel,
        crate::MAX_PROGRAM,
        "built program",
    )?;
    Ok(Built { path, bytes })
}

/// **In the forked child.** A session of its own: no controlling terminal, so nothing in the
/// build can open `/dev/tty` and type into the terminal `lab` was started from (TIOCSTI); and
/// a process group led by cargo, which `stop` signals as one.
fn new_session() -> std::io::Result<()> {
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What the forked child needs to leave root behind before it runs cargo, prepared before the
/// fork (the child must not allocate: the lab has other threads, whose locks the fork copied).
struct Unprivileged {
    /// The toolchain's directory, and where the build sees it.
    toolchain: CString,
    mount_point: CString,
    /// The crate's manifest, which the builder must be able to read.
    manifest: CString,
    uid: u32,
    gid: u32,
}

impl Unprivileged {
    /// **In the forked child**, root, between fork and exec:
    ///
    /// 1. `setsid` ([`new_session`]);
    /// 2. `unshare(CLONE_NEWNS)`, then every mount private (`MS_REC | MS_PRIVATE` on `/`):
    ///    without that, the bind mount below would propagate to the host's mount table
    ///    (systemd makes `/` shared);
    /// 3. bind the toolchain onto the mount point, then remount the bind read-only, `nosuid`
    ///    and `nodev` (a bind takes its flags only from a remount);
    /// 4. drop every supplementary group, then the gid, then the uid — in that order: once the
    ///    uid is not 0, changing groups is no longer allowed. Raw system calls, one thread;
    /// 5. `no_new_privs`: a setuid-root program the build runs (`sudo`, `su`) does not run as
    ///    root;
    /// 6. can the builder read the manifest? EACCES otherwise, which `build` reports as such.
    fn enter(&self) -> std::io::Result<()> {
        let check = |r: libc::c_long| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        new_session()?;
        let (uid, gid) = (libc::c_long::from(self.uid), libc::c_long::from(self.gid));
        // SAFETY: system calls with NUL-terminated strings prepared before the fork, null
        // pointers where the kernel takes none, and integers.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS).into())?;
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
                .into(),
            )?;
            check(
                libc::mount(
                    self.toolchain.as_ptr(),
                    self.mount_point.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
                .into(),
            )?;
            check(
                libc::mount(
                    std::ptr::null(),
                    self.mount_point.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV,
                    std::ptr::null(),
                )
                .into(),
            )?;
            check(libc::syscall(
                libc::SYS_setgroups,
                0,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
            if libc::access(self.manifest.as_ptr(), libc::R_OK) != 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EACCES));
            }
        }
        Ok(())
    }
}

/// The build's directories under `<labs>/.lab/build/<uid>/`:
///
/// ```text
/// <uid>/        root's, 0755: the builder cannot rename or replace what is in it
///   toolchain/  root's, empty: the mount point of the toolchain, in the build's namespace
///   home/       the builder's, 0700: HOME, CARGO_HOME (home/cargo), TMPDIR
///   target/     the builder's, 0700: CARGO_TARGET_DIR
/// ```
///
/// Each directory is made, or opened if it is there, relative to its parent's descriptor and
/// without following a link (`labs/` may be a student's), then given its owner and mode.
struct Area {
    toolchain: PathBuf,
    home: PathBuf,
    target: PathBuf,
    target_fd: OwnedFd,
}

impl Area {
    fn prepare(labs: &Path, builder: &Builder, who: &str) -> Result<Area, BuildError> {
        let labs = std::path::absolute(labs).unwrap_or_else(|_| labs.to_path_buf());
        let error = |what: &Path| {
            let what = what.display().to_string();
            move |e: Errno| BuildError::Prepare {
                who: who.to_string(),
                what: what.clone(),
                source: e.into(),
            }
        };
        let top = nix::fcntl::open(
            &labs,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(error(&labs))?;
        let root = (0, 0);
        let own = (builder.uid, builder.gid);
        let dot_lab = subdir(&top, ".lab", None, 0o755).map_err(error(&labs.join(".lab")))?;
        let base = labs.join(".lab/build");
        let build = subdir(&dot_lab, "build", Some(root), 0o755).map_err(error(&base))?;
        let area = base.join(builder.uid.to_string());
        let mine =
            subdir(&build, &builder.uid.to_string(), Some(root), 0o755).map_err(error(&area))?;
        subdir(&mine, "toolchain", Some(root), 0o755).map_err(error(&area.join("toolchain")))?;
        subdir(&mine, "home", Some(own), 0o700).map_err(error(&area.join("home")))?;
        let target_fd =
            subdir(&mine, "target", Some(own), 0o700).map_err(error(&area.join("target")))?;
        Ok(Area {
            toolchain: area.join("toolchain"),
            home: area.join("home"),
            target: area.join("target"),
            target_fd,
        })
    }
}

/// The directory `name` in the directory `parent`: made if missing, opened without following
/// a link, then given `owner` (when one is asked) and `mode`.
fn subdir(
    parent: &OwnedFd,
    name: &str,
    owner: Option<(u32, u32)>,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    // A link at `name` gives ELOOP (or ENOTDIR): refused, not followed.
    let fd = nix::fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(
            &fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )?;
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))?;
    }
    Ok(fd)
}

/// The toolchain root builds with: the directory holding `bin/cargo`, `bin/rustc` and `lib/`
/// (rustup's `~/.rustup/toolchains/<name>`, or `/usr` for a distribution's Rust), as rustc
/// itself says (`--print sysroot`). The rustc asked is the one beside `$CARGO` when `lab` was
/// started by cargo, else PATH's; it runs in `/`, because rustup picks its toolchain from a
/// `rust-toolchain.toml` in the directory it runs in, and a student's directory must not choose
/// what root runs.
fn toolchain() -> Result<PathBuf, BuildError> {
    let rustc = std::env::var_os("CARGO")
        .map(|c| Path::new(&c).with_file_name("rustc"))
        .filter(|r| r.is_file())
        .unwrap_or_else(|| PathBuf::from("rustc"));
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(BuildError::NoCargo)?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !sysroot.join("bin/cargo").is_file() {
        return Err(BuildError::NoToolchain(format!(
            "`{} --print sysroot` names {:?}, which has no bin/cargo",
            rustc.display(),
            sysroot
        )));
    }
    Ok(sysroot)
}

/// Run `command` (cargo, set up by the caller) to build `manifest`; the program's path, from
/// cargo's messages.
fn run_cargo(mut command: Command, manifest: &Path, dir: &Path) -> Result<PathBuf, BuildError> {
    let mut child = command
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BuildError::NoCargo)?;
    // Read both pipes while cargo runs: a pipe holds 64 KiB, and a cargo that cannot write its
    // messages would wait for the lab while the lab waits for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait(&mut child)?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout);
    if !status.success() {
        return Err(BuildError::Compile(first_error(&String::from_utf8_lossy(
            &stderr,
        ))));
    }
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| same_file(Path::new(p), manifest))
        })
        .find_map(|m| {
            // The file in deps/ has a hash of the crate's path in its name; the copy cargo
            // makes without it is shared by every crate of that name, e.g. a copy of the step
            // built in another checkout at the same moment.
            m["executable"].as_str()?;
            let built = m["filenames"].as_array()?.first()?.as_str()?;
            Some(PathBuf::from(built))
        })
        .ok_or_else(|| BuildError::NoProgram(dir.to_path_buf()))
}

/// Wait for cargo to end, or for a stop request: then stop the build and say so.
///
/// The lab catches SIGINT and SIGTERM (see [`isolab_host::interrupt`]), so they no longer end it, nor
/// reach cargo, which runs in a process group of its own: a Ctrl-C at the terminal is sent to
/// the terminal's foreground group, the lab's. Waiting with `interrupt::sleep` wakes at once on
/// a stop request; the lab then stops the build itself.
fn wait(child: &mut Child) -> Result<ExitStatus, BuildError> {
    loop {
        if let Some(status) = child.try_wait().map_err(BuildError::Wait)? {
            return Ok(status);
        }
        if isolab_host::interrupt::requested().is_some() {
            stop(child);
            return Err(BuildError::Interrupted);
        }
        isolab_host::interrupt::sleep(Duration::from_millis(50));
    }
}

/// Stop cargo and everything it started: SIGTERM to its process group (cargo and rustc end on
/// it, and cargo then removes its partial outputs), SIGKILL to what is left after 5 s. Then
/// reap cargo.
fn stop(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    // The group's id is cargo's pid (`setsid` made cargo its leader). Until cargo is
    // reaped, at the very end, its pid cannot be reused: the group named is this build's.
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // WNOWAIT: has cargo ended? — without reaping it yet.
        match waitid(
            Id::Pid(group),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    // Whatever of the build outlived cargo (ESRCH if nothing did).
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The first error the compiler reported, with its source lines, or cargo's, with the
/// `Caused by:` paragraphs that say why (at most 20 lines).
fn first_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("error"))
        .unwrap_or(0);
    let mut end = start + 1;
    while end < lines.len() {
        if lines[end].is_empty() {
            // cargo's own errors go on after a blank line with what caused them.
            match lines.get(end + 1) {
                Some(next) if next.starts_with("Caused by:") => end += 1,
                _ => break,
            }
        }
        end += 1;
    }
    lines[start..end.min(start + 20)]
        .iter()
        .filter(|l| !l.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crate_is_built_as_its_owner_or_nobody() {
        let dir = std::env::temp_dir().join(format!("isolab-builder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nobody = Builder::nobody();
        assert_ne!(nobody.uid, 0);
        // Root's copy of a crate is still the student's code.
        nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        assert_eq!(Builder::for_crate(&dir).unwrap(), nobody);
        // An owner with no account here (files copied from another machine): that uid.
        let stranger = 3_999_999_999;
        nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(stranger)), None).unwrap();
        let b = Builder::for_crate(&dir).unwrap();
        assert_eq!((b.uid, b.gid), (stranger, stranger));
        assert_eq!(b.name, format!("uid {stranger}"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            Builder::for_crate(&dir),
            Err(BuildError::NoCrate(_))
        ));
    }

    #[test]
    fn the_first_error_is_picked_out_of_cargos_output() {
        let stderr = "   Compiling x v0.1.0\nwarning: unused\n\nerror[E0425]: cannot find value `y`\n --> src/main.rs:2:5\n  |\n2 |     y\n\nerror: aborting\n";
        let e = first_error(stderr);
        assert!(e.starts_with("error[E0425]"), "{e}");
        assert!(
            e.contains("src/main.rs:2:5") && !e.contains("aborting"),
            "{e}"
        );
        let stderr = "error: failed to write /c/Cargo.lock\n\nCaused by:\n  failed to open: /c/Cargo.lock\n\nCaused by:\n  Permission denied (os error 13)\n\nlater\n";
        assert_eq!(
            first_error(stderr),
            "error: failed to write /c/Cargo.lock\nCaused by:\n  failed to open: /c/Cargo.lock\nCaused by:\n  Permission denied (os error 13)"
        );
    }
}
