//! Any bytes as a GGUF file: the reader must answer with a named error, never panic or
//! allocate without bound; a file that parses is then read the way the loader reads it
//! (metadata, tensor table, tensor bytes, tokenizer).
#![no_main]

use brisk_gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse("fuzz.gguf".into(), data.to_vec()) else {
        return;
    };
    for info in &file.tensors {
        let _ = file.tensor_bytes(info);
    }
    let _ = brisk_tokenizer::Tokenizer::from_gguf(&file);
});
