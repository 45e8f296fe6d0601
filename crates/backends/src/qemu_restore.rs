//! `qemu` restored from QEMU's own migration stream: the outside reference for the lab's VMM
//! snapshots.
//!
//! # What QEMU saves
//!
//! QEMU has one way to save a running machine: **live migration**, which sends the machine to
//! another QEMU over a stream. Its format is a sequence of *sections*, one per piece of state
//! that registered itself (`vmstate`): each device's registers (the CPU's registers and MSRs,
//! the local APIC, the IOAPIC and PIC, the PIT, the 16550 UART with what sits in its FIFO, the
//! clock), and the **RAM**, sent page by page — a page of zeros as a few bytes, any other page
//! whole. A machine that runs while it migrates sends its RAM in rounds, again for each page
//! the guest dirtied meanwhile; here the guest is stopped first (`stop`), so each page goes
//! once. Sent to a file rather than to another QEMU, the stream *is* a snapshot:
//!
//! ```text
//!  checkpoint: cold start with `hold` ─► `ready`, the workload blocked in read(0) on the console
//!              ─► QMP: stop ─► getfd + migrate fd: ─► query-migrate until "completed" ─► quit
//!  restore:    QEMU with the same arguments + `-incoming defer` ─► QMP: migrate-incoming fd:5
//!              ─► QEMU loads every section, then resumes the guest itself (event RESUME)
//!              ─► the lab's go-ahead ─► the restored workload's first marker is its `ready`
//! ```
//!
//! One section says whether the guest was running (QEMU's "global state"); the lab stops the
//! guest before it saves it, so a restored QEMU would leave its guest stopped. Every QEMU the
//! lab snapshots or restores runs with `-global migration.store-global-state=off`: the stream
//! then has no such section, and a QEMU that received none starts the guest itself once the
//! state is loaded, as a QEMU started without `-S` does.
//!
//! The restored QEMU must be built like the saved one — the same machine, devices, RAM size,
//! kernel and initramfs (loaded again at start-up, then overwritten by the stream's RAM) — and
//! its guest's command line identical, `tsc_early_khz` included: the snapshot keeps the
//! arguments it was taken with, and a restore whose arguments would differ is refused before
//! QEMU starts. QEMU itself refuses a stream that is not one, or not for this machine, and
//! exits; the lab reports its own line.
//!
//! # How the stream reaches the file
//!
//! QEMU 7.2 has no `file:` migration target. The lab opens the file itself and hands QEMU the
//! descriptor: `getfd` passes it over the QMP socket (`SCM_RIGHTS`, see [`crate::qmp`]) under a
//! name, and `migrate fd:NAME` writes to it; a restore's QEMU inherits the file, read-only, as
//! descriptor 5 ([`crate::qemu::STREAM_FD`]) and is told `migrate-incoming fd:5`. No shell
//! runs (`exec:cat > FILE` would start `/bin/sh`, and a path in a shell command must be quoted),
//! and the lab alone names the file: a 0700 directory in the lab's work directory
//! ([`Snapshot::new_dir`]), removed with the snapshot, or with the work directory by the next
//! lab if this one is killed. The QMP socket is in a 0700 directory of the work directory too
//! (`qmp/`), and its name is removed when its QEMU is collected.
//!
//! Why `-incoming defer` and not `-incoming fd:5` on the command line: the lab must not send
//! the go-ahead before the guest's UART has its state back (a byte arriving before would be
//! overwritten by the loaded FIFO), so it must see the load end. QEMU reports it with the
//! `RESUME` event, sent only to a client that has negotiated; with `defer`, the lab has, before
//! the load begins. It costs a QMP round trip, which the phases show.
//!
//! # Why a restored QEMU copies the RAM
//!
//! QEMU *reads* the stream: each page is copied into the guest's RAM, anonymous memory that
//! QEMU allocated at start-up. Every restored instance pays for its own copy of all that the
//! guest had touched, and restoring takes as long as copying it, however little of it the
//! guest will use: there is nothing to prefault later, so a restore notes `prefault=no` and
//! `--prefault` changes nothing. The lab's `vm` snapshots instead *map* their file
//! `MAP_PRIVATE`: N restored guests share its pages copy-on-write, as containers share an image,
//! and each page comes in only when touched.
//!
//! QEMU can come closer to that: with the guest's RAM in a file-backed memory backend
//! (`-object memory-backend-file,share=on,...`) and the migration capability
//! `x-ignore-shared`, the stream leaves that RAM out — it is already in the file — and a
//! restored QEMU maps the file again. Mapped shared, every restored guest would write into the
//! one file; mapped privately (`share=off`), they would share its pages copy-on-write as `vm`'s
//! do (the "VM templating" of some container runtimes built on QEMU). That is not done here,
//! and would have to be measured before anything is said of it: it is mentioned so that the
//! comparison with `vm` is read for what it is.

