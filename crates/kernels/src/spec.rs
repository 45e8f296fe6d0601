//! What to run: the kernel and its two parameters.
//!
//! A [`Spec`] travels to the workload in three ways, all defined here so they cannot drift apart:
//! as `key=value` command-line words (process, container, Linux guest `/init`), and as four
//! 64-bit words in guest memory (bare microVM, see [`Spec::to_words`]).

use core::fmt;

/// The workload kernels (GUIDE §2). Each one isolates one thing an isolation mechanism can cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Kernel {
    /// Mark `ready` and exit: pure start-up cost.
    Ready = 0,
    /// Fixed integer and floating-point work: the CPU itself, which no isolation model should slow.
    Cpu = 1,
    /// Touch `mib` MiB, then stream over it (STREAM triad): memory bandwidth.
    Mem = 2,
    /// Dependent random reads over `mib` MiB: TLB misses and page walks, where nested paging costs.
    Random = 3,
    /// `iters` cheap kernel entries: a system call, or in a bare microVM a VM exit.
    Syscall = 4,
    /// Write `mib` MiB to a file, fsync, read it back.
    Io = 5,
    /// Stay alive, costing no CPU, until the host says stop (density experiments).
    Sleep = 6,
    /// Report what the instance can see of the system (isolation experiment).
    Probe = 7,
    /// Write `mib` MiB to the instance's disk, sync, read it back, all with `O_DIRECT`:
    /// sequential bandwidth of the path between the workload and the host's disk.
    DiskSeq = 8,
    /// `iters` random 4 KiB reads over `mib` MiB of the disk (written first): IOPS and the
    /// latency of one request through that path.
    DiskRand = 9,
    /// Send `mib` MiB over TCP to the lab's peer, which sums what arrived: network bandwidth.
    NetStream = 10,
    /// `iters` one-byte request/response round trips with the peer (netperf's TCP_RR): the
    /// latency of one packet each way.
    NetRr = 11,
    /// A fork bomb in a child of the workload, for at most `iters` ms or until the host says
    /// stop: every process forks again and again until the kernel refuses (a neighbour's
    /// failure, for the interference experiment). Needs an OS: the workload runs it itself.
    ForkBomb = 12,
    /// A memory hog in a child of the workload: it touches memory, up to `mib` MiB, until it is
    /// killed (the OOM killer: then it starts again), the host says stop, or `iters` ms pass.
    /// Needs an OS.
    MemHog = 13,
    /// **fio**, the field's disk benchmark, beside `disk-seq` and `disk-rand` (`lab validate`):
    /// on the instance's disk, sequential write then read of `mib` MiB in 1 MiB requests, then
    /// `iters` random 4 KiB reads, every request `O_DIRECT`, one at a time. Needs an OS and the
    /// tools the lab carries into the instance ([`Kernel::is_tool`]).
    Fio = 14,
    /// **netperf**'s `TCP_RR` beside `net-rr`: `iters` one-byte transactions with the
    /// `netserver` the lab runs beside its peer.
    Netperf = 15,
    /// **iperf3** beside `net-stream`: `mib` MiB sent to the `iperf3 -s` the lab runs beside its
    /// peer, in 64 KiB writes.
    Iperf3 = 16,
}

impl Kernel {
    /// Every kernel, in a fixed order.
    pub const ALL: [Kernel; 17] = [
        Kernel::Ready,
        Kernel::Cpu,
        Kernel::Mem,
        Kernel::Random,
        Kernel::Syscall,
        Kernel::Io,
        Kernel::Sleep,
        Kernel::Probe,
        Kernel::DiskSeq,
        Kernel::DiskRand,
        Kernel::NetStream,
        Kernel::NetRr,
        Kernel::ForkBomb,
        Kernel::MemHog,
        Kernel::Fio,
        Kernel::Netperf,
        Kernel::Iperf3,
    ];

