//! What the fuzz targets share.

use std::sync::OnceLock;

use brisk_gguf::GgufFile;
use brisk_tokenizer::Tokenizer;

/// SmolLM2's tokenizer, loaded once per fuzzing process.
pub fn smollm2_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let file = GgufFile::open(brisk_testkit::smollm2_path()).expect("the SmolLM2 file");
        Tokenizer::from_gguf(&file).expect("its tokenizer")
    })
}
