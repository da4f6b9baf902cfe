//! Decoding one `EventBatch` payload, liberal in what it accepts the way vLLM's consumers
//! are.
//!
//! vLLM's encodings have moved over releases, and a router may face several at once:
//!
//! - the batch is an array `[ts, events, data_parallel_rank?]` (brisk, vLLM's `array_like`
//!   structs, the rank absent before vLLM had it) or a map `{"ts", "events",
//!   "data_parallel_rank"?}` (newer vLLM, whose `EventBatch` is a plain struct);
//! - each event is a map tagged by `"type"` (brisk, msgspec's default for tagged structs; the
//!   tag may sit anywhere in the map) or an array `["BlockStored", block_hashes,
//!   parent_block_hash, token_ids, block_size, lora_id?, medium?, lora_name?, …]`;
//! - fields an older or newer vLLM lacks or adds (`medium`, `lora_name`, `extra_keys`,
//!   `group_idx`, …) are optional or skipped, and event types this decoder does not know are
//!   skipped and counted in [`DecodedBatch::skipped`] rather than failing the batch.
//!
//! Block hashes are `u64`: an integer hash as it is (a negative one, from vLLM versions that
//! used Python's `hash()`, by its two's-complement bits), a bytes hash (newer vLLM sends
//! SHA-256 digests) folded with 64-bit FNV-1a. Folding is deterministic across processes and
//! releases, so the same digest always names the same block, a `parent_block_hash` matches
//! the block it continues, and two digests collide only as often as any two 64-bit hashes.
//! Consumers treat hashes as opaque names anyway.
//!
//! Garbage is an error, never a panic: see [`super::msgpack`] for how lengths are bounded.

use super::msgpack::{Head, Reader};

/// One decoded `EventBatch`.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedBatch {
    /// When the publisher took the batch, in seconds since the Unix epoch.
    pub ts: f64,
    /// The events this decoder knows, in order.
    pub events: Vec<WireEvent>,
    /// The publisher's data-parallel rank, when it sent one.
    pub rank: Option<u32>,
    /// Events of types this decoder does not know, left out of `events`.
    pub skipped: usize,
}

/// One cache event as a consumer sees it on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireEvent {
    /// Consecutive full blocks entered the cache (`BlockStored`).
    Stored {
        /// The blocks' hashes, in order.
        hashes: Vec<u64>,
        /// The hash of the block the first one continues; `None` at a sequence's start.
        parent: Option<u64>,
        /// The blocks' tokens, concatenated (`block_size` per block when the publisher
        /// follows vLLM; not checked here).
        token_ids: Vec<u32>,
        /// Tokens per block.
        block_size: usize,
        /// vLLM's deprecated LoRA adapter id, when sent.
        lora_id: Option<u64>,
        /// The LoRA adapter the blocks were computed with, when sent.
        lora_name: Option<String>,
        /// The tier: `"GPU"` (what attention reads), `"CPU"` (offloaded copies); `None` from
        /// vLLM versions before tiers, which only had the GPU one.
        medium: Option<String>,
    },
    /// Blocks left the cache (`BlockRemoved`).
    Removed {
        /// The blocks' hashes.
        hashes: Vec<u64>,
        /// The tier they left, as in [`WireEvent::Stored`].
        medium: Option<String>,
    },
    /// Every block is gone (`AllBlocksCleared`).
    AllCleared,
}

