//! What an instance is given by its lab: a scratch directory for the `io` kernel, a disk for
//! the disk kernels, a link to the peer for the network kernels, the lab's layered image — each
//! made for it, written into the lab's ledger first, and removed when the instance ends.

use crate::lab::{Lab, LabError};
use isolab_payload::{Given, Kernel, Spec, WORKLOAD_ELF};
use isolab_resources::disks::{Disk, DiskDir, Parent};
use isolab_resources::image::Image;
use isolab_resources::network::{Link, Network};
use isolab_resources::tools::{Tools, TOOLS_INSIDE};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The lab's image as a VM's disk, in the disk directory.
const IMAGE_DISK: &str = "image.ext4";

impl Lab {
    /// A new scratch directory for the instance `name`, owned by `owner` (uid, gid) — who the
    /// instance's root is on the host — or by the lab. See [`Scratch`].
    pub fn scratch_for(&self, name: &str, owner: Option<(u32, u32)>) -> Result<Scratch, LabError> {
        let path = self.scratch_dir().join(name);
        let err = |source| LabError::Workdir {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(err)?;
        let scratch = Scratch { path: path.clone() };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(err)?;
        }
        Ok(scratch)
    }
    /// [`Lab::scratch_for`] when `spec` runs the `io` kernel, the only one that writes files:
    /// no other instance gets a directory to share.
    pub fn scratch_if_io(
        &self,
        spec: &Spec,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Option<Scratch>, LabError> {
        (spec.kernel == Kernel::Io)
            .then(|| self.scratch_for(name, owner))
            .transpose()
    }
    /// A disk of `spec.disk_bytes()` for the instance `name` when `spec` runs a disk kernel,
    /// owned by `owner` (see [`Lab::scratch_for`]); none otherwise.
    pub fn disk_if_needed(
        &self,
        spec: &Spec,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Option<Disk>, LabError> {
        if !spec.kernel.needs_disk() {
            return Ok(None);
        }
        Ok(Some(self.disk_dir()?.disk(
            name,
            spec.disk_bytes(),
            owner,
        )?))
    }
    /// The lab's directory of disks, made (and claimed) on first use, in a `--disk-dir` found
    /// safe from other users (see [`isolab_resources::disks`]).
    fn disk_dir(&self) -> Result<&DiskDir, LabError> {
        let dir = self
            .disks
            .get_or_init(|| {
                let parent = Parent::open(&self.settings.disk_parent).map_err(|e| e.to_string())?;
                DiskDir::make(&parent, &self.ledger).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|why| LabError::DiskDir(why.clone()))?;
        Ok(&dir.0)
    }
    /// The lab's image as a file system for a VM's disk: built once, in the disk directory.
    fn image_disk(
        &self,
        image: &Image,
    ) -> Result<Arc<isolab_resources::image::ext4::Ext4Image>, LabError> {
        self.ext4
            .get_or_init(|| {
                let dir = self.disk_dir().map_err(|e| e.to_string())?;
                let view = self.workdir.join("image-view");
                fs::create_dir_all(&view).map_err(|e| e.to_string())?;
                let file = dir.new_file(IMAGE_DISK).map_err(|e| e.to_string())?;
                isolab_resources::image::ext4::Ext4Image::build(image, &view, &file)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(LabError::Image)
    }
    /// Everything `spec` needs for the instance `name` whose root is `owner` on the host (see
    /// [`Lab::scratch_for`]).
    pub fn provide(
        &self,
        spec: &Spec,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Provisions, LabError> {
        let image = self.image()?;
        Ok(Provisions {
            scratch: self.scratch_if_io(spec, name, owner)?,
            disk: self.disk_if_needed(spec, name, owner)?,
            link: self.link_if_needed(spec)?,
            tools: self.tools_if_needed(spec)?,
            libs_on_host: image.as_ref().map(|i| {
                i.layers[0]
                    .path
                    .join(isolab_resources::image::LIBS_INSIDE.trim_start_matches('/'))
            }),
            image,
            root: None,
            upper: None,
            guest_ip: None,
        })
    }
    /// What a Linux guest running `spec` is given (see [`isolab_linux_guest::devices`]): a disk
    /// for a disk kernel, a tap to the peer for a network kernel, and the words that tell its
    /// `/init` about them; and the [`Provisions`] that hold what must go when it ends.
    pub fn guest_devices(
        &self,
        spec: &Spec,
        name: &str,
    ) -> Result<(isolab_linux_guest::devices::GuestDevices, Provisions), LabError> {
        use isolab_linux_guest::devices::{BlockBacking, GuestDevices, NetBacking};
        let mut devices = GuestDevices::default();
        let mut provisions = Provisions {
            disk: self.disk_if_needed(spec, name, None)?,
            ..Provisions::default()
        };
        if let Some(disk) = &provisions.disk {
            devices.block = Some(BlockBacking {
                path: disk.path().to_path_buf(),
                read_only: false,
            });
            devices.init_words.push(format!("disk={DISK_INSIDE}"));
        } else if let Some(image) = self.image()? {
            // On the lab's image: a copy of it as the VM's disk — or, asked for, the one
            // read-only disk every VM shares — which its /init mounts and loads the libraries
            // from, into the guest's own page cache either way.
            let master = self.image_disk(&image)?;
            if self.settings.shared_image_disk {
                devices.block = Some(BlockBacking {
                    path: master.path().to_path_buf(),
                    read_only: true,
                });
            } else {
                let copy = self.disk_dir()?.copy_of(name, IMAGE_DISK)?;
                devices.block = Some(BlockBacking {
                    path: copy.path().to_path_buf(),
                    read_only: false,
                });
                provisions.disk = Some(copy);
            }
            // What the image takes as a disk: its file system's allocated blocks (st_blocks
            // counts 512-byte units whatever the file system's block size).
            devices.image = Some(fs::metadata(master.path()).map_or(0, |m| m.blocks() * 512));
            devices.init_words.extend([
                format!("image={DISK_INSIDE}"),
                format!("libs=/image{}", isolab_resources::image::LIBS_INSIDE),
            ]);
            provisions.image = Some(image);
        }
        if spec.kernel.needs_network() {
            let link = self
                .network()?
                .tap_link()
                .map_err(|e| LabError::Network(e.to_string()))?;
            let ip = link.ip.octets();
            devices.init_words.extend([
                format!("net={}/{}", link.ip, isolab_resources::network::PREFIX),
                format!("peer={}", link.peer_ip),
            ]);
            provisions.guest_ip = Some(link.ip);
            devices.net = Some(NetBacking {
                tap: link.tap,
                // Locally administered (bit 1 of the first byte), unicast; the rest the
                // guest's address, so every link's card differs.
                mac: [0x52, 0x54, 0x00, ip[1], ip[2], ip[3]],
            });
        }
        Ok((devices, provisions))
    }
    /// The lab's network, started on first use: its peer, and links to it (see
    /// [`isolab_resources::network`]).
    pub fn network(&self) -> Result<Arc<Network>, LabError> {
        self.network
            .get_or_init(|| Network::start().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(LabError::Network)
    }
    /// Where containers' writable layers go: `overlay/` in the work directory, made on first use.
    pub fn overlay_dir(&self) -> Result<PathBuf, LabError> {
        let dir = self.workdir.join("overlay");
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
            Err(source) => Err(LabError::Workdir { path: dir, source }),
        }
    }
    /// The layered image instances run on, when the lab was asked for one ([`Lab::image_spec`]):
    /// built in the work directory on first use.
    pub fn image(&self) -> Result<Option<Arc<Image>>, LabError> {
        let Some(spec) = self.settings.image_spec else {
            return Ok(None);
        };
        self.image
            .get_or_init(|| {
                Image::build(&self.workdir.join("image"), &spec, WORKLOAD_ELF)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map(Some)
            .map_err(LabError::Image)
    }
    /// The field's tools ([`isolab_resources::tools`]), gathered into the work directory on
    /// first use.
    pub fn tools(&self) -> Result<Arc<Tools>, LabError> {
        self.tools
            .get_or_init(|| {
                Tools::build(&self.workdir.join("tools"))
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(LabError::Tools)
    }
    /// The tools when `spec` runs one of them ([`isolab_payload::Kernel::is_tool`]).
    pub fn tools_if_needed(&self, spec: &Spec) -> Result<Option<Arc<Tools>>, LabError> {
        spec.kernel.is_tool().then(|| self.tools()).transpose()
    }
    /// A link to the peer when `spec` runs a network kernel; none otherwise.
    pub fn link_if_needed(&self, spec: &Spec) -> Result<Option<Link>, LabError> {
        if !spec.kernel.needs_network() {
            return Ok(None);
        }
        let link = self
            .network()?
            .link()
            .map_err(|e| LabError::Network(e.to_string()))?;
        Ok(Some(link))
    }
}

/// Where a container finds its scratch directory.
pub const SCRATCH_INSIDE: &str = "/scratch";

/// Where a container or a VM finds its disk.
pub const DISK_INSIDE: &str = "/dev/vda";

/// What the lab gives one instance besides its processes, by the kernel it runs: a scratch
/// directory (`io`), a disk (`disk-*`), a link to the peer (`net-*`). Each goes when dropped.
#[derive(Debug, Default)]
pub struct Provisions {
    /// The `io` kernel's directory.
    pub scratch: Option<Scratch>,
    /// The disk kernels' disk.
    pub disk: Option<Disk>,
    /// The network kernels' link to the peer.
    pub link: Option<Link>,
    /// The layered image the instance runs on, if the lab uses one.
    pub image: Option<Arc<Image>>,
    /// Its libraries' directory on the host (where a process loads them from: the base layer).
    libs_on_host: Option<PathBuf>,
    /// An OCI bundle's root: the image mounted on the host (before `upper`, so that it is
    /// unmounted before its writable layer goes).
    pub root: Option<isolab_resources::image::overlay::Mounted>,
    /// A container's writable layer over the image.
    pub upper: Option<isolab_resources::image::overlay::Upper>,
    /// A VM's address on its tap link to the peer (its guest sets it up).
    pub guest_ip: Option<std::net::Ipv4Addr>,
    /// The field's tools, for a tool kernel (a container sees them at `/tools`).
    pub tools: Option<Arc<Tools>>,
}

impl Provisions {
    /// What the workload is told: host paths (`inside` false: a process), or the paths a
    /// container mounts them at.
    pub fn given(&self, inside: bool) -> Given<'_> {
        Given {
            scratch: self.scratch.as_ref().map(|s| {
                if inside {
                    Path::new(SCRATCH_INSIDE)
                } else {
                    s.path()
                }
            }),
            disk: self.disk.as_ref().map(|d| {
                if inside {
                    Path::new(DISK_INSIDE)
                } else {
                    d.path()
                }
            }),
            peer: self.link.as_ref().map(|l| l.peer_ip),
            net: None,
            libs: self.libs_on_host.as_deref().map(|host| {
                if inside {
                    Path::new(isolab_resources::image::LIBS_INSIDE)
                } else {
                    host
                }
            }),
            tools: self.tools.as_deref().map(|t| {
                if inside {
                    Path::new(TOOLS_INSIDE)
                } else {
                    t.dir()
                }
            }),
        }
    }

    /// Give them to `instance`: for a network kernel, the peer's count of the bytes it received
    /// ([`Provisions::peer_note`]), taken once the instance has ended; and their removal, as
    /// its last clean-up step.
    pub fn hand_to(self, lab: &Lab, instance: &mut crate::Instance) {
        if let Some(note) = self.peer_note(lab) {
            instance.at_end(note);
        }
        instance.clean_up_too(self.removal());
    }

    /// Their removal, as an instance's clean-up step.
    pub fn removal(self) -> Box<dyn FnOnce() + Send> {
        Box::new(move || drop(self))
    }

    /// For a network kernel's instance: once it has ended, how many bytes the lab's peer
    /// received from it (the host side's count, to hold against what the kernel reports).
    pub fn peer_note(&self, lab: &Lab) -> Option<crate::instance::EndNote> {
        let ip = self.link.as_ref().map(|l| l.ip).or(self.guest_ip)?;
        let network = lab.network().ok()?;
        Some(Box::new(move || {
            // The peer writes a connection down once it has served it; the instance has
            // ended, so its connections have too, or will in a moment.
            let mut received = network.received_from(ip);
            for _ in 0..50 {
                if !received.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                received = network.received_from(ip);
            }
            let bytes: u64 = received.iter().map(|r| r.bytes).sum();
            vec![(
                isolab_results::info::PEER_BYTES.to_string(),
                bytes.to_string(),
            )]
        }))
    }
}

/// The one directory an instance shares with the host: where its `io` kernel writes.
///
/// Shared paths are where a lab that teaches isolation could itself open a way out, so this
/// one is shared as narrowly as the kernel allows:
///
/// * **one per instance**, made just before the instance starts and removed when it ends
///   (dropping this value): no instance sees another's files, and none finds what an earlier
///   one planted (a symbolic link named like the next instance's file, say);
/// * **mode 0700, owned by the instance's root** as the host sees it: an ordinary user of the
///   host cannot even look inside, so a setuid program or a device node written by a container
///   whose root is the host's root is out of every user's reach. Its parent, `scratch/`, is the
///   lab's own (0700 too), so no one else can create anything beside it;
/// * **nosuid, nodev, noexec**: as root, the lab binds `scratch/` onto itself with these flags
///   (every bind mount of a directory below it inherits them: containers', runtimes', Docker's),
///   and each container mounts its own directory with them again. A setuid bit written there
///   does nothing, a device node cannot be opened through it, nothing there can be run.
///
/// The files themselves are written without a name to plant ahead (`O_TMPFILE`) or with
/// `O_CREAT | O_EXCL | O_NOFOLLOW`: see the workload's and the VMM's scratch file.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// The directory, on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its removal, as an instance's clean-up step (see [`crate::instance::Parts`]).
    pub fn removal(self) -> Box<dyn FnOnce() + Send> {
        Box::new(move || drop(self))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // What the instance left (it may have made subdirectories). A lab killed before this
        // runs leaves the directory in its work directory, which its guardian removes.
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Bind `scratch` onto itself with `nosuid`, `nodev` and `noexec` (see [`Scratch`]). The mount
/// lives below the work directory, whose removal unmounts it first (also when the lab's
/// guardian or the next lab removes it: [`isolab_resources::ownership`]).
pub(crate) fn seal_scratch(scratch: &Path) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    // A bind mount takes its flags only from a second call, a remount of the bind (`restrict`).
    mount(
        Some(scratch),
        scratch,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    isolab_container::rootfs::restrict(scratch)?;
    Ok(())
}
