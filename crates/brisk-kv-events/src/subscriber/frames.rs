//! Reading the frames of a published message: `[topic, seq, payload]`, the sequence number
//! 8 bytes big-endian (−1 only as a replay's end marker).

use bytes::Bytes;
use zeromq::ZmqMessage;

/// A sequence-number frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seq {
    Batch(u64),
    /// −1: a replay is over.
    End,
}

pub(crate) fn parse_seq(frame: &[u8]) -> Result<Seq, String> {
    let bytes = <[u8; 8]>::try_from(frame)
        .map_err(|_| format!("a sequence number of {} bytes, not 8", frame.len()))?;
    match i64::from_be_bytes(bytes) {
        -1 => Ok(Seq::End),
        seq => u64::try_from(seq)
            .map(Seq::Batch)
            .map_err(|_| format!("a negative sequence number {seq}")),
    }
}

/// Whether a message's topic frame is exactly `want`.
pub(crate) fn check_topic(found: &[u8], want: &[u8]) -> Result<(), String> {
    if found == want {
        return Ok(());
    }
    Err(format!(
        "topic {:?} is not {:?}",
        String::from_utf8_lossy(found),
        String::from_utf8_lossy(want)
    ))
}

/// The sequence number and payload of a live message on `topic`.
pub(crate) fn parse_live(message: &ZmqMessage, topic: &[u8]) -> Result<(u64, Bytes), String> {
    let frames: Vec<&Bytes> = message.iter().collect();
    let [message_topic, seq, payload] = frames[..] else {
        return Err(format!("{} frames, not 3", frames.len()));
    };
    // SUB filters by prefix: "kv" lets "kv-other" through.
    check_topic(message_topic, topic)?;
    match parse_seq(seq)? {
        Seq::Batch(seq) => Ok((seq, payload.clone())),
        Seq::End => Err("sequence number −1 on the live socket".into()),
    }
}

/// A message of these frames (tests).
#[cfg(test)]
pub(crate) fn message(frames: &[&[u8]]) -> ZmqMessage {
    let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
    ZmqMessage::try_from(frames).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_message_gives_its_sequence_and_payload() {
        let m = message(&[b"kv", &9u64.to_be_bytes(), b"payload"]);
        assert_eq!(
            parse_live(&m, b"kv"),
            Ok((9, Bytes::from_static(b"payload")))
        );
    }

    #[test]
    fn frames_of_another_shape_say_what_is_wrong() {
        let nine = 9u64.to_be_bytes();
        for (frames, want) in [
            (&[&b"kv"[..], &nine][..], "2 frames"),
            (&[b"kv", b"abc", b"p"], "3 bytes"),
            (&[b"kv-other", &nine, b"p"], "is not \"kv\""),
            (&[b"kv", &(-1i64).to_be_bytes(), b"p"], "−1"),
            (&[b"kv", &(-2i64).to_be_bytes(), b"p"], "negative"),
        ] {
            let e = parse_live(&message(frames), b"kv").unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }
}