/// Why a payload is not an `EventBatch`; `at` is the byte offset where decoding stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends inside a value.
    #[error("KV event batch truncated at byte {at}")]
    Truncated {
        /// Offset.
        at: usize,
    },
    /// msgpack's reserved marker byte 0xc1.
    #[error("KV event batch: reserved msgpack marker at byte {at}")]
    Reserved {
        /// Offset.
        at: usize,
    },
    /// An array or map claims more elements than there are bytes left.
    #[error("KV event batch: {claimed} elements claimed at byte {at}, {left} bytes left")]
    Length {
        /// Offset.
        at: usize,
        /// Elements (keys and values for a map) claimed.
        claimed: usize,
        /// Bytes left after the header.
        left: usize,
    },
    /// A value of the wrong kind.
    #[error("KV event batch: expected {expected} for {field} at byte {at}, found {found}")]
    Shape {
        /// Offset.
        at: usize,
        /// Which field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        found: &'static str,
    },
    /// An integer out of its field's range (a negative token id, a token id over `u32`).
    #[error("KV event batch: {field} out of range at byte {at}")]
    Range {
        /// Offset.
        at: usize,
        /// Which field.
        field: &'static str,
    },
    /// A required field is absent.
    #[error("KV event batch: {field} missing in the {within} at byte {at}")]
    Missing {
        /// Offset of the enclosing value.
        at: usize,
        /// Which field.
        field: &'static str,
        /// The batch or the event type.
        within: &'static str,
    },
    /// A string that is not UTF-8.
    #[error("KV event batch: {field} is not UTF-8 at byte {at}")]
    Utf8 {
        /// Offset.
        at: usize,
        /// Which field.
        field: &'static str,
    },
    /// Bytes after the batch.
    #[error("KV event batch: {bytes} bytes after the batch at byte {at}")]
    Trailing {
        /// Offset.
        at: usize,
        /// How many.
        bytes: usize,
    },
}

/// Decodes one payload (the third frame of a published message).
pub fn decode(payload: &[u8]) -> Result<DecodedBatch, DecodeError> {
    let mut r = Reader::new(payload);
    let at = r.pos();
    let batch = match r.head()? {
        Head::Array(n) => batch_from_array(&mut r, at, n)?,
        Head::Map(n) => batch_from_map(&mut r, at, n)?,
        other => return Err(shape(at, "the batch", "an array or a map", other)),
    };
    r.finish()?;
    Ok(batch)
}

fn batch_from_array(r: &mut Reader<'_>, at: usize, n: usize) -> Result<DecodedBatch, DecodeError> {
    if n < 2 {
        return Err(missing(at, "events", "batch"));
    }
    let ts = ts(r)?;
    let (events, skipped) = events(r)?;
    let rank = if n >= 3 { rank(r)? } else { None };
    skip_n(r, n.saturating_sub(3))?;
    Ok(DecodedBatch {
        ts,
        events,
        rank,
        skipped,
    })
}

fn batch_from_map(r: &mut Reader<'_>, at: usize, n: usize) -> Result<DecodedBatch, DecodeError> {
    let (mut ts_, mut events_, mut rank_) = (None, None, None);
    for _ in 0..n {
        match key(r)? {
            b"ts" => ts_ = Some(ts(r)?),
            b"events" => events_ = Some(events(r)?),
            b"data_parallel_rank" => rank_ = rank(r)?,
            _ => r.skip()?,
        }
    }
    let (events, skipped) = events_.ok_or(missing(at, "events", "batch"))?;
    Ok(DecodedBatch {
        ts: ts_.ok_or(missing(at, "ts", "batch"))?,
        events,
        rank: rank_,
        skipped,
    })
}

fn ts(r: &mut Reader<'_>) -> Result<f64, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Float(ts) => Ok(ts),
        // Whole seconds from an encoder that wrote an integral float as an integer.
        Head::Uint(ts) => Ok(ts as f64),
        other => Err(shape(at, "ts", "a number", other)),
    }
}

fn rank(r: &mut Reader<'_>) -> Result<Option<u32>, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Nil => Ok(None),
        Head::Uint(rank) => u32::try_from(rank)
            .map(Some)
            .map_err(|_| range(at, "data_parallel_rank")),
        other => Err(shape(at, "data_parallel_rank", "an integer or nil", other)),
    }
}

/// The known events and how many of unknown types were skipped.
fn events(r: &mut Reader<'_>) -> Result<(Vec<WireEvent>, usize), DecodeError> {
    let n = array(r, "events")?;
    // An event decodes to more bytes than it takes on the wire: reserve for a usual batch
    // only, so that a long claimed array costs no more than the events actually present.
    let mut events = Vec::with_capacity(n.min(super::MAX_EVENTS));
    let mut skipped = 0;
    for _ in 0..n {
        match event(r)? {
            Some(event) => events.push(event),
            None => skipped += 1,
        }
    }
    Ok((events, skipped))
}

