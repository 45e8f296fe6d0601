//! The judge of "one instance's load and failures do not reach its neighbours".

use super::evidence::*;
use super::*;

/// How far a neighbour reached one backend's victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Not even without limits.
    Not,
    /// Without limits it did; under them it did not.
    HeldByLimits,
    /// It did, limits or not.
    Reached,
    /// Too few paired rounds to call.
    TooFew,
}
/// One part of the neighbours claim: a load or a failure.
struct NeighbourPart {
    aggressor: &'static str,
    /// The part's name in the ledger.
    name: &'static str,
    /// What the lab's limits do, and do not do, about it: the kernel's reason.
    lesson: &'static str,
}
const NEIGHBOUR_PARTS: [NeighbourPart; 5] = [
    NeighbourPart {
        aggressor: "cpu",
        name: "CPU",
        lesson: "Without a CPU limit the scheduler shares the CPUs among whoever is runnable; a \
                 limit (CFS bandwidth: a quota of CPU time per 100 ms period, after which the \
                 cgroup waits for the next period) caps what a hog can take, but reserves \
                 nothing for the victim. A VM's vCPUs are threads of its monitor, scheduled and \
                 limited the same way.",
    },
    NeighbourPart {
        aggressor: "mem",
        name: "memory bandwidth",
        lesson: "No cgroup limits memory bandwidth or the CPU's shared caches: every core's \
                 loads and stores go through the same memory controllers, and a streamer's \
                 cache lines evict the victim's. Only a CPU limit, by cutting the streamer's \
                 running time, cuts what it takes; a VM shares the same memory.",
    },
    NeighbourPart {
        aggressor: "disk",
        name: "disk",
        lesson: "Without an I/O limit the disk serves whoever queues the most requests; io.max \
                 (v1: blkio.throttle) delays a cgroup's requests once it has spent its bytes \
                 per second, so the writer's queue stays short.",
    },
    NeighbourPart {
        aggressor: "fork",
        name: "fork bomb",
        lesson: "A bomb stops where a limit refuses its forks: pids.max of its cgroup, or inside \
                 a VM the guest's own limit; the lab never runs one without (the unlimited \
                 configuration included: there it has the lab's safety limit). Without any, it \
                 would stop at the host's pid_max or when memory ran out, and every other \
                 process of the host would be refused with it.",
    },
    NeighbourPart {
        aggressor: "oom",
        name: "memory hog",
        lesson: "The OOM killer acts where memory ran out: in the hog's own cgroup at its \
                 memory.max, or inside a guest, whose RAM is all the hog can have. The lab \
                 never runs a hog without one of those (the unlimited configuration included).",
    },
];
/// The rows of `part` of one backend, at the most aggressors measured, by configuration.
fn part_rows<'a>(
    rows: &'a [summary::InterferenceRow],
    backend: &str,
    aggressor: &str,
) -> Vec<&'a summary::InterferenceRow> {
    let mine: Vec<&summary::InterferenceRow> = rows
        .iter()
        .filter(|r| r.backend == backend && r.aggressor == aggressor)
        .collect();
    let top = mine.iter().map(|r| r.count).max().unwrap_or(0);
    mine.into_iter().filter(|r| r.count == top).collect()
}
/// How far `aggressor` reached in one configuration's row: `Some(true)` clearly, `Some(false)`
/// clearly not, `None` too few rounds.
fn reached_in(row: &summary::InterferenceRow, failure: bool) -> Option<bool> {
    // Only samples whose aggressors did their work say anything; none: no verdict.
    if row.n == 0 {
        return None;
    }
    if failure && !row.survived() {
        return Some(true);
    }
    if !failure && row.failed + row.wrong > 0 {
        return Some(true);
    }
    match row.slowdown.as_ref().map(side) {
        Some(Side::Above) => Some(true),
        Some(Side::Same | Side::Below) => Some(false),
        Some(Side::TooFew) | None => None,
    }
}
/// Where one backend stands on one part, over its victims (the worst of them), and the figure
/// behind it.
fn reach(rows: &[&summary::InterferenceRow], failure: bool) -> (Reach, String) {
    use isolab_results::Config;
    let mut worst = Reach::Not;
    let mut texts = Vec::new();
    let mut victims: Vec<&str> = rows.iter().map(|r| r.victim.kernel.as_str()).collect();
    victims.dedup();
    // Each victim's first row in each configuration.
    let mut first: HashMap<(&str, Config), &summary::InterferenceRow> = HashMap::new();
    for r in rows {
        first
            .entry((r.victim.kernel.as_str(), r.config))
            .or_insert(r);
    }
    for v in victims {
        let of = |c: Config| first.get(&(v, c));
        let (u, l) = (of(Config::Unlimited), of(Config::Limited));
        let r = match (
            u.and_then(|u| reached_in(u, failure)),
            l.and_then(|l| reached_in(l, failure)),
        ) {
            (Some(false), _) => Reach::Not,
            (Some(true), Some(false)) => Reach::HeldByLimits,
            (Some(true), Some(true)) => Reach::Reached,
            (Some(true), None) if l.is_none() => Reach::Reached,
            _ => Reach::TooFew,
        };
        let rank = |r: Reach| match r {
            Reach::Not => 0,
            Reach::HeldByLimits => 1,
            Reach::TooFew => 2,
            Reach::Reached => 3,
        };
        if rank(r) > rank(worst) {
            worst = r;
        }
        let one = |x: Option<&&summary::InterferenceRow>| {
            x.map_or(format::NONE.to_string(), |x| {
                if let Some(why) = x.is_not_measured().then(|| x.not_measured_text()).flatten() {
                    return why;
                }
                let slow = x
                    .slowdown
                    .as_ref()
                    .map_or(format::NONE.into(), format::ratio);
                if failure || !x.survived() {
                    format!(
                        "{slow}, victim completed {}/{}",
                        x.n - x.failed - x.wrong,
                        x.n
                    )
                } else {
                    slow
                }
            })
        };
        let count = u.or(l).map_or(0, |x| x.count);
        texts.push(format!(
            "{v} victim beside {count}: unlimited {}; limited {}",
            one(u),
            one(l)
        ));
    }
    (worst, texts.join("; "))
}
/// The judge of the `neighbours` claim.
#[derive(Debug)]
pub(super) struct Neighbours;

