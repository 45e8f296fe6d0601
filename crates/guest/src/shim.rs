//! The bare guest's side of the kernels' [`Shim`]: hypercalls.
//!
//! Where the Linux workload makes a system call, this shim makes a hypercall: one VM exit, with
//! the arguments in the mailbox. Buffers are passed by address; the guest's page tables map
//! virtual = physical, so a pointer is already the guest-physical address the VMM understands.

use crate::hypercall::{call, marker};
use isolab_kernels::hypercall::Call;
use isolab_kernels::{Error, Shim};

/// Hypercalls behind the kernels.
pub struct BareShim;

/// A failed hypercall's status, as the kernels' platform error.
fn platform(status: u64) -> Error {
    Error::Platform(u32::try_from(status).unwrap_or(u32::MAX))
}

impl Shim for BareShim {
    fn enter_kernel(&mut self, x: u64) -> u64 {
        // The `syscall` kernel's round trip: one VM exit, answered by the VMM echoing `x` back.
        // A failure (there is none in the ABI) would return a value that spoils the checksum.
        call(Call::EnterKernel, [x]).unwrap_or(!x)
    }

    fn mark_start(&mut self) {
        marker(Call::Start, []);
    }

    fn wait_host(&mut self) -> Result<(), Error> {
        call(Call::WaitHost, []).map(drop).map_err(platform)
    }

    fn io_write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let (addr, len) = (data.as_ptr() as u64, data.len() as u64);
        call(Call::IoWrite, [offset, addr, len])
            .map(drop)
            .map_err(platform)
    }

    fn io_sync(&mut self) -> Result<(), Error> {
        call(Call::IoSync, []).map(drop).map_err(platform)
    }

    fn io_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        let (addr, len) = (data.as_mut_ptr() as u64, data.len() as u64);
        call(Call::IoRead, [offset, addr, len])
            .map(drop)
            .map_err(platform)
    }
}
