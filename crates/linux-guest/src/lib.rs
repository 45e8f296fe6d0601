//! Linux guests: what every backend that boots a Linux kernel needs, whoever runs it.
//!
//! A Linux guest of the lab is three things: a **kernel** (the host's, or one `lab kernel build`
//! made), an **initramfs** holding the static workload as `/init`, and a **command line** that
//! tunes the kernel for a microVM and names the workload kernel to run. The guest reports on its
//! serial **console**. Two backends boot it:
//!
//! * `vm-linux` — the lab's own KVM VMM, loading the kernel with linux-loader;
//! * `qemu` — QEMU's `microvm` machine, as an outside reference (emulated with TCG where there is
//!   no hardware virtualization).
//!
//! The modules:
//!
//! * [`kernel`] — finding a kernel, telling a bzImage from a vmlinux;
//! * [`extract`] — the vmlinux inside a bzImage (XZ + BCJ), for booting through PVH;
//! * [`initramfs`] — the cpio newc writer and the lab's initramfs;
//! * [`cmdline`] — the guest command line;
//! * [`console`] — the console as the host reads it: log, marker lines, stamps;
//! * [`symbols`] — naming the kernel function a stopped guest was in;
//! * [`build`] — `lab kernel build`: a minimal microVM kernel from a source tree.
//!
//! This module knows nothing of backends: it gives them files, strings and facts
//! ([`guest_facts`]), which each backend records on its own instances.

pub mod build;
pub mod cmdline;
pub mod console;
pub mod devices;
pub mod extract;
pub mod guest_kernel;
pub mod initramfs;
pub mod symbols;

use isolab_payload::{Spec, WORKLOAD_ELF};
use isolab_results::info;
use std::path::{Path, PathBuf};
use std::{fs, io};

/// Guest RAM for the kernel and its page cache, before the workload's arena: enough for a
/// distribution kernel (Debian's needs about 60 MiB to boot into an initramfs).
pub const BASE_RAM_BYTES: u64 = 256 << 20;

/// Guest RAM for `spec`: [`BASE_RAM_BYTES`] plus the arena the kernel needs, rounded up to
/// 2 MiB.
pub fn ram_bytes(spec: &Spec) -> u64 {
    let two_mib = 2 << 20;
    (BASE_RAM_BYTES + spec.arena_bytes()).div_ceil(two_mib) * two_mib
}

/// The lab's initramfs on the host, written once per lab into its work directory `workdir` (the spec
/// travels on the command line, so every run of the lab boots the same archive), with the
/// kernel `modules` (files, in load order) a guest's devices need, if any: one archive per set
/// of modules, so a guest without devices boots exactly what it always did.
pub fn initramfs_path(
    workdir: &Path,
    modules: &[PathBuf],
) -> Result<PathBuf, initramfs::InitramfsError> {
    let name = if modules.is_empty() {
        "initramfs.cpio.gz".to_string()
    } else {
        // FNV-1a over the module paths: a name per set, stable within the lab.
        let key = modules.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, p| {
            p.to_string_lossy()
                .bytes()
                .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
        });
        format!("initramfs-modules-{key:016x}.cpio.gz")
    };
    let path = workdir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    let mut files = Vec::new();
    for m in modules {
        let bytes = fs::read(m)?;
        let file = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push((file, bytes));
    }
    let archive = initramfs::build_with_modules(WORKLOAD_ELF, &files)?;
    // Write aside, then rename: two instances starting at once never see half an archive.
    let partial = workdir.join(format!(
        ".initramfs.{:?}.partial",
        std::thread::current().id()
    ));
    fs::write(&partial, &archive)
        .and_then(|()| fs::rename(&partial, &path))
        .map_err(|e: io::Error| {
            let _ = fs::remove_file(&partial);
            initramfs::InitramfsError::Io(e)
        })?;
    Ok(path)
}

