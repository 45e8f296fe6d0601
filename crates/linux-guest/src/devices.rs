//! The devices a Linux guest can be given — a disk and a network card — and what its kernel
//! needs to use them.
//!
//! Both backends that boot Linux give the same two devices, virtio over MMIO: `vm-linux` with
//! its own implementation (`backend::vm::linux::virtio`), `qemu` with QEMU's. What the guest's
//! kernel needs is the same either way:
//!
//! * **drivers**: `virtio` and `virtio_ring` (the core and the rings), `virtio_mmio` (the
//!   transport), `virtio_blk` for the disk (`/dev/vda`), `virtio_net` for the card (`eth0`),
//!   which needs `failover` and `net_failover`. Built in (`=y` in the kernel's configuration),
//!   or as modules the lab carries in the initramfs and `/init` loads (`finit_module`) before
//!   the workload runs — Debian builds them all as modules;
//! * **a way to find the devices**: an MMIO device has no bus to enumerate. A kernel with
//!   `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` is told on its command line
//!   (`virtio_mmio.device=4K@0xd0000000:5`); any kernel with ACPI is told by the firmware's ACPI
//!   tables, which the VMM then writes ([`Discovery`]).
//!
//! [`inspect`] reads the kernel's configuration (`/boot/config-<release>`, or the one `lab
//! kernel build` kept) and `modules.dep` (`/lib/modules/<release>/`) to say which driver comes
//! how — what `lab kernel show` prints, and what a backend checks before it boots a guest with
//! devices: a kernel that cannot drive them is refused with the drivers it lacks.

use crate::guest_kernel;
use crate::guest_kernel::{ImageKind, KernelImage, Origin};
use isolab_resources::network::tap::Tap;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A disk for the guest: a raw file on the host, the same size for every backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockBacking {
    /// The file (regular, preallocated; its size is the disk's).
    pub path: PathBuf,
    /// Offered to the guest read-only (`VIRTIO_BLK_F_RO`; QEMU's `readonly=on`): one file
    /// several guests read, none may write.
    pub read_only: bool,
}

/// A network card for the guest: the tap that is its cable, and its Ethernet address.
#[derive(Debug)]
pub struct NetBacking {
    /// The tap, created by the lab in a network namespace of its own.
    pub tap: Tap,
    /// The guest's MAC address.
    pub mac: [u8; 6],
}

/// The devices of one guest (none by default).
#[derive(Debug, Default)]
pub struct GuestDevices {
    /// A disk, seen as `/dev/vda`.
    pub block: Option<BlockBacking>,
    /// A network card, seen as `eth0`.
    pub net: Option<NetBacking>,
    /// What `/init` is told about them, after the spec on the command line (the workload's
    /// `disk=/dev/vda`, `net=A.B.C.D/PREFIX`, `peer=A.B.C.D`).
    pub init_words: Vec<String>,
    /// The disk holds the lab's image, an ext4 file system the guest mounts, which takes this
    /// many bytes on the host's disk (its allocated blocks: the layers' files, their metadata
    /// and the journal): what a VM must be given to run what a container runs from the layers.
    pub image: Option<u64>,
}

impl GuestDevices {
    /// No devices at all.
    pub fn is_empty(&self) -> bool {
        self.block.is_none() && self.net.is_none()
    }
}

