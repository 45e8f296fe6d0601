//! The rules of evidence every judge applies: the files of one host and who is who in them,
//! pairs of samples by round, when a difference counts, and how a verdict is worded.

use super::*;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// The files of one host, and who is who in them.

/// The files of one host that bear on a claim, and what the claim's judges ask of each file
/// more than once, computed on the first asking.
pub(crate) struct Files<'a> {
    /// What the claim's judge reads: the files as given, or — for an experiment of samples in
    /// rounds — all of them [`pool`]ed into one.
    pub(super) files: Vec<&'a Results>,
    /// The files as given, for what holds of any of them (the machine they ran on).
    pub(super) sources: Vec<&'a Results>,
    /// Per file: the workloads whose checksums disagree, each with its caveat.
    pub(super) checks: Vec<OnceCell<Vec<(String, String)>>>,
    /// Per file: the names of those workloads.
    pub(super) failed: Vec<OnceCell<HashSet<String>>>,
    /// Per file: each backend's workloads in the throughput table, in its order.
    pub(super) workloads: Vec<OnceCell<HashMap<String, Vec<WorkloadRecord>>>>,
}

impl<'a> Files<'a> {
    /// The judge reads `files`, which hold the samples of `sources`.
    pub(super) fn new(files: Vec<&'a Results>, sources: Vec<&'a Results>) -> Files<'a> {
        fn cells<T>(n: usize) -> Vec<OnceCell<T>> {
            (0..n).map(|_| OnceCell::new()).collect()
        }
        Files {
            checks: cells(files.len()),
            failed: cells(files.len()),
            workloads: cells(files.len()),
            files,
            sources,
        }
    }

    /// "dir: " before a figure when the claim reads several files, so each figure says where it
    /// comes from.
    pub(super) fn prefix(&self, file: usize) -> String {
        if self.files.len() < 2 {
            return String::new();
        }
        format!("{}: ", dir_name(self.files[file]))
    }

    /// Workloads of `file` whose checksums disagree between backends, and the caveat for each.
    pub(super) fn failed_checks(&self, file: usize) -> &[(String, String)] {
        self.checks[file].get_or_init(|| {
            summary::checksum_mismatches(self.files[file])
                .into_iter()
                .map(|m| {
                    let caveat = format!(
                        "Left out: {}{} — its checksums disagree ({}), so something computed the \
                         wrong thing and none of its samples decides this verdict.",
                        self.prefix(file),
                        m.workload,
                        m.each()
                    );
                    (m.workload, caveat)
                })
                .collect()
        })
    }

    /// The caveats of every workload left out for a failed check.
    pub(super) fn check_caveats(&self) -> Vec<String> {
        (0..self.files.len())
            .flat_map(|i| self.failed_checks(i).iter().map(|(_, c)| c.clone()))
            .collect()
    }

    /// True when a run's workload passed its check in its file.
    pub(super) fn passed(&self, file: usize) -> impl Fn(&RunRecord) -> bool + '_ {
        let bad = self.failed[file].get_or_init(|| {
            self.failed_checks(file)
                .iter()
                .map(|(w, _)| w.clone())
                .collect()
        });
        move |r| bad.is_empty() || !bad.contains(&summary::workload_name(&r.workload))
    }

    /// The workloads of `backend` in `file`'s throughput table, in the table's order.
    pub(super) fn throughput_workloads(&self, file: usize, backend: &str) -> &[WorkloadRecord] {
        self.workloads[file]
            .get_or_init(|| summary::throughput_workloads(self.files[file]))
            .get(backend)
            .map_or(&[], Vec::as_slice)
    }
}

/// Experiments whose samples come in rounds, each pairing only within its round: the ledger
/// judges each as one set of samples, however many files hold them ([`pool`]).
pub(super) const POOLED: [&str; 4] = ["startup", "memory", "throughput", "interference"];

