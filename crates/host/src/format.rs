//! Numbers as people read them: one place decides how every table, plot and sentence of a
//! report writes times, sizes, rates and ratios, so they always agree.

use crate::stats::{Summary, N_TOO_SMALL};

/// Milliseconds with three decimals (`1.785`): start-up times span 0.5 ms to seconds, and three
/// decimals keep microseconds visible for the fastest.
pub fn ms(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}

/// A duration with its unit, chosen for the size: `850 µs`, `1.79 ms`, `2.40 s`.
pub fn duration(ns: f64) -> String {
    let a = ns.abs();
    if a < 1e3 {
        format!("{ns:.0} ns")
    } else if a < 1e6 {
        format!("{} µs", sig3(ns / 1e3))
    } else if a < 1e9 {
        format!("{} ms", sig3(ns / 1e6))
    } else {
        format!("{} s", sig3(ns / 1e9))
    }
}

/// Three significant digits, without a useless fraction: 1.23, 12.3, 123, 1234.
pub fn sig3(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Bytes in binary units (KiB, MiB, GiB), three significant digits.
pub fn bytes(b: f64) -> String {
    let a = b.abs();
    if a < 1024.0 {
        format!("{b:.0} B")
    } else if a < 1024.0 * 1024.0 {
        format!("{} KiB", sig3(b / 1024.0))
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{} MiB", sig3(b / (1024.0 * 1024.0)))
    } else {
        format!("{} GiB", sig3(b / (1024.0 * 1024.0 * 1024.0)))
    }
}

/// Mebibytes as a bare number, for columns headed "MiB".
pub fn mib(b: f64) -> String {
    format!("{:.2}", b / (1024.0 * 1024.0))
}

/// A rate per second in SI units: `12.3 M`, `4.56 G`.
pub fn rate(per_s: f64) -> String {
    let a = per_s.abs();
    if a >= 1e9 {
        format!("{} G", sig3(per_s / 1e9))
    } else if a >= 1e6 {
        format!("{} M", sig3(per_s / 1e6))
    } else if a >= 1e3 {
        format!("{} k", sig3(per_s / 1e3))
    } else {
        sig3(per_s)
    }
}

/// A ratio summary: median and its 95% CI, `2.41× (2.19–2.67)`; `2.41× (n too small)` from
/// too few pairs for an interval ([`Summary::ci`]).
pub fn ratio(s: &Summary) -> String {
    format!("{}× ({})", sig3(s.median), interval(s, sig3))
}

/// A summary's median and CI through `f`: `1.79 ms (CI 1.62–1.96 ms)`, the unit written once
/// when both ends share it; `1.79 ms (CI: n too small)` from too few samples.
pub fn with_ci(s: &Summary, f: impl Fn(f64) -> String) -> String {
    match s.ci() {
        Some(_) => format!("{} (CI {})", f(s.median), interval(s, f)),
        None => format!("{} (CI: {N_TOO_SMALL})", f(s.median)),
    }
}

/// A summary's 95% CI through `f`: `1.62–1.96 ms` (the unit once when both ends share it), or
/// "n too small" when the samples are too few for one ([`Summary::ci`]).
pub fn interval(s: &Summary, f: impl Fn(f64) -> String) -> String {
    let Some((low, high)) = s.ci() else {
        return N_TOO_SMALL.to_string();
    };
    let (lo, hi) = (f(low), f(high));
    let unit = |t: &str| {
        t.rsplit_once(' ')
            .map(|(n, u)| (n.to_string(), u.to_string()))
    };
    match (unit(&lo), unit(&hi)) {
        (Some((l, a)), Some((h, b))) if a == b => format!("{l}–{h} {a}"),
        _ => format!("{lo}–{hi}"),
    }
}

/// "–" for a missing figure.
pub const NONE: &str = "–";

/// Text from a results file, safe to print on a terminal. A results file is data, possibly
/// from another machine: a host name or a failure reason holding an escape sequence (`ESC [`
/// ...) would otherwise move the cursor, recolour or retitle the reader's terminal, and a
/// carriage return or a right-to-left override could make a line read as something else.
/// Every control character but the line feed, and every bidirectional-text control, is written
/// as a visible escape (`\u{1b}`).
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n') || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Text from a results file, safe to put in Markdown (`tables.md`): it reads as the same text
/// once rendered. HTML's special characters become entities (a host name of `<script>` stays
/// text), Markdown's punctuation is escaped with a backslash (no stray emphasis, code, links or
/// table cells), a line break becomes `<br>`, and a leading list or heading marker is escaped.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in printable(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push_str("<br>"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    // A paragraph that starts like a heading, a list item or a numbered item ("# ", "- ",
    // "+ ", "12. ", "3) ").
    let marker = |rest: &str| rest.is_empty() || rest.starts_with(' ');
    let digits = out.chars().take_while(char::is_ascii_digit).count();
    if out.starts_with(['#', '-', '+']) && marker(&out[1..]) {
        out.insert(0, '\\');
    } else if digits > 0 && out[digits..].starts_with(['.', ')']) && marker(&out[digits + 1..]) {
        out.insert(digits, '\\');
    }
    out
}