    /// The kernel's name on the command line and in results.
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::Ready => "ready",
            Kernel::Cpu => "cpu",
            Kernel::Mem => "mem",
            Kernel::Random => "random",
            Kernel::Syscall => "syscall",
            Kernel::Io => "io",
            Kernel::Sleep => "sleep",
            Kernel::Probe => "probe",
            Kernel::DiskSeq => "disk-seq",
            Kernel::DiskRand => "disk-rand",
            Kernel::NetStream => "net-stream",
            Kernel::NetRr => "net-rr",
            Kernel::ForkBomb => "fork-bomb",
            Kernel::MemHog => "mem-hog",
            Kernel::Fio => "fio",
            Kernel::Netperf => "netperf",
            Kernel::Iperf3 => "iperf3",
        }
    }

    /// The resource this kernel stresses, for the kernels that measure a speed (not `ready`,
    /// `sleep`, `probe`).
    pub const fn resource(self) -> Option<Resource> {
        Some(match self {
            Kernel::Cpu => Resource::Compute,
            Kernel::Mem | Kernel::Random => Resource::Memory,
            Kernel::Syscall => Resource::SystemCalls,
            Kernel::Io | Kernel::DiskSeq | Kernel::DiskRand => Resource::Disk,
            Kernel::NetStream | Kernel::NetRr => Resource::Network,
            Kernel::Ready
            | Kernel::Sleep
            | Kernel::Probe
            | Kernel::ForkBomb
            | Kernel::MemHog
            | Kernel::Fio
            | Kernel::Netperf
            | Kernel::Iperf3 => return None,
        })
    }

    /// True when the kernel's speed is its bytes per second (bandwidth), false when it is its
    /// operations per second.
    pub const fn rate_in_bytes(self) -> bool {
        matches!(self, Kernel::DiskSeq | Kernel::NetStream)
    }

    /// True for the kernels that need a disk of the instance's own (`disk=` on the command
    /// line; `/dev/vda` in a guest).
    pub const fn needs_disk(self) -> bool {
        matches!(self, Kernel::DiskSeq | Kernel::DiskRand | Kernel::Fio)
    }

    /// True for the kernels that need the lab's network peer (`peer=` on the command line).
    pub const fn needs_network(self) -> bool {
        matches!(
            self,
            Kernel::NetStream | Kernel::NetRr | Kernel::Netperf | Kernel::Iperf3
        )
    }

    /// True for the field's tools (`fio`, `netperf`, `iperf3`): not the lab's code but the
    /// programs the field trusts, which the workload runs as its child, on the same disk and
    /// the same link as the lab's kernels, and whose output it relays to the lab
    /// ([`crate::wire::TOOL_OUTPUT`]). Only an instance the lab carries them into can run them.
    pub const fn is_tool(self) -> bool {
        matches!(self, Kernel::Fio | Kernel::Netperf | Kernel::Iperf3)
    }

    /// True for the kernels the workload runs itself rather than through [`crate::run`]: they
    /// ask an operating system for what no bare guest has (its view of the system, processes,
    /// memory it may lose). A backend without an OS refuses them.
    pub const fn needs_os(self) -> bool {
        matches!(self, Kernel::Probe | Kernel::ForkBomb | Kernel::MemHog) || self.is_tool()
    }

    /// True for the kernels that end their child when the host says stop (the aggressors of
    /// the interference experiment that need an OS): the lab lets them go and waits for their
    /// report rather than killing them.
    pub const fn stops_when_told(self) -> bool {
        matches!(self, Kernel::Sleep | Kernel::ForkBomb | Kernel::MemHog)
    }

    /// The kernel called `name`, if any.
    pub fn from_name(name: &[u8]) -> Option<Kernel> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().as_bytes() == name)
    }

    /// The kernel with numeric id `id` (its `repr(u32)` value), if any.
    pub fn from_id(id: u64) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| *k as u64 == id)
    }
}

/// What a kernel stresses: the resources on which "containers perform better" is judged one by
/// one, because the isolation models pay in different places.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Instructions in user mode.
    Compute,
    /// Memory bandwidth and page walks.
    Memory,
    /// Entries into the kernel.
    SystemCalls,
    /// Files and disks.
    Disk,
    /// TCP to another host.
    Network,
}

impl Resource {
    /// Every resource, in the order reports list them.
    pub const ALL: [Resource; 5] = [
        Resource::Compute,
        Resource::Memory,
        Resource::SystemCalls,
        Resource::Disk,
        Resource::Network,
    ];

