//! `lab validate`: do the lab's disk and network kernels measure what the field's tools measure?
//!
//! The disk and network kernels are the lab's own code (fio-like, netperf-like). Papers that
//! compare containers and VMs report fio, netperf and iperf3; a student or an instructor should
//! not have to take the lab's word that its kernels agree with them. So this experiment runs
//! each tool **beside** the kernel it stands for, in the same kind of instance, on a disk of the
//! same size in the same directory (`O_DIRECT` both) or over the same kind of link to the lab's
//! peer — the tool as the workload's child, inside the instance (a container's tools are bound
//! at `/tools`: the same namespaces, cgroup, seccomp filter and capabilities as the kernel; see
//! the workload's `tools` module) — and prints, per figure, the tool's value, the lab's, and
//! the lab's divided by the tool's:
//!
//! | lab kernel   | figure                | tool                                                    |
//! |--------------|-----------------------|---------------------------------------------------------|
//! | `disk-seq`   | write, read bandwidth | fio sequential write (with `end_fsync`), then read: 1 MiB requests |
//! | `disk-rand`  | IOPS, p50 latency     | fio `randread`, 4 KiB, iodepth 1, `O_DIRECT`, `psync`   |
//! | `net-rr`     | transactions/s, p50   | netperf `TCP_RR`, one byte each way, `TCP_NODELAY`       |
//! | `net-stream` | bandwidth             | iperf3, 64 KiB writes, TCP_NODELAY                       |
//!
//! The servers the tools talk to (`netserver`, `iperf3 -s`) run beside the lab's peer, in its
//! network namespace, so a tool's packets take the same veth as the kernel's.
//!
//! Like every experiment it runs in rounds. In a round, each kernel and the tool held against
//! it run **back to back** (in a shuffled order, the groups too), and the figure's verdict is
//! the median over the rounds of the lab's figure divided by the tool's ([`judge`]): on a
//! shared machine what runs beside the lab moves a figure by tens of percent from one second to
//! the next, and two runs a second apart see the same machine far more often than two a minute
//! apart. A figure **agrees** when that median is within the tolerance of 1 (±15% by default);
//! `lab validate` exits 0 only when every figure agrees. Every tool's output is kept beside the
//! results (`tools/`), so each figure can be traced to what the tool printed.
//!
//! What was found, and fixed in the lab's kernels or set in the tools' options (the reasons are
//! in the code where each is done):
//! * disk-seq timed the making and summing of its random data with its writes (0.6–0.8× fio):
//!   it now times its requests alone, and fio's figure is its block size over its mean request
//!   latency;
//! * fio writes one buffer over and over by default, and the storage under a cloud VM takes a
//!   repeated block about twice as fast as a new one: fio runs with `--refill_buffers`;
//! * net-stream made its random bytes inside the timed loop (0.55× iperf3): they are made
//!   before the clock starts; and the peer inside an unoptimised `lab` summed at 50 MiB/s: the
//!   kernels crate is optimised in every build;
//! * disk-seq summed each MiB it read before asking for the next (0.6–0.7× fio's reads): on a
//!   busy machine a task that has just used the CPU is woken later when its request completes
//!   (fio given 150 µs of CPU between requests, `--thinktime_spin`, read at 0.63× its own
//!   speed here). It now glances at its reads and checks them in a second, untimed pass;
//! * netperf prints its latency percentiles in whole microseconds: at 16 µs, one step is 6%;
//! * disk-seq made and summed a MiB of random numbers between two timed writes (0.70–0.81× fio's
//!   in a container on a busy machine): each request's data is now one XOR pass away from the
//!   last, and their sum is taken first, untimed;
//! * net-rr's echo is a thread new to the scheduler for each connection, netperf's `netserver`
//!   a process that has just served its control connection: net-rr makes a tenth as many
//!   round trips untimed first.
//!
//! **Placed alike.** Where two tasks that answer each other run decides a round trip more than
//! any code does: on this 2-CPU VM, idle, a one-byte round trip between two CPUs cost 50–60 µs
//! (each wakes the other's CPU from its idle halt, which a VM pays a hypervisor exit for) and on
//! one CPU 18 µs. Left to the scheduler, netperf and `netserver` shared a CPU more often than
//! net-rr and its echo (a thread of the lab): net-rr came out at 0.73–0.89× netperf's
//! transactions/s on the idle machine while its median round trip agreed; and iperf3's two ends
//! shared one more often than net-stream's, which came out at 1.15–1.48× iperf3's. So the lab
//! places both pairs alike, as the tools' own options do (`netperf -T`, `iperf3 -A`) — the lab,
//! the tools' servers and the instance bound for the group's runs ([`Placement`]): net-rr and
//! netperf with both ends on one CPU (0.96–1.02×, bound), net-stream and iperf3 with the sender
//! on one CPU and the receiver on another (1.03–1.13×; a stream's ends work at once, and the
//! lab's sink sums every byte where iperf3's server throws them away: on one shared CPU that sum
//! was the sender's loss, 0.82–0.84×). The disks run wherever the scheduler puts them. Idle, three
//! validations in a row then agreed on all 14 figures.
//!
//! Not validated in a `qemu` guest: the tools would have to be carried into its initramfs with
//! their libraries, and a Linux guest boots here only under QEMU's emulator (TCG), where a disk
//! request or a packet costs what the emulation costs; the comparison would hold the emulator
//! against itself. The backends the lab carries the tools into are `process` and `container`.