/// The files of one sampled experiment on one host, as one set of samples.
///
/// A sample pairs only with the samples of its own round, and a round belongs to one run of the
/// lab: round 3 of one run and round 3 of another ran at different times. A run is known by
/// when its file was started (its header's date, on its host), so each sample's round becomes
/// (run, round) — whichever file holds it: a run's rounds split over two files still pair —
/// and every sample goes into one pool, from which every figure and every verdict is computed
/// once. The pool is put in one order (by run, round, place in the round, then the record
/// itself), so the same samples give the same verdict, the same figures and the same words
/// whether they are in one file or split over several, in any order; and a comparison that six
/// rounds can call is called whatever file each round is in — where judging file by file would
/// call nothing from two files of three rounds, and disagree with itself about files that
/// differ by chance. A sample held twice (a file named twice, or copied) counts once.
///
/// What each file says of its machine (the kind of KVM) stays with [`Files::sources`].
pub(super) fn pool(files: &[&Results]) -> Results {
    // A run is known by its host and the second its file was started. Two labs started in the
    // same second (they may run side by side) would look like one run: their files are told
    // apart because both hold a sample of the same backend at the same place of the same round
    // (a run's split files never do), and each of their files is then a run of its own.
    fn run_of(r: &Results) -> (&str, &str) {
        let env = &r.header.environment;
        (env.date.as_str(), env.hostname.as_str())
    }
    // A place in a run: (run, round, backend, place in the round, warm-up).
    type Slot<'a> = ((&'a str, &'a str), u32, &'a str, u32, bool);
    let mut slots: HashMap<Slot, (&Path, Vec<u8>)> = HashMap::new();
    let mut ambiguous: HashSet<(&str, &str)> = HashSet::new();
    for r in files {
        for run in &r.runs {
            let slot = (
                run_of(r),
                run.round,
                run.backend.as_str(),
                run.order,
                run.warmup,
            );
            let record = serde_json::to_vec(run).unwrap_or_default();
            match slots.get(&slot) {
                Some((path, other)) if *path != r.path.as_path() && *other != record => {
                    ambiguous.insert(run_of(r));
                }
                Some(_) => {}
                None => {
                    slots.insert(slot, (r.path.as_path(), record));
                }
            }
        }
    }
    drop(slots);
    // Each sample with its run, its round and the whole record (its phases carry the host
    // clock's nanoseconds: two samples are the same only if they are the same record).
    type Key<'a> = ((&'a str, &'a str), &'a Path, u32, bool, u32);
    let mut all: Vec<(Key, Vec<u8>, &RunRecord)> = Vec::new();
    for r in files {
        let run = run_of(r);
        let file = if ambiguous.contains(&run) {
            r.path.as_path()
        } else {
            Path::new("")
        };
        for record in &r.runs {
            let key = (run, file, record.round, !record.warmup, record.order);
            all.push((key, serde_json::to_vec(record).unwrap_or_default(), record));
        }
    }
    all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    all.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    // Rounds numbered 0, 1, ... in the pool's order, one per (run, round).
    let mut rounds: HashMap<((&str, &str), &Path, u32), u32> = HashMap::new();
    let runs: Vec<RunRecord> = all
        .iter()
        .map(|((run, file, round, ..), _, record)| {
            let next = rounds.len() as u32;
            let mut record = (*record).clone();
            record.round = *rounds.entry((*run, *file, *round)).or_insert(next);
            record
        })
        .collect();
    // The header of the earliest run stands for all (the ledger reads its experiment and its
    // machine, the same in every file of one host and experiment).
    let first = files
        .iter()
        .min_by(|a, b| {
            let key = |r: &Results| (r.header.environment.date.clone(), r.path.clone());
            key(a).cmp(&key(b))
        })
        .expect("a pool of at least one file");
    Results::new(
        first.path.clone(),
        first.header.clone(),
        runs,
        vec![],
        vec![],
        None,
    )
}

/// One backend of one file, as a claim sees it.
#[derive(Clone, Debug)]
pub(super) struct Entrant {
    pub(super) file: usize,
    pub(super) name: String,
    pub(super) label: String,
    pub(super) family: Family,
    /// For VMs and emulated machines: what kind of VM.
    pub(super) kind: Option<VmKind>,
}

