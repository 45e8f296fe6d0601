//! The identical-workload contract, host side: the programs `lab` carries.
//!
//! `lab` carries the static workload executable inside itself ([`WORKLOAD_ELF`], built by
//! `build.rs` from `crates/workload/`), so `lab` alone can put it into a container's root file
//! system or a guest's initramfs; and the bare microVM guest ([`GUEST_ELF`], from `crates/guest/`). The kernels and the [`Spec`] come from the `isolab-kernels` crate, which
//! the bare microVM guest links too.
//!
//! [`Event`] parses the marker lines every backend ends up producing (see
//! `isolab_kernels::wire`).

pub use isolab_kernels::net::warm_up_round_trips;
use isolab_kernels::wire;
pub use isolab_kernels::{Kernel, Output, Resource, Spec};
use std::net::Ipv4Addr;
use std::path::Path;

/// The static `isolab-workload` executable (x86-64 Linux, `+crt-static`).
pub static WORKLOAD_ELF: &[u8] = include_bytes!(env!("ISOLAB_WORKLOAD_PATH"));

/// The bare guest (`crates/guest/`, built by build.rs): a static x86-64 ELF linked at 1 MiB.
pub static GUEST_ELF: &[u8] = include_bytes!(env!("ISOLAB_GUEST_PATH"));

/// The git commit this lab was built from, when build.rs could ask git.
pub const COMMIT: Option<&str> = option_env!("ISOLAB_COMMIT");

/// What an instance is given besides its spec, as its workload sees it (paths inside it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Given<'a> {
    /// The `io` kernel's directory.
    pub scratch: Option<&'a Path>,
    /// The disk kernels' disk.
    pub disk: Option<&'a Path>,
    /// The network kernels' peer.
    pub peer: Option<Ipv4Addr>,
    /// A Linux guest's own address and prefix length, which its `/init` sets up.
    pub net: Option<(Ipv4Addr, u8)>,
    /// The libraries to load before the kernel runs (an image's).
    pub libs: Option<&'a Path>,
    /// The field's tools the lab carries into the instance, for the tool kernels (`fio`,
    /// `netperf`, `iperf3`: see [`Kernel::is_tool`]).
    pub tools: Option<&'a Path>,
}

/// The command-line words that hand `spec` to the workload executable, with the report on fd
/// `report`, the host's go-ahead on fd `control`, and what it is `given`.
pub fn argv(spec: &Spec, report: i32, control: i32, given: &Given) -> Vec<String> {
    let mut words: Vec<String> = spec.to_string().split(' ').map(str::to_string).collect();
    words.push(format!("report={report}"));
    words.push(format!("control={control}"));
    if let Some(dir) = given.scratch {
        words.push(format!("scratch={}", dir.display()));
    }
    if let Some(disk) = given.disk {
        words.push(format!("disk={}", disk.display()));
    }
    if let Some(peer) = given.peer {
        words.push(format!("peer={peer}"));
    }
    if let Some((ip, prefix)) = given.net {
        words.push(format!("net={ip}/{prefix}"));
    }
    if let Some(libs) = given.libs {
        words.push(format!("libs={}", libs.display()));
    }
    if let Some(tools) = given.tools {
        words.push(format!("tools={}", tools.display()));
    }
    words
}

/// What a field tool printed (see [`Kernel::is_tool`]), joined from the `info` facts its
/// instance reported ([`wire::TOOL_OUTPUT`] pieces, in key order); `None` when there are none.
pub fn tool_output<'a>(info: impl IntoIterator<Item = (&'a String, &'a String)>) -> Option<String> {
    let prefix = format!("{}.", wire::TOOL_OUTPUT);
    let mut pieces: Vec<(&String, &String)> = info
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    if pieces.is_empty() {
        return None;
    }
    pieces.sort();
    Some(pieces.into_iter().map(|(_, v)| v.as_str()).collect())
}

/// One marker line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A backend phase edge.
    Phase {
        /// Phase name, e.g. `namespaces`.
        name: String,
        /// Host monotonic time, when the line carried it.
        t_ns: Option<u64>,
    },
    /// The workload's `main` began.
    Ready {
        /// Host monotonic time.
        t_ns: Option<u64>,
    },
    /// The kernel's set-up finished.
    Start {
        /// Host monotonic time.
        t_ns: Option<u64>,
    },
    /// The kernel finished.
    Done {
        /// Host monotonic time.
        t_ns: Option<u64>,
        /// What it computed.
        output: Output,
    },
    /// A failure inside the instance.
    Error {
        /// Where.
        step: String,
        /// `errno=` if the step was a system call.
        errno: Option<i32>,
        /// `msg=` otherwise.
        msg: Option<String>,
    },
    /// One probe fact.
    Probe {
        /// Fact name.
        key: String,
        /// Fact value.
        value: String,
    },
    /// A fact reported by the instance's runtime (a VMM, say).
    Info {
        /// Fact name.
        key: String,
        /// Fact value.
        value: String,
    },
}

