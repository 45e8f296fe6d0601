//! Which routine each kernel runs: the one entry point both programs (the workload and the bare
//! guest) call.

use crate::common::{as_words, CHECK_SEED, MIB};
use crate::compute::{cpu, io, mem_init, mem_triad, random_chase, random_init, syscall};
use crate::{disk, net, Error, Kernel, Output, Shim, Spec};

/// Run the kernel named by `spec`, with `arena` as its working memory (at least
/// [`Spec::arena_bytes`] bytes, 8-byte aligned).
///
/// `probe` is not run here: it needs an operating system to ask and is implemented by each
/// program ([`Error::NeedsOs`]).
pub fn run(spec: &Spec, shim: &mut dyn Shim, arena: &mut [u8]) -> Result<Output, Error> {
    let needed = spec.arena_bytes();
    if (arena.len() as u64) < needed {
        return Err(Error::ArenaTooSmall {
            needed,
            available: arena.len() as u64,
        });
    }
    let arena = &mut arena[..needed as usize];
    match spec.kernel {
        Kernel::Ready => Ok(Output {
            checksum: CHECK_SEED,
            ops: 0,
            bytes: 0,
        }),
        Kernel::Cpu => Ok(cpu(spec.iters, spec.seed)),
        Kernel::Mem => {
            let words = as_words::<f64>(arena);
            mem_init(words);
            shim.mark_start();
            Ok(mem_triad(words, spec.iters))
        }
        Kernel::Random => {
            let words = as_words::<u64>(arena);
            let nodes = random_init(words, spec.seed);
            shim.mark_start();
            Ok(random_chase(words, nodes, spec.iters))
        }
        Kernel::Syscall => Ok(syscall(shim, spec.iters)),
        Kernel::Io => io(shim, arena, spec.mib * MIB, spec.seed),
        Kernel::Sleep => {
            shim.wait_host()?;
            Ok(Output {
                checksum: CHECK_SEED,
                ops: 0,
                bytes: 0,
            })
        }
        Kernel::Probe
        | Kernel::ForkBomb
        | Kernel::MemHog
        | Kernel::Fio
        | Kernel::Netperf
        | Kernel::Iperf3 => Err(Error::NeedsOs),
        Kernel::DiskSeq => {
            disk::sequential(shim, arena, spec.mib * MIB, spec.iters.max(1), spec.seed)
        }
        Kernel::DiskRand => disk::random(shim, arena, spec.mib * MIB, spec.iters, spec.seed),
        Kernel::NetStream => net::stream(shim, arena, spec.mib * MIB, spec.seed),
        Kernel::NetRr => net::request_response(shim, arena, spec.iters, spec.seed),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::common::*;
    use crate::compute::NODE_WORDS;
    use crate::sum::StreamSum;
    use std::vec;
    use std::vec::Vec;

    /// A shim in memory: a Vec stands in for the scratch file and for the disk, and a peer in
    /// memory for the network (a sink that sums, an echo).
    #[derive(Default)]
    struct Mem {
        file: Vec<u8>,
        entries: u64,
        started: bool,
        corrupt: bool,
        disk: Vec<u8>,
        clock: u64,
        figures: Vec<(std::string::String, u64)>,
        connected: Option<crate::Service>,
        sink: Option<StreamSum>,
        echo: Vec<u8>,
        /// The sink answers with a wrong sum, as a peer that lost bytes would.
        lossy: bool,
    }

    impl Mem {
        fn with_disk(mib: u64) -> Mem {
            Mem {
                disk: vec![0; (mib * MIB) as usize],
                ..Mem::default()
            }
        }

        fn figure_of(&self, name: &str) -> Option<u64> {
            self.figures
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
        }
    }

    impl Shim for Mem {
        fn enter_kernel(&mut self, x: u64) -> u64 {
            self.entries += 1;
            x
        }
        fn mark_start(&mut self) {
            self.started = true;
        }
        fn wait_host(&mut self) -> Result<(), Error> {
            Ok(())
        }
        fn io_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
            let end = offset as usize + data.len();
            if self.file.len() < end {
                self.file.resize(end, 0);
            }
            self.file[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn io_sync(&mut self) -> Result<(), Error> {
            if self.corrupt {
                self.file[3] ^= 1;
            }
            Ok(())
        }
        fn io_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
            data.copy_from_slice(&self.file[offset as usize..offset as usize + data.len()]);
            Ok(())
        }
        fn disk_bytes(&mut self) -> Result<u64, Error> {
            Ok(self.disk.len() as u64)
        }
        fn disk_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
            assert_eq!(offset % crate::disk::BLOCK as u64, 0, "O_DIRECT alignment");
            self.disk[offset as usize..offset as usize + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn disk_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
            assert_eq!(offset % crate::disk::BLOCK as u64, 0, "O_DIRECT alignment");
            data.copy_from_slice(&self.disk[offset as usize..offset as usize + data.len()]);
            if self.corrupt {
                data[0] ^= 1;
            }
            Ok(())
        }
        fn disk_sync(&mut self) -> Result<(), Error> {
            Ok(())
        }
        fn net_connect(&mut self, service: crate::Service) -> Result<(), Error> {
            self.connected = Some(service);
            self.sink = Some(StreamSum::new(CHECK_SEED));
            Ok(())
        }
        fn net_send(&mut self, data: &[u8]) -> Result<(), Error> {
            match self.connected {
                Some(crate::Service::Sink) => self.sink.as_mut().unwrap().update(data),
                Some(crate::Service::Echo) => self.echo.extend_from_slice(data),
                None => return Err(Error::Platform(107)),
            }
            Ok(())
        }
        fn net_finish(&mut self) -> Result<(), Error> {
            let sum = self.sink.unwrap().value() ^ u64::from(self.lossy);
            self.echo.extend_from_slice(&sum.to_le_bytes());
            Ok(())
        }
        fn net_recv(&mut self, data: &mut [u8]) -> Result<(), Error> {
            if self.echo.len() < data.len() {
                return Err(Error::Platform(104));
            }
            data.copy_from_slice(&self.echo[..data.len()]);
            self.echo.drain(..data.len());
            Ok(())
        }
        fn net_close(&mut self) {
            self.connected = None;
        }
        fn now_ns(&mut self) -> Option<u64> {
            self.clock += 1000;
            Some(self.clock)
        }
        fn figure(&mut self, name: &str, value: u64) {
            self.figures.push((name.into(), value));
        }
    }

    fn arena(spec: &Spec) -> Vec<u8> {
        vec![0u8; spec.arena_bytes() as usize]
    }

    #[test]
    fn every_kernel_is_deterministic_and_parameter_sensitive() {
        for kernel in [
            Kernel::Cpu,
            Kernel::Mem,
            Kernel::Random,
            Kernel::Syscall,
            Kernel::Io,
        ] {
            let small = Spec::new(kernel, 1, 1000);
            let other = Spec::new(kernel, 2, 2000);
            let once = run(&small, &mut Mem::default(), &mut arena(&small)).unwrap();
            let again = run(&small, &mut Mem::default(), &mut arena(&small)).unwrap();
            let diff = run(&other, &mut Mem::default(), &mut arena(&other)).unwrap();
            assert_eq!(once, again, "{kernel}");
            assert_ne!(once.checksum, diff.checksum, "{kernel}");
        }
    }

    #[test]
    fn the_disk_and_network_kernels_are_deterministic_and_parameter_sensitive() {
        for kernel in [
            Kernel::DiskSeq,
            Kernel::DiskRand,
            Kernel::NetStream,
            Kernel::NetRr,
        ] {
            let small = Spec::new(kernel, 1, 100);
            let other = Spec::new(kernel, 2, 200);
            let go = |spec: &Spec| run(spec, &mut Mem::with_disk(2), &mut arena(spec)).unwrap();
            assert_eq!(go(&small), go(&small), "{kernel}");
            assert_ne!(go(&small).checksum, go(&other).checksum, "{kernel}");
            let mut shim = Mem::with_disk(2);
            run(&small, &mut shim, &mut arena(&small)).unwrap();
            assert!(
                shim.started,
                "{kernel}: set-up is marked before the measured part"
            );
        }
    }

    #[test]
    fn disk_seq_repeats_its_passes_and_one_pass_keeps_its_checksum() {
        let once = Spec::new(Kernel::DiskSeq, 1, 0);
        let one = Spec::new(Kernel::DiskSeq, 1, 1);
        let three = Spec::new(Kernel::DiskSeq, 1, 3);
        let go = |spec: &Spec| run(spec, &mut Mem::with_disk(1), &mut arena(spec)).unwrap();
        assert_eq!(go(&once), go(&one));
        let (a, b) = (go(&one), go(&three));
        assert_eq!(b.bytes, 3 * a.bytes);
        assert_eq!(b.ops, 3 * a.ops);
        assert_ne!(a.checksum, b.checksum);
    }

    #[test]
    fn the_kernels_that_need_an_os_are_refused_here() {
        for kernel in Kernel::ALL.into_iter().filter(|k| k.needs_os()) {
            let spec = Spec::default_for(kernel);
            assert_eq!(spec.arena_bytes(), 0, "{kernel}");
            assert_eq!(
                run(&spec, &mut Mem::default(), &mut []),
                Err(Error::NeedsOs)
            );
        }
    }

    #[test]
    fn the_disk_kernels_check_what_they_read_and_the_disk_size() {
        for kernel in [Kernel::DiskSeq, Kernel::DiskRand] {
            let spec = Spec::new(kernel, 1, 10);
            let mut shim = Mem {
                corrupt: true,
                ..Mem::with_disk(1)
            };
            let got = run(&spec, &mut shim, &mut arena(&spec));
            if kernel == Kernel::DiskSeq {
                assert_eq!(got, Err(Error::Corrupt));
            }
            let big = Spec::new(kernel, 2, 10);
            assert_eq!(
                run(&big, &mut Mem::with_disk(1), &mut arena(&big)),
                Err(Error::DiskTooSmall {
                    needed: 2 * MIB,
                    available: MIB
                }),
                "{kernel}"
            );
        }
        let spec = Spec::new(Kernel::DiskSeq, 1, 0);
        let mut shim = Mem::with_disk(1);
        let out = run(&spec, &mut shim, &mut arena(&spec)).unwrap();
        assert_eq!((out.ops, out.bytes), (2, 2 * MIB));
        assert!(shim.figure_of("write_ns").is_some() && shim.figure_of("read_ns").is_some());
    }

    #[test]
    fn net_stream_trusts_only_the_sinks_sum() {
        let spec = Spec::new(Kernel::NetStream, 1, 0);
        let mut lossy = Mem {
            lossy: true,
            ..Mem::default()
        };
        assert_eq!(
            run(&spec, &mut lossy, &mut arena(&spec)),
            Err(Error::Corrupt)
        );
        let out = run(&spec, &mut Mem::default(), &mut arena(&spec)).unwrap();
        assert_eq!((out.ops, out.bytes), (16, MIB));
    }

    #[test]
    fn latencies_give_nearest_rank_percentiles() {
        let spec = Spec::new(Kernel::NetRr, 0, 200);
        let mut shim = Mem::default();
        let out = run(&spec, &mut shim, &mut arena(&spec)).unwrap();
        assert_eq!((out.ops, out.bytes), (200, 400));
        // The memory clock advances 1000 per reading: every round trip takes 1000 ns.
        assert_eq!(shim.figure_of("latency_p50_ns"), Some(1000));
        assert_eq!(shim.figure_of("latency_p99_ns"), Some(1000));
        let mut values = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
        let mut shim = Mem::default();
        report_percentiles(&mut shim, &mut values);
        assert_eq!(shim.figure_of("latency_p50_ns"), Some(5));
        assert_eq!(shim.figure_of("latency_p99_ns"), Some(10));
    }

    #[test]
    fn setup_is_marked_before_the_measured_part() {
        for kernel in [Kernel::Mem, Kernel::Random] {
            let spec = Spec::new(kernel, 1, 10);
            let mut shim = Mem::default();
            run(&spec, &mut shim, &mut arena(&spec)).unwrap();
            assert!(shim.started, "{kernel}");
        }
    }

    #[test]
    fn syscall_enters_the_kernel_once_per_call() {
        let mut shim = Mem::default();
        let out = run(&Spec::new(Kernel::Syscall, 0, 77), &mut shim, &mut []).unwrap();
        assert_eq!((shim.entries, out.ops), (77, 77));
    }

    #[test]
    fn random_visits_every_node_once_per_cycle() {
        let mut words = vec![0u64; 8 * 100];
        let nodes = random_init(&mut words, 5);
        let mut at = 0;
        let mut seen = vec![false; nodes];
        for _ in 0..nodes {
            at = words[at * NODE_WORDS] as usize;
            assert!(
                !seen[at],
                "a node was visited twice before the cycle closed"
            );
            seen[at] = true;
        }
        assert_eq!(
            at, 0,
            "the chase returns to its start after exactly `nodes` hops"
        );
    }

    #[test]
    fn mem_counts_triad_bytes() {
        let spec = Spec::new(Kernel::Mem, 1, 2);
        let out = run(&spec, &mut Mem::default(), &mut arena(&spec)).unwrap();
        let n = MIB / 8 / 3;
        assert_eq!(out.bytes, 2 * n * 24);
    }

    #[test]
    fn io_detects_corruption() {
        let spec = Spec::new(Kernel::Io, 1, 0);
        let mut shim = Mem {
            corrupt: true,
            ..Mem::default()
        };
        assert_eq!(
            run(&spec, &mut shim, &mut arena(&spec)),
            Err(Error::Corrupt)
        );
    }

    #[test]
    fn a_small_arena_is_refused_not_overrun() {
        let spec = Spec::new(Kernel::Mem, 4, 1);
        let err = run(&spec, &mut Mem::default(), &mut [0u8; 64]).unwrap_err();
        assert_eq!(
            err,
            Error::ArenaTooSmall {
                needed: 4 * MIB,
                available: 64
            }
        );
    }

    #[test]
    fn unsupported_services_are_errors() {
        struct Bare;
        impl Shim for Bare {
            fn enter_kernel(&mut self, x: u64) -> u64 {
                x
            }
        }
        let spec = Spec::new(Kernel::Io, 1, 0);
        assert_eq!(
            run(&spec, &mut Bare, &mut arena(&spec)),
            Err(Error::Unsupported)
        );
        let sleep = Spec::new(Kernel::Sleep, 0, 0);
        assert_eq!(run(&sleep, &mut Bare, &mut []), Err(Error::Unsupported));
        let probe = Spec::new(Kernel::Probe, 0, 0);
        assert_eq!(run(&probe, &mut Bare, &mut []), Err(Error::NeedsOs));
    }
}
