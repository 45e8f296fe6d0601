//! A disk and a network card for Linux guests: the same virtio devices from `vm-linux` (the
//! lab's VMM) and `qemu`, found by the guest's kernel as `/dev/vda` and `eth0`.
//!
//! Here (nested PVM) only QEMU can boot the guest, by emulation; `tests/emulated/host.rs` boots
//! both backends with devices on an emulated AMD-V machine. Each test makes its own disk file
//! (`fallocate`) and its own tap, in a network namespace of a test thread, so the host's
//! network is never touched.

mod common;

use common::{serial, temp_dir};
use isolab_backends::lab::Lab;
use isolab_backends::qemu::Qemu;
use isolab_backends::vm_linux::VmLinux;
use isolab_backends::{BackendError, Limits};
use isolab_linux_guest::devices::{BlockBacking, GuestDevices, NetBacking};
use isolab_linux_guest::guest_kernel;
use isolab_payload::{Kernel, Spec};
use isolab_resources::network::tap::Tap;
use isolab_results::Outcome;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x15, 0x01, 0x02];

/// A preallocated disk file of `bytes`.
fn disk(dir: &Path, bytes: i64) -> PathBuf {
    let path = dir.join("disk.img");
    let file = std::fs::File::create(&path).unwrap();
    // SAFETY: fallocate on an open descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    path
}

/// Run `f` in a thread with a network namespace of its own.
fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): the tests run as root");
            f()
        })
        .join()
        .expect("the namespace thread")
    })
}

#[test]
fn a_kernel_without_virtio_drivers_is_refused_naming_them_and_the_fix() {
    let temp = temp_dir("devices-refused");
    let mut lab = Lab::in_dir(&temp).unwrap();
    // A bzImage header with a version string, and no configuration anywhere to say it has
    // any driver: the lab cannot give it devices.
    let mut image = vec![0u8; 0x600];
    image[0x1f1] = 1;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
    image[0x500..0x50d].copy_from_slice(b"9.9.9-nothing");
    let kernel = temp.join("vmlinuz-9.9.9-nothing");
    std::fs::write(&kernel, image).unwrap();
    lab.settings.guest_kernel = Some(kernel);
    let disk = disk(&temp, 1 << 20);
    for backend in ["vm-linux", "qemu"] {
        let devices = GuestDevices {
            block: Some(BlockBacking {
                path: disk.clone(),
                read_only: false,
            }),
            ..Default::default()
        };
        let spec = Spec::default_for(Kernel::Probe);
        let result = match backend {
            "qemu" => Qemu::default().start_with(&lab, &spec, &Limits::default(), devices),
            _ => VmLinux::default().start_with(&lab, &spec, &Limits::default(), devices),
        };
        let Err(BackendError::Unavailable { reason, .. }) = result else {
            panic!("{backend}: a kernel without drivers was not refused");
        };
        assert!(
            reason.contains("virtio_blk") && reason.contains("lab kernel build"),
            "{backend}: {reason}"
        );
        assert!(!reason.contains('\n'), "one line: {reason}");
    }
    drop(lab);
    std::fs::remove_dir_all(&temp).unwrap();
}

#[test]
#[ignore = "boots Debian's kernel under QEMU (TCG here) with a disk and a tap; needs qemu-system-x86 and linux-image-amd64"]
fn qemu_gives_the_guest_a_disk_and_a_network_card() {
    let _serial = serial();
    let temp = temp_dir("devices-qemu");
    let mut lab = Lab::in_dir(&temp).unwrap();
    let image =
        guest_kernel::find_in_boot(Path::new("/boot"), &isolab_host::facts::kernel_release())
            .unwrap_or_else(|e| panic!("this test needs a kernel in /boot: {e}"));
    lab.settings.guest_kernel = Some(image.path);
    let disk = disk(&temp, 64 << 20);
    let run = in_new_netns(|| {
        let tap = Tap::create("isolab-q0").unwrap();
        tap.set_up().unwrap();
        let devices = GuestDevices {
            block: Some(BlockBacking {
                path: disk.clone(),
                read_only: false,
            }),
            net: Some(NetBacking { tap, mac: MAC }),
            init_words: Vec::new(),
            image: None,
        };
        let spec = Spec::default_for(Kernel::Probe);
        let mut instance = Qemu::default()
            .start_with(&lab, &spec, &Limits::default(), devices)
            .unwrap();
        let _ = instance.wait_ready().and_then(|()| instance.wait_done());
        instance.finish().unwrap()
    });
    assert_eq!(run.outcome, Outcome::Completed, "{run:#?}");
    let fact = |k: &str| {
        run.probe
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in {:?}", run.probe))
    };
    assert_eq!(fact("block_devices"), "vda", "{run:#?}");
    assert!(
        fact("interfaces").split(',').any(|i| i == "eth0"),
        "{run:#?}"
    );
    // Debian's drivers came as modules in the initramfs, which /init loaded.
    assert!(fact("root_entries").contains("modules"), "{run:#?}");
    let cmdline = &run.info["guest_cmdline"];
    assert!(!cmdline.contains("nomodule"), "{cmdline}");
    drop(lab);
    std::fs::remove_dir_all(&temp).unwrap();
}
