//! # isolab-resources
//!
//! What a lab makes on the host, and how it is undone. Everything here carries the lab's id in
//! its name and is written into the lab's ledger ([`ownership`]) **before** it is made, so that
//! nothing outlives the lab: not after an error, not after SIGKILL, not beside another lab.
//!
//! * [`cgroup`] — one cgroup per instance, on v1 and v2: limits and memory accounting;
//! * [`disks`] — the instances' disk images, in a directory only the lab may change;
//! * [`network`] — network namespaces, veth links and TAP devices, and the peer at their end;
//! * [`image`] — the lab's layered image (overlayfs), as an ext4 disk for VMs, and as Docker's;
//! * [`ksm`] — kernel same-page merging, shared between labs;
//! * [`containers`] — what OCI runtimes and Docker keep for a container, and its removal;
//! * [`tracefs`] — the lab's own trace instance: the kernel's events of the lab's processes;
//! * [`tools`] — the field's tools (fio, netperf, iperf3) with their libraries, for instances;
//! * [`criu`] — CRIU's checkpoints of a process tree, its verdict on this machine, its timings;
//! * [`ownership`] — the ledger of all of the above, the guardian that undoes it when the lab
//!   dies, and the next lab's reaping of what a dead one left.

pub mod cgroup;
pub mod containers;
pub mod criu;
pub mod disks;
pub mod image;
pub mod ksm;
pub mod network;
pub mod ownership;
pub mod tools;
pub mod tracefs;
