//! `qemu` snapshots end to end: a Linux guest under QEMU saved at its `ready` into QEMU's own
//! migration stream, and restored by new QEMUs that load it, runs to the cold checksum; a
//! stream that is corrupt, or a snapshot of another backend or workload, is refused in one line;
//! nothing of the lab is left either way.
//!
//! Here QEMU emulates the CPU (TCG): each cold boot takes seconds, a restore much less. The tests
//! need qemu-system-x86_64 and a Linux kernel to boot (CI installs both) and fail, saying so,
//! without them.

mod common;

use common::{native, serial, temp_dir, HostState};
use isolab_backends::lab::Lab;
use isolab_backends::qemu::Qemu;
use isolab_backends::restore::{Snapshot, Stored};
use isolab_backends::{Backend, Limits, Outcome, Restore, RestoreOptions, Run};
use isolab_payload::{Kernel, Spec};
use isolab_results::{info, StartKind};
use std::path::Path;

fn guest_lab(temp: &Path) -> Lab {
    common::needs_qemu();
    let mut lab = Lab::in_dir(temp).unwrap();
    lab.settings.timeout = std::time::Duration::from_secs(120);
    lab
}

fn checksum(run: &Run) -> u64 {
    assert_eq!(run.outcome, Outcome::Completed, "{run:#?}");
    run.output
        .as_ref()
        .expect("a completed run's output")
        .checksum
}

#[test]
fn a_restored_qemu_runs_to_the_cold_checksum_and_leaves_nothing() {
    let _serial = serial();
    let temp = temp_dir("qemu-restore");
    let before = HostState::now(&temp);
    let lab = guest_lab(&temp);
    let qemu = Qemu::default();
    let spec = Spec::new(Kernel::Mem, 4, 2);
    let cold = qemu.run(&lab, &spec, &Limits::default()).unwrap();
    assert_eq!(cold.output, Some(native(&spec)));
    let snap = qemu.checkpoint(&lab, &spec, &Limits::default()).unwrap();
    let Stored::Dir(dir) = &snap.stored else {
        panic!("a QEMU snapshot is a directory: {snap:?}")
    };
    assert!(dir.starts_with(lab.workdir()), "{dir:?}");
    assert!(snap.bytes > 0 && snap.take_ns > 0, "{snap:?}");
    let phases: Vec<&str> = snap.phases.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(phases, ["qmp", "stop", "migrate", "quit"]);

    // Two restored guests alive at once, from the one stream, then one more after them.
    let restore = || {
        qemu.restore(&lab, &snap, &Limits::default(), &RestoreOptions::default())
            .unwrap()
    };
    let (mut a, mut b) = (restore(), restore());
    let mut runs = Vec::new();
    for instance in [&mut a, &mut b] {
        instance.wait_ready().unwrap();
    }
    for mut instance in [a, b, restore()] {
        instance.wait_ready().unwrap();
        instance.wait_done().unwrap();
        runs.push(instance.finish().unwrap());
    }
    for run in &runs {
        assert_eq!(checksum(run), checksum(&cold));
        let record = run.record(qemu.family(), 0, 0, false);
        assert_eq!(record.facts.start_kind(), StartKind::Restored);
        assert_eq!(run.info[info::PREFAULT], "no");
        // QEMU loaded the state before the restored workload said `ready`, after the go-ahead.
        let t = &run.timeline;
        let at = |name: &str| t.at(name).unwrap_or_else(|| panic!("no {name} in {t:?}"));
        assert!(at("qemu_up") <= at("state_loaded"), "{t:?}");
        assert!(at("state_loaded") < at("ready"), "{t:?}");
        assert!(at("ready") <= at("done"), "{t:?}");
        // The guest did not boot again: no `init` phase after the restore.
        assert!(t.at("init").is_none(), "{t:?}");
    }
    // Every QEMU removed its QMP socket's name when it was collected.
    let sockets: Vec<_> = std::fs::read_dir(lab.workdir().join("qmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(sockets.is_empty(), "{sockets:?}");

    let dir = dir.clone();
    drop(snap);
    assert!(!dir.exists(), "the snapshot went with its Snapshot");
    drop(lab);
    assert_eq!(
        HostState::now(&temp),
        before,
        "the lab left something behind"
    );
    std::fs::remove_dir_all(&temp).unwrap();
}

/// A copy of `snap` in a new directory of `lab`'s, its stream changed by `edit`.
fn edited(lab: &Lab, snap: &Snapshot, name: &str, edit: impl Fn(&mut Vec<u8>)) -> Snapshot {
    let Stored::Dir(from) = &snap.stored else {
        panic!("{snap:?}")
    };
    let dir = Snapshot::new_dir(lab, name).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let mut bytes = std::fs::read(entry.path()).unwrap();
        if entry.file_name() == "stream" {
            edit(&mut bytes);
        }
        std::fs::write(dir.join(entry.file_name()), bytes).unwrap();
    }
    Snapshot {
        backend: snap.backend.clone(),
        spec: snap.spec,
        stored: Stored::Dir(dir),
        bytes: snap.bytes,
        take_ns: 0,
        phases: Vec::new(),
    }
}

#[test]
fn a_corrupt_or_foreign_stream_is_refused_in_one_line_and_leaves_nothing() {
    let _serial = serial();
    let temp = temp_dir("qemu-restore-bad");
    let before = HostState::now(&temp);
    let lab = guest_lab(&temp);
    let qemu = Qemu::default();
    let spec = Spec::new(Kernel::Mem, 4, 2);
    let snap = qemu.checkpoint(&lab, &spec, &Limits::default()).unwrap();
    let mut other_spec = edited(&lab, &snap, "other-spec", |_| {});
    other_spec.spec = Spec::new(Kernel::Mem, 4, 3);
    let mut other_backend = edited(&lab, &snap, "other-backend", |_| {});
    other_backend.backend = "vm".into();
    let cases = [
        (
            "not a stream",
            edited(&lab, &snap, "magic", |b| b[..4].copy_from_slice(b"ISOL")),
            "QEMU",
        ),
        (
            "cut short",
            edited(&lab, &snap, "short", |b| b.truncate(b.len() / 2)),
            "QEMU",
        ),
        ("empty", edited(&lab, &snap, "empty", Vec::clear), "QEMU"),
        ("another workload", other_spec, "another guest"),
        (
            "another backend",
            other_backend,
            "not a QEMU migration stream",
        ),
    ];
    for (what, bad, expected) in cases {
        let e = match qemu.restore(&lab, &bad, &Limits::default(), &RestoreOptions::default()) {
            Ok(instance) => panic!("{what}: restored: {:?}", instance.finish()),
            Err(e) => e.to_string(),
        };
        assert!(!e.contains('\n') && e.contains(expected), "{what}: {e}");
        eprintln!("{what}: {e}");
    }
    drop(snap);
    drop(lab);
    assert_eq!(
        HostState::now(&temp),
        before,
        "the lab left something behind"
    );
    std::fs::remove_dir_all(&temp).unwrap();
}