/// Why a Linux guest booting `guest_kernel` (the lab's `--guest-kernel`, or `None`: the one
/// [`crate::guest_kernel::find`] finds) cannot run `kernel`, if it cannot: a disk or network kernel
/// whose guest kernel has no driver for the device (or no way to find it).
pub fn refusal_for(
    guest_kernel: Option<&Path>,
    kernel: isolab_payload::Kernel,
) -> Result<(), String> {
    let (block, net) = (kernel.needs_disk(), kernel.needs_network());
    if !block && !net {
        return Ok(());
    }
    let image = crate::guest_kernel::find(guest_kernel).map_err(|e| e.to_string())?;
    match inspect(&image).refusal(Wanted {
        block,
        net,
        ext4: false,
    }) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// True when `path` can be opened with `O_DIRECT` (tmpfs before Linux 6.6 refuses it): both
/// backends then bypass the host's page cache, or neither does.
pub fn direct_io_works(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

/// A MAC address as Linux prints it: `52:54:00:12:34:56`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One driver: its module name and the configuration option that builds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Driver {
    /// The module's name (`virtio_blk`).
    pub module: &'static str,
    /// The Kconfig symbol (`CONFIG_VIRTIO_BLK`).
    pub config: &'static str,
}

const fn driver(module: &'static str, config: &'static str) -> Driver {
    Driver { module, config }
}

/// Every driver a device may need, in load order.
pub const DRIVERS: [Driver; 9] = [
    // virtio_ring.ko is built from the same option as virtio.ko.
    driver("virtio_ring", "CONFIG_VIRTIO"),
    driver("virtio", "CONFIG_VIRTIO"),
    driver("virtio_mmio", "CONFIG_VIRTIO_MMIO"),
    driver("virtio_blk", "CONFIG_VIRTIO_BLK"),
    driver("failover", "CONFIG_FAILOVER"),
    driver("net_failover", "CONFIG_NET_FAILOVER"),
    driver("virtio_net", "CONFIG_VIRTIO_NET"),
    // The file system of the lab's image on a disk (`lab run images`). ext4 checksums its
    // metadata with CRC32C, which it asks the kernel's crypto API for by name when it mounts:
    // a soft dependency `modules.dep` does not list, so the generic implementation is carried
    // (and loaded) first, or the mount fails with "Cannot load crc32c driver".
    driver("crc32c_generic", "CONFIG_CRYPTO_CRC32C"),
    driver("ext4", "CONFIG_EXT4_FS"),
];

/// What a guest is given, as far as its kernel's drivers go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// A disk.
    pub block: bool,
    /// A network card.
    pub net: bool,
    /// The lab's image on the disk: an ext4 file system to mount.
    pub ext4: bool,
}

/// The drivers `wanted` needs.
pub fn needed(wanted: Wanted) -> Vec<Driver> {
    let Wanted { block, net, ext4 } = wanted;
    DRIVERS
        .iter()
        .filter(|d| match d.module {
            "virtio_blk" => block,
            "failover" | "net_failover" | "virtio_net" => net,
            "crc32c_generic" | "ext4" => ext4,
            _ => block || net,
        })
        .copied()
        .collect()
}

/// How the kernel gets one driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provided {
    /// Compiled into the kernel.
    BuiltIn,
    /// A module file, to be carried in the initramfs.
    Module(PathBuf),
    /// Not at all (why, in words).
    Missing(String),
}

/// How the guest kernel can find MMIO devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// `virtio_mmio.device=` on the command line (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y`).
    CommandLine,
    /// ACPI tables (`CONFIG_ACPI=y`): the VMM writes a DSDT with `LNRO0005` devices.
    Acpi,
    /// Neither.
    None,
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Discovery::CommandLine => {
                "on the kernel command line (virtio_mmio.device=, CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)"
            }
            Discovery::Acpi => "in ACPI tables (a DSDT with LNRO0005 devices; CONFIG_ACPI)",
            Discovery::None => {
                "nowhere: the kernel has neither CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES nor ACPI"
            }
        })
    }
}

/// What a kernel has for the lab's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drivers {
    /// The kernel's release (`6.1.0-57-amd64`), if known.
    pub release: Option<String>,
    /// The configuration file read, if one was found.
    pub config: Option<PathBuf>,
    /// Every driver of [`DRIVERS`], and how the kernel gets it.
    pub drivers: Vec<(Driver, Provided)>,
    /// How the kernel finds the devices.
    pub discovery: Discovery,
}

