//! Boot a Linux guest with a disk and a network card, and show what it saw and what it cost.
//!
//! ```text
//! cargo run --release --example guest_devices -- [vm-linux|qemu] [KERNEL [WORDS…]]
//! ```
//!
//! The example makes what the lab makes for a guest with devices: a disk file (preallocated
//! with `fallocate`, as large as the kernel's spec asks, 64 MiB at least) and the lab's network
//! — a peer (echo and sink) in a network namespace of its own — with a tap in the peer's
//! namespace as the guest's cable, so the host's network is never touched. It boots the guest
//! through `vm-linux` (the lab's VMM) or `qemu` with both devices, runs the workload kernel
//! (default `probe`, which lists the guest's block devices and interfaces; `disk-seq`,
//! `disk-rand`, `net-stream` and `net-rr` use them), and prints the guest's facts, the
//! checksum, the run's VM exits and the devices' counters. It exits with 0 when the run
//! completed (and, for `probe`, the guest saw `/dev/vda` and `eth0`); otherwise it prints the
//! end of the guest's console (`GUEST_VERBOSE=1`: every kernel message).

use isolab_backends::lab::Lab;
use isolab_backends::qemu::Qemu;
use isolab_backends::vm_linux::VmLinux;
use isolab_backends::Limits;
use isolab_linux_guest::devices::{BlockBacking, GuestDevices, NetBacking};
use isolab_payload::{Kernel, Spec};
use isolab_resources::network::netlink::Rtnl;
use isolab_resources::network::tap::Tap;
use isolab_resources::network::{addresses, Network, PREFIX};
use isolab_results::Outcome;
use std::error::Error;
use std::os::fd::AsRawFd;

/// The guest's Ethernet address: locally administered (bit 1 of the first byte), unicast.
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x15, 0x01, 0x02];
/// The link number of the guest's addresses (10.64.N/24, as the lab numbers its links).
const LINK: u32 = 200;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "vm-linux".into());
    let kernel = args.next().unwrap_or_else(|| "probe".into());
    let kind = Kernel::ALL
        .iter()
        .copied()
        .find(|k| k.to_string() == kernel)
        .ok_or_else(|| format!("no kernel {kernel}"))?;
    let mut words = Spec::default_for(kind).to_string();
    for w in args {
        words.push(' ');
        words.push_str(&w);
    }
    let spec = Spec::parse(words.split(' ').map(str::as_bytes)).map_err(|e| e.to_string())?;

    let lab = Lab::new()?;
    let disk = lab.workdir().join("guest-disk.img");
    let file = std::fs::File::create(&disk)?;
    let bytes = spec.disk_bytes().max(64 << 20) as i64;
    // SAFETY: fallocate on an open descriptor.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    drop(file);
    let console = lab.workdir().join("guest-console.log");
    let console_tail = || {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };

    // The lab's network: the peer in its namespace, and the guest's tap there, addressed.
    let network = Network::start()?;
    let (peer_ip, guest_ip) = addresses(LINK);
    let tap_name = format!("t{LINK}");
    let tap = network.peer_namespace().run(|| -> std::io::Result<Tap> {
        let tap = Tap::create(&tap_name).map_err(std::io::Error::other)?;
        Rtnl::open()?.add_address(&tap_name, peer_ip, PREFIX)?;
        tap.set_up().map_err(std::io::Error::other)?;
        Ok(tap)
    })??;
    let mut init_words = vec![
        format!("net={guest_ip}/{PREFIX}"),
        format!("peer={peer_ip}"),
    ];
    if kind.needs_disk() {
        init_words.push("disk=/dev/vda".into());
    }
    let devices = GuestDevices {
        block: Some(BlockBacking {
            path: disk.clone(),
            read_only: false,
        }),
        net: Some(NetBacking { tap, mac: MAC }),
        init_words,
        image: None,
    };
    let limits = Limits::default();
    let verbose = std::env::var_os("GUEST_VERBOSE").is_some();
    let started = match backend.as_str() {
        "qemu" => Qemu::default()
            .verbose(verbose)
            .with_console_log(console.clone())
            .start_with(&lab, &spec, &limits, devices),
        _ => VmLinux::default()
            .verbose(verbose)
            .with_console_log(console.clone())
            .start_with(&lab, &spec, &limits, devices),
    };
    let run = started
        .and_then(|mut instance| {
            let _ = instance.wait_ready().and_then(|()| instance.wait_done());
            instance.finish()
        })
        .inspect_err(|_| eprintln!("guest console, last lines:\n{}", console_tail()))?;

    println!("backend {backend} kernel {spec}: {:?}", run.outcome);
    if let Some(out) = &run.output {
        println!(
            "checksum {:#018x} ops {} bytes {}",
            out.checksum, out.ops, out.bytes
        );
    }
    if let (Some(start), Some(done)) = (run.timeline.at("start"), run.timeline.at("done")) {
        println!("work_ms {:.3}", (done - start) as f64 / 1e6);
    }
    for (key, value) in &run.probe {
        println!("probe {key} = {value}");
    }
    for (key, value) in &run.info {
        if ["exits_", "virtio_", "disk_", "net_", "p50", "p99"]
            .iter()
            .any(|p| key.starts_with(p))
        {
            println!("info {key} = {value}");
        }
    }
    for r in network.received_from(guest_ip) {
        println!(
            "peer received {} bytes, sum {:#018x}, on {:?}",
            r.bytes, r.sum, r.service
        );
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
    if kind == Kernel::Probe && !saw || run.outcome != Outcome::Completed {
        eprintln!("guest console, last lines:\n{}", console_tail());
    }
    if kind == Kernel::Probe && !saw {
        return Err("the guest did not see /dev/vda and eth0".into());
    }
    if run.outcome != Outcome::Completed {
        return Err(format!("the run did not complete: {:?}", run.outcome).into());
    }
    Ok(())
}
