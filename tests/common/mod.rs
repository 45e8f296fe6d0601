//! Helpers shared by the integration tests: what the lab leaves behind, counted.
#![allow(dead_code)]

use isolab_resources::ownership;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The kernels' result for `spec` computed natively, in the test process (kernels that need no
/// I/O): what every backend must reproduce bit for bit.
pub fn native(spec: &isolab_payload::Spec) -> isolab_payload::Output {
    struct Native;
    impl isolab_kernels::Shim for Native {
        fn enter_kernel(&mut self, x: u64) -> u64 {
            x
        }
    }
    let mut arena = vec![0u8; spec.arena_bytes() as usize];
    isolab_kernels::run(spec, &mut Native, &mut arena).unwrap()
}

/// Tests that count host state run one at a time: another test's instance would be counted.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh, empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("isolab-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Host state a lab run could leak — the test's own labs' only: other labs (other tests', other
/// checkouts', a student's) run on the same machine meanwhile, and what they hold, or leave for
/// their guardians to remove a moment later, is not the test's to count (see [`ours`]).
#[derive(Debug, PartialEq, Eq)]
pub struct HostState {
    /// Mount points of our mount table that belong to the test's labs (their path names one).
    pub mounts: BTreeSet<String>,
    /// Every directory under the cgroup hierarchies' isolab bases of the test's labs.
    pub cgroups: BTreeSet<PathBuf>,
    /// OCI runtime state directories (`/run/<runtime>/isolab-*`) of the test's labs.
    pub runtime_state: BTreeSet<PathBuf>,
    /// The test's labs in the registry that are no longer running (a lab that ended cleanly
    /// leaves none).
    pub dead_labs: BTreeSet<String>,
    /// Our child processes.
    pub children: BTreeSet<i32>,
    /// Entries of the test's temp directory.
    pub temp_entries: BTreeSet<String>,
    /// Our open file descriptors.
    pub fds: usize,
}

impl HostState {
    /// The state now, counting the labs of the test whose directory is `temp`.
    pub fn now(temp: &Path) -> HostState {
        let labs = ownership::census(&ownership::registry_dir());
        HostState {
            mounts: lab_mounts("/proc/self/mountinfo", temp),
            cgroups: cgroup_dirs(&labs, temp),
            runtime_state: runtime_state(&labs, temp),
            dead_labs: labs
                .iter()
                .filter(|l| !l.alive && ours(&labs, &l.id, temp))
                .map(|l| l.id.clone())
                .collect(),
            children: children(),
            temp_entries: fs::read_dir(temp)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            fds: fs::read_dir("/proc/self/fd").unwrap().count(),
        }
    }
}

/// Mount points in mount table `mountinfo` under the directories of the labs of the test whose
/// directory is `temp` (a path naming `isolab-<id>` of one of them, or any `isolab…` path in
/// `temp`). Counting every line would count the mounts of everything else on a shared machine,
/// other labs' included.
pub fn lab_mounts(mountinfo: &str, temp: &Path) -> BTreeSet<String> {
    let labs = ownership::census(&ownership::registry_dir());
    let owner = |path: &str| -> Option<String> {
        path.split('/')
            .filter_map(|c| c.strip_prefix("isolab-"))
            .find(|id| is_lab_id(id))
            .map(str::to_string)
    };
    fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains("/isolab"))
        .filter(|m| match owner(m) {
            Some(id) => ours(&labs, &id, temp),
            None => Path::new(m).starts_with(temp),
        })
        .map(str::to_string)
        .collect()
}

/// A lab id: 12 lowercase hex digits.
pub fn is_lab_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Whether lab `id` (of the registry's `labs`) is the test's whose directory is `temp`, running
/// or not: a lab made in this process (its ledger names this process), or a `lab` the test
/// started with `TMPDIR` in `temp` — in whatever PID namespace — whose work directory is there
/// or whose ledger names something there. A lab whose ledger and work directory are both gone
/// was reaped: the registry removes what a lab made before its ledger, and the work directory
/// last.
pub fn ours(labs: &[ownership::LabStatus], id: &str, temp: &Path) -> bool {
    let made_here = labs
        .iter()
        .any(|l| l.id == id && l.pid == Some(std::process::id()));
    let ledger = ownership::registry_dir().join(format!("{id}.ledger"));
    // "DIR/", not "DIR": another test's directory may be this one's name and more digits.
    let inside = format!("{}/", temp.display());
    made_here
        || temp.join(format!("isolab-{id}")).exists()
        || fs::read_to_string(ledger).is_ok_and(|l| l.contains(&inside))
}

/// Cgroup directories `…/isolab/<lab id>[/…]`, in every hierarchy, of the test's labs.
fn cgroup_dirs(labs: &[ownership::LabStatus], temp: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let path = e.path();
            let under_isolab = dir.file_name().is_some_and(|n| n == "isolab");
            let name = e.file_name().to_string_lossy().into_owned();
            if under_isolab && is_lab_id(&name) {
                if ours(labs, &name, temp) {
                    out.insert(path.clone());
                    // Everything below it too.
                    let mut below = vec![path.clone()];
                    while let Some(d) = below.pop() {
                        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                            if e.file_type().is_ok_and(|t| t.is_dir()) {
                                out.insert(e.path());
                                below.push(e.path());
                            }
                        }
                    }
                }
                continue;
            }
            stack.push(path);
        }
    }
    out
}

