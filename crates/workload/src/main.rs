//! `isolab-workload`: the one program isolab runs everywhere that has a Linux kernel.
//!
//! It is linked statically (`+crt-static`), so it needs nothing from the file system it runs in:
//! the same file is exec'd as a plain process, as PID 1 of a container whose root file system
//! holds only this file, and as `/init` of a Linux guest's initramfs.
//!
//! ```text
//! isolab-workload kernel=cpu iters=1000000 [report=FD] [control=FD] [scratch=DIR] [hold=1] [port=N]
//!                 [disk=PATH] [peer=A.B.C.D] [net=A.B.C.D/PREFIX] [libs=DIR] [image=DEVICE]
//!                 [tools=DIR]
//! ```
//!
//! It writes marker lines (see `isolab_kernels::wire`) to the `report` fd (default: stdout) and,
//! when asked to wait for the host, reads one byte from the `control` fd (default: stdin).
//!
//! Started by a Linux kernel as PID 1 under the name `/init`, it is a guest's init (see
//! [`init`]): it mounts what it needs, reports on the console, and stops the guest at the end.

mod devices;
mod init;
mod libraries;
mod neighbour;
mod probe;
mod shim;
mod tools;

use isolab_kernels::marker::{Marker, INIT_PHASE};
use isolab_kernels::{wire, Kernel, Spec};
use shim::{Clock, LinuxShim};
use std::os::unix::ffi::OsStrExt;

/// Exit status when the command line is wrong.
const EXIT_USAGE: i32 = 2;
/// Exit status when the kernel failed.
const EXIT_FAILED: i32 = 1;

fn main() {
    // The very first thing: the `ready` timestamp. Everything before this instruction (fork, exec,
    // namespaces, the C runtime's start-up) is start-up cost; everything after is the workload.
    let ready_ns = shim::now_ns();

    let mut args = std::env::args_os().map(std::os::unix::ffi::OsStringExt::into_vec);
    let argv0 = args.next().unwrap_or_default();
    let mut args: Vec<Vec<u8>> = args.collect();
    // PID 1 of a Linux guest (see `init`): markers on the console, stamped by the host.
    let guest = init::is_guest_init(&argv0);
    if guest {
        // The kernel hands init every command-line word it did not recognise and that has no
        // `=` (e.g. `nomodule` on a kernel without modules), ahead of the words after `--`.
        // Every word of ours is key=value: the others are the kernel's leftovers.
        args.retain(|a| a.contains(&b'='));
    }
    let (options, spec_words) = match Options::split(&args) {
        Ok(split) => split,
        Err(msg) => usage(guest, msg),
    };
    let clock = if guest {
        // A port the kernel will not open for us only costs the precise stamps: the console
        // lines still arrive.
        Clock::Guest(options.port.and_then(|p| init::MarkerPort::open(p).ok()))
    } else {
        Clock::Host
    };
    let mut shim = LinuxShim::new(
        clock,
        options.report_fd,
        options.control_fd,
        options.scratch,
        devices::Disk::new(options.disk.clone()),
        devices::Net::new(options.peer),
    );
    if guest {
        shim.mark(
            Marker::Init,
            wire::Line::new(wire::PHASE).field("name", INIT_PHASE),
            ready_ns,
        );
        if let Err(e) = init::prepare() {
            fail(
                &mut shim,
                guest,
                wire::Line::new(wire::ERROR)
                    .text("step", e.step.as_bytes())
                    .field("errno", e.errno),
            );
        }
    }
    if let (true, Some(device)) = (guest, &options.image) {
        if let Err(e) = init::mount_image(device) {
            fail(
                &mut shim,
                guest,
                wire::Line::new(wire::ERROR)
                    .text("step", e.step.as_bytes())
                    .field("errno", e.errno),
            );
        }
    }
    if let (true, Some((ip, prefix))) = (guest, options.net) {
        // A guest's network interface is the guest's to set up (see `devices`).
        if let Err((step, errno)) = devices::configure_guest(ip, prefix) {
            fail(
                &mut shim,
                guest,
                wire::Line::new(wire::ERROR)
                    .text("step", step.as_bytes())
                    .field("errno", errno),
            );
        }
    }
    let spec = match Spec::parse(spec_words.iter().map(|w| w.as_slice())) {
        Ok(spec) => spec,
        Err(e) => usage(guest, &e.to_string()),
    };
    shim.mark(Marker::Ready, wire::Line::new(wire::READY), ready_ns);
    if let Some(dir) = &options.libs {
        match libraries::load(dir) {
            Ok((bytes, sum)) => {
                shim.emit(
                    wire::Line::new(wire::INFO)
                        .field("key", "libraries_bytes")
                        .field("value", bytes),
                );
                shim.emit(
                    wire::Line::new(wire::INFO)
                        .field("key", "libraries_sum")
                        .field("value", format_args!("{sum:#018x}")),
                );
                shim.phase("libraries");
            }
            Err((step, errno)) => fail(
                &mut shim,
                guest,
                wire::Line::new(wire::ERROR)
                    .text("step", step.as_bytes())
                    .field("errno", errno),
            ),
        }
    }
    if spec.hold {
        shim.hold();
        // The host's go-ahead came: the first thing a workload restored from a checkpoint taken
        // here does, stamped by the workload itself (a restored container's `ready`).
        shim.phase("released");
    }
    if spec.kernel.is_tool() {
        // A field tool beside the lab's kernels (`tools`): its failure is its own words.
        let given = tools::Given {
            tools: options.tools.as_deref(),
            disk: options.disk.as_deref(),
            peer: options.peer,
        };
        match tools::run(&mut shim, &spec, &given) {
            Ok(out) => shim.mark(
                Marker::Done,
                wire::Line::new(wire::DONE)
                    .hex("checksum", out.checksum)
                    .field("ops", out.ops)
                    .field("bytes", out.bytes),
                shim::now_ns(),
            ),
            Err(msg) => fail(
                &mut shim,
                guest,
                wire::Line::new(wire::ERROR)
                    .field("step", spec.kernel)
                    .text("msg", msg.as_bytes()),
            ),
        }
        if guest {
            init::stop();
        }
        return;
    }

    // The arena lives until the end of main: the host's memory reading while the workload holds
    // at `done` must still see every page the kernel touched.
    let result = shim::Arena::for_spec(&spec).and_then(|mut arena| {
        let out = if spec.kernel == Kernel::Probe {
            probe::run(&mut shim, guest)?
        } else if matches!(spec.kernel, Kernel::ForkBomb | Kernel::MemHog) {
            neighbour::run(&mut shim, &spec, guest)?
        } else {
            shim.run_kernel(&spec, &mut arena)?
        };
        let t = shim::now_ns();
        shim.mark(
            Marker::Done,
            wire::Line::new(wire::DONE)
                .hex("checksum", out.checksum)
                .field("ops", out.ops)
                .field("bytes", out.bytes),
            t,
        );
        if spec.hold {
            shim.hold();
        }
        drop(arena);
        Ok(())
    });
    if let Err(e) = result {
        fail(
            &mut shim,
            guest,
            wire::Line::new(wire::ERROR)
                .field("step", spec.kernel)
                .text("msg", format!("{e:?}").as_bytes()),
        );
    }
    if guest {
        init::stop();
    }
}

