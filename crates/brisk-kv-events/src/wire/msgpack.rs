//! A msgpack reader over a borrowed payload, just enough to decode an `EventBatch`.
//!
//! Hand-written rather than serde so that the decoder can look ahead (find a map's `"type"`
//! tag wherever it sits, then read the map again) and skip values it does not know without
//! recursion. Every length is checked against the bytes left before anything is allocated:
//! an element takes at least one byte, so a claimed length longer than the rest of the
//! payload is an error at once, and memory stays proportional to the payload.

use super::decode::DecodeError;

/// One value's header: scalars whole, strings and binaries as borrowed slices, arrays and
/// maps as their element counts (their elements follow).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Head<'a> {
    Nil,
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Neg(i64),
    Float(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(usize),
    /// Pairs of key and value.
    Map(usize),
    Ext,
}

impl Head<'_> {
    /// What a [`DecodeError::Shape`] says was found.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Head::Nil => "nil",
            Head::Bool(_) => "a boolean",
            Head::Uint(_) | Head::Neg(_) => "an integer",
            Head::Float(_) => "a float",
            Head::Str(_) => "a string",
            Head::Bin(_) => "binary",
            Head::Array(_) => "an array",
            Head::Map(_) => "a map",
            Head::Ext => "an extension",
        }
    }
}

/// A cursor over one payload.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The offset of the next value, for errors and for reading a value again.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Goes back to an offset [`Reader::pos`] returned.
    pub(crate) fn rewind(&mut self, pos: usize) {
        debug_assert!(pos <= self.buf.len());
        self.pos = pos;
    }

    /// Fails unless the whole payload was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing {
                at: self.pos,
                bytes: extra,
            }),
        }
    }

    /// Reads the next value's header (and a string's, binary's or extension's body).
    pub(crate) fn head(&mut self) -> Result<Head<'a>, DecodeError> {
        let at = self.pos;
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Head::Uint(u64::from(marker)),
            0x80..=0x8f => self.map(at, usize::from(marker & 0x0f))?,
            0x90..=0x9f => self.array(at, usize::from(marker & 0x0f))?,
            0xa0..=0xbf => Head::Str(self.take(usize::from(marker & 0x1f))?),
            0xc0 => Head::Nil,
            0xc1 => return Err(DecodeError::Reserved { at }),
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4..=0xc6 => {
                let len = self.len_of(marker - 0xc4)?;
                Head::Bin(self.take(len)?)
            }
            0xc7..=0xc9 => {
                let len = self.len_of(marker - 0xc7)?;
                self.take(1 + len)?; // the type byte, then the data
                Head::Ext
            }
            0xca => Head::Float(f64::from(f32::from_be_bytes(self.array_of()?))),
            0xcb => Head::Float(f64::from_be_bytes(self.array_of()?)),
            0xcc => Head::Uint(u64::from(self.take(1)?[0])),
            0xcd => Head::Uint(u64::from(u16::from_be_bytes(self.array_of()?))),
            0xce => Head::Uint(u64::from(u32::from_be_bytes(self.array_of()?))),
            0xcf => Head::Uint(u64::from_be_bytes(self.array_of()?)),
            0xd0 => int(i64::from(i8::from_be_bytes(self.array_of()?))),
            0xd1 => int(i64::from(i16::from_be_bytes(self.array_of()?))),
            0xd2 => int(i64::from(i32::from_be_bytes(self.array_of()?))),
            0xd3 => int(i64::from_be_bytes(self.array_of()?)),
            0xd4..=0xd8 => {
                self.take(1 + (1 << (marker - 0xd4)))?; // fixext: type byte, 1..16 bytes
                Head::Ext
            }
            0xd9..=0xdb => {
                let len = self.len_of(marker - 0xd9)?;
                Head::Str(self.take(len)?)
            }
            0xdc | 0xdd => {
                let len = self.len_of(marker - 0xdb)?;
                self.array(at, len)?
            }
            0xde | 0xdf => {
                let len = self.len_of(marker - 0xdd)?;
                self.map(at, len)?
            }
            0xe0..=0xff => Head::Neg(i64::from(i8::from_be_bytes([marker]))),
        })
    }

    /// Skips one whole value, nested ones included, without recursion.
    pub(crate) fn skip(&mut self) -> Result<(), DecodeError> {
        // Values still to skip; each claimed element was checked against the bytes left,
        // so this never exceeds the payload's length.
        let mut pending = 1usize;
        while pending > 0 {
            pending -= 1;
            match self.head()? {
                Head::Array(n) => pending += n,
                Head::Map(n) => pending += 2 * n,
                _ => {}
            }
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let end = at
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(DecodeError::Truncated { at })?;
        self.pos = end;
        Ok(&self.buf[at..end])
    }

    fn array_of<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        Ok(<[u8; N]>::try_from(bytes).expect("take returns N bytes"))
    }

    /// A big-endian length of 1, 2 or 4 bytes (`width_log2` 0, 1 or 2).
    fn len_of(&mut self, width_log2: u8) -> Result<usize, DecodeError> {
        let len = match width_log2 {
            0 => u32::from(self.take(1)?[0]),
            1 => u32::from(u16::from_be_bytes(self.array_of()?)),
            _ => u32::from_be_bytes(self.array_of()?),
        };
        // A length beyond the address space cannot fit in the payload either.
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn array(&self, at: usize, len: usize) -> Result<Head<'a>, DecodeError> {
        self.check_room(at, len)?;
        Ok(Head::Array(len))
    }

    fn map(&self, at: usize, len: usize) -> Result<Head<'a>, DecodeError> {
        self.check_room(at, len.saturating_mul(2))?;
        Ok(Head::Map(len))
    }

    /// Refuses a claim of more elements than bytes left (each takes at least one).
    fn check_room(&self, at: usize, elements: usize) -> Result<(), DecodeError> {
        let left = self.buf.len() - self.pos;
        if elements > left {
            return Err(DecodeError::Length {
                at,
                claimed: elements,
                left,
            });
        }
        Ok(())
    }
}