/// `/run/<runtime>/isolab-<lab id>-<n>` of the test's labs.
fn runtime_state(labs: &[ownership::LabStatus], temp: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for root in ["/run/runc", "/run/crun", "/run/runsc"] {
        for e in fs::read_dir(root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("isolab-")
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if is_lab_id(id) && ours(labs, id, temp) {
                out.insert(e.path());
            }
        }
    }
    out
}

/// PIDs whose parent is this process.
pub fn children() -> BTreeSet<i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(me)
        })
        .collect()
}

/// Climb a density ladder to 16 instances with each of `names`, and check that each climbed it
/// whole: every rung, instances that cost something, and the top reached.
pub fn ladder_of_16(
    lab: &isolab_backends::lab::Lab,
    names: &[String],
    out: &Path,
) -> isolab_results::Results {
    use isolab_experiments::density;
    let outcome = density::run(
        lab,
        Some(names),
        &density::DensitySettings {
            max: 16,
            reserve_bytes: 1 << 30,
            idle_window: std::time::Duration::from_millis(100),
            limits: isolab_backends::Limits::default(),
            out: out.to_path_buf(),
            progress: false,
            images: None,
        },
    )
    .unwrap();
    let results = isolab_results::Results::read(&outcome.results).unwrap();
    for name in names {
        let steps: Vec<_> = results
            .density
            .iter()
            .filter(|d| &d.backend == name)
            .collect();
        assert_eq!(
            steps.iter().map(|d| d.n).collect::<Vec<_>>(),
            [1, 2, 4, 8, 16],
            "{name}: the whole ladder"
        );
        let top = steps.last().unwrap();
        assert!(
            top.instance_bytes > 16 * 4096,
            "{name}: 16 instances cost something"
        );
        let end = results
            .density_ends
            .iter()
            .find(|e| &e.backend == name)
            .unwrap();
        assert_eq!(
            (end.n, end.reason.as_str()),
            (16, "reached --max 16"),
            "{name}"
        );
    }
    results
}

/// The probe's facts of `backend`'s first measured run.
pub fn probe_facts(
    results: &isolab_results::Results,
    backend: &str,
) -> std::collections::BTreeMap<String, String> {
    results
        .measured(backend)
        .next()
        .unwrap_or_else(|| panic!("{backend} ran no probe"))
        .probe
        .iter()
        .cloned()
        .collect()
}

/// Every run completed, and every kernel computed the same checksum on each of `names` that can
/// run it (a bare guest has no disk, say: see `Backend::supports`).
pub fn checksums_agree(
    lab: &isolab_backends::lab::Lab,
    results: &isolab_results::Results,
    names: &[String],
    kernels: usize,
) {
    use std::collections::BTreeMap;
    let mut by_kernel: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in &results.runs {
        assert_eq!(r.outcome, isolab_results::Outcome::Completed, "{r:?}");
        assert!(r.work_ns.unwrap() > 0);
        by_kernel
            .entry(r.workload.kernel.clone())
            .or_default()
            .insert(
                r.backend.clone(),
                r.output.as_ref().unwrap().checksum.clone(),
            );
    }
    assert_eq!(by_kernel.len(), kernels);
    for (kernel, sums) in &by_kernel {
        let k = isolab_payload::Kernel::from_name(kernel.as_bytes()).unwrap();
        let able = names
            .iter()
            .filter(|n| {
                isolab_backends::by_name(n)
                    .unwrap()
                    .supports(lab, k)
                    .is_ok()
            })
            .count();
        assert_eq!(sums.len(), able, "{kernel}: every backend that can ran");
        let first = sums.values().next().unwrap();
        assert!(
            sums.values().all(|s| s == first),
            "{kernel}: checksums differ: {sums:?}"
        );
    }
}

/// For tests marked `#[ignore = "needs /dev/kvm ..."]`, which CI runs: fail, saying what is
/// missing, on a machine that cannot run the lab's microVMs — never pass without running.
pub fn needs_kvm() {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("this test needs /dev/kvm (hardware virtualization, or nested KVM): {e}");
    }
}