/// The backends of a host's files that have data for a claim, by the part they play.
#[derive(Default)]
pub(super) struct Sides {
    pub(super) containers: Vec<Entrant>,
    pub(super) sandboxes: Vec<Entrant>,
    /// VMs on KVM, any kind.
    pub(super) vms: Vec<Entrant>,
    pub(super) emulated: Vec<Entrant>,
    /// Backends whose results do not say what they are.
    pub(super) unplaced: Vec<Entrant>,
    /// (file, name) of every container, sandbox and VM.
    pub(super) shown: HashSet<(usize, String)>,
}

pub(super) fn sides(files: &Files, has_data: impl Fn(usize, &Results, &str) -> bool) -> Sides {
    let mut s = Sides::default();
    for (file, r) in files.files.iter().enumerate() {
        for name in r.backend_names() {
            if !has_data(file, r, name) {
                continue;
            }
            let family = r.family(name);
            let e = Entrant {
                file,
                label: crate::backends::label(r, name),
                kind: family.vm_kind(r.fact(name, |f| f.guest_os)),
                name: name.clone(),
                family,
            };
            let side = match family {
                Family::Container => &mut s.containers,
                Family::Sandbox => &mut s.sandboxes,
                f if f.is_vm() => &mut s.vms,
                Family::Emulated => {
                    s.emulated.push(e);
                    continue;
                }
                Family::Unknown => {
                    s.unplaced.push(e);
                    continue;
                }
                _ => continue,
            };
            s.shown.insert((file, name.clone()));
            side.push(e);
        }
    }
    s
}

impl Sides {
    /// True when `name` of `file` takes part (as a container, sandbox or VM): its figures are
    /// shown with the claim.
    pub(super) fn shows(&self, file: usize, name: &str) -> bool {
        self.shown.contains(&(file, name.to_string()))
    }
}

pub(super) fn has_runs(
    results: &Results,
    backend: &str,
    keep: impl Fn(&RunRecord) -> bool,
) -> bool {
    summary::completed(results, backend).any(keep)
}

/// Why a comparison of containers with VMs cannot be made, if it cannot.
pub(super) fn missing(s: &Sides, what: &str) -> Option<String> {
    if s.containers.is_empty() && s.vms.is_empty() && s.emulated.is_empty() {
        Some(format!("No container and no VM has {what} here."))
    } else if s.containers.is_empty() {
        Some(format!("No container has {what} here."))
    } else if s.vms.is_empty() && !s.emulated.is_empty() {
        Some(format!(
            "Only an emulated machine ({}) has {what} here, and emulation says nothing about \
             how VMs run.",
            names(&s.emulated)
        ))
    } else if s.vms.is_empty() {
        Some(format!("No VM has {what} here."))
    } else {
        None
    }
}

pub(super) fn names(entrants: &[Entrant]) -> String {
    let mut seen = HashSet::new();
    let out: Vec<&str> = entrants
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| seen.insert(*n))
        .collect();
    out.join(", ")
}

/// The caveat of nested PVM in the ledger: short, as it repeats on every VM timing claim. It
/// says which VMs it slows, so no reader concludes that a VM without an OS would start faster
/// elsewhere.
pub const NESTED_PVM_SHORT: &str = "KVM here is nested PVM (no VT-x/AMD-V): a guest's kernel \
    mode is emulated in software, so whatever runs a guest kernel is far slower here than on \
    hardware virtualization; a VM without an OS runs only in user mode and is barely affected.";

/// The caveat of a machine that is itself emulated (QEMU TCG with emulated VT-x/AMD-V): its VMs
/// run on real KVM code, but on a CPU that is software.
pub const EMULATED_HOST_SHORT: &str = "VMs ran on KVM inside an emulated machine (its VT-x/AMD-V \
    is software), so VM timings here are an emulator's, not a laptop's; compare ratios, not times.";

/// The plain-words caveat of nested PVM, for the summary and environment sections.
pub const NESTED_PVM: &str = "This machine has no VT-x/AMD-V: its KVM is nested PVM, which runs \
    a guest's user mode natively but emulates the guest's kernel mode in software. A guest kernel's \
    boot, and anything that enters a guest kernel, are much slower here than on a laptop or server \
    with hardware virtualization; a VM without an OS, which runs only in user mode, is barely \
    affected.";

