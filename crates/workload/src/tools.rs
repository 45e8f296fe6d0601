//! The field's tools, run by the workload beside the lab's own kernels (`lab validate`).
//!
//! The lab's disk and network kernels are its own code. To show that they measure what the
//! tools the field trusts would measure — papers on containers and VMs report fio, netperf and
//! iperf3 — the workload can run those tools **as its child**, in the same instance: the same
//! namespaces, cgroup, seccomp filter and capabilities (a child inherits them all), the same
//! disk (`disk=`) and the same link to the lab's peer (`peer=`). It runs them with the
//! parameters of the kernel each is held against:
//!
//! | kernel    | what it runs                                                               | held against |
//! |-----------|----------------------------------------------------------------------------|--------------|
//! | `fio`     | sequential write (new data in every request, a final `fdatasync`) then read of `mib` MiB in 1 MiB requests, then `iters` random 4 KiB reads; `O_DIRECT`, one request at a time (`psync`) | `disk-seq`, `disk-rand` |
//! | `netperf` | `TCP_RR`, `iters` transactions of one byte each way, `TCP_NODELAY`          | `net-rr`     |
//! | `iperf3`  | `mib` MiB to `iperf3 -s` in 64 KiB writes                                  | `net-stream` |
//!
//! The tools are ordinary dynamically linked programs; the lab carries each with the libraries
//! `ldd` names and its dynamic loader into a directory (`tools=DIR`: `DIR/bin/`, `DIR/lib/`,
//! `DIR/ld.so`), which a container sees read-only at `/tools`. The workload starts the loader
//! itself (`ld.so --library-path DIR/lib DIR/bin/fio …`), as the kernel would from the
//! program's `PT_INTERP`, so the tool finds its libraries there and not in the root it runs in.
//!
//! What the tool prints on its standard output goes to the lab as `info` lines
//! ([`wire::TOOL_OUTPUT`]), piece by piece; the lab parses it (fio's and iperf3's JSON,
//! netperf's `key=value` lines). The `done` line's checksum is the [`StreamSum`] of that output.

use crate::shim::LinuxShim;
use isolab_kernels::common::CHECK_SEED;
use isolab_kernels::sum::StreamSum;
use isolab_kernels::{wire, Error, Kernel, Output, Shim, Spec};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use isolab_kernels::tool_ports::{IPERF3 as IPERF3_PORT, NETSERVER as NETSERVER_PORT};

/// The most a tool's output may be: fio's JSON is some 10 KiB, netperf's and iperf3's less.
const MAX_OUTPUT: usize = 1 << 20;

/// What the workload was given for a tool.
pub struct Given<'a> {
    /// `tools=DIR`.
    pub tools: Option<&'a Path>,
    /// `disk=PATH`.
    pub disk: Option<&'a Path>,
    /// `peer=A.B.C.D`.
    pub peer: Option<Ipv4Addr>,
}

