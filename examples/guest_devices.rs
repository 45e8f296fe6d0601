//! Boot a Linux guest with a disk and a network card, and show what it saw and what it cost.
//!
//! ```text
//! cargo run --release --example guest_devices -- [vm-linux|qemu] [KERNEL [ARGS…]]
//! ```
//!
//! The example makes what the lab makes for a guest with devices: a disk file (64 MiB,
//! preallocated with `fallocate`) and a tap, in a network namespace of its own so the host's
//! network is never touched. It boots the guest through `vm-linux` (the lab's VMM) or `qemu`
//! with both devices, runs the workload kernel (default `probe`, which lists the guest's block
//! devices and interfaces), and prints the guest's facts, the run's VM exits and the devices'
//! counters. It exits with 0 when the run completed and the guest saw `/dev/vda` and `eth0`;
//! otherwise it prints the end of the guest's console (`GUEST_VERBOSE=1`: every kernel message).

use isolab::backend::qemu::Qemu;
use isolab::backend::vm::linux::VmLinux;
use isolab::backend::Limits;
use isolab::lab::Lab;
use isolab::linux_guest::devices::{BlockBacking, GuestDevices, NetBacking};
use isolab::network::tap::Tap;
use isolab::results::Outcome;
use isolab::workload::{Kernel, Spec};
use std::error::Error;
use std::os::fd::AsRawFd;

/// The guest's Ethernet address: locally administered (bit 1 of the first byte), unicast.
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x15, 0x01, 0x02];
const DISK_BYTES: i64 = 64 << 20;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "vm-linux".into());
    let kernel = args.next().unwrap_or_else(|| "probe".into());
    let mut words = vec![format!("kernel={kernel}")];
    words.extend(args);
    let spec = match Spec::parse(words.iter().map(|w| w.as_bytes())) {
        Ok(spec) => spec,
        Err(_) => Spec::default_for(Kernel::Probe),
    };
    let lab = Lab::new()?;
    let disk = lab.workdir().join("guest-disk.img");
    let file = std::fs::File::create(&disk)?;
    // SAFETY: fallocate on an open descriptor.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, DISK_BYTES) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    drop(file);
    let console = lab.workdir().join("guest-console.log");
    let console_tail = || {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };

    // The tap, and the guest, in a network namespace of this thread's own: when the thread
    // ends, the namespace and the tap go with it.
    let run = std::thread::scope(|s| {
        s.spawn(|| -> Result<_, String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            let tap = Tap::create("isolab-g0").map_err(|e| e.to_string())?;
            tap.set_up().map_err(|e| e.to_string())?;
            let devices = GuestDevices {
                block: Some(BlockBacking { path: disk.clone() }),
                net: Some(NetBacking { tap, mac: MAC }),
            };
            let limits = Limits::default();
            let verbose = std::env::var_os("GUEST_VERBOSE").is_some();
            let mut instance = match backend.as_str() {
                "qemu" => Qemu::default()
                    .verbose(verbose)
                    .with_console_log(console.clone())
                    .start_with(&lab, &spec, &limits, devices),
                _ => VmLinux::default()
                    .verbose(verbose)
                    .with_console_log(console.clone())
                    .start_with(&lab, &spec, &limits, devices),
            }
            .map_err(|e| e.to_string())?;
            let _ = instance.wait_ready().and_then(|()| instance.wait_done());
            instance.finish().map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the guest's thread panicked".to_string())?
    })
    .inspect_err(|_| eprintln!("guest console, last lines:\n{}", console_tail()))?;

    println!("backend {backend}: {:?}", run.outcome);
    if let Some(out) = &run.output {
        println!("checksum {:#018x}", out.checksum);
    }
    for (key, value) in &run.probe {
        println!("probe {key} = {value}");
    }
    for (key, value) in &run.info {
        if ["exits_", "virtio_", "disk_", "net_"]
            .iter()
            .any(|p| key.starts_with(p))
        {
            println!("info {key} = {value}");
        }
    }
    let fact = |k: &str| {
        run.probe
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let saw = fact("block_devices").split(',').any(|d| d == "vda")
        && fact("interfaces").split(',').any(|i| i == "eth0");
    if spec.kernel == Kernel::Probe && !saw || run.outcome != Outcome::Completed {
        eprintln!("guest console, last lines:\n{}", console_tail());
    }
    if spec.kernel == Kernel::Probe && !saw {
        return Err("the guest did not see /dev/vda and eth0".into());
    }
    if run.outcome != Outcome::Completed {
        return Err(format!("the run did not complete: {:?}", run.outcome).into());
    }
    Ok(())
}
