//! Golden greedy outputs of SmolLM2-135M-Instruct (Q4_1 GGUF), plain completion without BOS,
//! on prompts whose top-1 margins are wide enough that any correct implementation — whatever
//! its rounding — must produce exactly these ids (DESIGN.md, "Models").

mod common;

use common::{
    greedy_alone, COUNTING_CONTINUATION, COUNTING_IDS, COUNTING_TEXT, FRANCE_CONTINUATION,
    FRANCE_IDS,
};

/// Non-contiguous, out-of-order blocks, so the golden runs also exercise paging.
const BLOCK_TABLE: [u32; 4] = [3, 0, 6, 1];
const BLOCK_SIZE: usize = 8;

#[test]
fn the_tokenizer_splits_the_counting_prompt_into_single_digits_and_spaces() {
    let (file, _) = common::load();
    assert_eq!(common::encode(&file, COUNTING_TEXT), COUNTING_IDS);
    assert_eq!(
        common::encode(&file, "The capital of France is"),
        FRANCE_IDS
    );
}

#[test]
fn counting_prompt_greedily_continues_with_seven_eight_nine_by_wide_margins() {
    let backend = common::backend();
    let (ids, margins) = greedy_alone(&backend, &COUNTING_IDS, 8, BLOCK_SIZE, &BLOCK_TABLE);
    eprintln!("counting: ids {ids:?}, top-1 margins {margins:?}");
    assert_eq!(ids, COUNTING_CONTINUATION, "margins {margins:?}");
    for (step, m) in margins.iter().enumerate() {
        assert!(
            *m > 3.0,
            "step {step}: top-1 margin {m} is not above 3 (all: {margins:?})"
        );
    }
}

#[test]
fn capital_of_france_prompt_greedily_continues_with_paris() {
    let backend = common::backend();
    let (ids, margins) = greedy_alone(&backend, &FRANCE_IDS, 2, BLOCK_SIZE, &BLOCK_TABLE);
    eprintln!("france: ids {ids:?}, top-1 margins {margins:?}");
    assert_eq!(ids, FRANCE_CONTINUATION, "margins {margins:?}");
}