use crate::instance::Instance;
use crate::lab::Lab;
use crate::qemu::{Extra, Launched, Qemu, STREAM_FD};
use crate::qmp::{Qmp, QmpError};
use crate::restore::{allocated_bytes, Restore, RestoreOptions, Snapshot, Stored};
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_host::clock::now_ns;
use isolab_linux_guest::devices::GuestDevices;
use isolab_results::info;
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The migration stream's file in a snapshot's directory.
const STREAM: &str = "stream";
/// The file that keeps QEMU's arguments for the guest, one a line.
const ARGS: &str = "qemu-args";
/// How long a migration to the file, or a load from it, may take before it is called hung.
const MIGRATION_LIMIT: Duration = Duration::from_secs(60);
/// How long QEMU gets to end after `quit`, or after an error.
const AFTER_QUIT: Duration = Duration::from_secs(5);
/// How often `query-migrate` is asked while the stream is written.
const POLL: Duration = Duration::from_millis(2);

/// The spec a checkpointed guest runs: held at `ready`. A guest with a disk or a network card
/// (a disk or network kernel's, or any on the lab's image, which a VM gets as a disk) is
/// refused: its disk copy and its tap are the instance's own, made anew for each instance,
/// while the stream would hold the device state (queues, offsets) of the saved one.
fn held(lab: &Lab, spec: &Spec) -> Result<Spec, BackendError> {
    let kernel = spec.kernel;
    if kernel.needs_disk() || kernel.needs_network() || lab.settings.image_spec.is_some() {
        return Err(BackendError::Unavailable {
            backend: "qemu".into(),
            reason: format!(
                "{kernel} on this lab is not snapshotted: its guest has a disk or a network card \
                 of its own, which a restored guest would not"
            ),
        });
    }
    let mut spec = *spec;
    spec.hold = true;
    Ok(spec)
}

/// The QMP steps of a checkpoint, each with the host time it ended.
struct Saved {
    connected: u64,
    stopped: u64,
    migrated: u64,
}

/// Stop the guest and migrate it into `stream` through the QMP socket at `path`.
fn save(path: &Path, stream: &File, instance: &Instance) -> Result<Saved, QmpError> {
    let mut qmp = Qmp::connect(path, MIGRATION_LIMIT, || instance.has_ended())?;
    let connected = now_ns();
    qmp.execute("stop", None)?;
    let stopped = now_ns();
    // QEMU limits a migration's bandwidth (128 MiB/s by default) so that a live migration
    // leaves the network to the guest; to a file, with the guest stopped, nothing is gained.
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": 1u64 << 40 })),
    )?;
    qmp.execute_with_fd(
        "getfd",
        Some(json!({ "fdname": "snapshot" })),
        Some(stream.as_fd()),
    )?;
    qmp.execute("migrate", Some(json!({ "uri": "fd:snapshot" })))?;
    let begin = Instant::now();
    loop {
        let state = qmp.execute("query-migrate", None)?;
        match state.get("status").and_then(|s| s.as_str()).unwrap_or("") {
            "completed" => break,
            status @ ("failed" | "cancelled") => {
                return Err(QmpError::Refused {
                    command: "migrate".into(),
                    desc: format!(
                        "migration {status}: {}",
                        state
                            .get("error-desc")
                            .and_then(|d| d.as_str())
                            .unwrap_or("no reason given")
                    ),
                })
            }
            status if begin.elapsed() > MIGRATION_LIMIT => {
                return Err(QmpError::Timeout {
                    what: format!("complete its migration (status {status:?})"),
                    after: MIGRATION_LIMIT,
                })
            }
            _ => std::thread::sleep(POLL),
        }
    }
    let migrated = now_ns();
    // QEMU answers `quit` and then exits: the instance sees its end.
    qmp.execute("quit", None).or_else(|e| match e {
        QmpError::Closed { .. } => Ok(serde_json::Value::Null),
        e => Err(e),
    })?;
    Ok(Saved {
        connected,
        stopped,
        migrated,
    })
}

/// Load the stream QEMU inherited through the QMP socket at `path`; the host time the guest
/// resumed.
fn load(path: &Path, instance: &Instance) -> Result<(u64, u64), QmpError> {
    let mut qmp = Qmp::connect(path, MIGRATION_LIMIT, || instance.has_ended())?;
    let connected = now_ns();
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("fd:{STREAM_FD}") })),
    )?;
    // After the last section QEMU starts the guest's vCPU (it was not started with `-S`) and
    // says so. A stream QEMU refuses ends QEMU instead: the socket closes.
    let resumed = qmp.wait_event("RESUME")?;
    Ok((connected, resumed))
}