/// Caveats of a comparison with VMs: what was left out, and (for timings) nested PVM.
pub(super) fn vm_caveats(files: &Files, s: &Sides, timing: bool) -> Vec<String> {
    let mut c = Vec::new();
    if timing
        && !s.vms.is_empty()
        && files
            .sources
            .iter()
            .any(|r| r.header.environment.kvm == KvmKind::NestedPvm)
    {
        c.push(NESTED_PVM_SHORT.to_string());
    } else if timing
        && !s.vms.is_empty()
        && files
            .sources
            .iter()
            .any(|r| r.header.environment.underneath.is_emulator())
    {
        c.push(EMULATED_HOST_SHORT.to_string());
    }
    if !s.emulated.is_empty() {
        c.push(format!(
            "Left out: {} (emulated; TCG translates every guest instruction in software).",
            names(&s.emulated)
        ));
    }
    if !s.unplaced.is_empty() {
        c.push(format!(
            "Left out: {} (its results do not say what kind of backend it is, e.g. whether it \
             was emulated).",
            names(&s.unplaced)
        ));
    }
    c.extend(files.check_caveats());
    c
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

/// How a ratio compares with 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// Clearly below 1.
    Below,
    /// Clearly above 1.
    Above,
    /// Not clearly different.
    Same,
    /// Too few samples to call.
    TooFew,
}

impl Side {
    pub(super) fn opposite(self) -> Side {
        match self {
            Side::Below => Side::Above,
            Side::Above => Side::Below,
            other => other,
        }
    }
}

/// Where a paired ratio falls (rule 1 of the module docs).
pub(super) fn side(r: &Summary) -> Side {
    if r.n < MIN_PAIRS {
        Side::TooFew
    } else if r.ci_high < 1.0 && r.median < 1.0 - MARGIN {
        Side::Below
    } else if r.ci_low > 1.0 && r.median > 1.0 + MARGIN {
        Side::Above
    } else {
        Side::Same
    }
}

/// One comparison: a container (or sandbox) against a VM (or the baseline).
#[derive(Clone, Debug)]
pub(super) struct Pair {
    /// Who is compared with whom, on what (to find the same pair in two files).
    pub(super) key: String,
    pub(super) file: usize,
    /// The VM's kind, when the other side is a VM.
    pub(super) kind: Option<VmKind>,
    /// The VM (or baseline) compared against.
    pub(super) other: String,
    pub(super) side: Side,
    /// The resource of the workload compared, when pairs are per workload.
    pub(super) resource: Option<Resource>,
    /// For the figures: backends labelled with their kind.
    pub(super) text: String,
    /// For sentences, which name the kind already: backends by name.
    pub(super) brief: String,
}

pub(super) fn too_few(n: usize) -> String {
    format!(
        " — {n} paired round{}, fewer than {MIN_PAIRS}: not called",
        if n == 1 { "" } else { "s" }
    )
}

