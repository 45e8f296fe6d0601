//! Programs that print what a building step's check looks for without doing the step.
//!
//! Each fake is a real step crate of the exercises with one thing taken out or faked, built and
//! checked by `lab check` exactly as a student's crate is. A check that reads only what the
//! program says of itself would pass them; the checks look from outside, through the kernel,
//! so each must fail — on the test named here, with a hint in words (no Rust debug formatting).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// One fake: the step crate it starts from, the text it replaces there, and what it must fail.
struct Fake {
    /// What the fake does, in words.
    what: &'static str,
    /// The exercise checked.
    exercise: &'static str,
    /// The step crate the fake is made from, under `labs/`.
    from: &'static str,
    /// Text of its `src/main.rs` and what replaces it.
    replace: (&'static str, String),
    /// The name of the check that must fail on it.
    fails: &'static str,
}

/// Copy `src` to `dst`, leaving out build output and lab state.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let name = e.file_name();
        if name == "target" || name == ".lab" {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        if from.is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// A scratch checkout holding the exercises and the kernels crate they link.
fn checkout(name: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = common::temp_dir(name);
    copy_tree(&repo.join("labs"), &dir.join("labs"));
    copy_tree(&repo.join("crates/kernels"), &dir.join("crates/kernels"));
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    dir
}

/// Make `fake` in the checkout and run `lab check` on it: its exit status and output.
fn check(dir: &Path, fake: &Fake) -> (Option<i32>, String) {
    let labs = dir.join("labs");
    let krate = labs.join(fake.from);
    let main = krate.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    assert!(
        source.contains(fake.replace.0),
        "{}: {} no longer holds {:?}",
        fake.what,
        main.display(),
        fake.replace.0
    );
    std::fs::write(&main, source.replacen(fake.replace.0, &fake.replace.1, 1)).unwrap();
    let out = Command::new(LAB)
        .args(["check", fake.exercise, "--labs"])
        .arg(&labs)
        .arg("--crate")
        .arg(&krate)
        .current_dir(dir)
        .env("TMPDIR", dir.join("tmp"))
        .output()
        .unwrap();
    std::fs::write(&main, source).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn assert_fails(dir: &Path, fake: Fake) {
    let (code, text) = check(dir, &fake);
    eprintln!("== {} (lab check {}):\n{text}", fake.what, fake.exercise);
    assert_eq!(
        code,
        Some(1),
        "{}: lab check {} should fail\n{text}",
        fake.what,
        fake.exercise
    );
    let line = text
        .lines()
        .find(|l| l.contains(fake.fails))
        .unwrap_or_else(|| panic!("{}: no test {:?}\n{text}", fake.what, fake.fails));
    assert!(
        line.contains("FAIL"),
        "{}: {:?} should fail\n{text}",
        fake.what,
        fake.fails
    );
    assert!(
        !text.contains("Some(") && !text.contains("None"),
        "{}: a hint shows Rust's debug formatting\n{text}",
        fake.what
    );
}

/// KVM's number of memory slots on this machine, as the fake prints it.
fn memslots() -> usize {
    isolab_vmm::kvm::open().expect("/dev/kvm").get_nr_memslots()
}

#[test]
fn vmm_fakes_fail_their_checks() {
    let _serial = common::serial();
    let dir = checkout("labs-fakes-vmm");
    // vmm-1: report the two facts without opening /dev/kvm.
    assert_fails(
        &dir,
        Fake {
            what: "a VMM that prints KVM's facts without opening /dev/kvm",
            exercise: "vmm-1",
            from: "vmm/1-kvm",
            replace: (
                "report.todo(1, \"open /dev/kvm\");",
                format!(
                    "report.phase(\"kvm_open\"); report.info(\"kvm_api_version\", 12); \
                     report.info(\"kvm_memslots\", {});",
                    memslots()
                ),
            ),
            fails: "1 · it opens /dev/kvm",
        },
    );
    // vmm-1: a wrong number of memory slots is shown as a number.
    assert_fails(
        &dir,
        Fake {
            what: "a VMM that reports a wrong number of memory slots",
            exercise: "vmm-1",
            from: "vmm/2-machine",
            replace: (
                "report.info(\"kvm_memslots\", kvm.get_nr_memslots());",
                "report.info(\"kvm_memslots\", kvm.get_nr_memslots() + 1);".into(),
            ),
            fails: "1 · it reports KVM's number of memory slots",
        },
    );
    // vmm-2: everything but registering the RAM with KVM.
    assert_fails(
        &dir,
        Fake {
            what: "a VMM that never calls KVM_SET_USER_MEMORY_REGION",
            exercise: "vmm-2",
            from: "vmm/3-real",
            replace: (
                "unsafe { vm.set_user_memory_region(region) }",
                "Ok::<(), kvm_ioctls::Error>(drop(region))".into(),
            ),
            fails: "2 · its RAM is the guest's memory",
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_runtime_without_private_mounts_fails_container_2() {
    let _serial = common::serial();
    let dir = checkout("labs-fakes-container");
    assert_fails(
        &dir,
        Fake {
            what: "a runtime that does not make its mounts private",
            exercise: "container-2",
            from: "container/3-pid",
            replace: (
                "fn private_mounts(report: Report) {",
                "fn private_mounts(report: Report) {\n    let _ = report;\n    return;".into(),
            ),
            fails: "2 · no mount of the container appears on the host",
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}
