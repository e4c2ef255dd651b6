//! Little-endian integers: the one codec of podstore's binary formats (record headers and
//! footers, index checkpoints, disk labels, replication frames).
//!
//! A format names each field by its offset and reads or writes it with [`get`] and [`put`]
//! (or in sequence with a [`Reader`]); its layout is checked when it compiles:
//! `const _: () = assert!(le::tiles(&[(0, 4), (4, 2), ...], 128));` fails the build if the
//! fields overlap, leave a gap or run past the format's size, so the code and the byte
//! diagram next to it can't drift apart silently.

/// An integer the formats store: its width and its little-endian bytes.
pub trait Int: Copy {
    const BYTES: usize;
    fn from_le(b: &[u8]) -> Self;
    fn write_le(self, out: &mut [u8]);
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                let mut x = [0u8; std::mem::size_of::<$t>()];
                x.copy_from_slice(&b[..Self::BYTES]);
                <$t>::from_le_bytes(x)
            }
            fn write_le(self, out: &mut [u8]) {
                out[..Self::BYTES].copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
int!(u8, u16, u32, u64);

/// The integer at offset `at` of `b`. Callers check the length first (a decoder refuses a
/// short input before it reads fields); past the end this panics.
pub fn get<T: Int>(b: &[u8], at: usize) -> T {
    T::from_le(&b[at..at + T::BYTES])
}

/// Writes `v` at offset `at` of `b`.
pub fn put<T: Int>(b: &mut [u8], at: usize, v: T) {
    v.write_le(&mut b[at..at + T::BYTES]);
}

/// Whether `(offset, size)` fields, in order, tile `[0, end)` exactly: each starts where the
/// one before ended, and the last ends at `end`. For `const` layout checks.
pub const fn tiles(fields: &[(usize, usize)], end: usize) -> bool {
    let mut at = 0;
    let mut i = 0;
    while i < fields.len() {
        if fields[i].0 != at || fields[i].1 == 0 {
            return false;
        }
        at += fields[i].1;
        i += 1;
    }
    at == end
}

/// Fields read one after another, bounds-checked: `None` once the input is too short.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    /// The next integer.
    pub fn int<T: Int>(&mut self) -> Option<T> {
        self.bytes(T::BYTES).map(T::from_le)
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    /// Bytes left.
    pub fn rest(&self) -> &'a [u8] {
        &self.b[self.at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_at_their_offsets() {
        let mut b = [0u8; 16];
        put(&mut b, 1, 0x1234u16);
        put(&mut b, 3, 0xdead_beefu32);
        put(&mut b, 7, 0x0102_0304_0506_0708u64);
        assert_eq!(b[1..3], [0x34, 0x12]);
        assert_eq!(get::<u16>(&b, 1), 0x1234);
        assert_eq!(get::<u32>(&b, 3), 0xdead_beef);
        assert_eq!(get::<u64>(&b, 7), 0x0102_0304_0506_0708);
        let mut r = Reader::new(&b[1..]);
        assert_eq!(r.int::<u16>(), Some(0x1234));
        assert_eq!(r.int::<u32>(), Some(0xdead_beef));
        assert_eq!(r.int::<u64>(), Some(0x0102_0304_0506_0708));
        assert_eq!(r.position(), 14);
        assert_eq!(r.int::<u16>(), None, "one byte left");
        assert_eq!(r.rest().len(), 1);
    }

    #[test]
    fn layouts_tile_or_are_refused() {
        assert!(tiles(&[(0, 4), (4, 2), (6, 2)], 8));
        assert!(!tiles(&[(0, 4), (5, 2)], 7), "a gap");
        assert!(!tiles(&[(0, 4), (3, 2)], 5), "an overlap");
        assert!(!tiles(&[(0, 4)], 8), "short of the end");
        assert!(!tiles(&[(0, 0)], 0), "an empty field");
    }
}
