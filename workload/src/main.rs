//! `isolab-workload`: the one program isolab runs everywhere that has a Linux kernel.
//!
//! It is linked statically (`+crt-static`), so it needs nothing from the file system it runs in:
//! the same file is exec'd as a plain process, as PID 1 of a container whose root file system
//! holds only this file, and as `/init` of a Linux guest's initramfs.
//!
//! ```text
//! isolab-workload kernel=cpu iters=1000000 [report=FD] [control=FD] [scratch=DIR] [hold=1]
//! ```
//!
//! It writes marker lines (see `isolab_kernels::wire`) to the `report` fd (default: stdout) and,
//! when asked to wait for the host, reads one byte from the `control` fd (default: stdin).

mod probe;
mod shim;

use isolab_kernels::{wire, Kernel, Spec};
use shim::LinuxShim;
use std::os::unix::ffi::OsStrExt;

/// Exit status when the command line is wrong.
const EXIT_USAGE: i32 = 2;
/// Exit status when the kernel failed.
const EXIT_FAILED: i32 = 1;

fn main() {
    // The very first thing: the `ready` timestamp. Everything before this instruction (fork, exec,
    // namespaces, the C runtime's start-up) is start-up cost; everything after is the workload.
    let ready_ns = shim::now_ns();

    let args: Vec<Vec<u8>> = std::env::args_os()
        .skip(1)
        .map(std::os::unix::ffi::OsStringExt::into_vec)
        .collect();
    let (options, spec_words) = match Options::split(&args) {
        Ok(split) => split,
        Err(msg) => usage(msg),
    };
    let spec = match Spec::parse(spec_words.iter().map(|w| w.as_slice())) {
        Ok(spec) => spec,
        Err(e) => usage(&e.to_string()),
    };

    let mut shim = LinuxShim::new(options.report_fd, options.control_fd, options.scratch);
    shim.emit(wire::Line::new(wire::READY).field("t", ready_ns));
    if spec.hold {
        shim.hold();
    }

    // The arena lives until the end of main: the host's memory reading while the workload holds
    // at `done` must still see every page the kernel touched.
    let result = shim::Arena::for_spec(&spec).and_then(|mut arena| {
        let out = if spec.kernel == Kernel::Probe {
            probe::run(&mut shim)?
        } else {
            shim.run_kernel(&spec, &mut arena)?
        };
        let t = shim::now_ns();
        shim.emit(
            wire::Line::new(wire::DONE)
                .field("t", t)
                .hex("checksum", out.checksum)
                .field("ops", out.ops)
                .field("bytes", out.bytes),
        );
        if spec.hold {
            shim.hold();
        }
        drop(arena);
        Ok(())
    });
    if let Err(e) = result {
        shim.emit(
            wire::Line::new(wire::ERROR)
                .field("step", spec.kernel)
                .text("msg", format!("{e:?}").as_bytes()),
        );
        std::process::exit(EXIT_FAILED);
    }
}

/// The words that are about the program rather than the kernel.
struct Options {
    report_fd: i32,
    control_fd: i32,
    scratch: std::path::PathBuf,
}

impl Options {
    fn split(args: &[Vec<u8>]) -> Result<(Options, Vec<&Vec<u8>>), &'static str> {
        let mut options = Options {
            report_fd: 1,
            control_fd: 0,
            scratch: std::path::PathBuf::from("/tmp"),
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
                Some((b"scratch", v)) => {
                    options.scratch = std::ffi::OsStr::from_bytes(v).into();
                }
                _ => rest.push(arg),
            }
        }
        Ok((options, rest))
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("isolab-workload: {msg}");
    eprintln!("usage: isolab-workload kernel=NAME [mib=N] [iters=N] [hold=0|1] [seed=N] [report=FD] [control=FD] [scratch=DIR]");
    std::process::exit(EXIT_USAGE);
}
