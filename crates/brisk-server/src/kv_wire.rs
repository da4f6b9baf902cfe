//! How K/V travel between replicas, converted off the engine thread: the engine exports and
//! imports its pool's own bytes (a copy between steps), and the server turns them into what
//! goes on the wire and back (`--kv-transfer-dtype`) on the blocking pool, so that
//! quantizing a move stalls no other request's step.

use std::sync::Arc;

use brisk_engine::MoveError;

/// Converts K/V between an engine's own bytes and the wire's.
pub trait KvWire: Send + Sync {
    /// K/V this engine exported → what is sent.
    fn encode(&self, kv: Vec<u8>) -> Result<Vec<u8>, MoveError>;
    /// K/V received → what this engine imports.
    fn decode(&self, kv: Vec<u8>) -> Result<Vec<u8>, MoveError>;
}

/// Which way [`convert`] goes.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    Encode,
    Decode,
}

/// `kv` converted by `wire` on the blocking pool (unchanged without one).
pub(crate) async fn convert(
    wire: Option<&Arc<dyn KvWire>>,
    direction: Direction,
    kv: Vec<u8>,
) -> Result<Vec<u8>, MoveError> {
    let Some(wire) = wire.cloned() else {
        return Ok(kv);
    };
    tokio::task::spawn_blocking(move || match direction {
        Direction::Encode => wire.encode(kv),
        Direction::Decode => wire.decode(kv),
    })
    .await
    .map_err(|e| MoveError::Wire(format!("converting the K/V failed: {e}")))?
}
