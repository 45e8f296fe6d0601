//! Whole reports rendered from hand-made results: what a reader must find in them.

use crate::fixtures::Fixture;
use crate::*;
use isolab_host::facts::KvmKind;
use isolab_results::{info, Family};
use std::fs;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("isolab-report-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `lab run all` directory where the container starts *slower* than the VM, with every
/// experiment present and an emulated QEMU.
fn campaign(root: &Path) -> Vec<Results> {
    let mut s = Fixture::new("startup");
    s.env(|e| e.kvm = KvmKind::NestedPvm);
    for round in 0..10u32 {
        let w = u64::from(round % 4) * 10_000;
        s.startup("process", round, 600_000 + w);
        s.startup("container", round, 30_000_000 + w);
        s.startup("vm", round, 5_000_000 + w);
        s.startup("qemu", round, 900_000_000 + w);
    }
    s.note("container", info::IMAGE_BYTES, "1445224")
        .note(
            "container",
            info::IMAGE,
            "tmpfs root holding one static executable",
        )
        .note("vm", info::IMAGE_BYTES, "40960")
        .note("qemu", info::IMAGE_BYTES, "9000000")
        .note("qemu", info::EMULATED, "tcg");

    let mut m = Fixture::new("memory");
    m.env(|e| e.kvm = KvmKind::NestedPvm);
    for round in 0..6 {
        for mib in [1u64, 16] {
            m.memory("process", round, mib, 300 << 10, (300 << 10) + (mib << 20));
            m.memory(
                "container",
                round,
                mib,
                700 << 10,
                (700 << 10) + (mib << 20),
            );
            m.memory("vm", round, mib, 6 << 20, (6 << 20) + (mib << 20));
        }
    }
    m.note("vm", info::GUEST_RAM_BYTES, "67108864")
        .note("vm", info::GUEST_TOUCHED_BYTES, "2097152")
        .note("vm", info::VMM_OVERHEAD_BYTES, "3145728");

    let mut t = Fixture::new("throughput");
    t.env(|e| e.kvm = KvmKind::NestedPvm);
    for round in 0..6 {
        let n = u64::from(round);
        for (b, cpu, sys) in [
            ("process", 1_000_000, 1_000_000),
            ("container", 1_000_000, 1_020_000),
            ("vm", 1_010_000, 40_000_000),
        ] {
            t.work(b, round, "cpu", 5000, cpu + n, "0x00000000000000aa");
            t.work(b, round, "syscall", 20000, sys + n, "0x00000000000000bb");
        }
    }

    let mut d = Fixture::new("density");
    d.env(|e| e.kvm = KvmKind::NestedPvm);
    for (i, n) in [1u32, 2, 4, 8, 16, 32, 64].iter().enumerate() {
        let w = i as u64 * 4096;
        d.density_step("container", *n, n / 2, u64::from(*n) * (700 << 10) + w);
        d.density_step("vm", *n, n / 2, u64::from(*n) * (6 << 20) + w);
    }
    d.density_end("container", 64, "maximum reached")
        .density_end("vm", 64, "maximum reached");

    let mut i = Fixture::new("isolation");
    i.env(|e| e.kvm = KvmKind::NestedPvm);
    i.probe(
        "process",
        &[
            ("kernel_release", "6.1.0-test"),
            ("hostname", "testhost"),
            ("pids_visible", "90"),
            ("interfaces", "lo,eth0"),
        ],
    )
    .probe(
        "container",
        &[
            ("kernel_release", "6.1.0-test"),
            ("hostname", "isolab-1"),
            ("pids_visible", "1"),
            ("interfaces", "lo"),
        ],
    )
    .probe(
        "vm",
        &[
            ("kernel_release", "none: bare guest, no kernel"),
            ("hostname", "none: bare guest"),
            ("pids_visible", "none: bare guest"),
            ("interfaces", "none: bare guest"),
        ],
    )
    .note("vm", info::SERVED_BY, "vmm");

    [
        ("startup", s),
        ("memory", m),
        ("throughput", t),
        ("density", d),
        ("isolation", i),
    ]
    .iter()
    .map(|(name, f)| f.write(&root.join(name)))
    .collect()
}

/// Every `src="…"` and `href="…"` value of `html`.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            out.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    out
}