    /// The resource's name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Resource::Compute => "compute",
            Resource::Memory => "memory",
            Resource::SystemCalls => "system calls",
            Resource::Disk => "disk",
            Resource::Network => "network",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One workload request: a kernel, a memory size and an iteration count.
///
/// `mib` and `iters` mean, per kernel: `mem` MiB touched and triad passes; `random` MiB of working
/// set and dependent accesses; `syscall` kernel entries; `io` MiB written; `cpu` iterations;
/// `disk-seq` MiB written and read, and passes (0 and 1: one); `disk-rand` MiB of disk and
/// reads; `net-stream` MiB sent; `net-rr` round trips; `fork-bomb` milliseconds at most;
/// `mem-hog` MiB at most and milliseconds at most; `fio` MiB of disk and random reads;
/// `netperf` transactions; `iperf3` MiB sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    /// Which kernel.
    pub kernel: Kernel,
    /// Working-set size in MiB (kernels that touch memory or files).
    pub mib: u64,
    /// Iterations, passes, accesses or calls.
    pub iters: u64,
    /// Wait for the host after `ready` and after `done`, so the host can read the instance's
    /// memory at those two moments (memory experiment).
    pub hold: bool,
    /// Seed of the kernel's random numbers; same seed, same checksum.
    pub seed: u64,
}

/// Why a command line did not describe a [`Spec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A word was not `key=value`.
    NotKeyValue,
    /// The key is not one of `kernel`, `mib`, `iters`, `hold`, `seed`.
    UnknownKey,
    /// `kernel=` named no kernel.
    UnknownKernel,
    /// A number did not parse.
    BadNumber,
    /// No `kernel=` word.
    MissingKernel,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::NotKeyValue => "expected key=value",
            ParseError::UnknownKey => "unknown key (expected kernel, mib, iters, hold, seed)",
            ParseError::UnknownKernel => "unknown kernel",
            ParseError::BadNumber => "not a number",
            ParseError::MissingKernel => "no kernel= given",
        })
    }
}

/// The default seed of every kernel's random numbers.
pub const DEFAULT_SEED: u64 = 0x1501_ab5e_ed00_0001;

impl Spec {
    /// A spec with explicit parameters, no hold, the default seed.
    pub const fn new(kernel: Kernel, mib: u64, iters: u64) -> Spec {
        Spec {
            kernel,
            mib,
            iters,
            hold: false,
            seed: DEFAULT_SEED,
        }
    }

    /// The parameters every backend uses unless told otherwise: sized so one run takes a fraction
    /// of a second natively and fits a small microVM.
    pub const fn default_for(kernel: Kernel) -> Spec {
        match kernel {
            Kernel::Ready | Kernel::Sleep | Kernel::Probe => Spec::new(kernel, 0, 0),
            Kernel::Cpu => Spec::new(kernel, 0, 20_000_000),
            Kernel::Mem => Spec::new(kernel, 64, 8),
            Kernel::Random => Spec::new(kernel, 64, 4_000_000),
            Kernel::Syscall => Spec::new(kernel, 0, 20_000),
            Kernel::Io => Spec::new(kernel, 16, 0),
            Kernel::DiskSeq => Spec::new(kernel, 64, 0),
            Kernel::DiskRand => Spec::new(kernel, 64, 20_000),
            Kernel::NetStream => Spec::new(kernel, 256, 0),
            Kernel::NetRr => Spec::new(kernel, 0, 20_000),
            // Bounded in time; each is stopped by the lab long before.
            Kernel::ForkBomb => Spec::new(kernel, 0, 60_000),
            Kernel::MemHog => Spec::new(kernel, 2048, 60_000),
            // The same sizes as the lab's kernels they are held against.
            Kernel::Fio => Spec::new(kernel, 64, 20_000),
            Kernel::Netperf => Spec::new(kernel, 0, 20_000),
            Kernel::Iperf3 => Spec::new(kernel, 256, 0),
        }
    }

    /// Bytes of working memory the kernel needs from its arena.
    pub const fn arena_bytes(&self) -> u64 {
        match self.kernel {
            Kernel::Mem | Kernel::Random => self.mib * crate::common::MIB,
            Kernel::Io => crate::compute::IO_CHUNK as u64,
            Kernel::DiskSeq => crate::disk::CHUNK as u64,
            // The request buffer, then one latency per read.
            Kernel::DiskRand => crate::disk::CHUNK as u64 + 8 * self.iters,
            Kernel::NetStream => crate::net::CHUNK as u64,
            Kernel::NetRr => 8 * self.iters,
            // The hog's memory is its child's own, not an arena: a Linux guest keeps the RAM of
            // any kernel's guest, and the hog meets that guest's limit.
            _ => 0,
        }
    }