/// A signed integer's header: non-negative ones read as [`Head::Uint`], as msgpack encoders
/// may use either width family for them.
fn int(value: i64) -> Head<'static> {
    match u64::try_from(value) {
        Ok(u) => Head::Uint(u),
        Err(_) => Head::Neg(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(bytes: &[u8]) -> Vec<Head<'_>> {
        let mut r = Reader::new(bytes);
        let mut out = Vec::new();
        while r.pos() < bytes.len() {
            out.push(r.head().unwrap());
        }
        out
    }

    #[test]
    fn every_integer_width_reads_as_its_value() {
        let bytes = [
            0x05, 0xcc, 0xff, 0xcd, 0x01, 0x00, 0xce, 0, 1, 0, 0, 0xcf, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xd0, 0x80, 0xd3, 0, 0, 0, 0, 0, 0, 0, 9,
        ];
        assert_eq!(
            heads(&bytes),
            vec![
                Head::Uint(5),
                Head::Uint(255),
                Head::Uint(256),
                Head::Uint(65536),
                Head::Uint(u64::MAX),
                Head::Neg(-1),
                Head::Neg(-128),
                Head::Uint(9),
            ]
        );
    }

    #[test]
    fn skip_passes_over_nested_values_and_extensions() {
        // [{"a": [1, 2.0]}, fixext1, bin8 "xy"] then 7
        let bytes = [
            0x93, 0x81, 0xa1, b'a', 0x92, 0x01, 0xca, 0x40, 0, 0, 0, 0xd4, 0x01, 0x02, 0xc4, 0x02,
            b'x', b'y', 0x07,
        ];
        let mut r = Reader::new(&bytes);
        r.skip().unwrap();
        assert_eq!(r.head().unwrap(), Head::Uint(7));
        r.finish().unwrap();
    }

    #[test]
    fn a_length_longer_than_the_payload_is_refused_before_reading_on() {
        let mut r = Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(
            r.head(),
            Err(DecodeError::Length {
                claimed: 0xffff_ffff,
                left: 1,
                ..
            })
        ));
        let mut r = Reader::new(&[0xdb, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(r.head(), Err(DecodeError::Truncated { at: 5 })));
    }
}