use crate::ExperimentError;
use isolab_backends::lab::Lab;
use isolab_backends::{Backend, Limits, Outcome, Run};
use isolab_kernels::rng::Rng;
use isolab_kernels::tool_ports;
use isolab_payload::{Kernel, Spec};
use isolab_results::{
    Header, Record, Skipped, ValidationRecord, ValidationUnit, Writer, RESULTS_FILE, SCHEMA,
};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The experiment's name, in results.
pub const EXPERIMENT: &str = "validate";

/// How far from 1 the lab's figure divided by the tool's may be: ±15%.
pub const DEFAULT_TOLERANCE: f64 = 0.15;

/// Rounds by default: each runs seven cases per backend, about five seconds in all. Nine, not
/// five: the verdict is the median of the rounds' ratios, whose middle half spans ±10–30% on a
/// busy machine (measured here), and a median's error falls as the square root of the rounds
/// (a quarter less with nine than with five).
pub const DEFAULT_ROUNDS: u32 = 9;

/// Where the tools' outputs go, in the results directory.
pub const OUTPUTS_DIR: &str = "tools";

/// How a group of runs is placed on the CPUs (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Wherever the scheduler puts them: the disk kernels and fio.
    Anywhere,
    /// The instance and whatever answers it on one CPU: net-rr and netperf (`netperf -T 0,0`).
    Together,
    /// The instance on one CPU, whatever receives from it on another: net-stream and iperf3
    /// (`iperf3 -A 1,0`).
    Apart,
}

/// Where the validation's tasks may run. Affinity is a thread's own and a new thread or process
/// inherits its creator's, so binding every thread of the lab — the peer's (named
/// `isolab-peer-*`, which start a thread per connection), the launcher's, the one that starts
/// instances — and the tools' servers binds whatever they start next.
struct Placement {
    all: CpuSet,
    /// The peer's and the servers' CPU, and the instance's when together.
    near: usize,
    /// The instance's CPU when apart (`near` on a machine of one CPU).
    far: usize,
}

impl Placement {
    fn new() -> Result<Placement, ExperimentError> {
        let all = sched_getaffinity(Pid::from_raw(0))
            .map_err(|e| ExperimentError::Validate(format!("sched_getaffinity: {e}")))?;
        let mut cpus = (0..CpuSet::count()).filter(|&c| all.is_set(c).unwrap_or(false));
        let near = cpus
            .next()
            .ok_or_else(|| ExperimentError::Validate("the lab may run on no CPU".into()))?;
        let far = cpus.next().unwrap_or(near);
        Ok(Placement { all, near, far })
    }

    fn only(cpu: usize) -> CpuSet {
        let mut set = CpuSet::new();
        // A CPU read from the lab's own affinity mask is within a CpuSet.
        let _ = set.set(cpu);
        set
    }

    /// Bind the lab's threads and `servers` for `place`.
    fn bind(&self, place: Place, servers: &Servers) -> Result<(), ExperimentError> {
        let (near, far) = match place {
            Place::Anywhere => (self.all, self.all),
            Place::Together => (Self::only(self.near), Self::only(self.near)),
            Place::Apart => (Self::only(self.near), Self::only(self.far)),
        };
        let set = |tid: i32, cpus: &CpuSet| match sched_setaffinity(Pid::from_raw(tid), cpus) {
            // A thread that has ended since the directory was read.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(ExperimentError::Validate(format!(
                "sched_setaffinity of task {tid}: {e}"
            ))),
        };
        for tid in isolab_host::procfs::numbered("/proc/self/task") {
            let comm =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
            set(
                tid,
                if comm.starts_with("isolab-peer") {
                    &near
                } else {
                    &far
                },
            )?;
        }
        for (_, child) in &servers.0 {
            set(child.id() as i32, &near)?;
        }
        Ok(())
    }
}

/// MiB of each disk by default: four times `lab run throughput`'s. disk-seq's 64 MiB are
/// written in some 50 ms here, and one hiccup of the storage under a cloud VM moved a round's
/// ratio by up to ±50% (the rounds' middle half 0.67–1.80 in three runs of nine rounds); with
/// 256 MiB, 0.91–1.40 over two.
pub const DISK_MIB: u64 = 256;

