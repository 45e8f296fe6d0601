//! Builds the programs `lab` carries inside itself.
//!
//! * `crates/workload/` → `isolab-workload`, a **static** Linux executable (`+crt-static`) that runs as a
//!   process, as a container's PID 1 and as a Linux guest's `/init`.
//! * `crates/guest/` → `isolab-guest`, the freestanding bare microVM guest: the same kernels, no OS.
//!
//! Each is built with a nested `cargo build` because it needs compiler flags (static linking, a fixed
//! profile) that must not apply to `lab` itself. The nested build has its own target directory, so
//! it never waits on the lock of the build that runs this script. Its profile is set here, in one
//! place ([`NESTED_PROFILE`]), so every program that links the kernels compiles them the same way.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The compiler settings of every program that links `isolab-kernels`. A difference in speed
/// between backends must be the isolation model's, never the compiler's.
const NESTED_PROFILE: &[&str] = &[
    "profile.release.opt-level=3",
    "profile.release.codegen-units=1",
    "profile.release.lto=false",
    "profile.release.panic=\"abort\"",
    "profile.release.debug=false",
    "profile.release.incremental=false",
];

/// Code generation shared by the workload and the guest: a static, position-dependent executable.
const NESTED_RUSTFLAGS: &[&str] = &["-Ctarget-feature=+crt-static", "-Crelocation-model=static"];

/// What the freestanding guest adds to [`NESTED_RUSTFLAGS`]: arguments for the linker only, so
/// the compiler generates the kernels' code exactly as it does for the workload.
const GUEST_LINK_ARGS: &[&str] = &[
    // No C runtime start files (crt1.o, crti.o): the guest's `_start` is its own.
    "-Clink-arg=-nostartfiles",
    // No C library and no libgcc: there is no OS under the guest. It brings its own memcpy & co.
    "-Clink-arg=-nostdlib",
    // One self-contained, position-dependent image: loaded at the addresses it was linked for.
    "-Clink-arg=-static",
    "-Clink-arg=-no-pie",
];

/// The one target the toolchain ships here and on users' machines.
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let payload = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // The programs are this crate's siblings in `crates/`; the workspace is two levels up.
    let crates = payload.parent().expect("crates/").to_path_buf();
    let root = crates.parent().expect("the workspace").to_path_buf();
    for dir in ["kernels", "workload"] {
        println!("cargo:rerun-if-changed={}", crates.join(dir).display());
    }
    // Not all of guest/: a guest/target left by a manual `cargo clippy` there must not retrigger.
    for path in ["guest/src", "guest/Cargo.toml", "guest/link.ld"] {
        println!("cargo:rerun-if-changed={}", crates.join(path).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    record_commit(&root);

    let nested = nested_target_dir(&root);
    let workload = cargo_build(
        &crates.join("workload/Cargo.toml"),
        &nested,
        NESTED_RUSTFLAGS,
    )
    .join("isolab-workload");
    println!(
        "cargo:rustc-env=ISOLAB_WORKLOAD_PATH={}",
        workload.display()
    );

    // The linker script says where the guest lives in guest memory (see crates/guest/link.ld).
    let script = format!("-Clink-arg=-T{}", crates.join("guest/link.ld").display());
    let guest_flags: Vec<&str> = NESTED_RUSTFLAGS
        .iter()
        .chain(GUEST_LINK_ARGS)
        .copied()
        .chain([script.as_str()])
        .collect();
    let guest =
        cargo_build(&crates.join("guest/Cargo.toml"), &nested, &guest_flags).join("isolab-guest");
    println!("cargo:rustc-env=ISOLAB_GUEST_PATH={}", guest.display());
}

/// `target/nested`, beside the outer build's own directories.
fn nested_target_dir(root: &Path) -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("nested")
}

/// Build one package in release mode with [`NESTED_PROFILE`]; returns the directory of its
/// binaries.
fn cargo_build(manifest: &Path, target_dir: &Path, rustflags: &[&str]) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(target_dir);
    for setting in NESTED_PROFILE {
        cmd.arg("--config").arg(setting);
    }
    // The outer build's settings (flags, wrappers such as clippy-driver, its target directory)
    // must not leak into the nested one: these programs are built one way only.
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_RELEASE_LTO",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"));
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", manifest.display()));
    assert!(status.success(), "building {} failed", manifest.display());
    target_dir.join(TARGET).join("release")
}

/// Put the git commit into `ISOLAB_COMMIT`, for the results' environment record. Rebuilt when
/// the checkout moves (every commit or checkout appends to `logs/HEAD`).
fn record_commit(root: &Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=ISOLAB_COMMIT={commit}");
    }
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={}", root.join(p).display());
        }
    }
}
