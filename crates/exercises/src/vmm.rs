//! The checks of the VMM track: what a student's VMM must make true, step by step.
//!
//! Like the container track's, every check starts the student's program through the
//! `student:vmm` backend with values chosen at random, and looks at what it reports and at what
//! the kernel shows from outside (its KVM file descriptors, its mappings). The guests of steps 3
//! and 4 are a few bytes of machine code written here, in [`guest_code`], with random values in
//! them; step 5 runs the lab's own bare guest and compares the kernels' checksums with the ones
//! the lab computes natively.
//!
//! **Where the guest meets the VMM** is in one place on each side: [`guest_code`] here, and the
//! `entry` module of the solution (`labs/vmm/solution/src/entry.rs`) for the students' VMMs. The
//! bare guest's hypercall ABI itself is `isolab_kernels::hypercall`.

use crate::{inspect, native_output, random_seed, todo_or_fail, Test};
use isolab_backends::lab::Lab;
use isolab_backends::student::{self, Kind, KvmCall, Student, VmmGuest};
use isolab_backends::{Backend, BackendError, Limits, Outcome, Run};
use isolab_kernels::rng::Rng;
use isolab_payload::{Kernel, Spec};
use std::path::{Path, PathBuf};

/// The guests of steps 3 and 4: machine code, with random values in it.
pub mod guest_code {
    /// The port every guest here writes to: the hypercall port of the ABI.
    pub const PORT: u16 = isolab_kernels::hypercall::PORT;

    /// 16-bit real-mode code: write the bytes `a` and `b` to [`PORT`], then `hlt`.
    ///
    /// ```text
    /// b0 aa        mov al, a
    /// ba f0 03     mov dx, 0x3f0
    /// ee           out dx, al        ← the first VM exit: KVM_EXIT_IO
    /// b0 bb        mov al, b
    /// ee           out dx, al
    /// f4           hlt               ← KVM_EXIT_HLT
    /// ```
    pub fn real_mode(a: u8, b: u8) -> Vec<u8> {
        let [lo, hi] = PORT.to_le_bytes();
        vec![0xb0, a, 0xba, lo, hi, 0xee, 0xb0, b, 0xee, 0xf4]
    }

    /// 64-bit code: write the two halves of `value` and the CS selector to [`PORT`], then `hlt`,
    /// which ring 3 may not execute.
    ///
    /// ```text
    /// 48 b8 <8 bytes>   mov rax, value     (only long mode decodes this as one instruction)
    /// 66 ba f0 03       mov dx, 0x3f0
    /// ef                out dx, eax        → the low half
    /// 48 c1 e8 20       shr rax, 32
    /// ef                out dx, eax        → the high half
    /// 8c c8             mov eax, cs        → the selector; its low two bits are the CPL
    /// ef                out dx, eax
    /// f4                hlt                → #GP in ring 3, no IDT: triple fault, KVM_EXIT_SHUTDOWN
    /// ```
    pub fn long_mode(value: u64) -> Vec<u8> {
        let [lo, hi] = PORT.to_le_bytes();
        let mut code = vec![0x48, 0xb8];
        code.extend(value.to_le_bytes());
        code.extend([0x66, 0xba, lo, hi, 0xef]);
        code.extend([0x48, 0xc1, 0xe8, 0x20, 0xef]);
        code.extend([0x8c, 0xc8, 0xef]);
        code.push(0xf4);
        code
    }
}

/// Run the tests of steps `1..=step` on the VMM at `program`; the tests, and what was measured.
pub fn check(
    step: u32,
    program: &Path,
    lab: &Lab,
    say: &mut dyn FnMut(&str),
) -> (Vec<Test>, Vec<String>) {
    if let Err(e) = isolab_vmm::kvm::open() {
        return (
            vec![Test::fail(
                "this machine has a usable /dev/kvm",
                e.to_string(),
            )],
            Vec::new(),
        );
    }
    let checker = Checker {
        program: program.to_path_buf(),
        lab,
        rng: std::cell::RefCell::new(Rng::new(random_seed())),
    };
    say("running your VMM");
    let mut tests = Vec::new();
    let mut measured = Vec::new();
    for s in 1..=step {
        let (t, m) = checker.step(s);
        tests.extend(t);
        if s == step {
            measured.extend(m);
        }
    }
    (tests, measured)
}

