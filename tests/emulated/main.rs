//! The lab on a student's machine — AMD-V and cgroup v2 — emulated on this CI's (see
//! `tests/hosts/`): one test binary, so that its machines boot side by side. Cargo runs test
//! binaries one after another, and each machine is a single-threaded emulator that spends most
//! of its minutes waiting on itself; libtest runs the tests of one binary in parallel.
//!
//! * [`host`]: the lab, the exercises, cgroup v2 as root and as a student, and bad neighbours;
//! * [`devices`]: a disk and a network card for Linux guests, and the device kernels on every
//!   backend side by side;
//! * [`images`]: N instances of one image on containers and VMs, with and without KSM;
//! * [`criu`]: `container` and `oci:runc` checkpointed and restored by CRIU;
//! * [`restore`]: Linux guests restored from snapshots, against their cold boots.
//!
//! Every test is ignored by a plain `cargo test` (each boots an emulated machine for minutes);
//! `.ci/run` runs them all:
//!
//! ```text
//! cargo test [--release] --test emulated -- --include-ignored --nocapture [host::|devices::|images::]
//! ```

#[path = "../common/mod.rs"]
mod common;
#[path = "../hosts/mod.rs"]
mod hosts;

mod criu;
mod devices;
mod host;
mod images;
mod restore;
