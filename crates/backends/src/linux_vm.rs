//! What the two backends that boot a Linux guest share — `vm-linux` (isolab's VMM) and `qemu`:
//! the guest kernel they look for, the refusal of a kernel that cannot drive a disk or network
//! kernel's device, and how an instance gets its devices and its boot files.

use crate::instance::Instance;
use crate::lab::Lab;
use crate::{Availability, BackendError, Spec};
use isolab_linux_guest::devices::GuestDevices;
use isolab_linux_guest::{guest_kernel, Boot, BootError};

/// Available when there is a Linux kernel to boot (`--guest-kernel`, one `lab kernel build`
/// made, or the distribution's).
pub fn kernel_availability(lab: &Lab) -> Availability {
    match guest_kernel::find(lab.settings.guest_kernel.as_deref()) {
        Ok(_) => Availability::Available,
        Err(e) => Availability::Unavailable(e.to_string()),
    }
}

/// A disk or network kernel needs a guest kernel that can drive the disk or the card: refused,
/// naming the drivers it lacks and the fix, before anything starts.
pub fn supports(lab: &Lab, kernel: isolab_payload::Kernel) -> Result<(), String> {
    isolab_linux_guest::devices::refusal_for(lab.settings.guest_kernel.as_deref(), kernel)
}

/// Start one guest: a disk kernel's guest gets a disk, a network kernel's a network card (see
/// [`Lab::guest_devices`]), which `start_with` gives it; whatever the lab made for it goes when
/// it ends.
pub fn start(
    lab: &Lab,
    spec: &Spec,
    start_with: impl FnOnce(GuestDevices) -> Result<Instance, BackendError>,
) -> Result<Instance, BackendError> {
    let (devices, provisions) = lab.guest_devices(spec, &lab.next_instance_name())?;
    let mut instance = start_with(devices)?;
    provisions.hand_to(lab, &mut instance);
    Ok(instance)
}

/// What `backend`'s guest boots for `devices` ([`isolab_linux_guest::prepare_boot`]).
pub fn boot(lab: &Lab, backend: &str, devices: &GuestDevices) -> Result<Boot, BackendError> {
    isolab_linux_guest::prepare_boot(lab.settings.guest_kernel.as_deref(), lab.workdir(), devices)
        .map_err(|e| match e {
            BootError::Unavailable(reason) => BackendError::Unavailable {
                backend: backend.into(),
                reason,
            },
            BootError::Initramfs(e) => BackendError::Instance {
                step: "initramfs".into(),
                detail: e.to_string(),
            },
        })
}