struct Checker<'a> {
    program: PathBuf,
    lab: &'a Lab,
    rng: std::cell::RefCell<Rng>,
}

impl Checker<'_> {
    fn backend(&self, guest: VmmGuest, ram_mib: u64) -> Student {
        let mut b = Student::new(Kind::Vmm, self.program.clone(), false);
        b.options.guest = guest;
        b.options.ram_bytes = Some(ram_mib << 20);
        b
    }

    fn below(&self, n: u64) -> u64 {
        self.rng.borrow_mut().below(n)
    }

    /// Start the VMM, wait for `ready` (if it comes), run `look` on the instance while it
    /// waits, and end it.
    fn held<T>(
        &self,
        backend: &Student,
        look: impl FnOnce(nix::unistd::Pid) -> T,
    ) -> (Option<T>, Result<Run, BackendError>) {
        let spec = Spec::default_for(Kernel::Sleep);
        let mut instance = match backend.start(self.lab, &spec, &Limits::default()) {
            Ok(i) => i,
            Err(e) => return (None, Err(e)),
        };
        let seen = instance
            .wait_ready()
            .ok()
            .map(|()| look(instance.main_pid()));
        (seen, instance.stop())
    }

    /// As [`Checker::held`], watching the VMM's KVM calls of steps 1 and 2 from outside
    /// (`isolab_backends::student::KvmCalls`): the calls seen, once it has ended.
    fn held_watched<T>(
        &self,
        backend: &Student,
        look: impl FnOnce(nix::unistd::Pid) -> T,
    ) -> (Option<T>, Result<Run, BackendError>, Vec<KvmCall>) {
        let spec = Spec::default_for(Kernel::Sleep);
        let (mut instance, calls) =
            match backend.start_watching_kvm(self.lab, &spec, &Limits::default()) {
                Ok(i) => i,
                Err(e) => return (None, Err(e), Vec::new()),
            };
        let seen = instance
            .wait_ready()
            .ok()
            .map(|()| look(instance.main_pid()));
        let run = instance.stop();
        (seen, run, calls.finish())
    }

    /// Start the VMM and let it run to its end.
    fn to_the_end(&self, backend: &Student) -> Result<Run, BackendError> {
        backend
            .start(
                self.lab,
                &Spec::default_for(Kernel::Ready),
                &Limits::default(),
            )?
            .finish()
    }

    fn step(&self, step: u32) -> (Vec<Test>, Vec<String>) {
        match step {
            1 => self.step1(),
            2 => self.step2(),
            3 => self.step3(),
            4 => self.step4(),
            5 => self.step5(),
            _ => (Vec::new(), Vec::new()),
        }
    }

    fn step1(&self) -> (Vec<Test>, Vec<String>) {
        let (_, run, calls) = self.held_watched(&self.backend(VmmGuest::Nothing, 2), |_| ());
        let run = match run {
            Ok(run) => run,
            Err(e) => return (vec![Test::fail("1 · your VMM runs", e.to_string())], vec![]),
        };
        // What KVM answers the checker itself: the values the VMM must have got.
        let kvm = isolab_vmm::kvm::open().ok();
        let version = kvm.as_ref().map(|k| k.get_api_version().to_string());
        let slots = kvm.as_ref().map(|k| k.get_nr_memslots().to_string());
        let on_kvm = |c: &&KvmCall| c.fd_rdev.is_some() && c.fd_rdev == kvm_rdev();
        let asked_version = calls
            .iter()
            .filter(on_kvm)
            .any(|c| c.cmd == student::KVM_GET_API_VERSION);
        let asked_slots = calls.iter().any(|c| {
            c.cmd == student::KVM_CHECK_EXTENSION
                && c.arg == u64::from(kvm_bindings::KVM_CAP_NR_MEMSLOTS)
                && (on_kvm(&c) || c.fd_target.starts_with("anon_inode:kvm-vm"))
        });
        let info = |key: &str| run.info.get(key).map(String::as_str);
        let reported = |key: &str, want: Option<&str>| match (info(key), want) {
            (Some(got), Some(want)) if got.trim() == want => Ok(()),
            (Some(got), Some(want)) => Err(format!("{key} is {got}, KVM says {want}")),
            (Some(got), None) => Err(format!("{key} is {got}, and the lab could not ask KVM")),
            (None, _) => Err(format!("no {key} was reported")),
        };
        let version_name = format!(
            "1 · it reports KVM's API version ({})",
            version.as_deref().unwrap_or("12")
        );
        let tests = vec![
            if asked_version {
                Test::pass("1 · it opens /dev/kvm and asks its API version (KVM_GET_API_VERSION)")
            } else {
                todo_or_fail(
                    "1 · it opens /dev/kvm and asks its API version (KVM_GET_API_VERSION)",
                    1,
                    &run,
                    || {
                        format!(
                            "the lab watched your VMM's ioctls and saw no KVM_GET_API_VERSION on a \
                             /dev/kvm file descriptor{}: open it (Kvm::new) and ask \
                             (kvm.get_api_version()); printing the answer is not asking",
                            seen_calls(&calls)
                        )
                    },
                )
            },
            match reported("kvm_api_version", version.as_deref()) {
                Ok(()) if asked_version => Test::pass(version_name),
                Ok(()) => Test::fail(
                    version_name,
                    "reported, but never asked of KVM: report what kvm.get_api_version() returns",
                ),
                Err(why) => todo_or_fail(&version_name, 1, &run, || {
                    format!("{why}: KVM_GET_API_VERSION, reported with report.info")
                }),
            },
            match reported("kvm_memslots", slots.as_deref()) {
                Ok(()) if asked_slots => {
                    Test::pass("1 · it reports KVM's number of memory slots")
                }
                Ok(()) => Test::fail(
                    "1 · it reports KVM's number of memory slots",
                    "reported, but never asked of KVM: the lab saw no \
                     KVM_CHECK_EXTENSION(KVM_CAP_NR_MEMSLOTS); report what kvm.get_nr_memslots() returns",
                ),
                Err(why) => todo_or_fail(
                    "1 · it reports KVM's number of memory slots",
                    1,
                    &run,
                    || format!("{why}: KVM_CHECK_EXTENSION(KVM_CAP_NR_MEMSLOTS)"),
                ),
            },
            Test::expect("1 · it ends cleanly", clean_end(&run), || describe(&run)),
        ];
        (tests, phases_line(&run).into_iter().collect())
    }

    fn step2(&self) -> (Vec<Test>, Vec<String>) {
        let ram_mib = 2 * (1 + self.below(32));
        let ram = ram_mib << 20;
        let backend = self.backend(VmmGuest::Nothing, ram_mib);
        let (seen, run, calls) = self.held_watched(&backend, |pid| {
            (inspect::fd_targets(pid), inspect::mappings(pid))
        });
        let run = match run {
            Ok(run) => run,
            Err(e) => return (vec![Test::fail("2 · your VMM runs", e.to_string())], vec![]),
        };
        let Some((fds, maps)) = seen else {
            let name = "2 · it builds the machine, reports ready and waits for the go-ahead";
            return (
                vec![todo_or_fail(name, 2, &run, || {
                    format!("it never reported ready ({})", describe(&run))
                })],
                vec![],
            );
        };
        let has_fd = |what: &str| fds.iter().any(|t| t.starts_with(what));
        // The region the VMM last gave KVM as slot 0, on a VM's fd: what the guest would see.
        let region = calls
            .iter()
            .filter(|c| {
                (c.cmd == student::KVM_SET_USER_MEMORY_REGION
                    || c.cmd == student::KVM_SET_USER_MEMORY_REGION2)
                    && c.fd_target.starts_with("anon_inode:kvm-vm")
            })
            .filter_map(|c| c.region)
            .rfind(|r| r.slot == 0);
        let backing = |r: &student::Region| {
            maps.iter().find(|m| {
                m.what.is_empty()
                    && m.start <= r.userspace_addr
                    && r.userspace_addr + r.memory_size <= m.start + m.len
            })
        };
        let registered = format!(
            "2 · its RAM is the guest's memory (KVM_SET_USER_MEMORY_REGION: slot 0 at \
             guest-physical 0, {ram_mib} MiB of its own memory)"
        );
        let tests = vec![
            Test::pass("2 · it builds the machine, reports ready and waits for the go-ahead"),
            Test::expect(
                "2 · it holds a VM and a vCPU (anon_inode:kvm-vm, kvm-vcpu:0)",
                has_fd("anon_inode:kvm-vm") && has_fd("anon_inode:kvm-vcpu:0"),
                || format!("its file descriptors: {}", fds.join(", ")),
            ),
            Test::expect(
                format!("2 · it mapped {ram_mib} MiB of guest RAM (--ram-mib)"),
                maps.iter().any(|m| m.len == ram),
                || "no mapping of exactly --ram-mib MiB in /proc/PID/maps".into(),
            ),
            match region {
                Some(r)
                    if r.guest_phys_addr == 0
                        && r.memory_size == ram
                        && r.flags & kvm_bindings::KVM_MEM_READONLY == 0
                        && backing(&r).is_some() =>
                {
                    Test::pass(registered)
                }
                Some(r) => Test::fail(
                    registered,
                    format!(
                        "slot 0 was given {} MiB at guest-physical {:#x}, from address {:#x} of \
                         your VMM{}{}",
                        r.memory_size >> 20,
                        r.guest_phys_addr,
                        r.userspace_addr,
                        if backing(&r).is_some() {
                            ""
                        } else {
                            ", which no anonymous mapping of yours holds"
                        },
                        if r.flags & kvm_bindings::KVM_MEM_READONLY != 0 {
                            ", read-only"
                        } else {
                            ""
                        }
                    ),
                ),
                None => todo_or_fail(&registered, 2, &run, || {
                    format!(
                        "the lab watched your VMM's ioctls and saw no KVM_SET_USER_MEMORY_REGION \
                         for slot 0 on its VM{}: a mapping is only the VMM's memory until KVM is \
                         told it is the guest's (vm.set_user_memory_region)",
                        seen_calls(&calls)
                    )
                }),
            },
            Test::expect(
                "2 · it mapped the vCPU's kvm_run page",
                maps.iter()
                    .any(|m| m.what.starts_with("anon_inode:kvm-vcpu")),
                || {
                    "mmap the vCPU fd (KVM_GET_VCPU_MMAP_SIZE bytes): KVM_RUN reports exits there"
                        .into()
                },
            ),
            Test::expect("2 · it ends cleanly when told", clean_end(&run), || {
                describe(&run)
            }),
        ];
        (tests, phases_line(&run).into_iter().collect())
    }

    fn step3(&self) -> (Vec<Test>, Vec<String>) {
        let (a, b) = (1 + self.below(250) as u8, 1 + self.below(250) as u8);
        let backend = self.backend(VmmGuest::Real(guest_code::real_mode(a, b)), 2);
        let run = match self.to_the_end(&backend) {
            Ok(run) => run,
            Err(e) => return (vec![Test::fail("3 · your VMM runs", e.to_string())], vec![]),
        };
        let outs = outs(&run);
        let tests = vec![
            if outs.first() == Some(&u64::from(a)) && outs.get(1) == Some(&u64::from(b)) {
                Test::pass("3 · it reports the bytes the real-mode guest wrote to port 0x3f0")
            } else {
                todo_or_fail(
                    "3 · it reports the bytes the real-mode guest wrote to port 0x3f0",
                    3,
                    &run,
                    || {
                        format!(
                            "reported {}: handle KVM_EXIT_IO, report.guest_wrote for each",
                            list(&outs, |v| v.to_string())
                        )
                    },
                )
            },
            exit_test(
                "3 · it stops at the guest's hlt (KVM_EXIT_HLT)",
                3,
                &run,
                "hlt",
            ),
            Test::expect("3 · it ends cleanly", clean_end(&run), || describe(&run)),
        ];
        (tests, phases_line(&run).into_iter().collect())
    }

    fn step4(&self) -> (Vec<Test>, Vec<String>) {
        // Two halves that are neither zero nor equal: a VMM that reports a stale value shows.
        let (lo, hi) = (
            1 + self.below(u64::from(u32::MAX) - 1),
            1 + self.below(u64::from(u32::MAX) - 1),
        );
        let value = hi << 32 | lo;
        let ram_mib = 4 + 2 * self.below(7);
        let backend = self.backend(VmmGuest::Long(guest_code::long_mode(value)), ram_mib);
        let run = match self.to_the_end(&backend) {
            Ok(run) => run,
            Err(e) => return (vec![Test::fail("4 · your VMM runs", e.to_string())], vec![]),
        };
        let outs = outs(&run);
        let tests = vec![
            if outs.first() == Some(&lo) && outs.get(1) == Some(&hi) {
                Test::pass("4 · the guest runs 64-bit code (mov rax, imm64; shr rax, 32)")
            } else {
                todo_or_fail(
                    "4 · the guest runs 64-bit code (mov rax, imm64; shr rax, 32)",
                    4,
                    &run,
                    || {
                        let mut hint = format!("the guest wrote {}, not {lo:#x}, {hi:#x}, …: is the vCPU in long mode (EFER.LME|LMA, CR0.PG, CS.L)?", list(&outs, |v| format!("{v:#x}")));
                        if outs.is_empty() {
                            hint.push_str(&first_out_hint());
                        }
                        hint
                    },
                )
            },
            match outs.get(2) {
                Some(cs) if cs & 3 == 3 => Test::pass("4 · in ring 3 (CS's low bits)"),
                other => todo_or_fail("4 · in ring 3 (CS's low bits)", 4, &run, || {
                    let cs = other.map_or("not reported".into(), |cs| format!("{cs:#x}"));
                    format!("the guest's CS was {cs}: a CS with DPL 3 and selector RPL 3")
                }),
            },
            exit_test(
                "4 · its hlt ends the run as a triple fault (KVM_EXIT_SHUTDOWN)",
                4,
                &run,
                "shutdown",
            ),
        ];
        (tests, phases_line(&run).into_iter().collect())
    }

    fn step5(&self) -> (Vec<Test>, Vec<String>) {
        let mut tests = Vec::new();
        let bare = |spec: &Spec| {
            let ram = isolab_vmm::memory::ram_for_arena(spec.arena_bytes()) >> 20;
            self.backend(VmmGuest::Bare, ram)
                .run(self.lab, spec, &Limits::default())
        };
        let ready = Spec::default_for(Kernel::Ready);
        let name = "5 · the bare guest reaches ready and done";
        tests.push(match bare(&ready) {
            Ok(run) if run.outcome == Outcome::Completed => Test::pass(name),
            Ok(run) => todo_or_fail(name, 5, &run, || describe(&run)),
            Err(e) => Test::fail(name, e.to_string()),
        });
        let seed = self.rng.borrow_mut().next_u64() >> 1;
        let kernels = [
            Spec::new(Kernel::Cpu, 0, 50_000 + self.below(200_000)),
            Spec::new(Kernel::Mem, 2 + 2 * self.below(4), 2),
            Spec::new(
                Kernel::Random,
                2 + 2 * self.below(4),
                20_000 + self.below(50_000),
            ),
            Spec::new(Kernel::Syscall, 0, 500 + self.below(2_000)),
        ];
        for mut spec in kernels {
            spec.seed = seed;
            let expected = native_output(&spec).checksum;
            let name = format!(
                "5 · the {} kernel computes the native checksum in your VMM",
                spec.kernel
            );
            tests.push(match bare(&spec) {
                Ok(run) => match run.output {
                    Some(o) if o.checksum == expected => Test::pass(name),
                    Some(o) => Test::fail(
                        name,
                        format!("checksum {:#x}, expected {expected:#x}", o.checksum),
                    ),
                    None => todo_or_fail(&name, 5, &run, || describe(&run)),
                },
                Err(e) => Test::fail(name, e.to_string()),
            });
        }
        let backend = self.backend(VmmGuest::Bare, 2);
        let (seen, run) = self.held(&backend, |_| ());
        let name = "5 · a sleeping guest waits for the host (wait_host) and ends when told";
        tests.push(match (seen, run) {
            (Some(()), Ok(run)) if run.output.is_some() => Test::pass(name),
            (_, Ok(run)) => todo_or_fail(name, 5, &run, || describe(&run)),
            (_, Err(e)) => Test::fail(name, e.to_string()),
        });
        let runs: Vec<Run> = (0..5)
            .filter_map(|_| bare(&ready).ok())
            .filter(|r| r.outcome == Outcome::Completed)
            .collect();
        (
            tests,
            crate::startup_line("your VMM", &runs).into_iter().collect(),
        )
    }
}