/// The snapshot's directory, if it is a `qemu` snapshot.
fn qemu_dir(snapshot: &Snapshot) -> Result<&Path, BackendError> {
    match (&snapshot.stored, snapshot.backend.as_str()) {
        (Stored::Dir(dir), "qemu") if dir.join(ARGS).is_file() => Ok(dir),
        _ => Err(BackendError::Instance {
            step: "snapshot".into(),
            detail: format!(
                "a snapshot taken by {} is not a QEMU migration stream",
                snapshot.backend
            ),
        }),
    }
}

/// How a QEMU that ended while the lab drove it ended: its own words, from its stderr.
fn ended(instance: Instance, e: QmpError) -> BackendError {
    let why = match instance.stop_within(AFTER_QUIT) {
        Ok(run) => match run.outcome {
            isolab_results::Outcome::Failed { reason } => format!("{e}: {reason}"),
            _ => e.to_string(),
        },
        Err(stop) => format!("{e} (and collecting it: {stop})"),
    };
    BackendError::External {
        program: "qemu".into(),
        detail: why,
    }
}

impl Restore for Qemu {
    fn restore_availability(&self, lab: &Lab) -> Availability {
        self.availability(lab)
    }

    fn checkpoint(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<Snapshot, BackendError> {
        let spec = held(lab, spec)?;
        let dir = Snapshot::new_dir(lab, &format!("qemu-{}", lab.next_instance_name()))?;
        // Made first: an error from here on drops it, which removes the directory.
        let mut snapshot = Snapshot {
            backend: self.name().into(),
            spec,
            stored: Stored::Dir(dir.clone()),
            bytes: 0,
            take_ns: 0,
            phases: Vec::new(),
        };
        let stream = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join(STREAM))
            .map_err(BackendError::io("make the snapshot's stream file"))?;
        let extra = Extra {
            qmp: true,
            ..Extra::default()
        };
        let Launched {
            mut instance,
            guest_args,
            qmp,
        } = self.launch(lab, &spec, limits, GuestDevices::default(), extra)?;
        std::fs::write(dir.join(ARGS), guest_args.join("\n"))
            .map_err(BackendError::io("write the snapshot's QEMU arguments"))?;
        instance.wait_phase("ready")?;
        let begin = now_ns();
        let path = qmp.unwrap_or_default();
        let saved = match save(&path, &stream, &instance) {
            Ok(saved) => saved,
            Err(e) => return Err(ended(instance, e)),
        };
        drop(stream);
        // QEMU exits after `quit`; the held workload never ran on.
        let run = instance.stop_within(AFTER_QUIT)?;
        let quit = run.timeline.at("exited").unwrap_or_else(now_ns);
        snapshot.take_ns = saved.migrated - begin;
        snapshot.phases = vec![
            ("qmp".into(), saved.connected - begin),
            ("stop".into(), saved.stopped - saved.connected),
            ("migrate".into(), saved.migrated - saved.stopped),
            ("quit".into(), quit.saturating_sub(saved.migrated)),
        ];
        let file = File::open(dir.join(STREAM))
            .map_err(BackendError::io("open the snapshot's stream file"))?;
        snapshot.bytes = allocated_bytes(&file)?;
        if snapshot.bytes == 0 {
            return Err(BackendError::External {
                program: "qemu".into(),
                detail: "the migration completed but wrote nothing".into(),
            });
        }
        Ok(snapshot)
    }

    fn restore(
        &self,
        lab: &Lab,
        snapshot: &Snapshot,
        limits: &Limits,
        _options: &RestoreOptions,
    ) -> Result<Instance, BackendError> {
        let dir = qemu_dir(snapshot)?;
        let args = std::fs::read_to_string(dir.join(ARGS))
            .map_err(BackendError::io("read the snapshot's QEMU arguments"))?;
        // Its own open file (its own offset): several restores may read one snapshot at once.
        let stream = File::open(dir.join(STREAM))
            .map_err(BackendError::io("open the snapshot's stream file"))?;
        let extra = Extra {
            qmp: true,
            incoming: Some(OwnedFd::from(stream)),
            expect_args: Some(args.lines().map(str::to_string).collect()),
        };
        let Launched {
            mut instance, qmp, ..
        } = self.launch(lab, &snapshot.spec, limits, GuestDevices::default(), extra)?;
        let path = qmp.unwrap_or_default();
        let (connected, resumed) = match load(&path, &instance) {
            Ok(times) => times,
            Err(e) => return Err(ended(instance, e)),
        };
        // QEMU started and its monitor answered; the stream loaded and the guest running again.
        instance.push_phase("qemu_up", connected);
        instance.push_phase("state_loaded", resumed);
        instance.restored()?;
        // QEMU copied every page of the stream into the guest's RAM before it resumed: there is
        // nothing left to prefault (see the module documentation).
        snapshot.note_restored(&mut instance, false);
        instance.note(
            info::IMAGE,
            "a QEMU migration stream of the guest at ready, its RAM copied in",
        );
        Ok(instance)
    }
}
