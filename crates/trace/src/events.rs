//! One line of tracefs's `trace` file, read back into an [`Event`].
//!
//! The kernel prints each recorded event as text when the file is read:
//!
//! ```text
//!   runc:[1:CHILD]-4952    [001] ..... 24818.527532: sys_unshare(unshare_flags: 0x6c020000)
//!             runc-4942    [000] ..... 24818.498243: sched_process_fork: comm=runc pid=4942 child_comm=runc child_pid=4943
//!   └ comm ───────┘ └tid┘  └cpu┘ flags └ seconds.micros on the instance's trace_clock ┘
//! ```
//!
//! The `comm` at the start is looked up when the file is *read* (the kernel keeps a small table of
//! recent names), so it may be the task's last name, not its name at the time: a program's name is
//! therefore followed through the events themselves ([`crate::phases::Programs`]). A system call's
//! entry prints as `sys_<name>(args)`; it is given its tracepoint's name, `sys_enter_<name>`.

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The task (thread) id, as the host sees it.
    pub tid: u32,
    /// The name the `trace` file printed (see the module's note).
    pub comm: String,
    /// When, in nanoseconds on the instance's clock (`CLOCK_MONOTONIC`; tracefs prints µs).
    pub t_ns: u64,
    /// The tracepoint: `sched_process_exec`, `sys_enter_pivot_root`, `kvm_entry`, ...
    pub name: String,
    /// The rest of the line: `key=value` fields, or a system call's `name: value` arguments.
    pub fields: String,
}

impl Event {
    /// The value of field `key` (`key=value` or `key: value`), if present.
    pub fn field(&self, key: &str) -> Option<&str> {
        let f = self.fields.as_str();
        for sep in ["=", ": "] {
            let pat = format!("{key}{sep}");
            let mut from = 0;
            while let Some(i) = f[from..].find(&pat) {
                let at = from + i;
                // A whole field name: at the start, or after a space or '('.
                let starts = at == 0 || matches!(f.as_bytes()[at - 1], b' ' | b'(' | b',');
                if starts {
                    let rest = &f[at + pat.len()..];
                    let end = rest.find([' ', ',', ')']).unwrap_or(rest.len());
                    return Some(&rest[..end]);
                }
                from = at + pat.len();
            }
        }
        None
    }

    /// A numeric field (`0x…` hexadecimal or decimal).
    pub fn number(&self, key: &str) -> Option<u64> {
        let v = self.field(key)?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    }
}

/// Read one line of the `trace` file; `None` for comments (`#`) and anything else.
pub fn parse_line(line: &str) -> Option<Event> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    // The CPU column, `[003]`, ends the `comm-tid` part; a comm may itself hold '[' (runc's
    // `runc:[1:CHILD]`), so look for a bracket holding only digits.
    let bytes = line.as_bytes();
    let mut cpu = None;
    let mut i = 0;
    while let Some(open) = line[i..].find(" [").map(|o| o + i) {
        let close = line[open + 2..].find(']').map(|c| c + open + 2)?;
        if close > open + 2 && bytes[open + 2..close].iter().all(u8::is_ascii_digit) {
            cpu = Some((open, close));
            break;
        }
        i = open + 2;
    }
    let (open, close) = cpu?;
    let (comm, tid) = line[..open].trim().rsplit_once('-')?;
    let tid = tid.parse().ok()?;
    // After the CPU: the flags, then `seconds.micros:`, then the event.
    let rest = line[close + 1..].trim_start();
    let (_flags, rest) = rest.split_once(' ')?;
    let (stamp, rest) = rest.trim_start().split_once(": ")?;
    let (secs, micros) = stamp.split_once('.')?;
    let t_ns = secs.parse::<u64>().ok()? * 1_000_000_000 + parse_fraction_ns(micros)?;
    let (name, fields) = match rest.split_once(": ") {
        Some((name, fields)) if !name.contains('(') => (name.to_string(), fields.to_string()),
        _ => {
            // `sys_unshare(unshare_flags: 0x…)`: a system call's entry.
            let (call, args) = rest.split_once('(')?;
            let call = call.strip_prefix("sys_")?;
            (
                format!("sys_enter_{call}"),
                args.trim_end_matches(')').to_string(),
            )
        }
    };
    Some(Event {
        tid,
        comm: comm.to_string(),
        t_ns,
        name,
        fields,
    })
}

/// The fractional part of a timestamp (`228381` µs, or nanoseconds if 9 digits) in ns.
fn parse_fraction_ns(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(n * 10u64.pow(9 - digits.len() as u32))
}

/// Every event of a `trace` file's text, in the order printed (time order).
pub fn parse(text: &str) -> Vec<Event> {
    text.lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_call_entry_a_fork_and_a_bracketed_comm() {
        let e = parse_line(
            "  runc:[1:CHILD]-4952    [001] ..... 24818.527532: sys_unshare(unshare_flags: 0x6c020000)",
        )
        .unwrap();
        assert_eq!(e.comm, "runc:[1:CHILD]");
        assert_eq!(e.tid, 4952);
        assert_eq!(e.t_ns, 24_818_527_532_000);
        assert_eq!(e.name, "sys_enter_unshare");
        assert_eq!(e.number("unshare_flags"), Some(0x6c02_0000));

        let f = parse_line(
            "            runc-4942    [000] .N... 24818.498243: sched_process_fork: comm=runc pid=4942 child_comm=runc child_pid=4943",
        )
        .unwrap();
        assert_eq!(f.name, "sched_process_fork");
        assert_eq!(f.number("child_pid"), Some(4943));
        assert_eq!(f.number("pid"), Some(4942));
        assert_eq!(f.field("child_comm"), Some("runc"));
        assert_eq!(parse_line("# tracer: nop"), None);
        assert_eq!(parse_line("garbage"), None);
    }
}