impl Judge for Neighbours {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let rows: Vec<Vec<summary::InterferenceRow>> = files
            .files
            .iter()
            .map(|r| summary::interference(r))
            .collect();
        let with_rows: Vec<HashSet<&str>> = rows
            .iter()
            .map(|rows| rows.iter().map(|x| x.backend.as_str()).collect())
            .collect();
        let s = sides(files, |i, _, b| with_rows[i].contains(b));
        if s.containers.is_empty() && s.sandboxes.is_empty() && s.vms.is_empty() {
            return Assessment::no_data(
                claim,
                if s.emulated.is_empty() {
                    "No container and no VM ran beside aggressors here.".to_string()
                } else {
                    format!(
                        "Only an emulated machine ({}) ran beside aggressors here, and emulation \
                         says nothing about how VMs share a host.",
                        names(&s.emulated)
                    )
                },
            )
            .with(vm_caveats(files, &s, true));
        }
        let deciding: Vec<&Entrant> = s
            .containers
            .iter()
            .chain(&s.sandboxes)
            .chain(&s.vms)
            .collect();
        let who = |e: &Entrant| match e.kind {
            Some(k) => format!("{}{} ({})", files.prefix(e.file), e.name, k.noun()),
            None => format!("{}{}", files.prefix(e.file), e.name),
        };
        let mut figures = Vec::new();
        let mut parts = Vec::new();
        let mut needed: Vec<String> = Vec::new();
        for part in NEIGHBOUR_PARTS {
            let failure = matches!(part.aggressor, "fork" | "oom");
            let mut standing: Vec<(&Entrant, Reach)> = Vec::new();
            for e in &deciding {
                let mine = part_rows(&rows[e.file], &e.name, part.aggressor);
                if mine.is_empty() {
                    continue;
                }
                let (r, text) = reach(&mine, failure);
                figures.push(format!("{}, {}: {text}", who(e), part.name));
                if failure {
                    for row in &mine {
                        let what = row.stability.describe(part.aggressor);
                        if !what.is_empty() {
                            figures.push(format!(
                                "{}, {} ({}): stopped by {what}",
                                who(e),
                                part.name,
                                row.config.name()
                            ));
                        }
                    }
                }
                standing.push((e, r));
            }
            if standing.is_empty() {
                continue;
            }
            let called: Vec<&(&Entrant, Reach)> = standing
                .iter()
                .filter(|(_, r)| *r != Reach::TooFew)
                .collect();
            let list = |want: &[Reach]| {
                let names: Vec<&str> = standing
                    .iter()
                    .filter(|(_, r)| want.contains(r))
                    .map(|(e, _)| e.name.as_str())
                    .collect();
                and_list(&names)
            };
            let (verdict, outcome) = if called.is_empty() {
                (
                    Verdict::NoData,
                    format!("too few paired rounds to call (at least {MIN_PAIRS})"),
                )
            } else {
                let reached = called.iter().filter(|(_, r)| *r == Reach::Reached).count();
                let verdict = if reached == 0 {
                    Verdict::Supported
                } else if reached == called.len() {
                    Verdict::NotSupported
                } else {
                    Verdict::Depends
                };
                let mut out = Vec::new();
                let not = list(&[Reach::Not]);
                let held = list(&[Reach::HeldByLimits]);
                let reached = list(&[Reach::Reached]);
                let few = list(&[Reach::TooFew]);
                if !not.is_empty() {
                    out.push(format!("did not reach the victim in {not}, even unlimited"));
                }
                if !held.is_empty() {
                    out.push(format!(
                        "reached it unlimited but not under limits in {held}"
                    ));
                    needed.push(part.name.to_string());
                }
                if !reached.is_empty() {
                    out.push(format!("reached it, limits or not, in {reached}"));
                }
                if !few.is_empty() {
                    out.push(format!("too few rounds to call in {few}"));
                }
                (verdict, out.join("; "))
            };
            parts.push(Part {
                resource: part.name,
                verdict,
                why: format!(
                    "{}: {outcome}. {}",
                    format::capitalise(part.name),
                    part.lesson
                ),
            });
        }
        let judged: Vec<&Part> = parts
            .iter()
            .filter(|p| p.verdict != Verdict::NoData)
            .collect();
        if judged.is_empty() {
            let mut a = Assessment::no_data(
                claim,
                format!(
                    "Too few paired rounds to call any slowdown (at least {MIN_PAIRS} are needed; \
                     run with --runs {MIN_PAIRS} or more)."
                ),
            );
            a.figures = figures;
            a.parts = parts;
            return a;
        }
        let of = |v: Verdict| {
            judged
                .iter()
                .filter(|p| p.verdict == v)
                .map(|p| p.resource)
                .collect::<Vec<_>>()
        };
        let (yes, no) = (of(Verdict::Supported), of(Verdict::NotSupported));
        let verdict = if yes.len() == judged.len() {
            Verdict::Supported
        } else if no.len() == judged.len() {
            Verdict::NotSupported
        } else {
            Verdict::Depends
        };
        let mut why = match verdict {
            Verdict::Supported => format!(
                "No neighbour's {} reached the victim, in any backend measured.",
                and_list(&yes)
            ),
            Verdict::NotSupported => format!(
                "Every neighbour's {} reached the victim in every backend measured.",
                and_list(&no)
            ),
            _ => {
                let mixed = of(Verdict::Depends);
                let mut w = String::new();
                if !yes.is_empty() {
                    w.push_str(&format!(
                        "A neighbour's {} did not reach the victim. ",
                        and_list(&yes)
                    ));
                }
                if !no.is_empty() {
                    w.push_str(&format!("Its {} did, in every backend. ", and_list(&no)));
                }
                if !mixed.is_empty() {
                    w.push_str(&format!(
                        "Its {} reached the victim in some backends and not in others. ",
                        and_list(&mixed)
                    ));
                }
                w.trim_end().to_string()
            }
        };
        if !needed.is_empty() {
            why.push_str(&format!(
                " Limits were what held back: {}.",
                and_list(&needed)
            ));
        }
        let mut caveats = vm_caveats(files, &s, true);
        caveats.push(format!(
            "The fork bomb and the memory hog ran under the lab's own limits in both \
             configurations (at most {} processes, {} of memory): a neighbour's failure without \
             any limit would be the whole host's, which the lab does not risk.",
            isolab_results::SAFETY_PIDS,
            format::bytes(isolab_results::SAFETY_MEMORY_BYTES as f64)
        ));
        caveats.push(
            "Limits are ceilings, not reservations: a victim under a CPU limit still competes for \
             its share with everything else on the host."
                .into(),
        );
        Assessment {
            claim,
            verdict,
            figures,
            why,
            caveats,
            parts,
        }
    }
}