/// For tests marked `#[ignore = "needs qemu-system-x86 ..."]`: fail, saying what is missing,
/// without QEMU or a Linux kernel to boot.
pub fn needs_qemu() {
    if isolab_backends::qemu::qemu_path().is_none() {
        panic!("this test needs qemu-system-x86_64 (apt install qemu-system-x86)");
    }
    if let Err(e) = isolab_linux_guest::guest_kernel::find(None) {
        panic!("this test needs a Linux kernel to boot (apt install linux-image-amd64): {e}");
    }
}

/// Wait until `done` holds, for at most `limit`; whether it did.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Processes other than this one whose command line — or, with `environ`, environment (a lab's
/// forks keep its `TMPDIR`) — mentions `needle`.
pub fn processes_mentioning(needle: &str, environ: bool) -> Vec<(i32, String)> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != std::process::id() as i32)
        .filter_map(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let env = if environ {
                fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
            } else {
                Vec::new()
            };
            (cmd.contains(needle) || String::from_utf8_lossy(&env).contains(needle))
                .then_some((pid, cmd))
        })
        .collect()
}

/// The ids of the labs whose work directories are in `temp`.
pub fn lab_ids(temp: &Path) -> Vec<String> {
    fs::read_dir(temp)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("isolab-").map(str::to_string)
        })
        .filter(|id| is_lab_id(id))
        .collect()
}

/// Processes inside the instance cgroups of labs `ids`.
pub fn instances_of(ids: &[String]) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| ids.iter().any(|id| c.contains(&format!("/isolab/{id}/"))))
        })
        .collect()
}

/// The names of every container the Docker daemon keeps, running or not, lab's or not (`docker
/// ps --all`): the daemon keeps them, not the lab, so only the daemon can say what is left.
pub fn docker_container_names() -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "--all", "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// An ordinary user, made by `useradd` for one test and removed (`userdel`) after it.
pub struct User(pub String);

impl User {
    /// A new user whose name starts with `name` (the test process's PID makes it unique).
    pub fn new(name: &str) -> User {
        let name = format!("{name}{}", std::process::id() % 100_000);
        let o = std::process::Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", &name])
            .output()
            .expect("useradd (passwd) is installed");
        assert!(
            o.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        User(name)
    }

    /// `program` run as this user (no supplementary groups), in `dir`, with `TMPDIR`, `HOME`
    /// and `XDG_RUNTIME_DIR` there too.
    pub fn command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        dir: &Path,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--reuid",
            &self.0,
            "--regid",
            &self.0,
            "--clear-groups",
            "--",
        ])
        .arg(program)
        .current_dir(dir)
        .env("TMPDIR", dir)
        .env("HOME", dir)
        .env("XDG_RUNTIME_DIR", dir);
        cmd
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).output();
    }
}

/// The header of a results file written by a test from the schema's own types: a fixed,
/// made-up host (so reports of it are the same on every machine), `settings` as given.
pub fn made_up_header(experiment: &str, settings: serde_json::Value) -> isolab_results::Header {
    isolab_results::Header {
        schema: isolab_results::SCHEMA.into(),
        experiment: experiment.into(),
        environment: isolab_results::Environment {
            hostname: "labhost".into(),
            cpu_model: "Test CPU".into(),
            cpus: 2,
            memory_bytes: 8 << 30,
            kernel_release: "6.1.0-test".into(),
            kvm: isolab_host::facts::KvmKind::HardwareVtx,
            underneath: Default::default(),
            cgroup: "v2".into(),
            uid: 0,
            lab_version: "0.1.0".into(),
            commit: "abcdef".into(),
            date: "2026-01-01T00:00:00Z".into(),
            machine: Default::default(),
        },
        settings,
        skipped: vec![],
    }
}

/// Lab instance names are `<pid>-<n>` with `n` counted per Lab, so two Labs alive at once in one
/// process would collide: the tests of a binary that run VMs take turns through this.
static VM_TURN: Mutex<()> = Mutex::new(());

/// A Lab for a test that runs the `vm` backend, and this test's turn; the test fails, saying why,
/// where the backend cannot run.
pub fn vm_lab() -> (MutexGuard<'static, ()>, isolab_backends::lab::Lab) {
    use isolab_backends::{Availability, Backend};
    let turn = VM_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = isolab_backends::lab::Lab::new().expect("a work directory");
    lab.settings.timeout = Duration::from_secs(60);
    if let Availability::Unavailable(why) = isolab_backends::vm::Vm::default().availability(&lab) {
        panic!("the vm backend cannot run here, so this test cannot: {why}");
    }
    (turn, lab)
}
