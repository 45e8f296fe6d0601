//! Isolation: what each instance can see, from its probe.

use super::*;

/// The probe's facts, in the order to show them, each with one line that says what it tells.
pub const PROBE_FACTS: [(&str, &str); 24] = [
    ("kernel_release", "Release of the kernel that answers the workload's system calls."),
    ("kernel_version", "That kernel's build string: tells two builds of one release apart."),
    ("hostname", "The UTS name: a container or a guest gets a name of its own."),
    ("pid", "The workload's PID: 1 when it is the first process of a new PID namespace or guest."),
    ("pids_visible", "Processes listed in /proc: the whole machine's, or only its own."),
    ("mounts", "Mount points it sees: the host's table, or a private one."),
    ("root_fs", "File-system type at /: the host's disk, a private tmpfs, or the guest's root."),
    ("interfaces", "Network interfaces: the host's, or only the loopback of a fresh namespace."),
    ("root_entries", "What / holds: the host's whole tree, or just what the instance needs."),
    ("uid_map", "How its user IDs map onto the host's: \"0 0 4294967295\" means its root is the host's root."),
    ("root_on_host", "Whether its root is the host's root: what a file it makes setuid, or a way out, would be worth."),
    ("cap_eff", "Effective capabilities (hex bitmask): which privileged operations it may try."),
    ("no_new_privs", "1: no exec can ever gain privileges (set-uid programs stay powerless)."),
    ("seccomp", "Seccomp filters on its system calls: \"disabled\", or how many are stacked."),
    ("sensitive_calls", "Summary of the calls below (unshare: ok when any namespace flag was allowed)."),
    ("unshare_flags", "unshare with each namespace flag: \"user:ok\" lets it become root of namespaces of its own (EPERM: refused by seccomp or for a missing capability)."),
    ("clone_flags", "clone with each namespace flag: Docker's profile refuses them without CAP_SYS_ADMIN."),
    ("mount_tmpfs", "A tmpfs mounted in a mount namespace of its own, directly or as root of a new user namespace."),
    ("keyctl", "The kernel's keyrings, which are not namespaced."),
    ("bpf", "Creating a BPF map: the kernel's in-kernel virtual machine."),
    ("perf_event_open", "A performance counter on itself: a door to the kernel's perf code."),
    ("ptrace", "PTRACE_TRACEME: whether a process may be traced (Docker allows it from Linux 4.8)."),
    ("cgroup", "Its cgroup paths: \"/\" where a cgroup namespace hides the host's tree."),
    ("cpus", "CPUs it may run on: the host's, or the guest's virtual CPUs."),
];

/// Probe facts that say what the workload may do in the kernel that answers it, not what it
/// sees of the host's: a guest that may make namespaces in its own kernel shares nothing with
/// the host by it, so these never count as "same as the host's".
pub const CALL_FACTS: [&str; 8] = [
    "sensitive_calls",
    "unshare_flags",
    "clone_flags",
    "mount_tmpfs",
    "keyctl",
    "bpf",
    "perf_event_open",
    "ptrace",
];

/// One fact, side by side for every backend.
#[derive(Clone, Debug, PartialEq)]
pub struct IsolationRow {
    /// Probe key.
    pub key: String,
    /// What the fact tells, in one line.
    pub explanation: String,
    /// Each backend's value (in [`Isolation::backends`] order).
    pub values: Vec<Option<String>>,
    /// Whether each value equals the host's (the baseline's view, or the environment record's
    /// for kernel release and host name).
    pub same_as_host: Vec<bool>,
}

/// The most facts the isolation table shows beyond [`PROBE_FACTS`]: the probe reports a few
/// more (and a later probe may report more still), but a file whose runs name thousands of
/// facts did not come from it, and its table would have a row for each, times a column for each
/// backend. Facts past this many, in the order they first appear, are counted and left out.
pub const MAX_EXTRA_FACTS: usize = 64;