/// Why a long-mode guest in ring 3 may stop at its first `out`: the port must be open in the
/// TSS's I/O bitmap, and TR's type must be the one this CPU's vendor accepts
/// (`backend::vm::cpu`, "One TSS, two types").
fn first_out_hint() -> String {
    use isolab_vmm::cpu::Vendor;
    let vendor = Vendor::of_host();
    let (name, state) = match vendor {
        Vendor::Intel => ("Intel", "busy"),
        Vendor::Amd => ("AMD", "available"),
    };
    format!(
        " Nothing came out: if its first `out` faulted, the TSS's I/O bitmap must open the port, \
         and TR must hold a {state} TSS (type {}) on this {name} machine",
        vendor.tss_type()
    )
}

/// `values` in words: "1, 2, 3", or "nothing".
fn list(values: &[u64], show: impl Fn(u64) -> String) -> String {
    if values.is_empty() {
        return "nothing".into();
    }
    values
        .iter()
        .map(|&v| show(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values the guest wrote, as the VMM reported them (`out1`, `out2`, …).
fn outs(run: &Run) -> Vec<u64> {
    (1..)
        .map_while(|i| run.info.get(&format!("out{i}")))
        .map(|v| v.trim().parse().unwrap_or(u64::MAX))
        .collect()
}

fn exit_test(name: &str, step: u32, run: &Run, want: &str) -> Test {
    match run.info.get("exit").map(String::as_str) {
        Some(got) if got == want => Test::pass(name),
        other => todo_or_fail(name, step, run, || {
            let got = other.map_or("no exit".into(), |e| format!("exit \"{e}\""));
            format!("the VMM reported {got}; report.info(\"exit\", \"{want}\") when KVM_RUN returns that exit")
        }),
    }
}

/// `/dev/kvm`'s device number, wherever a VMM's node of it is.
fn kvm_rdev() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/dev/kvm").ok().map(|m| m.rdev())
}

/// " (it saw: KVM_CREATE_VM, …)": the watched calls the VMM made, by name.
fn seen_calls(calls: &[KvmCall]) -> String {
    if calls.is_empty() {
        return " (it made none of the KVM calls the lab watches)".into();
    }
    let names: Vec<&str> = calls
        .iter()
        .map(|c| match c.cmd {
            student::KVM_GET_API_VERSION => "KVM_GET_API_VERSION",
            student::KVM_CHECK_EXTENSION => "KVM_CHECK_EXTENSION",
            student::KVM_CREATE_VM => "KVM_CREATE_VM",
            student::KVM_CREATE_VCPU => "KVM_CREATE_VCPU",
            _ => "KVM_SET_USER_MEMORY_REGION",
        })
        .collect();
    format!(" (it saw {})", names.join(", "))
}

/// Did the program end by itself with status 0 (or when the lab told it to)?
fn clean_end(run: &Run) -> bool {
    match &run.outcome {
        Outcome::Completed | Outcome::Stopped => true,
        Outcome::Failed { reason } => reason.starts_with("exited with status 0"),
        Outcome::OomKilled => false,
    }
}

fn describe(run: &Run) -> String {
    crate::container::describe(run)
}

/// "phases in ms: cgroup 0.080 · bundle 0.050 · kvm_open 0.060 · …": each phase edge the VMM
/// reported, after the one before it.
fn phases_line(run: &Run) -> Option<String> {
    let phases: Vec<String> = run
        .timeline
        .durations()
        .into_iter()
        .filter(|(name, _)| name != "exited")
        .map(|(name, ns)| format!("{name} {}", isolab_report::format::ms(ns as f64)))
        .collect();
    (!phases.is_empty()).then(|| format!("your VMM's phases in ms: {}", phases.join(" · ")))
}

#[cfg(test)]
mod tests {
    use super::guest_code::*;

    #[test]
    fn the_guests_hold_their_values_where_the_listing_says() {
        let real = real_mode(0x12, 0x34);
        assert_eq!((real[1], real[7], real[9]), (0x12, 0x34, 0xf4));
        let long = long_mode(0x1122_3344_5566_7788);
        assert_eq!(&long[2..10], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(long.last(), Some(&0xf4));
        assert_eq!(long.len(), 2 + 8 + 5 + 5 + 3 + 1);
    }
}