/// The backends validated when none are named.
pub const DEFAULT_BACKENDS: [&str; 2] = ["process", "container"];

/// What `lab validate` is asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends to validate on (default: [`DEFAULT_BACKENDS`]).
    pub backends: Option<Vec<String>>,
    /// Measured rounds.
    pub rounds: u32,
    /// MiB of each disk (`disk-seq` and `disk-rand`, and fio's file).
    pub disk_mib: u64,
    /// Random reads of `disk-rand` and fio's `randread`.
    pub reads: u64,
    /// Round trips of `net-rr`, transactions of netperf's `TCP_RR`.
    pub round_trips: u64,
    /// MiB that `net-stream` and iperf3 send.
    pub stream_mib: u64,
    /// See [`DEFAULT_TOLERANCE`].
    pub tolerance: f64,
    /// Seed of the round shuffles.
    pub seed: u64,
    /// Directory under which the results directory is made.
    pub out: PathBuf,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for Options {
    /// A short run (about two minutes here): [`DISK_MIB`] disks, the stream size of `lab run
    /// throughput`, a quarter of its random reads and half its round trips, nine rounds. Longer
    /// runs average more of a shared machine's noise: `--rounds`, `--reads`, `--round-trips`.
    fn default() -> Options {
        let rand = Spec::default_for(Kernel::DiskRand);
        Options {
            backends: None,
            rounds: DEFAULT_ROUNDS,
            disk_mib: DISK_MIB,
            reads: rand.iters / 4,
            round_trips: Spec::default_for(Kernel::NetRr).iters / 2,
            stream_mib: Spec::default_for(Kernel::NetStream).mib,
            tolerance: DEFAULT_TOLERANCE,
            seed: 1,
            out: crate::default_out().to_path_buf(),
            progress: false,
        }
    }
}

/// What a validation found.
#[derive(Debug)]
pub struct Validation {
    /// The results file.
    pub results: PathBuf,
    /// One record per backend and figure.
    pub records: Vec<ValidationRecord>,
    /// Stopped early by a signal.
    pub interrupted: bool,
}

impl Validation {
    /// True when every figure agrees with its tool.
    pub fn agrees(&self) -> bool {
        !self.records.is_empty() && self.records.iter().all(|r| r.within)
    }
}

/// The figures one tool run gave, parsed from its output.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ToolFigures {
    /// fio's sequential write, bytes/s.
    pub seq_write_bytes_per_s: Option<f64>,
    /// fio's sequential read, bytes/s.
    pub seq_read_bytes_per_s: Option<f64>,
    /// fio's random reads, IOPS.
    pub rand_iops: Option<f64>,
    /// fio's random reads, median completion latency, ns.
    pub rand_p50_ns: Option<f64>,
    /// netperf's transactions/s.
    pub rr_per_s: Option<f64>,
    /// netperf's median transaction time, ns.
    pub rr_p50_ns: Option<f64>,
    /// iperf3's bandwidth as its receiver counted it, bytes/s.
    pub stream_bytes_per_s: Option<f64>,
}

/// Parse fio's `--output-format=json` output of the three jobs the workload runs (`seq-write`,
/// `seq-read`, `rand-read`).
pub fn parse_fio(text: &str) -> Result<ToolFigures, String> {
    // fio may print a warning line or two before its JSON.
    let json = text.find('{').map_or(text, |i| &text[i..]);
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("fio's output is not JSON: {e}"))?;
    let jobs = v["jobs"].as_array().ok_or("fio's output has no \"jobs\"")?;
    let job = |name: &str| jobs.iter().find(|j| j["jobname"] == name);
    let num = |v: &serde_json::Value| v.as_f64().filter(|x| *x > 0.0);
    let mut f = ToolFigures::default();
    // A sequential job's bandwidth over the time of its requests alone: its block size over
    // their mean latency (`lat_ns`: submission to completion; with psync, the system call).
    // fio's own `bw_bytes` also counts its time between requests, which `--refill_buffers`
    // fills with making new data; disk-seq's `write_ns` and `read_ns` time the requests alone.
    let request_bandwidth = |side: &serde_json::Value| -> Option<f64> {
        let ios = num(&side["total_ios"])?;
        let bytes = num(&side["io_bytes"])?;
        let lat = num(&side["lat_ns"]["mean"])?;
        Some(bytes / ios * 1e9 / lat)
    };
    if let Some(j) = job("seq-write") {
        f.seq_write_bytes_per_s = request_bandwidth(&j["write"]);
    }
    if let Some(j) = job("seq-read") {
        f.seq_read_bytes_per_s = request_bandwidth(&j["read"]);
    }
    if let Some(j) = job("rand-read") {
        f.rand_iops = num(&j["read"]["iops"]);
        f.rand_p50_ns = num(&j["read"]["clat_ns"]["percentile"]["50.000000"]);
    }
    if f.seq_write_bytes_per_s.is_none() && f.rand_iops.is_none() {
        return Err("fio's output has none of the jobs seq-write, seq-read, rand-read".into());
    }
    Ok(f)
}