/// One event; `None` for a type this decoder does not know (skipped whole).
fn event(r: &mut Reader<'_>) -> Result<Option<WireEvent>, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Array(0) => Err(missing(at, "type", "event")),
        Head::Array(n) => event_from_array(r, n - 1),
        Head::Map(n) => event_from_map(r, at, n),
        other => Err(shape(at, "an event", "an array or a map", other)),
    }
}

/// A tagged array: the tag, then the fields in vLLM's order (`n` of them).
fn event_from_array(r: &mut Reader<'_>, n: usize) -> Result<Option<WireEvent>, DecodeError> {
    let at = r.pos();
    let event = match r.head()? {
        Head::Str(b"BlockStored") => {
            if n < 4 {
                return Err(missing(at, "block_size", "BlockStored"));
            }
            let hashes = hashes(r)?;
            let parent = parent(r)?;
            let token_ids = token_ids(r)?;
            let block_size = block_size(r)?;
            let lora_id = if n > 4 { lora_id(r)? } else { None };
            let medium = if n > 5 { text(r, "medium")? } else { None };
            let lora_name = if n > 6 { text(r, "lora_name")? } else { None };
            skip_n(r, n.saturating_sub(7))?;
            WireEvent::Stored {
                hashes,
                parent,
                token_ids,
                block_size,
                lora_id,
                lora_name,
                medium,
            }
        }
        Head::Str(b"BlockRemoved") => {
            if n < 1 {
                return Err(missing(at, "block_hashes", "BlockRemoved"));
            }
            let hashes = hashes(r)?;
            let medium = if n > 1 { text(r, "medium")? } else { None };
            skip_n(r, n.saturating_sub(2))?;
            WireEvent::Removed { hashes, medium }
        }
        Head::Str(b"AllBlocksCleared") => {
            skip_n(r, n)?;
            WireEvent::AllCleared
        }
        // Another event type, or a tag of another kind (msgspec allows integer tags).
        _ => {
            skip_n(r, n)?;
            return Ok(None);
        }
    };
    Ok(Some(event))
}

/// A tagged map: finds `"type"` wherever it is, then reads the map again by that type.
fn event_from_map(
    r: &mut Reader<'_>,
    at: usize,
    n: usize,
) -> Result<Option<WireEvent>, DecodeError> {
    let start = r.pos();
    let tag = tag_of_map(r, at, n)?;
    let end = r.pos();
    r.rewind(start);
    let event = match tag {
        Head::Str(b"BlockStored") => Some(stored_from_map(r, at, n)?),
        Head::Str(b"BlockRemoved") => Some(removed_from_map(r, at, n)?),
        Head::Str(b"AllBlocksCleared") => Some(WireEvent::AllCleared),
        _ => None,
    };
    r.rewind(end);
    Ok(event)
}

/// The value under `"type"` in a map of `n` pairs (a container's header only), leaving the
/// reader after the map.
fn tag_of_map<'a>(r: &mut Reader<'a>, at: usize, n: usize) -> Result<Head<'a>, DecodeError> {
    let mut tag_at = None;
    for _ in 0..n {
        let is_tag = key(r)? == b"type";
        if is_tag {
            tag_at = Some(r.pos());
        }
        r.skip()?;
    }
    let tag_at = tag_at.ok_or(missing(at, "type", "event"))?;
    let end = r.pos();
    r.rewind(tag_at);
    let tag = r.head()?;
    r.rewind(end);
    Ok(tag)
}

fn stored_from_map(r: &mut Reader<'_>, at: usize, n: usize) -> Result<WireEvent, DecodeError> {
    let (mut hashes_, mut parent_, mut token_ids_, mut block_size_) = (None, None, None, None);
    let (mut lora_id_, mut lora_name, mut medium) = (None, None, None);
    for _ in 0..n {
        match key(r)? {
            b"block_hashes" => hashes_ = Some(hashes(r)?),
            b"parent_block_hash" => parent_ = parent(r)?,
            b"token_ids" => token_ids_ = Some(token_ids(r)?),
            b"block_size" => block_size_ = Some(block_size(r)?),
            b"lora_id" => lora_id_ = lora_id(r)?,
            b"lora_name" => lora_name = text(r, "lora_name")?,
            b"medium" => medium = text(r, "medium")?,
            _ => r.skip()?,
        }
    }
    let within = "BlockStored";
    Ok(WireEvent::Stored {
        hashes: hashes_.ok_or(missing(at, "block_hashes", within))?,
        parent: parent_,
        token_ids: token_ids_.ok_or(missing(at, "token_ids", within))?,
        block_size: block_size_.ok_or(missing(at, "block_size", within))?,
        lora_id: lora_id_,
        lora_name,
        medium,
    })
}