/// What a Linux guest boots: its kernel, the kernel modules its devices need (carried in the
/// initramfs), how it finds the devices, and the initramfs.
#[derive(Debug)]
pub struct Boot {
    /// The kernel ([`guest_kernel::find`]).
    pub image: guest_kernel::KernelImage,
    /// The modules of the devices' drivers the kernel does not have built in, in load order.
    pub modules: Vec<PathBuf>,
    /// How the kernel learns where the devices are.
    pub discovery: devices::Discovery,
    /// The initramfs on the host, with the workload as `/init` and the modules.
    pub initrd: PathBuf,
}

/// Why a Linux guest cannot boot: the lab's reason for it to be unavailable, or the initramfs
/// that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// No kernel, or one that cannot drive the devices; the text says why and the fix.
    #[error("{0}")]
    Unavailable(String),
    /// The initramfs could not be written.
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
}

/// Prepare what a Linux guest given `devices` boots, for both backends that boot one (the
/// lab's VMM and QEMU): the kernel `guest_kernel` names (or the one [`guest_kernel::find`] finds),
/// refused when it cannot drive the devices; the modules it needs; the lab's initramfs for
/// them, written once per set of modules into `workdir`.
pub fn prepare_boot(
    guest_kernel: Option<&Path>,
    workdir: &Path,
    devices: &devices::GuestDevices,
) -> Result<Boot, BootError> {
    let image =
        guest_kernel::find(guest_kernel).map_err(|e| BootError::Unavailable(e.to_string()))?;
    let wanted = devices::Wanted {
        block: devices.block.is_some(),
        net: devices.net.is_some(),
        ext4: devices.image.is_some(),
    };
    // What the kernel needs for the devices: drivers (built in, or modules to carry) and a way
    // to find them (its command line, or ACPI tables).
    let (modules, discovery) = if devices.is_empty() {
        (Vec::new(), devices::Discovery::None)
    } else {
        let drivers = devices::inspect(&image);
        if let Some(why) = drivers.refusal(wanted) {
            return Err(BootError::Unavailable(why));
        }
        (drivers.modules(wanted), drivers.discovery)
    };
    let initrd = initramfs_path(workdir, &modules)?;
    Ok(Boot {
        image,
        modules,
        discovery,
        initrd,
    })
}

/// The facts every Linux-guest run shares, as `(info key, value)`: that it runs Linux, what it
/// boots (the kernel file plus the initramfs — plus, on the lab's layered image, the image's
/// disk of `image_disk` bytes — and their size, for the images claim), where the kernel came
/// from, the exact command line, and KVM's kind (and what KVM itself runs on).
pub fn guest_facts(
    image: &guest_kernel::KernelImage,
    kernel_file: &Path,
    initrd: &Path,
    image_disk: Option<u64>,
    cmdline: &str,
) -> Vec<(&'static str, String)> {
    let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    let initrd_bytes = size(initrd);
    let disk = image_disk.map_or(String::new(), |b| {
        format!(" + the lab's layered image as an ext4 disk ({b} bytes)")
    });
    vec![
        (info::GUEST_OS, "linux".into()),
        (
            info::IMAGE_BYTES,
            (size(kernel_file) + initrd_bytes + image_disk.unwrap_or(0)).to_string(),
        ),
        (
            info::IMAGE,
            format!(
                "Linux kernel {}{} + initramfs ({initrd_bytes} bytes, the static workload as \
                 /init){disk}",
                kernel_file.display(),
                image
                    .version
                    .as_deref()
                    .map(|v| format!(" ({})", v.split(' ').next().unwrap_or(v)))
                    .unwrap_or_default(),
            ),
        ),
        (info::GUEST_KERNEL, image.describe()),
        (info::GUEST_CMDLINE, cmdline.into()),
    ]
    .into_iter()
    .chain(isolab_results::info::kvm_facts())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_payload::Kernel;

    #[test]
    fn ram_grows_with_the_arena_in_2_mib_steps() {
        assert_eq!(ram_bytes(&Spec::default_for(Kernel::Ready)), BASE_RAM_BYTES);
        let mut mem = Spec::default_for(Kernel::Mem);
        mem.mib = 3;
        assert_eq!(ram_bytes(&mem), BASE_RAM_BYTES + (4 << 20));
    }
}