/// Parse netperf's `-k` output (`KEY=VALUE` lines) of a `TCP_RR` test: `THROUGHPUT` in
/// transactions/s, `P50_LATENCY` in µs.
pub fn parse_netperf(text: &str) -> Result<ToolFigures, String> {
    let keys: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .collect();
    let get = |k: &str| -> Result<f64, String> {
        keys.get(k)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("netperf printed no {k}: {}", text.trim()))
    };
    if keys
        .get("THROUGHPUT_UNITS")
        .is_some_and(|u| *u != "Trans/s")
    {
        return Err(format!(
            "netperf's throughput is not in Trans/s: {}",
            text.trim()
        ));
    }
    Ok(ToolFigures {
        rr_per_s: Some(get("THROUGHPUT")?),
        rr_p50_ns: Some(get("P50_LATENCY")? * 1e3),
        ..ToolFigures::default()
    })
}

/// Parse iperf3's `-J` output: the bandwidth its receiver counted (`end.sum_received`).
pub fn parse_iperf3(text: &str) -> Result<ToolFigures, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("iperf3's output is not JSON: {e}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let bits = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .filter(|b| *b > 0.0)
        .ok_or("iperf3's output has no end.sum_received.bits_per_second")?;
    Ok(ToolFigures {
        stream_bytes_per_s: Some(bits / 8.0),
        ..ToolFigures::default()
    })
}

/// The figures of a tool kernel's output.
pub fn parse(tool: Kernel, text: &str) -> Result<ToolFigures, String> {
    match tool {
        Kernel::Fio => parse_fio(text),
        Kernel::Netperf => parse_netperf(text),
        Kernel::Iperf3 => parse_iperf3(text),
        other => Err(format!("{other} is not a tool")),
    }
}

/// One figure held against a tool's.
struct Figure {
    kernel: Kernel,
    figure: &'static str,
    unit: ValidationUnit,
    tool: Kernel,
    how: &'static str,
    lab: fn(&Run) -> Option<f64>,
    from_tool: fn(&ToolFigures) -> Option<f64>,
    /// Why the two differ by design, if they do.
    note: Option<&'static str>,
}

fn info(run: &Run, key: &str) -> Option<f64> {
    run.info.get(key)?.parse::<f64>().ok().filter(|v| *v > 0.0)
}

fn per_s(count: u64, ns: Option<u64>) -> Option<f64> {
    let ns = ns.filter(|n| *n > 0)?;
    Some(count as f64 * 1e9 / ns as f64)
}

/// A disk-seq pass's bandwidth from its figure `key` (`write_ns`, `read_ns`).
fn seq_bandwidth(run: &Run, key: &str) -> Option<f64> {
    let ns = info(run, key)?;
    Some((run.spec.mib << 20) as f64 * 1e9 / ns)
}

const FIGURES: [Figure; 7] = [
    Figure {
        kernel: Kernel::DiskSeq,
        figure: "write bandwidth",
        unit: ValidationUnit::BytesPerS,
        tool: Kernel::Fio,
        how: "fio sequential write, 1 MiB requests of new data (refill_buffers), O_DIRECT, psync, \
              fdatasync at the end: block size over mean request latency",
        lab: |r| seq_bandwidth(r, "write_ns"),
        from_tool: |t| t.seq_write_bytes_per_s,
        note: None,
    },
    Figure {
        kernel: Kernel::DiskSeq,
        figure: "read bandwidth",
        unit: ValidationUnit::BytesPerS,
        tool: Kernel::Fio,
        how: "fio sequential read, 1 MiB requests, O_DIRECT, psync: block size over mean \
              request latency",
        lab: |r| seq_bandwidth(r, "read_ns"),
        from_tool: |t| t.seq_read_bytes_per_s,
        note: None,
    },
    Figure {
        kernel: Kernel::DiskRand,
        figure: "IOPS",
        unit: ValidationUnit::OpsPerS,
        tool: Kernel::Fio,
        how: "fio randread, 4 KiB, iodepth 1, O_DIRECT, psync",
        lab: |r| per_s(r.output?.ops, r.work_ns()),
        from_tool: |t| t.rand_iops,
        note: None,
    },
    Figure {
        kernel: Kernel::DiskRand,
        figure: "p50 latency",
        unit: ValidationUnit::Ns,
        tool: Kernel::Fio,
        how: "fio randread, 4 KiB, iodepth 1, O_DIRECT, psync: median completion latency",
        lab: |r| info(r, "latency_p50_ns"),
        from_tool: |t| t.rand_p50_ns,
        note: None,
    },
    Figure {
        kernel: Kernel::NetRr,
        figure: "transactions/s",
        unit: ValidationUnit::OpsPerS,
        tool: Kernel::Netperf,
        how: "netperf TCP_RR, 1 byte each way, TCP_NODELAY",
        lab: |r| per_s(r.output?.ops, r.work_ns()),
        from_tool: |t| t.rr_per_s,
        note: None,
    },
    Figure {
        kernel: Kernel::NetRr,
        figure: "p50 latency",
        unit: ValidationUnit::Ns,
        tool: Kernel::Netperf,
        how: "netperf TCP_RR, 1 byte each way, TCP_NODELAY: P50_LATENCY (whole µs)",
        lab: |r| info(r, "latency_p50_ns"),
        from_tool: |t| t.rr_p50_ns,
        note: Some("netperf prints P50_LATENCY in whole µs: near 16 µs one step is 6%"),
    },
    Figure {
        kernel: Kernel::NetStream,
        figure: "bandwidth",
        unit: ValidationUnit::BytesPerS,
        tool: Kernel::Iperf3,
        how: "iperf3, 64 KiB writes, TCP_NODELAY: what its receiver counted",
        lab: |r| per_s(r.output?.bytes, r.work_ns()),
        from_tool: |t| t.stream_bytes_per_s,
        note: None,
    },
];

