//! `vm` snapshots end to end, on real KVM: a bare guest saved at its `ready` and restored into
//! new VMM processes runs to the same checksum as a cold boot; a snapshot that is corrupt, or
//! from another lab or CPU, is refused in one line.
//!
//! Every test needs a usable /dev/kvm and cgroups (CI has both); on a machine without them each
//! test fails with the reason, never passes without having run.

use isolab_backends::lab::Lab;
use isolab_backends::restore::{Snapshot, Stored};
use isolab_backends::vm::Vm;
use isolab_backends::{Backend, Limits, Outcome, Restore, RestoreOptions, Run};
use isolab_payload::{Kernel, Spec};
use isolab_results::StartKind;
use isolab_vmm::snapshot::{self, GuestKind, SnapshotError, MAGIC, MEMORY_OFFSET};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;

mod common;
use common::vm_lab as lab;

fn checksum(run: &Run) -> u64 {
    assert_eq!(run.outcome, Outcome::Completed, "{run:?}");
    run.output
        .as_ref()
        .expect("a completed run's output")
        .checksum
}

fn restored(lab: &Lab, snap: &Snapshot, prefault: bool) -> Run {
    let mut instance = Vm::default()
        .restore(lab, snap, &Limits::default(), &RestoreOptions { prefault })
        .unwrap();
    instance.wait_ready().unwrap();
    instance.wait_done().unwrap();
    instance.finish().unwrap()
}

#[test]
fn a_restored_vm_runs_to_the_cold_checksum() {
    let (_turn, lab) = lab();
    let vm = Vm::default();
    for spec in [
        // The experiment's workload: 64 MiB of arena, above the snapshot's data.
        Spec::default_for(Kernel::Mem),
        Spec::new(Kernel::Mem, 4, 2),
        Spec::new(Kernel::Cpu, 0, 20_000),
    ] {
        let cold = vm.run(&lab, &spec, &Limits::default()).unwrap();
        let snap = vm.checkpoint(&lab, &spec, &Limits::default()).unwrap();
        assert!(matches!(snap.stored, Stored::Unnamed(_)));
        assert!(snap.bytes > 0 && snap.take_ns > 0, "{snap:?}");
        for prefault in [false, true, false] {
            let run = restored(&lab, &snap, prefault);
            assert_eq!(
                checksum(&run),
                checksum(&cold),
                "{spec} prefault={prefault}"
            );
            let record = run.record(vm.family(), 0, 0, false);
            assert_eq!(record.facts.start_kind(), StartKind::Restored);
            // The restored guest said `ready` itself, after the VMM had loaded its state.
            let t = &run.timeline;
            assert!(
                t.at("state_loaded").unwrap() < t.at("ready").unwrap(),
                "{t:?}"
            );
            assert!(t.at("guest_loaded").is_none(), "nothing was loaded: {t:?}");
        }
        assert_eq!(
            vm.run(&lab, &spec, &Limits::default())
                .unwrap()
                .record(vm.family(), 0, 0, false)
                .facts
                .start_kind(),
            StartKind::Cold
        );
    }
}

/// A copy of `snap`'s bytes, changed by `edit`, as a snapshot of the same spec.
fn edited(lab: &Lab, snap: &Snapshot, edit: impl FnOnce(&mut File)) -> Snapshot {
    let mut bytes = Vec::new();
    let mut from = snap
        .file()
        .unwrap()
        .try_clone_to_owned()
        .map(File::from)
        .unwrap();
    from.rewind().unwrap();
    from.read_to_end(&mut bytes).unwrap();
    let mut copy = Snapshot::unnamed_file(lab).unwrap();
    copy.write_all(&bytes).unwrap();
    edit(&mut copy);
    Snapshot {
        backend: snap.backend.clone(),
        spec: snap.spec,
        stored: Stored::Unnamed(copy),
        bytes: snap.bytes,
        take_ns: 0,
        phases: Vec::new(),
    }
}

