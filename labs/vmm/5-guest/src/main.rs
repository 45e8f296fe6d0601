//! # A virtual machine monitor, in five steps
//!
//! A VMM is an ordinary process. It asks KVM for a virtual machine, gives it some of its own
//! memory as the guest's RAM, creates a virtual CPU, puts code and a CPU state into them, and
//! then loops on `KVM_RUN`: the real CPU runs the guest until the guest does something the VMM
//! must handle, and `KVM_RUN` returns with the reason — a **VM exit**.
//!
//! ```text
//!  1 open /dev/kvm ─► 2 KVM_CREATE_VM, mmap RAM, KVM_SET_USER_MEMORY_REGION, KVM_CREATE_VCPU
//!                     3 real mode: 16-bit code at 0x1000   ─┐
//!                     4 long mode, ring 3 (entry.rs)       ─┼─► loop { KVM_RUN; handle the exit }
//!                     5 the lab's bare guest (guest.rs)    ─┘
//! ```
//!
//! `lab` starts it with the command line in `labkit::vmm` (see `labs/abi.md`) and reads its
//! marker lines on fd 3. It reports the same phase edges as the lab's own VMM (`kvm_open`,
//! `vm_created`, `memory_mapped`, `vcpu_created`, `guest_loaded`, `first_entry`), so
//! `lab run startup --backends vm,student:vmm` compares them one by one.
//!
//! This crate is one step of the track: the steps before it are written, and each step still
//! to write is a `TODO(step n)` comment with a `report.todo(n, …)` call where its code goes.
//! `lab check` reports a step whose `report.todo` is still there as "not yet": write the step
//! and remove that call. The next step's crate holds this step's solution.

// The skeleton imports what the finished VMM uses.
#![allow(unused_imports, unused_mut, dead_code)]

mod entry;
mod guest;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use labkit::vmm::{Guest, Request, LONG_MODE_LOAD, REAL_MODE_LOAD};
use labkit::Report;

fn main() {
    let report = Report;
    // The first phase edge of your own: everything since lab's `exec` of this program was the
    // kernel and the Rust runtime loading it.
    report.phase("started");
    let request = Request::from_args();
    let kvm = open_kvm(report);
    let Some(mut machine) = Machine::new(&kvm, request.ram_bytes.unwrap_or(2 << 20), report) else {
        return;
    };
    match &request.guest {
        Guest::None => {
            // Nothing to run: say so, and stay alive until lab has looked at this process.
            report.ready();
            let _ = labkit::wait_for_go();
        }
        Guest::Real(code) => run_real_mode(&mut machine, code, report),
        Guest::Long(code) => {
            machine.ram.write(LONG_MODE_LOAD, code);
            entry::enter_long_mode(&kvm, &mut machine, LONG_MODE_LOAD, report);
            report.phase("guest_loaded");
            run_until_stop(&mut machine, report);
        }
        Guest::Elf(elf) => guest::run(&kvm, &mut machine, elf, &request, report),
    }
}

/// Step 1: open `/dev/kvm`, and ask it two things every VMM asks first: its API version (12
/// since Linux 2.6.22: anything else is not a KVM this code knows) and a capability
/// (`KVM_CHECK_EXTENSION`): here, how many memory slots a VM may have.
fn open_kvm(report: Report) -> Kvm {
    let kvm = Kvm::new().unwrap_or_else(|e| fail(report, "open /dev/kvm", &e.to_string()));
    report.phase("kvm_open");
    report.info("kvm_api_version", kvm.get_api_version());
    report.info("kvm_memslots", kvm.get_nr_memslots());
    if !kvm.check_extension(Cap::UserMemory) {
        fail(report, "kvm", "no KVM_CAP_USER_MEMORY");
    }
    kvm
}

/// Guest RAM: an anonymous mapping in this process, handed to KVM as guest-physical memory.
pub struct Ram {
    base: *mut u8,
    len: usize,
}

