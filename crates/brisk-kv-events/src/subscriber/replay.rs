//! Asking a publisher's replay socket for missed batches.
//!
//! Each request uses a fresh DEALER socket, dropped afterwards: gaps are rare, and a fresh
//! connection cannot carry replies meant for an earlier request or a publisher that has
//! since restarted. The request is vLLM's: an empty delimiter and the first sequence number
//! wanted (8 bytes, big-endian). Replies are `[seq, payload]` (vLLM) or `[topic, seq,
//! payload]` (brisk), after the delimiter, until sequence −1. The whole exchange, connecting
//! included, has a deadline: a replay socket that never answers delays live batches by that
//! much and no more, and what arrived before it counts.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::frames::{check_topic, parse_seq, Seq};

/// Malformed replies after which a replay is abandoned (its peer is not a publisher).
const MAX_MALFORMED: usize = 16;

/// What one replay request brought back.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// `(seq, payload)` in the order received, those in the range asked for.
    pub(crate) batches: Vec<(u64, Bytes)>,
    /// Why each reply that was not a batch or the end marker was skipped.
    pub(crate) malformed: Vec<String>,
}

/// Asks `endpoint` for the batches in `wanted`, for at most `timeout`.
pub(crate) async fn request(
    endpoint: &str,
    topic: &[u8],
    wanted: Range<u64>,
    timeout: Duration,
) -> Replayed {
    let mut replayed = Replayed::default();
    let exchange = exchange(endpoint, topic, wanted.clone(), &mut replayed);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("KV events: replay from {endpoint} failed: {e}"),
        Err(_) => tracing::warn!(
            "KV events: replay of {wanted:?} from {endpoint} took over {timeout:?}; \
             using the {} batches that came",
            replayed.batches.len()
        ),
    }
    replayed
}

async fn exchange(
    endpoint: &str,
    topic: &[u8],
    wanted: Range<u64>,
    replayed: &mut Replayed,
) -> zeromq::ZmqResult<()> {
    let mut dealer = DealerSocket::new();
    dealer.connect(endpoint).await?;
    let ask = vec![
        Bytes::new(),
        Bytes::copy_from_slice(&wanted.start.to_be_bytes()),
    ];
    dealer
        .send(ZmqMessage::try_from(ask).expect("two frames"))
        .await?;
    while replayed.malformed.len() < MAX_MALFORMED {
        let reply = dealer.recv().await?;
        match parse_reply(&reply, topic) {
            Ok(Reply::End) => break,
            Ok(Reply::Batch(seq, payload)) => {
                if wanted.contains(&seq) {
                    replayed.batches.push((seq, payload));
                }
                // The rest is newer than the live batch waiting: it will come live.
                if seq + 1 >= wanted.end {
                    break;
                }
            }
            Err(reason) => replayed.malformed.push(format!("replay reply: {reason}")),
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Batch(u64, Bytes),
    End,
}

/// One reply, after the DEALER's empty delimiter.
fn parse_reply(reply: &ZmqMessage, topic: &[u8]) -> Result<Reply, String> {
    let frames: Vec<&Bytes> = reply.iter().collect();
    let frames = match frames.split_first() {
        Some((first, rest)) if first.is_empty() => rest,
        _ => &frames[..],
    };
    let (reply_topic, seq, payload) = match frames {
        [seq, payload] => (None, seq, payload),
        [reply_topic, seq, payload] => (Some(reply_topic), seq, payload),
        _ => {
            return Err(format!(
                "{} frames after the delimiter, not 2 or 3",
                frames.len()
            ))
        }
    };
    match parse_seq(seq)? {
        Seq::End => Ok(Reply::End),
        Seq::Batch(seq) => {
            if let Some(t) = reply_topic {
                check_topic(t, topic)?;
            }
            Ok(Reply::Batch(seq, (*payload).clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frames::message;
    use super::*;

    #[test]
    fn vllm_and_brisk_reply_framings_both_read() {
        let seven = 7i64.to_be_bytes();
        let end = (-1i64).to_be_bytes();
        let batch = Ok(Reply::Batch(7, Bytes::from_static(b"p")));
        assert_eq!(parse_reply(&message(&[b"", &seven, b"p"]), b"kv"), batch);
        assert_eq!(
            parse_reply(&message(&[b"", b"kv", &seven, b"p"]), b"kv"),
            batch
        );
        assert_eq!(
            parse_reply(&message(&[b"", &end, b""]), b"kv"),
            Ok(Reply::End)
        );
        assert_eq!(
            parse_reply(&message(&[b"", b"", &end, b""]), b"kv"),
            Ok(Reply::End)
        );
    }

    #[test]
    fn replies_of_another_shape_or_topic_are_refused() {
        let seven = 7i64.to_be_bytes();
        for bad in [
            message(&[b"", b"kv"]),
            message(&[b"", b"other", &seven, b"p"]),
            message(&[b"", b"kv", b"123", b"p"]),
            message(&[b"", &(-5i64).to_be_bytes(), b"p"]),
        ] {
            assert!(parse_reply(&bad, b"kv").is_err(), "{bad:?}");
        }
    }
}