/// `s` with its first letter in capitals.
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
}

/// The last non-empty lines of a program's error output, on one line.
pub fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "no error message".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_the_size() {
        assert_eq!(duration(850_000.0), "850 µs");
        assert_eq!(duration(1_786_000.0), "1.79 ms");
        assert_eq!(duration(32_112_000.0), "32.1 ms");
        assert_eq!(duration(2_400_000_000.0), "2.40 s");
        assert_eq!(bytes(1_445_224.0), "1.38 MiB");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes((3u64 << 30) as f64), "3.00 GiB");
        assert_eq!(rate(12_300_000.0), "12.3 M");
        assert_eq!(ms(1_785_000.0), "1.785");
        let mut s = Summary::of(&[1.2e6; 6]).unwrap();
        (s.ci_low, s.ci_high) = (1.1e6, 1.3e6);
        assert_eq!(with_ci(&s, duration), "1.20 ms (CI 1.10–1.30 ms)");
        (s.ci_low, s.ci_high) = (0.9e6, 1.3e6);
        assert_eq!(with_ci(&s, duration), "1.20 ms (CI 900 µs–1.30 ms)");
        assert_eq!(with_ci(&s, mib), "1.14 (CI 0.86–1.24)");
        assert_eq!(interval(&s, ms), "0.900–1.300");
    }

    /// One round of samples prints no interval: "363–363 ms" would claim a certainty that a
    /// single sample cannot give.
    #[test]
    fn too_few_samples_print_no_interval() {
        let one = Summary::of(&[363e6]).unwrap();
        assert_eq!(with_ci(&one, duration), "363 ms (CI: n too small)");
        assert_eq!(interval(&one, duration), "n too small");
        let ratios = Summary::of(&[2.0, 2.1, 2.2, 2.0, 2.1]).unwrap();
        assert_eq!(ratio(&ratios), "2.10× (n too small)");
        let six = Summary::of(&[2.0, 2.1, 2.2, 2.0, 2.1, 2.2]).unwrap();
        assert!(!ratio(&six).contains("too small"), "{}", ratio(&six));
    }

    #[test]
    fn results_text_cannot_drive_a_terminal_or_inject_markdown() {
        assert_eq!(
            printable("host\u{1b}[2J\r\tx\n"),
            "host\\u{1b}[2J\\u{d}\\u{9}x\n"
        );
        assert_eq!(printable("abc\u{202e}cba"), "abc\\u{202e}cba");
        assert_eq!(
            printable("vm (VM, no OS) 1.35 ms ×"),
            "vm (VM, no OS) 1.35 ms ×"
        );
        assert_eq!(
            markdown("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(
            markdown("a|b *c* [x](y) `z`"),
            "a\\|b \\*c\\* \\[x\\](y) \\`z\\`"
        );
        assert_eq!(markdown("# h"), "\\# h");
        assert_eq!(markdown("- x"), "\\- x");
        assert_eq!(markdown("-0.46"), "-0.46");
        assert_eq!(markdown("12. x"), "12\\. x");
        assert_eq!(markdown("one\ntwo"), "one<br>two");
        assert_eq!(markdown("6.1.0 (host)"), "6.1.0 (host)");
    }
}