impl Drivers {
    /// How `module` is provided.
    pub fn provided(&self, module: &str) -> Option<&Provided> {
        self.drivers
            .iter()
            .find(|(d, _)| d.module == module)
            .map(|(_, p)| p)
    }

    /// The drivers the devices need that the kernel does not have.
    pub fn missing(&self, wanted: Wanted) -> Vec<&'static str> {
        needed(wanted)
            .into_iter()
            .filter(|d| matches!(self.provided(d.module), Some(Provided::Missing(_)) | None))
            .map(|d| d.module)
            .collect()
    }

    /// The module files the devices need, in the order they must be loaded (dependencies
    /// first, as `modules.dep` says).
    pub fn modules(&self, wanted: Wanted) -> Vec<PathBuf> {
        let wanted: Vec<PathBuf> = needed(wanted)
            .into_iter()
            .filter_map(|d| match self.provided(d.module) {
                Some(Provided::Module(p)) => Some(p.clone()),
                _ => None,
            })
            .collect();
        match self.release.as_deref() {
            Some(release) => load_order(release, &wanted),
            None => wanted,
        }
    }

    /// Why a guest with these devices cannot boot this kernel, if it cannot: one line naming
    /// what is missing and the fix.
    pub fn refusal(&self, wanted: Wanted) -> Option<String> {
        let missing = self.missing(wanted);
        if !missing.is_empty() {
            return Some(format!(
                "the guest kernel{} has no {} driver (neither built in nor as a module): run \
                 `lab kernel build` for a kernel with them",
                self.release
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default(),
                missing.join(", ")
            ));
        }
        if self.discovery == Discovery::None {
            return Some(format!(
                "the guest kernel cannot find MMIO devices: {}; run `lab kernel build`",
                self.discovery
            ));
        }
        None
    }

    /// Lines for `lab kernel show`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "virtio drivers (from {}):",
            self.config
                .as_ref()
                .map_or("no configuration file found".into(), |p| p
                    .display()
                    .to_string())
        )];
        for (d, p) in &self.drivers {
            let how = match p {
                Provided::BuiltIn => "built in".to_string(),
                Provided::Module(path) => {
                    format!(
                        "module {}, carried in the initramfs with a device",
                        path.display()
                    )
                }
                Provided::Missing(why) => format!("missing ({why})"),
            };
            lines.push(format!("  {:<13} {how}", d.module));
        }
        lines.push(format!("devices are declared {}", self.discovery));
        lines
    }
}

/// `/lib/modules/<release>`.
pub fn modules_dir(release: &str) -> PathBuf {
    Path::new("/lib/modules").join(release)
}

/// `modules` (paths under `/lib/modules/<release>`) with every module they depend on, in the
/// order `insmod` must load them: dependencies first, as `modules.dep` says, each once.
pub fn load_order(release: &str, modules: &[PathBuf]) -> Vec<PathBuf> {
    let dir = modules_dir(release);
    let deps = read_modules_dep(&dir);
    let mut order = Vec::new();
    for m in modules {
        visit(m, &deps, &dir, &mut order, 0);
    }
    order
}

