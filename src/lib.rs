//! # isolab
//!
//! A lab that runs **one** workload as a plain process, in a container and in a microVM, and
//! measures what each isolation model costs: start-up time, memory, throughput, density and
//! what the workload can see.
//!
//! The pieces, each in its own module:
//!
//! * [`workload`] — the identical workload (kernels shared with the bare guest, the static
//!   executable `lab` carries, the marker protocol);
//! * [`backend`] — one file (or directory) per isolation mechanism, all behind the
//!   [`backend::Backend`] trait: process, container, the bare microVM (`vm`), Linux microVMs
//!   (`vm-linux`, `qemu`), OCI runtimes;
//! * [`linux_guest`] — what a Linux guest needs: kernel, initramfs, command line, console;
//! * [`cgroup`] — per-instance cgroups on v1 and v2, for limits and memory accounting;
//! * [`lab`], [`ownership`] — what a lab owns on the host, written down before it is made, so
//!   nothing outlives the lab (a crashed lab's leftovers are removed by the next one);
//! * [`measure`] — the host clock, memory readers, statistics;
//! * [`experiment`] — start-up, memory, throughput, density and isolation experiments;
//! * [`results`] — the versioned JSON-lines schema every experiment writes;
//! * [`report`] — tables (and later plots and HTML) rendered from results only;
//! * [`files`] — writing into directories the lab does not own without following links, and
//!   reading files it did not write with bounds;
//! * [`doctor`] — what this machine can and cannot do, and how to fix it;
//! * [`labs`] — `lab check`: the guided exercises of `labs/`, checked on this machine.

pub mod backend;
pub mod cgroup;
pub mod disks;
pub mod doctor;
pub mod experiment;
pub mod export;
pub mod files;
pub mod host;
pub mod image;
pub mod interrupt;
pub mod ksm;
pub mod lab;
pub mod labs;
pub mod linux_guest;
pub mod measure;
pub mod network;
pub mod ownership;
pub mod report;
pub mod results;
pub mod workload;
