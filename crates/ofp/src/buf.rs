//! Bounds-checked reading and padded writing of big-endian wire data.
//!
//! Invariant: a [`Reader`] never reads outside the bytes it was given; every
//! short read is an [`Error`] naming the field it was reading and the offset of
//! the message it stands at, so decoding cannot panic on any input.

use crate::error::{Error, ErrorCode};

/// A cursor over a byte slice. `base` is the offset of `data[0]` within the
/// whole message, so errors point into the message, not into a sub-slice.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0, base: 0 }
    }

    /// Offset in the whole message of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn short(&self, what: &'static str, need: usize) -> Error {
        Error::new(
            ErrorCode::BAD_LEN,
            format!("{what} needs {need} bytes at offset {}, {} left", self.offset(), self.remaining()),
        )
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if self.remaining() < n {
            return Err(self.short(what, n));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A reader over the next `n` bytes (which this reader skips).
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, Error> {
        let base = self.offset();
        let data = self.bytes(n, what)?;
        Ok(Reader { data, pos: 0, base })
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Error> {
        self.bytes(n, what).map(|_| ())
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// The next two bytes, not consumed.
    pub fn peek_u16(&self, what: &'static str) -> Result<u16, Error> {
        let mut r = *self;
        r.u16(what)
    }

    /// A fixed-size NUL-padded string field.
    pub fn string(&mut self, n: usize, what: &'static str) -> Result<String, Error> {
        let b = self.bytes(n, what)?;
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        Ok(String::from_utf8_lossy(&b[..end]).into_owned())
    }

    /// The rest of the bytes.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }
}

/// Appends big-endian values to a message under construction.
#[derive(Default, Debug)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// A NUL-padded string field of `n` bytes (truncated to leave a NUL).
    pub fn string(&mut self, s: &str, n: usize) {
        let b = s.as_bytes();
        let k = b.len().min(n.saturating_sub(1));
        self.bytes(&b[..k]);
        self.zeros(n - k);
    }

    /// Pads with zeros to a multiple of 8 bytes from `start`.
    pub fn pad8_from(&mut self, start: usize) {
        let len = self.buf.len() - start;
        self.zeros((8 - len % 8) % 8);
    }

    /// Writes a length placeholder now; [`Writer::patch_u16`] fills it.
    pub fn placeholder_u16(&mut self) -> usize {
        let at = self.buf.len();
        self.u16(0);
        at
    }

    pub fn patch_u16(&mut self, at: usize, v: u16) {
        self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Fills the placeholder at `at` with the number of bytes written since `start`.
    pub fn patch_len(&mut self, at: usize, start: usize) {
        let n = self.buf.len() - start;
        self.patch_u16(at, u16::try_from(n).unwrap_or(u16::MAX));
    }
}

/// Rounds up to a multiple of 8.
pub fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}