/// `a ÷ b` of a run metric, paired by round (and by workload when `per_workload`), within the
/// file both are in, on the samples that passed their check.
pub(super) fn ratio_pairs(
    files: &Files,
    a: &Entrant,
    b: &Entrant,
    per_workload: bool,
    keep: impl Fn(&RunRecord) -> bool + Copy,
    metric: impl Fn(&RunRecord) -> Option<f64> + Copy,
) -> Vec<Pair> {
    if a.file != b.file {
        return vec![];
    }
    let r = files.files[a.file];
    let passed = files.passed(a.file);
    let groups: Vec<Option<&WorkloadRecord>> = if per_workload {
        files
            .throughput_workloads(a.file, &a.name)
            .iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    // Each side read once: `a`'s samples by workload, `b`'s by the pairing key (which holds
    // the workload, so a sample of `a` meets only `b`'s of the same workload).
    let ok = |x: &&RunRecord| keep(x) && passed(x);
    let base = summary::Pairing::of(
        summary::completed(r, &b.name).filter(ok),
        summary::pair_key,
        metric,
    );
    let mut mine: HashMap<Option<&WorkloadRecord>, Vec<&RunRecord>> = HashMap::new();
    for x in summary::completed(r, &a.name).filter(ok) {
        mine.entry(per_workload.then_some(&x.workload))
            .or_default()
            .push(x);
    }
    let mut out = Vec::new();
    for w in groups {
        let Some(runs) = mine.get(&w) else {
            continue;
        };
        let ratios = base.ratios(runs.iter().copied(), summary::pair_key, metric);
        let Some(s) = Summary::of(&ratios) else {
            continue;
        };
        let on = w.map_or(String::new(), |w| {
            format!(" on {}", summary::workload_name(w))
        });
        let side = side(&s);
        let prefix = files.prefix(a.file);
        let ratio = format::ratio(&s);
        let mut text = format!("{prefix}{} ÷ {}{on}: {ratio}", a.label, b.label);
        let mut brief = format!("{prefix}{} ÷ {}{on} {ratio}", a.name, b.name);
        if side == Side::TooFew {
            text.push_str(&too_few(s.n));
            brief.push_str(&too_few(s.n));
        }
        out.push(Pair {
            key: format!("{} ÷ {}{on}", a.name, b.name),
            file: a.file,
            kind: b.kind,
            other: b.name.clone(),
            side,
            resource: w.and_then(summary::resource_of),
            text,
            brief,
        });
    }
    out
}

/// Which entrants a comparison pairs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Only those of the same file: samples are paired by round, and rounds are a file's.
    File,
    /// Any two of the host's files (independent samples, such as density ladders).
    Host,
}

/// Every pair of `subjects` with `others` (of the same file, or of any, as `scope` says) that
/// `pair` can compare, subject by subject.
pub(super) fn pairs_with(
    subjects: &[Entrant],
    others: &[Entrant],
    scope: Scope,
    pair: impl Fn(&Entrant, &Entrant) -> Vec<Pair>,
) -> Vec<Pair> {
    // Each file's others, so that pairing within files does not walk the other files' too.
    let mut by_file: HashMap<usize, Vec<&Entrant>> = HashMap::new();
    if scope == Scope::File {
        for b in others {
            by_file.entry(b.file).or_default().push(b);
        }
    }
    let all: Vec<&Entrant> = others.iter().collect();
    let mut out = Vec::new();
    for a in subjects {
        let mine: &[&Entrant] = match scope {
            Scope::File => by_file.get(&a.file).map_or(&[], Vec::as_slice),
            Scope::Host => &all,
        };
        for b in mine {
            out.extend(pair(a, b));
        }
    }
    out
}

/// How a set of comparisons decides a claim.
pub(super) struct Decision {
    pub(super) verdict: Verdict,
    /// The pairs that decided (called, with the VMs the claim is about).
    pub(super) basis: Vec<Pair>,
    /// Pairs of the basis that had too few rounds.
    pub(super) too_few: Vec<Pair>,
    /// Pairs with VMs the claim is not about (without an OS, when its reason is the guest
    /// OS), shown for comparison.
    pub(super) aside: Vec<Pair>,
}

/// Why a set of comparisons decides nothing.
pub(super) enum Undecided {
    /// Every comparison that could decide had too few paired rounds.
    TooFew(Vec<Pair>),
    /// The claim's reason is the guest OS, and no VM with one was compared: the pairs with
    /// the other VMs, for comparison only.
    NoGuestOs(Vec<Pair>),
}