/// The tool's program name and its arguments, for `spec`.
pub fn command_line(spec: &Spec, given: &Given) -> Result<(&'static str, Vec<String>), Error> {
    let peer = || given.peer.map(|p| p.to_string()).ok_or(Error::Unsupported);
    Ok(match spec.kernel {
        Kernel::Fio => {
            let disk = given.disk.ok_or(Error::Unsupported)?.display().to_string();
            let mut args: Vec<String> = [
                "--output-format=json".to_string(),
                // Threads, not processes: fio's jobs share their statistics in memory without
                // the System V shared memory a container's IPC namespace starts without.
                "--thread".into(),
                format!("--filename={disk}"),
                "--direct=1".into(),
                // pread/pwrite, one at a time: what the lab's kernels do.
                "--ioengine=psync".into(),
                "--iodepth=1".into(),
                format!("--size={}m", spec.mib),
                // The disk is the lab's: fio must not lay it out or remove it.
                "--allow_file_create=0".into(),
                "--unlink=0".into(),
                format!("--randseed={}", spec.seed),
            ]
            .into();
            // Three jobs, one after the other (`stonewall`): disk-seq's write (with its
            // fdatasync at the end) and read, then disk-rand's random reads over data written.
            args.extend(
                [
                    "--name=seq-write",
                    "--rw=write",
                    "--bs=1m",
                    "--end_fsync=1",
                    // New data in every request, as disk-seq writes. By default fio writes
                    // one buffer over and over, and the storage under a cloud VM can take a
                    // repeated block at twice the speed of a new one (measured here: 0.55 ms
                    // against 1.0–1.5 ms per MiB): fio would measure its buffer, not the disk.
                    "--refill_buffers",
                    "--name=seq-read",
                    "--stonewall",
                    "--rw=read",
                    "--bs=1m",
                    "--name=rand-read",
                    "--stonewall",
                    "--rw=randread",
                    "--bs=4k",
                    // Uniform offsets, repeats allowed: what disk-rand draws.
                    "--norandommap",
                ]
                .map(String::from),
            );
            // `iters` reads: a job ends after `size` bytes unless told to move more.
            args.push(format!("--io_size={}", spec.iters * 4096));
            ("fio", args)
        }
        Kernel::Netperf => {
            let args = vec![
                "-H".into(),
                peer()?,
                "-p".into(),
                NETSERVER_PORT.to_string(),
                "-t".into(),
                "TCP_RR".into(),
                // A negative length is a number of transactions, not seconds.
                "-l".into(),
                format!("-{}", spec.iters),
                "-P".into(),
                "0".into(),
                "--".into(),
                // One byte each way, TCP_NODELAY on both ends: what net-rr and its peer do.
                "-r".into(),
                "1,1".into(),
                "-D".into(),
                "-k".into(),
                "THROUGHPUT,THROUGHPUT_UNITS,P50_LATENCY,P99_LATENCY,MEAN_LATENCY,ELAPSED_TIME,\
                 REQUEST_SIZE,RESPONSE_SIZE"
                    .into(),
            ];
            ("netperf", args)
        }
        Kernel::Iperf3 => {
            let args = vec![
                "-c".into(),
                peer()?,
                "-p".into(),
                IPERF3_PORT.to_string(),
                "-n".into(),
                format!("{}M", spec.mib),
                // net-stream's send size.
                "-l".into(),
                format!("{}K", isolab_kernels::net::CHUNK / 1024),
                // TCP_NODELAY, as net-stream's socket has: the two differ in the program only.
                // Without it Nagle's algorithm may hold back what is left of each 64 KiB write
                // past a full segment (65,483 bytes on loopback) until the previous segment is
                // acknowledged.
                "-N".into(),
                "-J".into(),
            ];
            ("iperf3", args)
        }
        _ => return Err(Error::Unsupported),
    })
}

/// The program that starts `tool` from the tools directory `dir`, and its first arguments:
/// the dynamic loader, told where the libraries are.
fn program(dir: &Path, tool: &str) -> (PathBuf, Vec<String>) {
    let path = |p: &Path| p.display().to_string();
    (
        dir.join("ld.so"),
        vec![
            "--library-path".into(),
            path(&dir.join("lib")),
            path(&dir.join("bin").join(tool)),
        ],
    )
}

/// Run the tool of `spec` and relay what it printed. A tool that cannot be started or exits
/// with a failure is an error whose text says which and why.
pub fn run(shim: &mut LinuxShim, spec: &Spec, given: &Given) -> Result<Output, String> {
    let (tool, args) = command_line(spec, given).map_err(|e| {
        format!(
            "{}: not given what it needs (disk= for fio, peer= for netperf and iperf3): {e:?}",
            spec.kernel
        )
    })?;
    let dir = given.tools.ok_or_else(|| {
        format!(
            "{tool}: this instance was given no tools (the lab carries them into process and \
             container instances only)"
        )
    })?;
    let (loader, mut argv) = program(dir, tool);
    argv.extend(args);
    shim.mark_start();
    // The tool's standard error is the workload's: the lab shows it when the run fails.
    let mut child = Command::new(&loader)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{tool}: cannot start {}: {e}", loader.display()))?;
    let mut printed = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|mut out| out.read_to_end(&mut printed));
    let status = child
        .wait()
        .map_err(|e| format!("{tool}: cannot wait for it: {e}"))?;
    if let Some(Err(e)) = read {
        return Err(format!("{tool}: cannot read its output: {e}"));
    }
    if printed.len() > MAX_OUTPUT {
        return Err(format!(
            "{tool} printed {} bytes, more than the {MAX_OUTPUT} its output takes",
            printed.len()
        ));
    }
    if !status.success() {
        let tail = String::from_utf8_lossy(&printed[printed.len().saturating_sub(300)..])
            .replace('\n', " ");
        return Err(format!("{tool} {status}: {tail}"));
    }
    let mut sum = StreamSum::new(CHECK_SEED);
    sum.update(&printed);
    for (i, piece) in printed.chunks(wire::TOOL_OUTPUT_PIECE).enumerate() {
        shim.emit(
            wire::Line::new(wire::INFO)
                .field("key", format_args!("{}.{i:04}", wire::TOOL_OUTPUT))
                .text("value", piece),
        );
    }
    Ok(Output {
        checksum: sum.value(),
        ops: 1,
        bytes: printed.len() as u64,
    })
}