impl Event {
    /// Parse one line; `None` for lines that are not isolab markers (console noise).
    pub fn parse(line: &str) -> Option<Event> {
        let mut words = line.trim_end().split(' ');
        // Skip whatever precedes the prefix (a console may prepend timestamps).
        words.position(|w| w == wire::PREFIX)?;
        let event = words.next()?;
        let fields: Vec<(&str, String)> = words
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                let mut buf = vec![0u8; v.len()];
                let n = wire::unescape(v.as_bytes(), &mut buf);
                buf.truncate(n);
                Some((k, String::from_utf8_lossy(&buf).into_owned()))
            })
            .collect();
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        let num = |key: &str| get(key).and_then(parse_number);
        let text = |key: &str| get(key).map(str::to_string);
        Some(match event {
            wire::PHASE => Event::Phase {
                name: text("name")?,
                t_ns: num("t"),
            },
            wire::READY => Event::Ready { t_ns: num("t") },
            wire::START => Event::Start { t_ns: num("t") },
            wire::DONE => Event::Done {
                t_ns: num("t"),
                output: Output {
                    checksum: num("checksum")?,
                    ops: num("ops").unwrap_or(0),
                    bytes: num("bytes").unwrap_or(0),
                },
            },
            wire::ERROR => Event::Error {
                step: text("step").unwrap_or_else(|| "unknown".into()),
                errno: num("errno").map(|e| e as i32),
                msg: text("msg"),
            },
            wire::PROBE => Event::Probe {
                key: text("key")?,
                value: text("value").unwrap_or_default(),
            },
            wire::INFO => Event::Info {
                key: text("key")?,
                value: text("value").unwrap_or_default(),
            },
            _ => return None,
        })
    }
}

/// Decimal, or hexadecimal with `0x`.
fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_wire_module_writes() {
        let mut line = wire::Line::new(wire::DONE)
            .field("t", 5u64)
            .hex("checksum", 0xabc)
            .field("ops", 3u64)
            .field("bytes", 24u64);
        let text = std::str::from_utf8(line.finish()).unwrap();
        assert_eq!(
            Event::parse(text),
            Some(Event::Done {
                t_ns: Some(5),
                output: Output {
                    checksum: 0xabc,
                    ops: 3,
                    bytes: 24
                }
            })
        );
    }

    #[test]
    fn finds_markers_in_console_noise_and_ignores_the_rest() {
        assert_eq!(
            Event::parse("[    0.52] init: isolab ready\r\n"),
            Some(Event::Ready { t_ns: None })
        );
        assert_eq!(Event::parse("Linux version 6.1.0"), None);
        assert_eq!(Event::parse("isolab nonsense t=1"), None);
    }

    #[test]
    fn probe_values_round_trip_with_spaces() {
        let mut line = wire::Line::new(wire::PROBE)
            .text("key", b"kernel_version")
            .text("value", b"#1 SMP PREEMPT");
        let text = std::str::from_utf8(line.finish()).unwrap();
        assert_eq!(
            Event::parse(text),
            Some(Event::Probe {
                key: "kernel_version".into(),
                value: "#1 SMP PREEMPT".into()
            })
        );
    }

    #[test]
    fn argv_carries_the_spec_and_the_fds() {
        let spec = Spec::new(Kernel::Cpu, 0, 10);
        let given = Given {
            scratch: Some(Path::new("/scratch")),
            ..Given::default()
        };
        let words = argv(&spec, 3, 4, &given);
        let parsed = Spec::parse(
            words
                .iter()
                .filter(|w| {
                    !w.starts_with("report=")
                        && !w.starts_with("control=")
                        && !w.starts_with("scratch=")
                })
                .map(|w| w.as_bytes()),
        )
        .unwrap();
        assert_eq!(parsed, spec);
        assert!(words.contains(&"report=3".to_string()));
        assert!(words.contains(&"scratch=/scratch".to_string()));
        // Only the `io` kernel is given a directory to write in.
        let none = argv(&spec, 3, 4, &Given::default());
        assert!(!none.iter().any(|w| w.starts_with("scratch=")), "{none:?}");
    }

    #[test]
    fn the_embedded_workload_is_a_static_x86_64_executable() {
        assert_eq!(&WORKLOAD_ELF[..4], b"\x7fELF");
        // e_machine 62 = x86-64; e_type 2 = EXEC (position-dependent: relocation-model=static).
        assert_eq!(u16::from_le_bytes([WORKLOAD_ELF[18], WORKLOAD_ELF[19]]), 62);
        assert_eq!(u16::from_le_bytes([WORKLOAD_ELF[16], WORKLOAD_ELF[17]]), 2);
        // No PT_INTERP program header: nothing to load before it runs.
        let phoff = u64::from_le_bytes(WORKLOAD_ELF[32..40].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes([WORKLOAD_ELF[54], WORKLOAD_ELF[55]]) as usize;
        let phnum = u16::from_le_bytes([WORKLOAD_ELF[56], WORKLOAD_ELF[57]]) as usize;
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            let p_type = u32::from_le_bytes(WORKLOAD_ELF[at..at + 4].try_into().unwrap());
            assert_ne!(
                p_type, 3,
                "PT_INTERP found: the workload is dynamically linked"
            );
        }
    }
}
