//! Helpers shared by the integration tests: what the lab leaves behind, counted.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The kernels' result for `spec` computed natively, in the test process (kernels that need no
/// I/O): what every backend must reproduce bit for bit.
pub fn native(spec: &isolab::workload::Spec) -> isolab::workload::Output {
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

/// Host state a lab run could leak.
#[derive(Debug, PartialEq, Eq)]
pub struct HostState {
    /// Lines of our mount table.
    pub mounts: usize,
    /// Every directory under the cgroup hierarchies' isolab bases.
    pub cgroups: BTreeSet<PathBuf>,
    /// Our child processes.
    pub children: BTreeSet<i32>,
    /// Entries of the test's temp directory.
    pub temp_entries: BTreeSet<String>,
    /// Our open file descriptors.
    pub fds: usize,
}

impl HostState {
    pub fn now(temp: &Path) -> HostState {
        HostState {
            mounts: fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .count(),
            cgroups: cgroup_dirs(),
            children: children(),
            temp_entries: fs::read_dir(temp)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            fds: fs::read_dir("/proc/self/fd").unwrap().count(),
        }
    }
}

/// Cgroup directories below an `isolab...` directory, in every hierarchy.
fn cgroup_dirs() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                // Instance cgroups live *under* a directory named isolab...; the bases stay.
                let under_base = dir
                    .components()
                    .any(|c| c.as_os_str().to_string_lossy().starts_with("isolab"));
                if under_base && ours_or_orphaned(&path) {
                    out.insert(path.clone());
                }
                stack.push(path);
            }
        }
    }
    out
}

/// Instance cgroups are named `<lab pid>-<n>`. Count those of this process, and those whose
/// lab has exited (a leak); leave alone those of other labs still running on the machine.
fn ours_or_orphaned(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match name.split('-').next().and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) => {
            pid == std::process::id() as i32 || !Path::new(&format!("/proc/{pid}")).exists()
        }
        None => true,
    }
}

/// PIDs whose parent is this process.
fn children() -> BTreeSet<i32> {
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
    lab: &isolab::lab::Lab,
    names: &[String],
    out: &Path,
) -> isolab::results::Results {
    use isolab::experiment::density;
    let outcome = density::run(
        lab,
        Some(names),
        &density::DensitySettings {
            max: 16,
            reserve_bytes: 1 << 30,
            idle_window: std::time::Duration::from_millis(100),
            limits: isolab::backend::Limits::default(),
            out: out.to_path_buf(),
            progress: false,
        },
    )
    .unwrap();
    let results = isolab::results::Results::read(&outcome.results).unwrap();
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
    results: &isolab::results::Results,
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

/// Every run completed, and every kernel computed the same checksum on each of `names`.
pub fn checksums_agree(results: &isolab::results::Results, names: &[String], kernels: usize) {
    use std::collections::BTreeMap;
    let mut by_kernel: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in &results.runs {
        assert_eq!(r.outcome, isolab::results::Outcome::Completed, "{r:?}");
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
        assert_eq!(sums.len(), names.len(), "{kernel}: every backend ran");
        let first = sums.values().next().unwrap();
        assert!(
            sums.values().all(|s| s == first),
            "{kernel}: checksums differ: {sums:?}"
        );
    }
}