impl Ram {
    /// `len` bytes of fresh memory. `MAP_NORESERVE`: a page costs nothing until it is touched,
    /// by the guest or by us, exactly as for a process.
    fn new(len: usize) -> std::io::Result<Ram> {
        // SAFETY: an anonymous private mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ram {
            base: base.cast(),
            len,
        })
    }

    /// The bytes at guest-physical `addr..addr + len`, checked against the RAM's size: guest
    /// addresses come from the guest and are never trusted.
    pub fn slice(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let end = addr.checked_add(len as u64)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: the range lies inside the mapping, which lives as long as `self`.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.add(addr as usize), len) })
    }

    /// Copy `bytes` to guest-physical `addr`; panics outside RAM (the VMM's own mistake).
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        self.slice(addr, bytes.len())
            .expect("inside guest RAM")
            .copy_from_slice(bytes);
    }

    /// The little-endian u64 at `addr`.
    pub fn read_u64(&mut self, addr: u64) -> Option<u64> {
        let b = self.slice(addr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Store a little-endian u64 at `addr`.
    pub fn write_u64(&mut self, addr: u64, value: u64) {
        self.write(addr, &value.to_le_bytes());
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.len as u64
    }
}

/// A VM, its RAM and its one vCPU. Declared in drop order: the vCPU and the VM before the RAM
/// they use.
pub struct Machine {
    /// The vCPU; `KVM_RUN` on it runs the guest.
    pub vcpu: VcpuFd,
    /// The VM.
    pub vm: VmFd,
    /// Guest RAM, at guest-physical address 0.
    pub ram: Ram,
}

impl Machine {
    /// Step 2: a VM with `ram_bytes` of RAM at guest-physical 0, and vCPU 0.
    fn new(kvm: &Kvm, ram_bytes: u64, report: Report) -> Option<Machine> {
        let vm = kvm
            .create_vm()
            .unwrap_or_else(|e| fail(report, "KVM_CREATE_VM", &e.to_string()));
        report.phase("vm_created");
        let ram = Ram::new(ram_bytes as usize)
            .unwrap_or_else(|e| fail(report, "mmap guest RAM", &e.to_string()));
        let region = kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: ram.size(),
            userspace_addr: ram.base as u64,
            flags: 0,
        };
        // SAFETY: the region is our mapping, which outlives the VM (field order of Machine).
        unsafe { vm.set_user_memory_region(region) }
            .unwrap_or_else(|e| fail(report, "KVM_SET_USER_MEMORY_REGION", &e.to_string()));
        report.phase("memory_mapped");
        // kvm-ioctls also mmaps the vCPU's `kvm_run` page: where KVM_RUN reports each exit.
        let vcpu = vm
            .create_vcpu(0)
            .unwrap_or_else(|e| fail(report, "KVM_CREATE_VCPU", &e.to_string()));
        report.phase("vcpu_created");
        Some(Machine { vcpu, vm, ram })
    }
}

/// Step 3: run 16-bit code in real mode, the state a PC's CPU starts in.
///
/// KVM's vCPU starts like a real one: real mode, CS base 0xffff0000, IP 0xfff0 (the reset
/// vector, where firmware would be). Point CS at 0 and IP at the code instead.
fn run_real_mode(machine: &mut Machine, code: &[u8], report: Report) {
    machine.ram.write(REAL_MODE_LOAD, code);
    let vcpu = &machine.vcpu;
    let mut sregs = vcpu
        .get_sregs()
        .unwrap_or_else(|e| fail(report, "KVM_GET_SREGS", &e.to_string()));
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .unwrap_or_else(|e| fail(report, "KVM_SET_SREGS", &e.to_string()));
    let mut regs = vcpu
        .get_regs()
        .unwrap_or_else(|e| fail(report, "KVM_GET_REGS", &e.to_string()));
    regs.rip = REAL_MODE_LOAD;
    regs.rflags = 2; // bit 1 is reserved and always 1
    vcpu.set_regs(&regs)
        .unwrap_or_else(|e| fail(report, "KVM_SET_REGS", &e.to_string()));
    report.phase("guest_loaded");
    run_until_stop(machine, report);
}

/// Steps 3 and 4: run the guest, report every value it writes to an I/O port
/// ([`Report::guest_wrote`]), and stop at the first other exit, saying which
/// ([`Report::exit`]).
fn run_until_stop(machine: &mut Machine, report: Report) {
    report.phase("first_entry");
    let mut n = 0;
    loop {
        // The exit borrows the vCPU's kvm_run page: take what is needed out of it first.
        let stop = match machine.vcpu.run() {
            Ok(VcpuExit::IoOut(_port, data)) => {
                let mut value = [0u8; 8];
                value[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
                n += 1;
                report.guest_wrote(n, u64::from_le_bytes(value));
                None
            }
            Ok(VcpuExit::Hlt) => Some("hlt".to_string()),
            // A triple fault: the guest raised an exception it had no handler for.
            Ok(VcpuExit::Shutdown) => Some("shutdown".to_string()),
            Ok(other) => Some(format!("{other:?}")),
            Err(e) => fail(report, "KVM_RUN", &e.to_string()),
        };
        if let Some(reason) = stop {
            report.exit(&reason);
            return;
        }
    }
}

/// Tell `lab` what failed, and end.
fn fail(report: Report, step: &str, msg: &str) -> ! {
    report.error(step, msg);
    std::process::exit(1)
}