fn ledger_row<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<tr id=\"claim-{id}\"")).unwrap();
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

#[test]
fn a_campaign_renders_one_self_contained_page() {
    let root = temp("campaign");
    let files = campaign(&root);
    let out = default_out_dir(&[root.as_path()]).unwrap();
    assert_eq!(out, root.join("report"));
    let index = render(&files, &out).unwrap();
    let html = fs::read_to_string(&index).unwrap();

    // Nothing from the network, no script: links are anchors or relative paths to the results.
    assert!(!html.contains("<script"));
    for link in links(&html) {
        assert!(
            link.starts_with('#') || (!link.contains("://") && !link.starts_with("//")),
            "external link {link}"
        );
    }
    assert!(
        html.contains("href=\"../startup/results.jsonl\""),
        "raw data links"
    );

    // Every plot, inline, with its axis titles; and the same SVG saved beside the page.
    for (file, axis) in [
        ("startup-waterfall.svg", "time since launch requested (ms)"),
        ("startup-distribution.svg", "(ms, log scale)"),
        ("memory.svg", "MiB held by the instance"),
        // One throughput plot per resource the kernels stress: cpu, then syscall.
        ("throughput-compute.svg", "rate ÷ process"),
        ("throughput-system-calls.svg", "rate ÷ process"),
        ("density-memory.svg", "instances alive at once"),
        ("density-launch.svg", "instances started per second"),
    ] {
        let svg = fs::read_to_string(out.join(file)).unwrap_or_else(|_| panic!("{file}"));
        assert!(svg.contains(axis), "{file} lacks its axis title {axis:?}");
        assert!(html.contains(&svg), "{file} is not inline in the page");
    }
    // process and vm start within 10× of the fastest, container and qemu do not: a zoom.
    assert!(out.join("startup-waterfall-fast.svg").exists());

    // The verdicts these figures imply.
    let verdict = |id| ledger_row(&html, id).to_string();
    // The only VM on KVM runs no OS, and the claims' reason is a guest OS: no data, with the
    // command that gives it (qemu booted one, but emulated).
    for id in ["startup", "memory", "density"] {
        assert!(
            verdict(id).contains(">no data<")
                && verdict(id).contains("cannot stand for one")
                && verdict(id).contains(&format!("`lab run {id} --backends")),
            "{}",
            verdict(id)
        );
    }
    assert!(
        verdict("performance").contains(">depends<"),
        "{}",
        verdict("performance")
    );
    assert!(
        verdict("kernel").contains(">supported<"),
        "{}",
        verdict("kernel")
    );
    assert!(
        verdict("isolation").contains(">supported<"),
        "{}",
        verdict("isolation")
    );
    // Image sizes are judged from `lab run images` only, never from a start-up run's bare vm.
    assert!(
        verdict("images").contains(">no data<")
            && verdict("images").contains("`lab run images --backends container,qemu`"),
        "{}",
        verdict("images")
    );
    assert!(
        verdict("native").contains(">supported<"),
        "{}",
        verdict("native")
    );
    // Who counts as what: the families of this report's backends, from their records.
    assert!(
        html.contains("<tr><td>VM, no OS</td><td>a virtual machine without an operating system"),
        "families table"
    );
    assert!(html.contains("<td>emulated</td><td>a machine whose CPU is emulated"));
    assert!(html.contains("(schema isolab-results/2)"));
    // Nested PVM is explained, and the emulated backend labelled as such wherever it appears.
    assert!(html.contains("no VT-x/AMD-V"));
    assert!(html.contains("qemu (emulated)"));
    let dist = fs::read_to_string(out.join("startup-distribution.svg")).unwrap();
    assert!(dist.contains("qemu (emulated)"));

    // The Markdown tables a student can paste.
    let md = fs::read_to_string(out.join("tables.md")).unwrap();
    assert!(md.contains("| backend | n | p50 ms |"));
    assert!(md.contains("## Claims ledger"));
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn rendering_twice_gives_the_same_bytes() {
    let root = temp("twice");
    let files = campaign(&root);
    let out = root.join("report");
    let first = fs::read(render(&files, &out).unwrap()).unwrap();
    let svg = fs::read(out.join("startup-waterfall.svg")).unwrap();
    let md = fs::read(out.join("tables.md")).unwrap();
    // Read the files again, as a later `lab report` would.
    let again = Results::read_all(&root).unwrap();
    assert_eq!(again.len(), 5);
    let second = fs::read(render(&again, &out).unwrap()).unwrap();
    assert!(first == second, "index.html differs between two renderings");
    assert_eq!(svg, fs::read(out.join("startup-waterfall.svg")).unwrap());
    assert_eq!(md, fs::read(out.join("tables.md")).unwrap());
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn sections_without_data_say_so() {
    let root = temp("partial");
    let mut s = Fixture::new("startup");
    s.env(|e| e.kvm = KvmKind::NestedPvm);
    for round in 0..3 {
        s.startup("process", round, 600_000);
        s.startup("container", round, 1_800_000);
    }
    let files = vec![s.write(&root.join("startup"))];
    let html = fs::read_to_string(render(&files, &root.join("report")).unwrap()).unwrap();
    for section in ["memory", "throughput", "density", "isolation"] {
        assert!(
            html.contains(&format!("No {section} results in this report")),
            "{section}"
        );
    }
    assert!(ledger_row(&html, "startup").contains("no data"));
    assert!(ledger_row(&html, "startup").contains("No VM has start-up samples here."));
    // A nested-PVM machine: said in the environment, but not in the summary, as no VM ran.
    assert!(!html.contains("Nested virtualization"));
    assert!(html.contains("Read the VM figures with care"));
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn hosts_are_labelled_and_never_mixed() {
    let root = temp("hosts");
    let file = |host: &str, container_ns: u64| {
        let mut s = Fixture::new("startup");
        s.env(|e| e.hostname = host.into());
        for round in 0..6 {
            s.startup("container", round, container_ns + u64::from(round));
            s.startup("vm-linux", round, 10_000_000 + u64::from(round));
        }
        s
    };
    let files = vec![
        file("laptop", 2_000_000).write(&root.join("laptop/startup")),
        file("server", 40_000_000).write(&root.join("server/startup")),
    ];
    let out = default_out_dir(&[&root.join("laptop"), &root.join("server")]).unwrap();
    assert_eq!(out, root.join("report"));
    let html = fs::read_to_string(render(&files, &out).unwrap()).unwrap();
    assert!(html.contains("<h3>on laptop</h3>") && html.contains("<h3>on server</h3>"));
    // One verdict per host, each from its own data.
    let rows: Vec<&str> = html
        .match_indices("<tr id=\"claim-startup-")
        .map(|(i, _)| &html[i..i + html[i..].find("</tr>").unwrap()])
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].contains("<td>laptop</td>") && rows[0].contains(">supported<"));
    assert!(rows[1].contains("<td>server</td>") && rows[1].contains("not supported"));
    assert!(out.join("startup-waterfall-laptop.svg").exists());
    assert!(out.join("startup-waterfall-server.svg").exists());
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn the_terminal_shows_each_experiment_s_table() {
    let root = temp("terminal");
    let files = campaign(&root);
    let text = |exp: &str| terminal(files.iter().find(|f| f.header.experiment == exp).unwrap());
    let s = text("startup");
    assert!(s.contains("p50 ms") && s.contains("qemu (emulated)"), "{s}");
    assert!(s.contains("no data"), "{s}");
    assert!(text("memory").contains("fixed MiB at ready (95% CI)"));
    assert!(text("throughput").contains("× process (95% CI)"));
    assert!(text("density").contains("MiB per instance"));
    let iso = text("isolation");
    assert!(iso.contains("6.1.0-test *"), "{iso}");
    assert!(iso.contains("served by"), "{iso}");
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_checksum_mismatch_is_loud() {
    let mut t = Fixture::new("throughput");
    for round in 0..3 {
        t.work("process", round, "cpu", 10, 1000, "0x01");
        t.work("container", round, "cpu", 10, 1000, "0x02");
    }
    let r = t.results();
    assert!(terminal(&r).contains("CHECKSUM MISMATCH on cpu ×10: process 0x01, container 0x02"));
}

#[test]
fn no_files_or_unrelated_places_are_refused() {
    assert!(matches!(
        render(&[], Path::new("/nonexistent")),
        Err(ReportError::NoResults)
    ));
    assert!(matches!(
        default_out_dir(&[
            Path::new("/tmp/a/results.jsonl"),
            Path::new("/var/b/results.jsonl")
        ]),
        Err(ReportError::NoCommonDir(_))
    ));
}

/// The shipped sample report: files of schema version 1 from a real `lab run all` on the
/// machine the README describes (nested PVM; process, container, oci:runc, the bare vm, qemu
/// under TCG).
fn sample() -> Vec<Results> {
    Results::read_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports/sample")).unwrap()
}

#[test]
fn version_1_files_keep_their_right_verdicts_and_say_which_vm() {
    let files = sample();
    assert!(files
        .iter()
        .all(|f| f.header.schema == isolab_results::v1::SCHEMA));
    let refs: Vec<&Results> = files.iter().collect();
    let ledger = claims::ledger(&refs);
    let of = |id: &str| ledger.iter().find(|a| a.claim.id == id).unwrap();
    use claims::Verdict::*;
    // What the ledger said of these files before families and typed facts, where it was right.
    for (id, verdict) in [
        ("performance", Depends),
        ("kernel", Supported),
        ("isolation", Supported),
        ("native", Depends),
    ] {
        assert_eq!(of(id).verdict, verdict, "{id}: {:?}", of(id));
    }
    // Start-up, memory and density give a guest OS as their reason, and the one VM that booted
    // one (qemu) was emulated: the bare vm, shown for comparison, never stands for it. Before
    // that rule these files gave "not supported" and "depends" from the bare vm alone.
    for id in ["startup", "memory", "density"] {
        assert_eq!(of(id).verdict, NoData, "{id}: {:?}", of(id));
        assert!(
            of(id).why.contains("cannot stand for one"),
            "{}",
            of(id).why
        );
        assert!(
            of(id).why.contains(&format!("`lab run {id} ")),
            "{}",
            of(id).why
        );
    }
    // Images: judged from `lab run images` (every backend on the same layered image), which
    // these files do not hold: the start-up run's sizes are named and set aside.
    assert_eq!(of("images").verdict, NoData, "{:?}", of("images"));
    assert!(of("images").why.contains("record such figures too"));
    // The start-up sentence shows the VM without an OS for comparison only.
    let s = of("startup");
    assert!(
        s.why
            .contains("the VM without an OS (vm) cannot stand for one"),
        "{}",
        s.why
    );
    assert!(!s
        .caveats
        .iter()
        .any(|c| c.ends_with("slower than on hardware virtualization.")));
    assert!(s
        .figures
        .iter()
        .any(|f| f.starts_with("vm (VM, no OS), cold start: median 1.36 ms")));
    // qemu ran under TCG: emulated in every file, density's included.
    for f in &files {
        if f.backends().iter().any(|b| b == "qemu") {
            assert_eq!(f.family("qemu"), Family::Emulated, "{}", f.path.display());
        }
    }
}

#[test]
fn the_terminal_carries_each_claim_s_caveats() {
    let files = sample();
    let startup = files
        .iter()
        .find(|f| f.header.experiment == "startup")
        .unwrap();
    let text = terminal(startup);
    let claims = &text[text.find("claims this file bears on:").unwrap()..];
    // The start-up claim and the images claim (whose sizes every file records), each with the
    // command that gives its data; no claim of another experiment.
    assert!(
        claims.contains("no data       A container starts faster"),
        "{claims}"
    );
    assert!(
        claims.contains("no data       Container images are small"),
        "{claims}"
    );
    // The command on one line, to be copied.
    assert!(
        claims.contains("`lab run images --backends container,qemu`"),
        "{claims}"
    );
    assert!(!claims.contains("isolates its workload"), "{claims}");
    // Its settings name each seed by what it seeds (a version-1 file calls the shuffle's `seed`).
    assert!(
        text.contains("shuffle seed 1 (--seed: the order of the backends in each round)")
            && text.contains("data seed 1513679373964673025 (the workloads' seed="),
        "{text}"
    );
    assert!(
        claims.contains("caveat: KVM here is nested PVM"),
        "{claims}"
    );
    assert!(
        claims.contains("caveat: Left out: qemu (emulated"),
        "{claims}"
    );
    // No line of the claims is wider than a reader's window.
    assert!(claims.lines().all(|l| l.chars().count() <= 100), "{claims}");
}

#[test]
fn text_from_results_cannot_inject_markdown_nor_drive_a_terminal() {
    let root = temp("escape");
    let mut s = Fixture::new("startup");
    s.env(|e| e.hostname = "<script>alert(1)</script>\u{1b}]0;owned\u{7}".into());
    for round in 0..6 {
        s.startup("process", round, 600_000);
        s.startup("container", round, 1_800_000);
    }
    s.note("container", info::IMAGE, "| *bold* [link](x) \u{1b}[2J")
        .note("container", info::IMAGE_BYTES, "4096");
    let files = vec![s.write(&root.join("startup"))];
    render(&files, &root.join("report")).unwrap();
    let md = fs::read_to_string(root.join("report/tables.md")).unwrap();
    assert!(
        !md.contains("<script>") && md.contains("&lt;script&gt;"),
        "{md}"
    );
    assert!(md.contains("\\| \\*bold\\* \\[link\\](x)"), "{md}");
    assert!(!md.contains('\u{1b}') && !md.contains('\u{7}'), "{md}");
    let text = terminal(&files[0]);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(text.contains("\\u{1b}]0;owned\\u{7}"), "{text}");
    fs::remove_dir_all(root).unwrap();
}

/// An interference file: a container and a VM, a CPU hog (the container's victim twice as
/// slow unlimited, as fast as alone limited) and a memory hog the OOM killer stops.
fn interference(root: &Path) -> Results {
    use isolab_results::{Config, Outcome};
    let mut f = Fixture::new("interference");
    for round in 0..6u32 {
        let alone = 100_000_000 + u64::from(round) * 1000;
        for b in ["container", "vm-linux"] {
            for (config, cpu) in [(Config::Unlimited, 2), (Config::Limited, 1)] {
                let ok = Outcome::Completed;
                f.neighbour(b, round, "cpu", config, None, alone, ok.clone(), &[]);
                let slow = if b == "container" { alone * cpu } else { alone };
                f.neighbour(
                    b,
                    round,
                    "cpu",
                    config,
                    Some(("cpu", 2)),
                    slow,
                    ok.clone(),
                    &[],
                );
                let facts: &[(&str, &str)] = if b == "container" {
                    &[(info::OOM_KILLS, "3"), (info::HOG_BYTES, "536870912")]
                } else {
                    &[(info::GUEST_OOM_KILLS, "1"), (info::HOG_BYTES, "150994944")]
                };
                f.neighbour(b, round, "cpu", config, Some(("oom", 1)), alone, ok, facts);
            }
        }
    }
    f.write(&root.join("interference"))
}

#[test]
fn an_interference_file_shows_slowdowns_who_stopped_a_failure_and_the_claim() {
    let root = temp("interference");
    let file = interference(&root);
    let rows = summary::interference(&file);
    let slow = |b: &str, a: &str, c: isolab_results::Config| {
        rows.iter()
            .find(|r| r.backend == b && r.aggressor == a && r.config == c)
            .and_then(|r| r.slowdown)
            .map(|s| s.median)
    };
    assert_eq!(
        slow("container", "cpu", isolab_results::Config::Unlimited),
        Some(2.0)
    );
    assert_eq!(
        slow("container", "cpu", isolab_results::Config::Limited),
        Some(1.0)
    );
    assert_eq!(
        slow("vm-linux", "cpu", isolab_results::Config::Unlimited),
        Some(1.0)
    );
    assert!(rows.iter().all(|r| r.survived()));
    // A victim's rate beside others is not a backend's throughput.
    assert!(summary::throughput(&file).is_empty());

    let text = terminal(&file);
    assert!(text.contains("slowdown, unlimited (95% CI)"), "{text}");
    assert!(
        text.contains("the OOM killer in the hog's own cgroup (18 kills)"),
        "{text}"
    );
    assert!(text.contains("the guest's OOM killer (6 kills)"), "{text}");
    assert!(!text.contains("× process"), "{text}");
    assert!(text.contains("One instance's load and failures"), "{text}");

    let out = root.join("report");
    let html = fs::read_to_string(render(std::slice::from_ref(&file), &out).unwrap()).unwrap();
    assert!(html.contains("<section id=\"interference\">"));
    assert!(out.join("interference-cpu.svg").exists());
    assert!(out.join("interference-oom.svg").exists());
    assert!(html.contains("No throughput results in this report"));
    let row = ledger_row(&html, "neighbours");
    assert!(row.contains("Limits were what held back: CPU"), "{row}");
    let md = fs::read_to_string(out.join("tables.md")).unwrap();
    assert!(md.contains("## Neighbours") && md.contains("what stopped the neighbour"));
    fs::remove_dir_all(root).unwrap();
}

/// Samples whose aggressor did not do its work (recorded `not_measured` by the experiment) give
/// no slowdown, no survival and no verdict: the condition says "not measured" and why, even
/// though the victim's times there would make a 2× slowdown.
#[test]
fn an_aggressor_that_did_nothing_gives_no_slowdown_only_its_reason() {
    use isolab_results::Config;
    let root = temp("interference-not-measured");
    let mut file = interference(&root);
    let why =
        "cpu aggressor 1: it used 0 ms of CPU time in the victim's 200 ms: nothing measurable";
    for r in &mut file.runs {
        let n = r.neighbours.as_mut().unwrap();
        if r.backend == "container" && n.aggressor.as_deref() == Some("cpu") {
            n.not_measured = Some(why.into());
        }
    }
    let rows = summary::interference(&file);
    for config in Config::ALL {
        let row = rows
            .iter()
            .find(|r| r.backend == "container" && r.aggressor == "cpu" && r.config == config)
            .unwrap();
        assert!(row.is_not_measured(), "{row:?}");
        assert_eq!(row.slowdown, None, "{row:?}");
        assert_eq!((row.n, row.failed), (0, 0));
        assert_eq!(row.not_measured, [(why.to_string(), 6)]);
    }
    // The other conditions are untouched.
    assert!(rows
        .iter()
        .filter(|r| r.backend != "container" || r.aggressor != "cpu")
        .all(|r| r.slowdown.is_some() && r.survived()));
    let text = terminal(&file);
    assert!(text.contains("not measured"), "{text}");
    assert!(
        text.contains(&format!("6 of 6 samples not measured: {why}")),
        "{text}"
    );
    fs::remove_dir_all(root).unwrap();
}
