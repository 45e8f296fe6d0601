//! Capabilities: which of root's powers the container keeps.
//!
//! Root's privileges are split into ~41 capabilities (`CAP_SYS_ADMIN`, `CAP_NET_ADMIN`, ...).
//! A container's root keeps only a small set — the same 14 Docker keeps by default — so that
//! being uid 0 inside does not mean being able to load kernel modules or reconfigure the host.
//!
//! Three steps, in this order, because each one needs a capability the next one removes:
//! 1. drop every other capability from the **bounding set** (`PR_CAPBSET_DROP`, needs
//!    `CAP_SETPCAP`): after `execve`, root's permitted set is bounded by it;
//! 2. clear the **ambient** set;
//! 3. `capset` the effective/permitted/inheritable sets down to the kept ones.
//!
//! `no_new_privs` then makes sure no setuid binary or file capability can add any back.

use nix::errno::Errno;

/// Docker's default capabilities (moby `oci/caps/defaults.go`): number and name.
pub const DOCKER_DEFAULT: [(u32, &str); 14] = [
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// The capabilities `caps` as a 64-bit mask.
pub fn mask(caps: &[(u32, &str)]) -> u64 {
    caps.iter().fold(0u64, |m, &(c, _)| m | 1 << c)
}

/// What to keep, prepared before fork.
#[derive(Clone, Copy, Debug)]
pub struct CapPlan {
    keep: u64,
    last_cap: u32,
}

// The kernel's capset(2) ABI (linux/capability.h), version 3: two 32-bit halves.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// **Child side.** This process's permitted set (`capget(2)`).
pub fn permitted() -> Result<u64, Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and a writable two-element data array as the version-3 ABI requires.
    Errno::result(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    Ok(u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32)
}

/// **Child side.** Make `mask` this process's effective and permitted sets (`capset(2)`), with
/// nothing inheritable. Permitted capabilities can only be dropped, never gained.
pub fn set(mask: u64) -> Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| (mask >> shift) as u32;
    let data = [
        CapData {
            effective: half(0),
            permitted: half(0),
            inheritable: 0,
        },
        CapData {
            effective: half(32),
            permitted: half(32),
            inheritable: 0,
        },
    ];
    // SAFETY: header and a two-element data array as the version-3 ABI requires.
    Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
}

impl CapPlan {
    /// Keep `keep`; `last_cap` is the kernel's highest capability number.
    pub fn new(keep: &[(u32, &str)], last_cap: u32) -> CapPlan {
        CapPlan {
            keep: mask(keep),
            last_cap,
        }
    }

    /// **Child side.** Apply the plan to this process. Returns the failing step on error.
    pub fn apply(&self) -> Result<(), (&'static str, Errno)> {
        for cap in 0..=self.last_cap.min(63) {
            if self.keep & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                let r =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                // EINVAL: the kernel does not know this capability; nothing to drop.
                if r != 0 && Errno::last() != Errno::EINVAL {
                    return Err(("drop bounding capability", Errno::last()));
                }
            }
        }
        // SAFETY: prctl with integer arguments.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if r != 0 && Errno::last() != Errno::EINVAL {
            return Err(("clear ambient capabilities", Errno::last()));
        }
        set(self.keep).map_err(|e| ("capset", e))?;
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(("no_new_privs", Errno::last()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_set_is_fourteen_distinct_bits_without_sys_admin() {
        let m = mask(&DOCKER_DEFAULT);
        assert_eq!(m.count_ones(), 14);
        assert_eq!(m & (1 << 21), 0, "CAP_SYS_ADMIN must not be kept");
        assert_eq!(m, 0xa80425fb, "the mask Docker containers show as CapEff");
    }
}