    /// Bytes of disk the kernel needs: the size of the instance's disk.
    pub const fn disk_bytes(&self) -> u64 {
        if self.kernel.needs_disk() {
            self.mib * crate::common::MIB
        } else {
            0
        }
    }

    /// Parse command-line words such as `kernel=mem mib=16 iters=4 hold=1`.
    ///
    /// Missing numbers take the kernel's defaults ([`Spec::default_for`]).
    pub fn parse<'a, I>(words: I) -> Result<Spec, ParseError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut kernel = None;
        let (mut mib, mut iters, mut hold, mut seed) = (None, None, false, DEFAULT_SEED);
        for word in words {
            let eq = word
                .iter()
                .position(|&b| b == b'=')
                .ok_or(ParseError::NotKeyValue)?;
            let (key, value) = (&word[..eq], &word[eq + 1..]);
            match key {
                b"kernel" => {
                    kernel = Some(Kernel::from_name(value).ok_or(ParseError::UnknownKernel)?)
                }
                b"mib" => mib = Some(parse_u64(value)?),
                b"iters" => iters = Some(parse_u64(value)?),
                b"hold" => hold = parse_u64(value)? != 0,
                b"seed" => seed = parse_u64(value)?,
                _ => return Err(ParseError::UnknownKey),
            }
        }
        let kernel = kernel.ok_or(ParseError::MissingKernel)?;
        let defaults = Spec::default_for(kernel);
        Ok(Spec {
            kernel,
            mib: mib.unwrap_or(defaults.mib),
            iters: iters.unwrap_or(defaults.iters),
            hold,
            seed,
        })
    }

    /// The spec as four words for guest memory: kernel id and hold flag, mib, iters, seed.
    pub const fn to_words(&self) -> [u64; 4] {
        [
            self.kernel as u64 | (self.hold as u64) << 32,
            self.mib,
            self.iters,
            self.seed,
        ]
    }

    /// The inverse of [`Spec::to_words`]; `None` if the kernel id is unknown.
    pub fn from_words(w: [u64; 4]) -> Option<Spec> {
        Some(Spec {
            kernel: Kernel::from_id(w[0] & 0xffff_ffff)?,
            hold: (w[0] >> 32) & 1 == 1,
            mib: w[1],
            iters: w[2],
            seed: w[3],
        })
    }
}

/// The command-line form, the inverse of [`Spec::parse`].
impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel={} mib={} iters={} hold={} seed={}",
            self.kernel, self.mib, self.iters, self.hold as u8, self.seed
        )
    }
}

fn parse_u64(s: &[u8]) -> Result<u64, ParseError> {
    if s.is_empty() {
        return Err(ParseError::BadNumber);
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(ParseError::BadNumber);
        }
        acc.checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as u64))
            .ok_or(ParseError::BadNumber)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> impl Iterator<Item = &[u8]> {
        s.split(' ').map(str::as_bytes)
    }

    #[test]
    fn parse_fills_defaults_and_reads_overrides() {
        let s = Spec::parse(words("kernel=mem iters=3")).unwrap();
        assert_eq!(
            (s.kernel, s.mib, s.iters, s.hold),
            (Kernel::Mem, 64, 3, false)
        );
        let s = Spec::parse(words("kernel=sleep hold=1")).unwrap();
        assert!(s.hold);
    }

    #[test]
    fn parse_rejects_bad_words() {
        assert_eq!(
            Spec::parse(words("kernel=nope")),
            Err(ParseError::UnknownKernel)
        );
        assert_eq!(Spec::parse(words("mib=3")), Err(ParseError::MissingKernel));
        assert_eq!(
            Spec::parse(words("kernel=cpu x=1")),
            Err(ParseError::UnknownKey)
        );
        assert_eq!(
            Spec::parse(words("kernel=cpu iters=1x")),
            Err(ParseError::BadNumber)
        );
        assert_eq!(Spec::parse(words("kernel")), Err(ParseError::NotKeyValue));
        assert_eq!(
            Spec::parse(words("kernel=cpu iters=99999999999999999999999")),
            Err(ParseError::BadNumber)
        );
    }

    #[test]
    fn words_round_trip() {
        for k in Kernel::ALL {
            let mut s = Spec::default_for(k);
            s.hold = k == Kernel::Sleep;
            assert_eq!(Spec::from_words(s.to_words()), Some(s));
        }
        assert_eq!(Spec::from_words([99, 0, 0, 0]), None);
    }
}