#[test]
fn a_corrupt_or_foreign_snapshot_is_refused_in_one_line() {
    let (_turn, lab) = lab();
    let vm = Vm::default();
    let spec = Spec::new(Kernel::Mem, 4, 2);
    let snap = vm.checkpoint(&lab, &spec, &Limits::default()).unwrap();
    let read = |s: &Snapshot| {
        let file = File::from(s.file().unwrap().try_clone_to_owned().unwrap());
        snapshot::read(&file, GuestKind::Bare).map(|_| ())
    };
    read(&snap).unwrap();
    type Case = (&'static str, Snapshot, fn(&SnapshotError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "not a snapshot",
            edited(&lab, &snap, |f| f.write_all_at(b"NOTAVM!!", 0).unwrap()),
            |e| matches!(e, SnapshotError::NotASnapshot),
        ),
        (
            "another format",
            edited(&lab, &snap, |f| {
                f.write_all_at(&9u32.to_le_bytes(), 8).unwrap()
            }),
            |e| matches!(e, SnapshotError::Format { got: 9 }),
        ),
        (
            "another CPU",
            edited(&lab, &snap, |f| {
                f.write_all_at(&0u32.to_le_bytes(), 12).unwrap()
            }),
            |e| matches!(e, SnapshotError::Cpu { .. }),
        ),
        (
            "another lab",
            edited(&lab, &snap, |f| f.write_all_at(b"0.0.0", 30).unwrap()),
            |e| matches!(e, SnapshotError::Version { .. }),
        ),
        (
            "cut short",
            edited(&lab, &snap, |f| f.set_len(MEMORY_OFFSET + 4096).unwrap()),
            |e| matches!(e, SnapshotError::Malformed(_)),
        ),
        (
            "header only",
            edited(&lab, &snap, |f| f.set_len(100).unwrap()),
            |e| matches!(e, SnapshotError::Malformed(_)),
        ),
        (
            "empty",
            edited(&lab, &snap, |f| f.set_len(0).unwrap()),
            |e| matches!(e, SnapshotError::NotASnapshot),
        ),
        (
            "absurd RAM",
            edited(&lab, &snap, |f| {
                f.write_all_at(&u64::MAX.to_le_bytes(), 94).unwrap()
            }),
            |e| matches!(e, SnapshotError::Memory(_)),
        ),
        (
            "absurd vCPU state",
            edited(&lab, &snap, |f| {
                f.write_all_at(&u64::MAX.to_le_bytes(), 110).unwrap()
            }),
            |e| matches!(e, SnapshotError::Malformed(_)),
        ),
        (
            "more data than RAM",
            edited(&lab, &snap, |f| {
                f.write_all_at(&(1u64 << 40).to_le_bytes(), 102).unwrap()
            }),
            |e| matches!(e, SnapshotError::Malformed(_)),
        ),
        (
            "a Linux guest's",
            edited(&lab, &snap, |f| {
                f.write_all_at(&2u32.to_le_bytes(), 118).unwrap()
            }),
            |e| matches!(e, SnapshotError::OtherGuest { .. }),
        ),
        (
            "no data",
            edited(&lab, &snap, |f| {
                f.write_all_at(&0u64.to_le_bytes(), 102).unwrap()
            }),
            |e| matches!(e, SnapshotError::Malformed(_)),
        ),
    ];
    for (what, bad, expected) in cases {
        let e = read(&bad).expect_err(what);
        assert!(expected(&e), "{what}: {e:?}");
        let line = e.to_string();
        assert!(!line.contains('\n') && !line.is_empty(), "{what}: {line}");
        // Through the backend: the restored instance ends with that line as its error.
        let mut instance = vm
            .restore(&lab, &bad, &Limits::default(), &RestoreOptions::default())
            .unwrap();
        assert!(
            instance.wait_ready().is_err(),
            "{what}: a refused snapshot ran"
        );
        match instance.finish().unwrap().outcome {
            Outcome::Failed { reason } => {
                assert!(reason.starts_with("snapshot: "), "{what}: {reason}");
                assert!(reason.contains(&line), "{what}: {reason}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // A snapshot of another workload is not run as this one.
    let mut other = edited(&lab, &snap, |_| {});
    other.spec = Spec::new(Kernel::Mem, 4, 3);
    let mut instance = vm
        .restore(&lab, &other, &Limits::default(), &RestoreOptions::default())
        .unwrap();
    assert!(instance.wait_ready().is_err());
    match instance.finish().unwrap().outcome {
        Outcome::Failed { reason } => assert!(reason.contains("not the"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(&MAGIC, b"ISOLABVM");
}