/// What each backend's workload could see.
#[derive(Clone, Debug, PartialEq)]
pub struct Isolation {
    /// Backend names, in table order.
    pub backends: Vec<String>,
    /// Names to print.
    pub labels: Vec<String>,
    /// Who answered the probe when it was not the workload's own kernel (fact `served_by`).
    pub served_by: Vec<Option<String>>,
    /// Which backend's values are the host's own view (the baseline's), if it ran the probe.
    pub host_view: Option<usize>,
    /// One row per fact.
    pub rows: Vec<IsolationRow>,
    /// Facts reported beyond [`MAX_EXTRA_FACTS`] more than [`PROBE_FACTS`], left out.
    pub left_out: usize,
    /// Where each backend's column is, and each fact's row.
    pub(super) column: HashMap<String, usize>,
    pub(super) row: HashMap<String, usize>,
}

impl Isolation {
    /// The value of `key` for `backend`.
    pub fn value(&self, backend: &str, key: &str) -> Option<&str> {
        let i = *self.column.get(backend)?;
        self.rows[*self.row.get(key)?].values[i].as_deref()
    }

    /// How many facts of `backend` equal the host's.
    pub fn shared_with_host(&self, backend: &str) -> Option<usize> {
        let i = *self.column.get(backend)?;
        Some(self.rows.iter().filter(|r| r.same_as_host[i]).count())
    }
}

/// The probe facts of every backend that ran `probe`; `None` when none did.
pub fn isolation(results: &Results) -> Option<Isolation> {
    let mut backends: Vec<String> = Vec::new();
    let mut facts: Vec<&RunRecord> = Vec::new();
    for backend in results.backend_names() {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        // The first measured sample with facts; a warm-up sample if that is all there is.
        let run = completed(results, backend)
            .find(|r| !r.probe.is_empty())
            .or_else(|| results.runs_of(backend).find(|r| !r.probe.is_empty()));
        if let Some(run) = run {
            backends.push(backend.clone());
            facts.push(run);
        }
    }
    if backends.is_empty() {
        return None;
    }
    // Each run's facts by key (the first of a key, as it was reported), so a cell is one
    // lookup, not a walk along the run's facts.
    let by_key: Vec<HashMap<&str, &str>> = facts
        .iter()
        .map(|r| {
            let mut m = HashMap::new();
            for (k, v) in &r.probe {
                m.entry(k.as_str()).or_insert(v.as_str());
            }
            m
        })
        .collect();
    let mut keys: Vec<String> = PROBE_FACTS.iter().map(|(k, _)| k.to_string()).collect();
    let mut seen: HashSet<&str> = PROBE_FACTS.iter().map(|(k, _)| *k).collect();
    let mut left_out = 0;
    for run in &facts {
        for (k, _) in &run.probe {
            if seen.insert(k.as_str()) {
                if keys.len() < PROBE_FACTS.len() + MAX_EXTRA_FACTS {
                    keys.push(k.clone());
                } else {
                    left_out += 1;
                }
            }
        }
    }
    let env = &results.header.environment;
    let host_view = results
        .baseline()
        .and_then(|p| backends.iter().position(|b| *b == p));
    let rows: Vec<IsolationRow> = keys
        .into_iter()
        .filter_map(|key| {
            let values: Vec<Option<String>> = by_key
                .iter()
                .map(|m| m.get(key.as_str()).map(|v| v.to_string()))
                .collect();
            if values.iter().all(Option::is_none) {
                return None;
            }
            let host: Option<String> = match host_view {
                Some(i) => values[i].clone(),
                None => match key.as_str() {
                    "kernel_release" => Some(env.kernel_release.clone()),
                    "hostname" => Some(env.hostname.clone()),
                    _ => None,
                },
            };
            let view = !CALL_FACTS.contains(&key.as_str());
            let same_as_host = values
                .iter()
                .enumerate()
                .map(|(i, v)| view && Some(i) != host_view && v.is_some() && *v == host)
                .collect();
            let explanation = PROBE_FACTS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("Reported by the probe.", |(_, e)| e)
                .to_string();
            Some(IsolationRow {
                key,
                explanation,
                values,
                same_as_host,
            })
        })
        .collect();
    Some(Isolation {
        labels: backends
            .iter()
            .map(|b| backends::label(results, b))
            .collect(),
        served_by: facts.iter().map(|r| r.facts.served_by.clone()).collect(),
        host_view,
        column: backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.clone(), i))
            .collect(),
        row: rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key.clone(), i))
            .collect(),
        backends,
        rows,
        left_out,
    })
}
