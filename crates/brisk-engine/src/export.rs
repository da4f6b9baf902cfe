//! What crosses from one engine to another when a running request moves: the request
//! itself ([`RequestExport`]: scheduler state, sampler, K/V) and the full blocks sent ahead
//! of it while it keeps running ([`BlockExport`]), with their byte formats (`BRQ2`, `BRB1`:
//! magic, msgpack header length and header, then the K/V as the backend exported them), and
//! why a move can fail ([`MoveError`]).

use brisk_sampling::Sampler;
use brisk_scheduler::{SchedulerError, SeqExport};
use brisk_types::{BackendError, TokenId};

/// A running request as it leaves an engine (see [`crate::EngineCore::export`]): its scheduler
/// state, its sampler with the generator's state, and its K/V blocks as bytes.
#[derive(Clone, Debug)]
pub struct RequestExport {
    /// What the destination's scheduler needs.
    pub seq: SeqExport,
    /// The sampler, mid-sequence: the destination draws what the source would have.
    pub sampler: Sampler,
    /// Its logprobs setting.
    pub logprobs: Option<usize>,
    /// Its K/V, from the backend's `export_blocks` (the pool's own type, lossless).
    pub kv: Vec<u8>,
}

impl RequestExport {
    /// Bytes of K/V the move carries.
    pub fn kv_bytes(&self) -> usize {
        self.kv.len()
    }

    /// The export as bytes for another process: `BRQ2`, the length of a msgpack header
    /// (8 bytes, little-endian), the header — scheduler state, sampler state, logprobs — and
    /// the K/V bytes as the backend exported them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.wire_prefix();
        out.extend(&self.kv);
        out
    }

    /// The same bytes as [`Self::to_bytes`] in two parts — magic, length and header; then
    /// the K/V — without copying the K/V (send them one after the other).
    pub fn into_wire_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.wire_prefix(), self.kv)
    }

    /// Magic, header length and header.
    fn wire_prefix(&self) -> Vec<u8> {
        let header = WireHeader {
            seq: self.seq.clone(),
            sampler: self.sampler.state(),
            logprobs: self.logprobs,
        };
        wire_prefix(WIRE_MAGIC, &header)
    }

    /// Reads what [`Self::to_bytes`] wrote, keeping its buffer for the K/V (no copy of
    /// them); a clear error for anything else.
    pub fn from_vec(mut bytes: Vec<u8>) -> Result<Self, MoveError> {
        let (header, offset) = Self::read_header(&bytes)?;
        bytes.drain(..offset);
        Ok(Self {
            seq: header.seq,
            sampler: Sampler::from_state(header.sampler),
            logprobs: header.logprobs,
            kv: bytes,
        })
    }

    /// Reads what [`Self::to_bytes`] wrote; a clear error for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MoveError> {
        let (header, offset) = Self::read_header(bytes)?;
        Ok(Self {
            seq: header.seq,
            sampler: Sampler::from_state(header.sampler),
            logprobs: header.logprobs,
            kv: bytes[offset..].to_vec(),
        })
    }

    /// The header and where the K/V start.
    fn read_header(bytes: &[u8]) -> Result<(WireHeader, usize), MoveError> {
        read_wire(WIRE_MAGIC, "request export", bytes)
    }
}

const WIRE_MAGIC: &[u8; 4] = b"BRQ2";

const BLOCKS_MAGIC: &[u8; 4] = b"BRB1";

/// `magic`, the length of `header` in msgpack (8 bytes, little-endian), the header.
fn wire_prefix<T: serde::Serialize>(magic: &[u8; 4], header: &T) -> Vec<u8> {
    let header = rmp_serde::to_vec_named(header).expect("encoding into memory");
    let mut out = Vec::with_capacity(12 + header.len());
    out.extend(magic);
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    out
}

/// Reads what [`wire_prefix`] wrote: the header and where the payload starts; a clear
/// error naming `what` for anything else.
fn read_wire<T: serde::de::DeserializeOwned>(
    magic: &[u8; 4],
    what: &str,
    bytes: &[u8],
) -> Result<(T, usize), MoveError> {
    let bad = |why: String| MoveError::Wire(why);
    let rest = bytes.strip_prefix(magic).ok_or_else(|| {
        bad(format!(
            "not a brisk {what} (no {} magic)",
            String::from_utf8_lossy(magic)
        ))
    })?;
    let (len, rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("cut short before the header length".into()))?;
    let len = usize::try_from(u64::from_le_bytes(*len))
        .ok()
        .filter(|&l| l <= rest.len())
        .ok_or_else(|| bad("the header runs past the end".into()))?;
    let header: T = rmp_serde::from_slice(&rest[..len])
        .map_err(|e| bad(format!("the header does not decode: {e}")))?;
    Ok((header, bytes.len() - rest.len() + len))
}

/// Full blocks of a running request sent ahead of its move (see
/// [`crate::EngineCore::export_blocks`]): the tokens they hold, from position 0, and the K/V of the
/// blocks from `first_block` on (the earlier ones went before).
#[derive(Clone, Debug)]
pub struct BlockExport {
    /// The tokens of every full block up to the last one carried.
    pub tokens: Vec<TokenId>,
    /// The first block whose K/V `kv` holds.
    pub first_block: usize,
    /// K/V of blocks `first_block..`, as the backend exported them.
    pub kv: Vec<u8>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BlocksHeader {
    tokens: Vec<TokenId>,
    first_block: usize,
}

impl BlockExport {
    /// `BRB1`, the header length, the header (tokens, first block), then the K/V — in two
    /// parts, without copying the K/V.
    pub fn into_wire_parts(self) -> (Vec<u8>, Vec<u8>) {
        let header = BlocksHeader {
            tokens: self.tokens,
            first_block: self.first_block,
        };
        (wire_prefix(BLOCKS_MAGIC, &header), self.kv)
    }

    /// Reads what [`Self::into_wire_parts`] wrote, keeping its buffer for the K/V.
    pub fn from_vec(mut bytes: Vec<u8>) -> Result<Self, MoveError> {
        let (header, offset): (BlocksHeader, usize) =
            read_wire(BLOCKS_MAGIC, "block export", &bytes)?;
        bytes.drain(..offset);
        Ok(Self {
            tokens: header.tokens,
            first_block: header.first_block,
            kv: bytes,
        })
    }
}

/// The part of a [`RequestExport`] that is not K/V, as it crosses between processes.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireHeader {
    seq: SeqExport,
    sampler: brisk_sampling::SamplerState,
    logprobs: Option<usize>,
}

/// Why a request could not move; it keeps running where it was.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The scheduler refused (not decoding, no seat, no blocks, unknown id, …).
    #[error("{0}")]
    Scheduler(#[from] SchedulerError),
    /// The backend could not read or write the blocks (another geometry or type, say).
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// The engine thread has stopped.
    #[error("the engine is not running")]
    Stopped,
    /// Bytes that are not a request export.
    #[error("request export: {0}")]
    Wire(String),
    /// The request's output is constrained (a JSON schema, a grammar): its grammar state
    /// does not travel yet.
    #[error("cannot move: requests with structured output stay where they started")]
    Constrained,
}