fn removed_from_map(r: &mut Reader<'_>, at: usize, n: usize) -> Result<WireEvent, DecodeError> {
    let (mut hashes_, mut medium) = (None, None);
    for _ in 0..n {
        match key(r)? {
            b"block_hashes" => hashes_ = Some(hashes(r)?),
            b"medium" => medium = text(r, "medium")?,
            _ => r.skip()?,
        }
    }
    Ok(WireEvent::Removed {
        hashes: hashes_.ok_or(missing(at, "block_hashes", "BlockRemoved"))?,
        medium,
    })
}

fn hashes(r: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let n = array(r, "block_hashes")?;
    (0..n).map(|_| hash(r, "block_hashes")).collect()
}

fn parent(r: &mut Reader<'_>) -> Result<Option<u64>, DecodeError> {
    let at = r.pos();
    if r.head()? == Head::Nil {
        return Ok(None);
    }
    r.rewind(at);
    hash(r, "parent_block_hash").map(Some)
}

/// A block hash as `u64` (see the module docs).
fn hash(r: &mut Reader<'_>, field: &'static str) -> Result<u64, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Uint(h) => Ok(h),
        Head::Neg(h) => Ok(u64::from_be_bytes(h.to_be_bytes())),
        Head::Bin(digest) => Ok(fnv1a(digest)),
        other => Err(shape(at, field, "an integer or bytes", other)),
    }
}

/// 64-bit FNV-1a: a fixed, documented fold of a digest into 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

fn token_ids(r: &mut Reader<'_>) -> Result<Vec<u32>, DecodeError> {
    let n = array(r, "token_ids")?;
    (0..n)
        .map(|_| {
            let at = r.pos();
            match r.head()? {
                Head::Uint(t) => u32::try_from(t).map_err(|_| range(at, "token_ids")),
                Head::Neg(_) => Err(range(at, "token_ids")),
                other => Err(shape(at, "token_ids", "an integer", other)),
            }
        })
        .collect()
}

fn block_size(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Uint(n) => usize::try_from(n).map_err(|_| range(at, "block_size")),
        other => Err(shape(at, "block_size", "a non-negative integer", other)),
    }
}

fn lora_id(r: &mut Reader<'_>) -> Result<Option<u64>, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Nil => Ok(None),
        Head::Uint(id) => Ok(Some(id)),
        other => Err(shape(at, "lora_id", "a non-negative integer or nil", other)),
    }
}

/// An optional string field.
fn text(r: &mut Reader<'_>, field: &'static str) -> Result<Option<String>, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Nil => Ok(None),
        Head::Str(s) => std::str::from_utf8(s)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| DecodeError::Utf8 { at, field }),
        other => Err(shape(at, field, "a string or nil", other)),
    }
}

/// A map key, which msgspec always writes as a string.
fn key<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Str(k) => Ok(k),
        other => Err(shape(at, "a map key", "a string", other)),
    }
}

fn array(r: &mut Reader<'_>, field: &'static str) -> Result<usize, DecodeError> {
    let at = r.pos();
    match r.head()? {
        Head::Array(n) => Ok(n),
        other => Err(shape(at, field, "an array", other)),
    }
}

fn skip_n(r: &mut Reader<'_>, n: usize) -> Result<(), DecodeError> {
    (0..n).try_for_each(|_| r.skip())
}

fn shape(at: usize, field: &'static str, expected: &'static str, found: Head<'_>) -> DecodeError {
    DecodeError::Shape {
        at,
        field,
        expected,
        found: found.name(),
    }
}

fn missing(at: usize, field: &'static str, within: &'static str) -> DecodeError {
    DecodeError::Missing { at, field, within }
}

fn range(at: usize, field: &'static str) -> DecodeError {
    DecodeError::Range { at, field }
}

#[cfg(test)]
mod tests;
