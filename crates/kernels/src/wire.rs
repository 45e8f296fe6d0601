//! The marker protocol: how an instance tells the host where it is.
//!
//! Every backend ends in the same place: a stream of text lines that the host reads, one event per
//! line, `isolab <event> key=value ...`. A process or container writes them to an inherited pipe;
//! a Linux guest prints them on its serial console; the lab's own VMM writes them on the guest's
//! behalf after timestamping the guest's marker exit. Text keeps the protocol readable in a
//! terminal, in a serial log and in a test.
//!
//! ```text
//! isolab phase name=namespaces t=81234567890
//! isolab ready t=81234568000
//! isolab start t=81234568100
//! isolab done t=81234999000 checksum=0x9e3779b97f4a7c15 ops=1000 bytes=0
//! ```
//!
//! `t=` is always `CLOCK_MONOTONIC` of the **host**, in nanoseconds. A process and a container
//! read it themselves (they share the host's clock: isolab creates no time namespace). A guest's
//! clock is never trusted: the VMM stamps the guest's marker exit, or, for a guest whose console
//! the host reads, the host stamps the line when it arrives (and then `t=` is absent).
//!
//! Values never contain a space, `=`, `%` or a line break: [`Line::text`] escapes those as `%XX`.

use core::fmt::{self, Write};

/// Every protocol line starts with this word, so markers can be picked out of a noisy console.
pub const PREFIX: &str = "isolab";

/// First instruction of the workload's `main` (or of the bare guest's entry point).
pub const READY: &str = "ready";
/// The kernel's set-up (allocation, initialisation) is over; the measured part begins.
pub const START: &str = "start";
/// The kernel finished; carries `checksum=`, `ops=`, `bytes=`.
pub const DONE: &str = "done";
/// A backend phase edge before the workload runs; carries `name=`.
pub const PHASE: &str = "phase";
/// Something failed; carries `step=` and `errno=` or `msg=`.
pub const ERROR: &str = "error";
/// One fact the `probe` kernel saw; carries `key=` and `value=`.
pub const PROBE: &str = "probe";
/// A fact about the instance reported by its runtime (e.g. the guest RAM a VMM mapped).
pub const INFO: &str = "info";

/// The key of the `info` lines that carry what a field tool printed (`fio`, `netperf`,
/// `iperf3`: see [`crate::Kernel::is_tool`]): `tool_output.0000`, `tool_output.0001`, … each
/// with the next piece of its standard output, escaped. The lab joins them in key order.
pub const TOOL_OUTPUT: &str = "tool_output";

/// How many bytes of a tool's output one `info` line carries: escaped (at most three bytes
/// each), they fit a [`Line`] with room for its event and key.
pub const TOOL_OUTPUT_PIECE: usize = 150;

/// Bytes that must be escaped inside a value.
const SPECIAL: &[u8] = b" =%\n\r\t";

/// One protocol line, built in a fixed buffer: no allocation, so it can be used in a bare guest
/// and in a child process between `fork` and `exec`, where allocating is not safe.
pub struct Line {
    buf: [u8; 512],
    len: usize,
    overflow: bool,
}

impl Line {
    /// Start a line for `event`.
    pub fn new(event: &str) -> Line {
        let mut line = Line {
            buf: [0; 512],
            len: 0,
            overflow: false,
        };
        line.push(PREFIX.as_bytes());
        line.push(b" ");
        line.push(event.as_bytes());
        line
    }

    /// Append ` key=value` where the value is a number or other text without special bytes.
    pub fn field(mut self, key: &str, value: impl fmt::Display) -> Line {
        self.push(b" ");
        self.push(key.as_bytes());
        self.push(b"=");
        let _ = write!(self, "{value}");
        self
    }

    /// Append ` key=value` for a `u64` written in hexadecimal (checksums).
    pub fn hex(self, key: &str, value: u64) -> Line {
        self.field(key, format_args!("{value:#018x}"))
    }

    /// Append ` key=value`, escaping the bytes of `value` that would break the line.
    pub fn text(mut self, key: &str, value: &[u8]) -> Line {
        self.push(b" ");
        self.push(key.as_bytes());
        self.push(b"=");
        for &b in value {
            if SPECIAL.contains(&b) {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                self.push(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            } else {
                self.push(&[b]);
            }
        }
        self
    }

    /// The finished line, with its trailing newline. A line that did not fit is cut and still
    /// ends in a newline, so the reader never sees two events glued together.
    pub fn finish(&mut self) -> &[u8] {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        &self.buf[..=self.len]
    }

    /// True when something did not fit in the buffer.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    fn push(&mut self, bytes: &[u8]) {
        // Keep one byte free for the newline.
        let room = self.buf.len() - 1 - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self.overflow |= n < bytes.len();
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Undo [`Line::text`]'s escaping, writing into `out`; returns the decoded length.
/// Malformed escapes are kept as they are.
pub fn unescape(value: &[u8], out: &mut [u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < value.len() && n < out.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        let decoded = match value.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match decoded {
            Some(b) => {
                out[n] = b;
                i += 3;
            }
            None => {
                out[n] = value[i];
                i += 1;
            }
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_documented_shape() {
        let mut l = Line::new(DONE)
            .field("t", 42u64)
            .hex("checksum", 255)
            .field("ops", 7);
        assert_eq!(
            l.finish(),
            b"isolab done t=42 checksum=0x00000000000000ff ops=7\n"
        );
    }

    #[test]
    fn text_values_escape_and_unescape() {
        let raw = b"#1 SMP a=b 100%\n";
        let mut l = Line::new(PROBE).text("value", raw);
        let line = l.finish();
        let value = &line[b"isolab probe value=".len()..line.len() - 1];
        assert!(!value.contains(&b' ') && !value.contains(&b'='));
        let mut out = [0u8; 64];
        let n = unescape(value, &mut out);
        assert_eq!(&out[..n], raw);
    }

    #[test]
    fn an_overlong_line_is_cut_but_still_one_line() {
        let mut l = Line::new(PROBE).text("value", &[b'x'; 2000]);
        assert!(l.overflowed());
        let line = l.finish();
        assert_eq!(line.len(), 512);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
    }
}