/// The servers the tools talk to, beside the lab's peer; stopped when dropped.
struct Servers(Vec<(String, Child)>);

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start `netserver` and `iperf3 -s` beside the lab's peer and wait until both listen.
fn start_servers(lab: &Lab) -> Result<Servers, ExperimentError> {
    let net = lab
        .network()
        .map_err(|e| ExperimentError::Validate(e.to_string()))?;
    let mut servers = Servers(Vec::new());
    let netserver = isolab_resources::tools::require("netserver", "netperf")?;
    let iperf3 = isolab_resources::tools::require("iperf3", "iperf3")?;
    let server = |program: PathBuf, args: &[&str], port: u16| {
        let mut command = Command::new(program);
        command
            .args(args)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let ports = [
        (
            "netserver",
            tool_ports::NETSERVER,
            // In the foreground, one test at a time (no child per test), IPv4.
            server(netserver, &["-D", "-f", "-4", "-p"], tool_ports::NETSERVER),
        ),
        (
            "iperf3 -s",
            tool_ports::IPERF3,
            server(iperf3, &["-s", "-p"], tool_ports::IPERF3),
        ),
    ];
    for (name, port, mut command) in ports {
        let child = net.spawn_beside_peer(&mut command).map_err(|e| {
            ExperimentError::Validate(format!("cannot start {name} beside the peer: {e}"))
        })?;
        servers.0.push((name.to_string(), child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !net.peer_listens(port) {
            if Instant::now() > deadline {
                return Err(ExperimentError::Validate(format!(
                    "{name} did not listen on port {port} beside the peer within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(servers)
}

/// The backends to validate on: named ones must carry the tools and be available here.
fn backends(lab: &Lab, names: Option<&[String]>) -> Result<Vec<Box<dyn Backend>>, ExperimentError> {
    let defaults: Vec<String> = DEFAULT_BACKENDS.map(String::from).into();
    let names = names.unwrap_or(&defaults);
    let selection = crate::select(lab, Some(names), &Limits::default())?;
    for b in &selection.backends {
        if !b.carries_tools() {
            return Err(ExperimentError::Unavailable {
                backend: b.name().to_string(),
                reason: "the lab carries fio, netperf and iperf3 into process and container \
                         instances only (a Linux guest would need them in its initramfs; see \
                         the README's \"lab validate\")"
                    .into(),
            });
        }
    }
    Ok(selection.backends)
}

/// One group of runs made back to back: on one backend, the lab's kernels and the tool held
/// against them (`disk-seq`, `disk-rand` and fio; `net-rr` and netperf; `net-stream` and
/// iperf3), in a shuffled order.
#[derive(Clone)]
struct Group {
    backend: usize,
    specs: Vec<Spec>,
}

/// What each round gave: a value, the reason there is none, or `None` for a round not run.
type PerRound<T> = Vec<Option<Result<T, String>>>;

/// The verdict on one figure: the lab's figure over the tool's, round by round, each from runs
/// made back to back; their median; and whether it is within `tolerance` of 1.
///
/// Why round by round: this machine is shared, and what runs beside the lab moves a figure by
/// ±40% from one second to the next (measured here: netperf's `TCP_RR` between 13 k and 53 k
/// transactions/s in three runs, its median latency 15 µs or 45 µs as the other cores were
/// busy or not). A kernel and its tool run one after the other see the same machine far more
/// often than two medians taken a minute apart, and the median of the rounds' ratios drops the
/// rounds where they did not.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// Each round's lab ÷ tool, where both gave a figure.
    pub ratios: Vec<f64>,
    /// Their median.
    pub ratio: Option<f64>,
    /// `ratio` is within `tolerance` of 1.
    pub within: bool,
}

/// Judge one figure from its rounds' `(lab, tool)` pairs (see [`Judgement`]). A round where
/// either gave no figure, or the tool's is not above 0, gives no ratio; no ratio at all is
/// never within.
pub fn judge(rounds: &[(Option<f64>, Option<f64>)], tolerance: f64) -> Judgement {
    let ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|&(lab, tool)| Some(lab? / tool.filter(|t| *t > 0.0)?))
        .filter(|r| r.is_finite())
        .collect();
    let ratio = isolab_host::stats::median(&ratios);
    // 115/100 - 1 is 0.15000000000000013 in binary floating point: a ratio that prints as
    // 1.150 agrees at ±15%, so the edge gets a billionth's grace.
    Judgement {
        within: ratio.is_some_and(|r| (r - 1.0).abs() <= tolerance + 1e-9),
        ratios,
        ratio,
    }
}

/// Run the validation and write its results (see the module docs).
pub fn run(lab: &Lab, opts: &Options) -> Result<Validation, ExperimentError> {
    if !(0.0..1.0).contains(&opts.tolerance) {
        return Err(ExperimentError::BadLimit(format!(
            "--tolerance {}: a fraction from 0 to 1 (0.15 is ±15%)",
            opts.tolerance
        )));
    }
    let spec = |kernel: Kernel, mib: u64, iters: u64| Spec::new(kernel, mib, iters);
    let specs = [
        spec(Kernel::DiskSeq, opts.disk_mib, 1),
        spec(Kernel::DiskRand, opts.disk_mib, opts.reads),
        spec(Kernel::Fio, opts.disk_mib, opts.reads),
        spec(Kernel::NetRr, 0, opts.round_trips),
        spec(Kernel::Netperf, 0, opts.round_trips),
        spec(Kernel::NetStream, opts.stream_mib, 0),
        spec(Kernel::Iperf3, opts.stream_mib, 0),
    ];
    crate::check_provisions(lab, &specs)?;
    let backends = backends(lab, opts.backends.as_deref())?;
    isolab_resources::tools::check()?;
    lab.tools()
        .map_err(|e| ExperimentError::Validate(e.to_string()))?;
    let servers = start_servers(lab)?;
    let placement = Placement::new()?;

    let versions: BTreeMap<&str, String> = isolab_resources::tools::TOOLS
        .iter()
        .map(|(t, _)| (*t, isolab_resources::tools::version(t)))
        .collect();
    let settings = serde_json::json!({
        "rounds": opts.rounds,
        "seed": opts.seed,
        "tolerance": opts.tolerance,
        "cpus": {"net-rr": [placement.near], "net-stream": {"instance": placement.far, "receiver": placement.near}},
        "workloads": specs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tools": versions,
        "backends": backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
    });
    let header = Header {
        schema: SCHEMA.to_string(),
        experiment: EXPERIMENT.to_string(),
        environment: isolab_results::Environment::capture(&match lab.cgroup_problem() {
            None => lab.cgroups().map_or("?", |h| h.description()).to_string(),
            Some(why) => format!("{}{why}", isolab_results::CGROUP_UNAVAILABLE),
        }),
        settings,
        skipped: Vec::<Skipped>::new(),
    };
    let dir = Writer::new_dir(&opts.out, EXPERIMENT).map_err(|source| ExperimentError::Output {
        dir: opts.out.clone(),
        source,
    })?;
    let mut writer = Writer::create(&dir, &header)?;
    let outputs = dir.join(OUTPUTS_DIR);
    std::fs::create_dir(&outputs)
        .map_err(|e| ExperimentError::Validate(format!("{}: {e}", outputs.display())))?;

    let by_resource = [
        vec![specs[0], specs[1], specs[2]],
        vec![specs[3], specs[4]],
        vec![specs[5], specs[6]],
    ];
    let groups: Vec<Group> = (0..backends.len())
        .flat_map(|backend| {
            by_resource.iter().map(move |specs| Group {
                backend,
                specs: specs.clone(),
            })
        })
        .collect();
    let per_round: usize = groups.iter().map(|g| g.specs.len()).sum();
    // (backend, kernel) → one run or failure per round, `None` for a round not reached.
    let mut runs: BTreeMap<(usize, Kernel), PerRound<Run>> = BTreeMap::new();
    let mut tools: BTreeMap<(usize, Kernel), PerRound<ToolFigures>> = BTreeMap::new();
    let mut progress = crate::progress::Progress::new(
        opts.progress,
        "validate",
        opts.rounds as u64 * per_round as u64,
    );
    progress.begin(&format!(
        "{} rounds of {per_round} runs (each kernel and its tool) on {}",
        opts.rounds,
        backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut rng = Rng::new(opts.seed);
    let mut order: Vec<usize> = (0..groups.len()).collect();
    let mut interrupted = false;
    let mut rounds_done = 0;
    'rounds: for round in 0..opts.rounds {
        rng.shuffle(&mut order);
        for &g in &order {
            let mut group = groups[g].clone();
            rng.shuffle(&mut group.specs);
            let has = |kernel: Kernel| group.specs.iter().any(|s| s.kernel == kernel);
            let place = if has(Kernel::NetRr) {
                Place::Together
            } else if has(Kernel::NetStream) {
                Place::Apart
            } else {
                Place::Anywhere
            };
            placement.bind(place, &servers)?;
            for spec in group.specs {
                if crate::interrupted() {
                    interrupted = true;
                    break 'rounds;
                }
                let backend = &backends[group.backend];
                let message = format!("{} {}", backend.name(), spec.kernel);
                progress.running(&format!("round {} {message}", round + 1));
                let result = backend
                    .run(lab, &spec, &Limits::default())
                    .map_err(|e| e.to_string())
                    .and_then(|run| match &run.outcome {
                        Outcome::Completed => Ok(run),
                        Outcome::Failed { reason } => Err(reason.clone()),
                        other => Err(format!("{other:?}")),
                    });
                if crate::interrupted() {
                    interrupted = true;
                    break 'rounds;
                }
                progress.sample(&message, result.is_ok());
                let key = (group.backend, spec.kernel);
                if spec.kernel.is_tool() {
                    let figures = result.and_then(|run| {
                        let text = isolab_payload::tool_output(&run.info)
                            .ok_or_else(|| format!("{} printed nothing", spec.kernel))?;
                        let file = outputs.join(format!(
                            "{}-{}-{round}.txt",
                            backend.name().replace(['/', ':'], "-"),
                            spec.kernel
                        ));
                        write_new(&file, text.as_bytes())?;
                        parse(spec.kernel, &text)
                    });
                    let v = tools.entry(key).or_default();
                    v.resize_with(round as usize, || None);
                    v.push(Some(figures));
                } else {
                    let v = runs.entry(key).or_default();
                    v.resize_with(round as usize, || None);
                    v.push(Some(result));
                }
            }
        }
        rounds_done += 1;
        progress.step_done(&format!("round {}/{}", round + 1, opts.rounds));
    }
    progress.finish();
    placement.bind(Place::Anywhere, &servers)?;
    drop(servers);

    let mut records = Vec::new();
    for (b, backend) in backends.iter().enumerate() {
        for f in &FIGURES {
            let mut failures = Vec::new();
            let lab_runs = runs.get(&(b, f.kernel));
            let tool_runs = tools.get(&(b, f.tool));
            // Round by round: (the lab's figure, the tool's), each `None` where it gave none.
            let pairs: Vec<(Option<f64>, Option<f64>)> = (0..rounds_done)
                .map(|round| {
                    let lab = match lab_runs.and_then(|v| v.get(round)).and_then(Option::as_ref) {
                        Some(Ok(run)) => (f.lab)(run).or_else(|| {
                            failures.push(format!("{}: no {} in its run", f.kernel, f.figure));
                            None
                        }),
                        Some(Err(e)) => {
                            failures.push(format!("{}: {e}", f.kernel));
                            None
                        }
                        None => None,
                    };
                    let tool = match tool_runs
                        .and_then(|v| v.get(round))
                        .and_then(Option::as_ref)
                    {
                        Some(Ok(t)) => (f.from_tool)(t).or_else(|| {
                            failures.push(format!("{}: no {} in its output", f.tool, f.figure));
                            None
                        }),
                        Some(Err(e)) => {
                            failures.push(format!("{}: {e}", f.tool));
                            None
                        }
                        None => None,
                    };
                    (lab, tool)
                })
                .collect();
            let lab_values: Vec<f64> = pairs.iter().filter_map(|p| p.0).collect();
            let tool_values: Vec<f64> = pairs.iter().filter_map(|p| p.1).collect();
            let judgement = judge(&pairs, opts.tolerance);
            let record = ValidationRecord {
                backend: backend.name().to_string(),
                family: backend.family(),
                kernel: f.kernel.to_string(),
                figure: f.figure.to_string(),
                unit: f.unit,
                tool: f.how.to_string(),
                tool_version: versions.get(f.tool.name()).cloned().unwrap_or_default(),
                tool_median: isolab_host::stats::median(&tool_values),
                lab_median: isolab_host::stats::median(&lab_values),
                tool_values,
                lab_values,
                round_ratios: judgement.ratios,
                ratio: judgement.ratio,
                tolerance: opts.tolerance,
                within: judgement.within,
                failures,
                note: f.note.map(String::from),
            };
            writer.append(&Record::Validation(Box::new(record.clone())))?;
            records.push(record);
        }
    }
    Ok(Validation {
        results: dir.join(RESULTS_FILE),
        records,
        interrupted,
    })
}

/// Write a new file (never through a link, never over another file).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_agrees_when_the_median_of_its_rounds_ratios_is_within_the_tolerance() {
        let t = DEFAULT_TOLERANCE;
        // One noisy round (the machine busy during the tool's run) does not move the median.
        let j = judge(
            &[
                (Some(100.0), Some(100.0)),
                (Some(110.0), Some(100.0)),
                (Some(90.0), Some(30.0)),
            ],
            t,
        );
        assert_eq!(j.ratios, vec![1.0, 1.1, 3.0]);
        assert_eq!(j.ratio, Some(1.1));
        assert!(j.within);
        // The edges: 15% either way is within, beyond it is not.
        assert!(judge(&[(Some(115.0), Some(100.0))], t).within);
        assert!(judge(&[(Some(85.0), Some(100.0))], t).within);
        assert!(!judge(&[(Some(116.0), Some(100.0))], t).within);
        assert!(!judge(&[(Some(84.0), Some(100.0))], t).within);
        // A lab figure that is faster is as wrong as one that is slower.
        assert!(!judge(&[(Some(200.0), Some(100.0))], 0.5).within);
        assert!(judge(&[(Some(150.0), Some(100.0))], 0.5).within);
    }

    #[test]
    fn rounds_without_both_figures_give_no_ratio_and_no_ratio_never_agrees() {
        let t = DEFAULT_TOLERANCE;
        let j = judge(
            &[(Some(1.0), None), (None, Some(1.0)), (Some(1.0), Some(0.0))],
            t,
        );
        assert!(j.ratios.is_empty());
        assert_eq!(j.ratio, None);
        assert!(!j.within);
        assert!(!judge(&[], t).within);
        // Only the rounds with both count.
        let j = judge(&[(Some(2.0), Some(2.0)), (None, Some(9.0))], t);
        assert_eq!(j.ratios, vec![1.0]);
        assert!(j.within);
    }

    #[test]
    fn netperf_keyvals_are_read_in_their_units() {
        let text =
            "THROUGHPUT=25000.50\nTHROUGHPUT_UNITS=Trans/s\nP50_LATENCY=37\nP99_LATENCY=80\n";
        let f = parse_netperf(text).unwrap();
        assert_eq!(f.rr_per_s, Some(25000.5));
        assert_eq!(f.rr_p50_ns, Some(37_000.0));
        assert!(
            parse_netperf("THROUGHPUT=5\nTHROUGHPUT_UNITS=10^6bits/s\nP50_LATENCY=1\n").is_err()
        );
        assert!(parse_netperf("establish_control could not establish").is_err());
    }

    #[test]
    fn iperf3_gives_what_its_receiver_counted_and_its_errors() {
        let f = parse_iperf3(
            r#"{"end":{"sum_sent":{"bits_per_second":9.0e9},"sum_received":{"bits_per_second":8.0e9}}}"#,
        )
        .unwrap();
        assert_eq!(f.stream_bytes_per_s, Some(1.0e9));
        let e = parse_iperf3(r#"{"start":{},"end":{},"error":"unable to connect to server"}"#);
        assert!(e.unwrap_err().contains("unable to connect"));
    }

    #[test]
    fn fio_jobs_are_found_by_name() {
        let text = r#"note: a warning first
{"jobs":[
 {"jobname":"seq-write","write":{"io_bytes":4194304,"total_ios":4,"lat_ns":{"mean":2000000.0}},
  "read":{"io_bytes":0,"total_ios":0}},
 {"jobname":"seq-read","write":{"io_bytes":0},
  "read":{"io_bytes":4194304,"total_ios":4,"lat_ns":{"mean":500000.0}}},
 {"jobname":"rand-read","read":{"iops":5000.5,"clat_ns":{"percentile":{"50.000000":180224}}}}
]}"#;
        let f = parse_fio(text).unwrap();
        // 1 MiB per request in 2 ms is 524,288,000 B/s; in 0.5 ms, four times that.
        assert_eq!(f.seq_write_bytes_per_s, Some(524_288_000.0));
        assert_eq!(f.seq_read_bytes_per_s, Some(2_097_152_000.0));
        assert_eq!(f.rand_iops, Some(5000.5));
        assert_eq!(f.rand_p50_ns, Some(180224.0));
        assert!(parse_fio(r#"{"jobs":[]}"#).is_err());
    }
}
