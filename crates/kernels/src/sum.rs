//! The checksum of a stream of bytes, the same however the stream is cut.
//!
//! A disk or a TCP connection delivers bytes in pieces whose sizes the kernels do not choose: a
//! receiver may get 1448 bytes, then 64 KiB, then 3. [`StreamSum`] folds 8-byte little-endian
//! words and carries an unfinished word over to the next piece, so the sender, the receiver and
//! the lab's peer all get one value for one byte stream, whatever the pieces were.

/// A running checksum of a byte stream (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct StreamSum {
    acc: u64,
    pending: [u8; 8],
    filled: usize,
    bytes: u64,
}

impl StreamSum {
    /// A sum that starts from `seed`.
    pub const fn new(seed: u64) -> StreamSum {
        StreamSum {
            acc: seed,
            pending: [0; 8],
            filled: 0,
            bytes: 0,
        }
    }

    /// Fold in the next piece of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.filled > 0 {
            let take = (8 - self.filled).min(data.len());
            self.pending[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.pending));
            self.filled = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut v = [0u8; 8];
            v.copy_from_slice(w);
            self.word(u64::from_le_bytes(v));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn word(&mut self, w: u64) {
        self.acc = self.acc.rotate_left(7) ^ w;
    }

    /// The sum of everything folded in so far (a last, partial word padded with zeros).
    pub fn value(&self) -> u64 {
        if self.filled == 0 {
            return self.acc;
        }
        let mut v = [0u8; 8];
        v[..self.filled].copy_from_slice(&self.pending[..self.filled]);
        self.acc.rotate_left(7) ^ u64::from_le_bytes(v)
    }

    /// How many bytes were folded in.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn the_sum_does_not_depend_on_how_the_stream_is_cut() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = StreamSum::new(5);
        whole.update(&data);
        for cut in [1, 3, 7, 8, 9, 64, 999] {
            let mut pieces = StreamSum::new(5);
            for piece in data.chunks(cut) {
                pieces.update(piece);
            }
            assert_eq!(pieces.value(), whole.value(), "pieces of {cut}");
            assert_eq!(pieces.bytes(), 1000);
        }
        let mut other = StreamSum::new(5);
        other.update(&data[..999]);
        assert_ne!(other.value(), whole.value());
    }
}