/// Report a failure and end: exit, or as a guest's PID 1 (which must not exit), stop the guest.
fn fail(shim: &mut LinuxShim, guest: bool, line: wire::Line) -> ! {
    shim.mark(Marker::Failed, line, shim::now_ns());
    if guest {
        init::stop();
    }
    std::process::exit(EXIT_FAILED);
}

/// The words that are about the program rather than the kernel.
struct Options {
    /// `port=N`: also mark phase edges by writing to I/O port N (a guest of the lab's VMM).
    port: Option<u16>,
    report_fd: i32,
    control_fd: i32,
    scratch: std::path::PathBuf,
    /// `disk=PATH`: the instance's disk (disk kernels).
    disk: Option<std::path::PathBuf>,
    /// `peer=A.B.C.D`: the lab's network peer (network kernels).
    peer: Option<std::net::Ipv4Addr>,
    /// `net=A.B.C.D/PREFIX`: a guest's own address on the link to the peer.
    net: Option<(std::net::Ipv4Addr, u8)>,
    /// `libs=DIR`: libraries to load before the kernel runs (see `libraries`).
    libs: Option<std::path::PathBuf>,
    /// `image=DEVICE`: a guest mounts the lab's image from this disk, and loads its libraries.
    image: Option<std::path::PathBuf>,
    /// `tools=DIR`: the field's tools the lab carried into the instance (see `tools`).
    tools: Option<std::path::PathBuf>,
}

impl Options {
    fn split(args: &[Vec<u8>]) -> Result<(Options, Vec<&Vec<u8>>), &'static str> {
        let mut options = Options {
            port: None,
            report_fd: 1,
            control_fd: 0,
            scratch: std::path::PathBuf::from("/tmp"),
            disk: None,
            peer: None,
            net: None,
            libs: None,
            image: None,
            tools: None,
        };
        let mut rest = Vec::new();
        let fd = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .filter(|fd| *fd >= 0)
                .ok_or("file descriptor expected")
        };
        for arg in args {
            let key_value = arg
                .iter()
                .position(|&b| b == b'=')
                .map(|i| (&arg[..i], &arg[i + 1..]));
            match key_value {
                Some((b"report", v)) => options.report_fd = fd(v)?,
                Some((b"control", v)) => options.control_fd = fd(v)?,
                Some((b"port", v)) => {
                    options.port = Some(
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<u16>().ok())
                            .ok_or("port number expected")?,
                    );
                }
                Some((b"scratch", v)) => {
                    options.scratch = std::ffi::OsStr::from_bytes(v).into();
                }
                Some((b"disk", v)) => options.disk = Some(std::ffi::OsStr::from_bytes(v).into()),
                Some((b"libs", v)) => options.libs = Some(std::ffi::OsStr::from_bytes(v).into()),
                Some((b"image", v)) => options.image = Some(std::ffi::OsStr::from_bytes(v).into()),
                Some((b"tools", v)) => options.tools = Some(std::ffi::OsStr::from_bytes(v).into()),
                Some((b"peer", v)) => {
                    options.peer = Some(
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or("IPv4 address expected")?,
                    );
                }
                Some((b"net", v)) => {
                    options.net = Some(devices::parse_net(v).ok_or("address/prefix expected")?);
                }
                _ => rest.push(arg),
            }
        }
        Ok((options, rest))
    }
}

fn usage(guest: bool, msg: &str) -> ! {
    eprintln!("isolab-workload: {msg}");
    eprintln!("usage: isolab-workload kernel=NAME [mib=N] [iters=N] [hold=0|1] [seed=N] [report=FD] [control=FD] [scratch=DIR] [port=N] [disk=PATH] [peer=A.B.C.D] [net=A.B.C.D/PREFIX] [libs=DIR] [image=DEVICE] [tools=DIR]");
    if guest {
        // On a guest's console, also as a marker line, so the host can say what went wrong.
        let mut line = wire::Line::new(wire::ERROR)
            .field("step", "usage")
            .text("msg", msg.as_bytes());
        let bytes = line.finish();
        // SAFETY: writing a valid buffer to stdout, the console.
        unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
        init::stop();
    }
    std::process::exit(EXIT_USAGE);
}
