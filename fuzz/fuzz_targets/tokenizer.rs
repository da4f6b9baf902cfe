//! SmolLM2's tokenizer on any text and any token ids: encoding never panics and decodes back
//! to the text, less the characters the vocabulary cannot spell (SmolLM2 has no token for
//! some control bytes, e.g. 0x04, and no byte fallback: those are dropped, as Hugging Face's
//! tokenizer drops them); decoding arbitrary ids one at a time (streaming) gives the one-shot
//! result.
#![no_main]

use brisk_fuzz::smollm2_tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tok = smollm2_tokenizer();
    if let Ok(text) = std::str::from_utf8(data) {
        let ids = tok.encode(text, false).expect("any text encodes");
        let back = tok.decode(&ids, false).expect("its own ids decode");
        let spellable: String = text
            .chars()
            .filter(|c| {
                !tok.encode(&c.to_string(), false)
                    .expect("encodes")
                    .is_empty()
            })
            .collect();
        assert_eq!(back, spellable, "encode/decode round trip");
    }
    // The same bytes as token ids (wrapped into the vocabulary).
    let vocab = u32::try_from(tok.vocab_size()).expect("vocabulary fits u32");
    let ids: Vec<u32> = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .map(|id| id % vocab)
        .collect();
    let one_shot = tok
        .decode(&ids, false)
        .expect("ids in the vocabulary decode");
    let mut decoder = tok.decoder(false);
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&decoder.push(id).expect("streaming decode"));
    }
    streamed.push_str(&decoder.finish().expect("streaming finish"));
    assert_eq!(streamed, one_shot, "streaming and one-shot decoding agree");
});