/// Decide from `pairs` where the claim wants `want` (rules 1 and 4 of the module docs).
/// `guest_os_reason`: the claim's reason is the guest OS, so only VMs with one decide it — a VM
/// without an OS, or one whose results do not say, never stands for them, whichever way its
/// figures point.
pub(super) fn decide(
    pairs: Vec<Pair>,
    want: Side,
    guest_os_reason: bool,
) -> Result<Decision, Undecided> {
    let (basis, aside): (Vec<Pair>, Vec<Pair>) = if guest_os_reason {
        pairs
            .into_iter()
            .partition(|p| p.kind == Some(VmKind::GuestOs))
    } else {
        (pairs, vec![])
    };
    if guest_os_reason && basis.is_empty() {
        return Err(Undecided::NoGuestOs(aside));
    }
    let (too_few, called): (Vec<Pair>, Vec<Pair>) =
        basis.into_iter().partition(|p| p.side == Side::TooFew);
    if called.is_empty() {
        return Err(Undecided::TooFew(too_few));
    }
    let hits = called.iter().filter(|p| p.side == want).count();
    let verdict = if hits == called.len() {
        Verdict::Supported
    } else if hits == 0 {
        Verdict::NotSupported
    } else {
        Verdict::Depends
    };
    Ok(Decision {
        verdict,
        basis: called,
        too_few,
        aside,
    })
}