/// `modules.dep`: each module's path (relative to the modules directory) and its dependencies.
fn read_modules_dep(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let text = isolab_host::files::read_to_string_bounded(
        &dir.join("modules.dep"),
        16 << 20,
        "modules.dep",
    )
    .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (module, deps) = l.split_once(':')?;
            Some((
                module.trim().to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// Depth-first: a module's dependencies, then the module.
fn visit(
    path: &Path,
    deps: &BTreeMap<String, Vec<String>>,
    dir: &Path,
    order: &mut Vec<PathBuf>,
    depth: usize,
) {
    if order.iter().any(|p| p == path) || depth > 16 {
        return;
    }
    let relative = path
        .strip_prefix(dir)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    for dep in deps.get(&relative).into_iter().flatten() {
        visit(&dir.join(dep), deps, dir, order, depth + 1);
    }
    order.push(path.to_path_buf());
}

/// The module name of a `.ko` path: its file stem with `-` as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko")
        .trim_end_matches(".ko.xz")
        .trim_end_matches(".ko.zst")
        .replace('-', "_")
}

/// The release of `image` and the configuration file that describes it.
fn release_and_config(image: &KernelImage) -> (Option<String>, Option<PathBuf>) {
    let release = image
        .version
        .as_deref()
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string);
    let mut candidates = Vec::new();
    if image.origin == Origin::Built {
        candidates.extend(guest_kernel::built_dir().map(|d| d.join("config")));
    }
    if let Some(dir) = image.path.parent() {
        candidates.push(dir.join("config"));
        if let Some(r) = &release {
            candidates.push(dir.join(format!("config-{r}")));
        }
    }
    if let Some(r) = &release {
        candidates.push(Path::new("/boot").join(format!("config-{r}")));
    }
    // A vmlinux from /boot's naming scheme (vmlinux-<release>) names its release too.
    let release = release.or_else(|| {
        (image.kind == ImageKind::Elf)
            .then(|| {
                image
                    .path
                    .file_name()?
                    .to_str()?
                    .strip_prefix("vmlinux-")
                    .map(str::to_string)
            })
            .flatten()
    });
    (release, candidates.into_iter().find(|p| p.is_file()))
}

/// What `image` has for the lab's devices.
pub fn inspect(image: &KernelImage) -> Drivers {
    let (release, config_path) = release_and_config(image);
    let config: BTreeMap<String, String> = config_path
        .as_deref()
        .and_then(|p| {
            isolab_host::files::read_to_string_bounded(p, 4 << 20, "kernel configuration").ok()
        })
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let modules: BTreeMap<String, PathBuf> = release
        .as_deref()
        .map(|r| {
            let dir = modules_dir(r);
            read_modules_dep(&dir)
                .into_keys()
                .map(|m| (module_name(&m), dir.join(&m)))
                .collect()
        })
        .unwrap_or_default();
    let drivers = DRIVERS
        .iter()
        .map(|d| {
            let provided = match config.get(d.config).map(String::as_str) {
                Some("y") => Provided::BuiltIn,
                Some("m") => match modules.get(d.module) {
                    Some(path) if path.is_file() => Provided::Module(path.clone()),
                    _ => Provided::Missing(format!(
                        "{}=m, but no {}.ko under {}",
                        d.config,
                        d.module,
                        release
                            .as_deref()
                            .map(modules_dir)
                            .unwrap_or_default()
                            .display()
                    )),
                },
                _ if config_path.is_none() => {
                    Provided::Missing("no kernel configuration found to tell".into())
                }
                _ => Provided::Missing(format!("{} is not set", d.config)),
            };
            (*d, provided)
        })
        .collect();
    let on = |k: &str| config.get(k).is_some_and(|v| v == "y");
    let discovery = if on("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES") {
        Discovery::CommandLine
    } else if on("CONFIG_ACPI") {
        Discovery::Acpi
    } else {
        Discovery::None
    };
    Drivers {
        release,
        config: config_path,
        drivers,
        discovery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drivers(config: &[(&str, &str)], dir: Option<&Path>) -> Drivers {
        let get = |k: &str| config.iter().find(|(c, _)| *c == k).map(|(_, v)| *v);
        Drivers {
            release: dir.map(|d| d.to_string_lossy().into_owned()),
            config: Some("/boot/config-test".into()),
            drivers: DRIVERS
                .iter()
                .map(|d| {
                    let p = match get(d.config) {
                        Some("y") => Provided::BuiltIn,
                        Some("m") => Provided::Module(format!("/m/{}.ko", d.module).into()),
                        _ => Provided::Missing("not set".into()),
                    };
                    (*d, p)
                })
                .collect(),
            discovery: Discovery::Acpi,
        }
    }

    #[test]
    fn each_device_needs_its_own_drivers_and_the_common_ones() {
        let names = |b, n| {
            needed(Wanted {
                block: b,
                net: n,
                ext4: false,
            })
            .iter()
            .map(|d| d.module)
            .collect::<Vec<_>>()
        };
        assert_eq!(
            names(true, false),
            ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk"]
        );
        assert_eq!(
            names(false, true),
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert!(names(false, false).is_empty());
    }

    #[test]
    fn a_kernel_without_the_drivers_is_refused_in_one_line_naming_them() {
        let d = drivers(&[("CONFIG_VIRTIO", "y"), ("CONFIG_VIRTIO_MMIO", "y")], None);
        assert_eq!(
            d.missing(Wanted {
                block: true,
                net: false,
                ext4: false
            }),
            ["virtio_blk"]
        );
        let why = d
            .refusal(Wanted {
                block: true,
                net: true,
                ext4: false,
            })
            .unwrap();
        assert!(
            why.contains("virtio_blk, failover, net_failover, virtio_net"),
            "{why}"
        );
        assert!(
            why.contains("lab kernel build") && !why.contains('\n'),
            "{why}"
        );
        assert!(
            d.refusal(Wanted {
                block: false,
                net: false,
                ext4: false
            })
            .is_none(),
            "no devices, nothing needed"
        );
        let built_in = drivers(
            &DRIVERS.iter().map(|d| (d.config, "y")).collect::<Vec<_>>(),
            None,
        );
        assert!(built_in
            .refusal(Wanted {
                block: true,
                net: true,
                ext4: false
            })
            .is_none());
        assert!(
            built_in
                .modules(Wanted {
                    block: true,
                    net: true,
                    ext4: false
                })
                .is_empty(),
            "nothing to carry"
        );
        let mut no_way = built_in.clone();
        no_way.discovery = Discovery::None;
        assert!(no_way
            .refusal(Wanted {
                block: true,
                net: false,
                ext4: false
            })
            .unwrap()
            .contains("cannot find"));
    }

    #[test]
    fn modules_load_in_dependency_order() {
        let dir = std::env::temp_dir().join(format!("isolab-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n",
        )
        .unwrap();
        let deps = read_modules_dep(&dir);
        let mut order = Vec::new();
        visit(
            &dir.join("kernel/drivers/net/virtio_net.ko"),
            &deps,
            &dir,
            &mut order,
            0,
        );
        visit(
            &dir.join("kernel/drivers/virtio/virtio_mmio.ko"),
            &deps,
            &dir,
            &mut order,
            0,
        );
        let names: Vec<String> = order
            .iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect();
        assert_eq!(
            names,
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "virtio_mmio"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(module_name("kernel/x/virtio-foo.ko"), "virtio_foo");
    }

    #[test]
    #[ignore = "needs Debian's kernel in /boot and its modules (apt install linux-image-amd64)"]
    fn debians_kernel_gets_its_drivers_as_modules_and_its_devices_from_acpi() {
        let image = guest_kernel::find_in_boot(Path::new("/boot"), "none")
            .unwrap_or_else(|e| panic!("this test needs a kernel in /boot: {e}"));
        let d = inspect(&image);
        let text = d.describe().join("\n");
        assert_eq!(d.discovery, Discovery::Acpi, "{text}");
        assert!(
            d.refusal(Wanted {
                block: true,
                net: true,
                ext4: false
            })
            .is_none(),
            "{text}"
        );
        let modules = d.modules(Wanted {
            block: true,
            net: true,
            ext4: false,
        });
        let names: Vec<String> = modules
            .iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect();
        assert_eq!(names.len(), 7, "{names:?}");
        let at = |m: &str| names.iter().position(|n| n == m).unwrap();
        assert!(at("virtio_ring") < at("virtio") && at("virtio") < at("virtio_mmio"));
        assert!(at("failover") < at("net_failover") && at("net_failover") < at("virtio_net"));
    }
}