impl Decision {
    /// The VMs that decided, in words: "the VM without an OS (vm)", "every VM with a guest OS
    /// (qemu, vm-linux)", "every VM measured (vm: VM without an OS; vm-linux: VM with a guest
    /// OS)". `any` writes "any" instead of "every" for a plural.
    pub(super) fn vms(&self, any: bool) -> String {
        let mut vms: Vec<(&str, Option<VmKind>)> = Vec::new();
        let mut seen = HashSet::new();
        for p in &self.basis {
            if seen.insert(p.other.as_str()) {
                vms.push((&p.other, p.kind));
            }
        }
        let list = vms.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let every = if any { "any" } else { "every" };
        let one_kind = vms.iter().all(|(_, k)| *k == vms[0].1);
        match (vms[0].1, vms.len()) {
            (Some(k), 1) => format!("the {} ({list})", k.noun()),
            (Some(k), _) if one_kind => format!("{every} {} ({list})", k.noun()),
            _ => format!(
                "{every} VM measured ({})",
                vms.iter()
                    .map(|(n, k)| format!("{n}: {}", k.map_or("VM", VmKind::noun)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }

    pub(super) fn list(&self, keep: impl Fn(Side) -> bool) -> String {
        briefs(self.basis.iter().filter(|p| keep(p.side)))
    }

    /// What a reader must know besides the verdict: VMs left aside; pairs too short to call;
    /// the same pair disagreeing between files.
    pub(super) fn addenda(&self) -> String {
        let mut out = String::new();
        if !self.aside.is_empty() {
            out.push_str(&format!(
                " {} do not decide a claim whose reason is the guest OS; for comparison: {}.",
                format::capitalise(&kinds(&self.aside)),
                briefs(&self.aside)
            ));
        }
        if !self.too_few.is_empty() {
            out.push_str(&format!(
                " Not called, too few rounds: {}.",
                briefs(&self.too_few)
            ));
        }
        // The same pair in other files (ladders, which are never pooled): each pair is looked
        // for among those of its own key.
        let mut by_key: HashMap<&str, Vec<&Pair>> = HashMap::new();
        for p in &self.basis {
            by_key.entry(p.key.as_str()).or_default().push(p);
        }
        // How many pairs of each key came so far: the ones after `p` are `same[n..]`.
        let mut so_far: HashMap<&str, usize> = HashMap::new();
        for p in &self.basis {
            let same = &by_key[p.key.as_str()];
            let n = so_far.entry(p.key.as_str()).or_insert(0);
            *n += 1;
            if let Some(q) = same[*n..]
                .iter()
                .find(|q| q.file != p.file && q.side != p.side)
            {
                out.push_str(&format!(
                    " The files of this host disagree on {}: {} and {}.",
                    p.key, p.brief, q.brief
                ));
            }
        }
        out
    }
}

/// The kinds of the VMs `pairs` compare with, in words: "VMs without an OS and VMs whose
/// results do not say whether they run a guest OS".
fn kinds(pairs: &[Pair]) -> String {
    let mut k: Vec<&str> = Vec::new();
    for p in pairs {
        let noun = p.kind.map_or("VMs", VmKind::plural);
        if !k.contains(&noun) {
            k.push(noun);
        }
    }
    and_list(&k)
}

/// The assessment of a claim its comparisons cannot decide ([`Undecided`]): too few rounds, or
/// no VM with a guest OS where the guest OS is the claim's reason. `what` names its data
/// ("start-up samples"), `emulated` the VMs left out for being emulated, `figures` and
/// `caveats` what the claim would have shown.
pub(super) fn undecided(
    claim: Claim,
    why: Undecided,
    what: &str,
    emulated: &[Entrant],
    figures: Vec<String>,
    caveats: Vec<String>,
) -> Assessment {
    let aside = match why {
        Undecided::TooFew(few) => return not_called(claim, few),
        Undecided::NoGuestOs(aside) => aside,
    };
    // One phrase per kind of VM, naming its backends: "the VM without an OS (vm, vm/restored)".
    let mut kinds: Vec<(&str, Vec<&str>)> = Vec::new();
    for p in &aside {
        let noun = p.kind.map_or("VM", VmKind::noun);
        match kinds.iter_mut().find(|(n, _)| *n == noun) {
            Some((_, names)) if names.contains(&p.other.as_str()) => {}
            Some((_, names)) => names.push(&p.other),
            None => kinds.push((noun, vec![&p.other])),
        }
    }
    let vms: Vec<String> = kinds
        .iter()
        .map(|(noun, names)| format!("the {noun} ({})", names.join(", ")))
        .collect();
    let emulated = match names(emulated) {
        n if n.is_empty() => String::new(),
        n => format!(" ({n} booted one, but emulated: see the caveats)"),
    };
    let mut text = format!(
        "No VM with a guest OS has {what} here{emulated}, and a guest OS is the claim's reason"
    );
    if !vms.is_empty() {
        text.push_str(&format!(
            ": {} cannot stand for one. For comparison only: {}",
            and_list(&vms),
            briefs(&aside)
        ));
    }
    text.push_str(&format!(". {}", claim.gives));
    Assessment {
        claim,
        verdict: Verdict::NoData,
        figures,
        why: text,
        caveats,
        parts: vec![],
    }
}

/// Comparisons for a sentence, `; `-separated.
pub(super) fn briefs<'a>(pairs: impl IntoIterator<Item = &'a Pair>) -> String {
    pairs
        .into_iter()
        .map(|p| p.brief.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A paired claim's assessment: its sentence, what a reader must also know about the decision
/// ([`Decision::addenda`]), and where the sandboxes stand.
pub(super) fn assess(
    claim: Claim,
    d: &Decision,
    why: String,
    sandboxes: &str,
    figures: Vec<String>,
    caveats: Vec<String>,
) -> Assessment {
    Assessment {
        claim,
        verdict: d.verdict,
        figures,
        why: format!("{why}{}{sandboxes}", d.addenda()),
        caveats,
        parts: vec![],
    }
}

/// When no pair could be called: the claim has no data, and says why.
pub(super) fn not_called(claim: Claim, too_few: Vec<Pair>) -> Assessment {
    let mut a = Assessment::no_data(
        claim,
        format!(
            "Too few paired rounds to call any difference (at least {MIN_PAIRS} are needed; run \
             with --runs {MIN_PAIRS} or more)."
        ),
    );
    a.figures = too_few.into_iter().map(|p| p.text).collect();
    a
}

/// Where each sandbox stands between the containers and the VMs, in one sentence:
/// `better`/`worse` are the claim's words for the container's side and the VM's side.
pub(super) fn sandboxes_stand(
    s: &Sides,
    want: Side,
    words: (&str, &str),
    scope: Scope,
    pair: impl Fn(&Entrant, &Entrant) -> Vec<Pair>,
    figures: &mut Vec<String>,
) -> String {
    let mut out = String::new();
    for sb in &s.sandboxes {
        let vs_c = pairs_with(std::slice::from_ref(sb), &s.containers, scope, &pair);
        let vs_v = pairs_with(std::slice::from_ref(sb), &s.vms, scope, &pair);
        if vs_c.is_empty() && vs_v.is_empty() {
            continue;
        }
        let stand = |pairs: &[Pair], against: &str| {
            let called: Vec<&Pair> = pairs.iter().filter(|p| p.side != Side::TooFew).collect();
            if called.is_empty() {
                return format!("not compared with {against}");
            }
            let all = |side: Side| called.iter().all(|p| p.side == side);
            if all(want) {
                format!("clearly {} than {against}", words.0)
            } else if all(want.opposite()) {
                format!("clearly {} than {against}", words.1)
            } else if all(Side::Same) {
                format!("not clearly different from {against}")
            } else {
                format!("mixed against {against}")
            }
        };
        out.push_str(&format!(
            " {} is a sandbox (a kernel of its own, in user space), counted as neither: {} and \
             {}.",
            sb.label,
            stand(&vs_c, "the containers"),
            stand(&vs_v, "the VMs")
        ));
        figures.extend(vs_c.iter().chain(&vs_v).map(|p| p.text.clone()));
    }
    out
}

/// Judge `pairs` resource by resource with `judge`, in [`Resource::ALL`]'s order.
pub(super) fn by_resource(
    pairs: &[Pair],
    judge: impl Fn(Resource, Vec<Pair>) -> Part,
) -> Vec<Part> {
    Resource::ALL
        .into_iter()
        .filter_map(|r| {
            let of: Vec<Pair> = pairs
                .iter()
                .filter(|p| p.resource == Some(r))
                .cloned()
                .collect();
            (!of.is_empty()).then(|| judge(r, of))
        })
        .collect()
}
/// The probe's view of every backend that ran it, file by file.
pub(super) struct Probed<'a> {
    pub(super) entrant: Entrant,
    /// The side it is on.
    pub(super) role: Role,
    pub(super) iso: std::rc::Rc<summary::Isolation>,
    pub(super) host_release: &'a str,
}
impl Probed<'_> {
    pub(super) fn release(&self) -> Option<&str> {
        self.iso.value(&self.entrant.name, "kernel_release")
    }
    pub(super) fn shares_host_kernel(&self) -> bool {
        self.release() == Some(self.host_release)
    }
    pub(super) fn root_on_host(&self) -> Option<&str> {
        self.iso.value(&self.entrant.name, "root_on_host")
    }
    pub(super) fn shared(&self) -> usize {
        self.iso.shared_with_host(&self.entrant.name).unwrap_or(0)
    }
    pub(super) fn family(&self) -> Family {
        self.entrant.family
    }
    pub(super) fn is(&self, role: Role) -> bool {
        self.role == role
    }
}
/// The side of the probe claims a backend is on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Container,
    Sandbox,
    Vm,
    Unplaced,
}
pub(super) fn probed<'a>(files: &Files<'a>) -> (Vec<Probed<'a>>, Sides) {
    let mut out = Vec::new();
    let mut s = Sides::default();
    for (file, r) in files.files.iter().enumerate() {
        let Some(iso) = summary::isolation(r) else {
            continue;
        };
        let iso = std::rc::Rc::new(iso);
        for name in &iso.backends {
            let family = r.family(name);
            let e = Entrant {
                file,
                name: name.clone(),
                label: crate::backends::label(r, name),
                family,
                kind: family.vm_kind(r.fact(name, |f| f.guest_os)),
            };
            let (side, role) = match family {
                Family::Container => (&mut s.containers, Role::Container),
                Family::Sandbox => (&mut s.sandboxes, Role::Sandbox),
                // What a guest can see does not depend on how fast its instructions run:
                // emulated machines count as VMs here.
                f if f.is_vm() || f == Family::Emulated => (&mut s.vms, Role::Vm),
                Family::Unknown => (&mut s.unplaced, Role::Unplaced),
                _ => continue,
            };
            side.push(e.clone());
            out.push(Probed {
                entrant: e,
                role,
                iso: iso.clone(),
                host_release: &r.header.environment.kernel_release,
            });
        }
    }
    (out, s)
}
/// `a`, `a and b`, `a, b and c`.
pub(super) fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => format!(
            "{} and {}",
            rest.iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

pub(super) fn rate(r: &RunRecord) -> Option<f64> {
    summary::rate(r).map(|x| x.0)
}
