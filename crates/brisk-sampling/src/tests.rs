use super::*;

fn sampler(params: SamplingParams) -> Sampler {
    Sampler::new(params, 0)
}

#[test]
fn greedy_takes_the_argmax_and_reports_its_logprob() {
    let s = sampler(SamplingParams::greedy());
    let out = s.sample_with_draw(&[0.0, 2.0, 1.0], &[], &[], 0.9);
    assert_eq!(out.token, 1);
    let expected = 2.0 - (1f32 + 2f32.exp() + 1f32.exp()).ln();
    assert!((out.logprob - expected).abs() < 1e-6);
}

#[test]
fn the_draw_walks_the_sorted_distribution() {
    // Probabilities 0.5, 0.25, 0.25 for tokens 2, 0, 1.
    let logits = [0.0, 0.0, 2f32.ln()];
    let s = sampler(SamplingParams::default());
    assert_eq!(s.sample_with_draw(&logits, &[], &[], 0.1).token, 2);
    assert_eq!(s.sample_with_draw(&logits, &[], &[], 0.6).token, 0);
    assert_eq!(s.sample_with_draw(&logits, &[], &[], 0.9).token, 1);
}

#[test]
fn top_k_one_is_greedy_whatever_the_draw() {
    let s = sampler(SamplingParams {
        top_k: 1,
        ..SamplingParams::default()
    });
    assert_eq!(
        s.sample_with_draw(&[1.0, 3.0, 2.0], &[], &[], 0.99).token,
        1
    );
}

#[test]
fn top_p_cuts_the_tail() {
    let logits = [0.0, 0.0, 2f32.ln()]; // 0.5 / 0.25 / 0.25
    let s = sampler(SamplingParams {
        top_p: 0.5,
        ..SamplingParams::default()
    });
    for draw in [0.0, 0.5, 0.99] {
        assert_eq!(s.sample_with_draw(&logits, &[], &[], draw).token, 2);
    }
}

#[test]
fn min_p_drops_unlikely_tokens() {
    let logits = [0.0, 4.0, 3.9];
    let s = sampler(SamplingParams {
        min_p: 0.5,
        ..SamplingParams::default()
    });
    for i in 0..100 {
        #[allow(clippy::cast_precision_loss)]
        let t = s
            .sample_with_draw(&logits, &[], &[], i as f32 / 100.0)
            .token;
        assert_ne!(t, 0);
    }
}

#[test]
fn penalties_push_repeated_tokens_down() {
    let logits = [1.0, 1.1, 0.0];
    let rep = sampler(SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    });
    assert_eq!(rep.sample_with_draw(&logits, &[1], &[], 0.0).token, 0);
    let freq = sampler(SamplingParams {
        frequency_penalty: 0.06,
        ..SamplingParams::greedy()
    });
    assert_eq!(freq.sample_with_draw(&logits, &[], &[1], 0.0).token, 1);
    assert_eq!(freq.sample_with_draw(&logits, &[], &[1, 1], 0.0).token, 0);
    let presence = sampler(SamplingParams {
        presence_penalty: 0.2,
        ..SamplingParams::greedy()
    });
    assert_eq!(presence.sample_with_draw(&logits, &[], &[1], 0.0).token, 0);
}

#[test]
fn a_seed_makes_sampling_reproducible() {
    let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
    let params = SamplingParams {
        temperature: 1.5,
        seed: Some(42),
        ..SamplingParams::default()
    };
    let run = || {
        let mut s = Sampler::new(params.clone(), 7);
        (0..20)
            .map(|_| s.sample(&logits, &[], &[]).token)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
    let mut other = Sampler::new(
        SamplingParams {
            seed: Some(43),
            ..params.clone()
        },
        7,
    );
    let differs = (0..20)
        .map(|_| other.sample(&logits, &[], &[]).token)
        .collect::<Vec<_>>();
    assert_ne!(run(), differs);
}

#[test]
fn out_of_range_parameters_are_refused() {
    let bad = [
        SamplingParams {
            temperature: -1.0,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: f32::NAN,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_p: 0.0,
            ..SamplingParams::default()
        },
        SamplingParams {
            min_p: 2.0,
            ..SamplingParams::default()
        },
        SamplingParams {
            repetition_penalty: 0.0,
            ..SamplingParams::default()
        },
        SamplingParams {
            frequency_penalty: 3.0,
            ..SamplingParams::default()
        },
    ];
    for p in bad {
        assert!(p.validate().is_err(), "{p:?}");
    }
    assert!(SamplingParams::default().validate().is_ok());
}

#[test]
fn top_logprobs_are_sorted_and_normalized() {
    let logits = [0.5, 3.0, 1.0, 2.0];
    let top = top_logprobs(&logits, 2);
    assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3]);
    let total: f32 = logits.iter().map(|&l| (l - 3.0f32).exp()).sum();
    assert!((top[0].1 + total.ln()).abs() < 1e-6);
    assert!((top[1].1 - log_softmax_at(&logits, 3)).abs() < 1e-6);
}

#[test]
fn logit_bias_bans_and_forces_tokens_and_is_validated() {
    let logits = [1.0, 3.0, 2.0, 0.5];
    let banned = SamplingParams {
        logit_bias: vec![(1, -100.0)],
        ..SamplingParams::greedy()
    };
    assert_eq!(sampler(banned).sample(&logits, &[], &[]).token, 2);
    let forced = SamplingParams {
        logit_bias: vec![(3, 100.0), (99, 5.0)],
        ..SamplingParams::default()
    };
    let mut s = sampler(forced);
    for _ in 0..20 {
        let choice = s.sample(&logits, &[], &[]);
        assert_eq!(choice.token, 3);
        // The logprob is the model's, before the bias.
        assert!((choice.logprob - log_softmax_at(&logits, 3)).abs() < 1e-6);
    }
    let too_big = SamplingParams {
        logit_bias: vec![(0, 101.0)],
        ..SamplingParams::default()
    };
    assert_eq!(too_big.validate().unwrap_err().param, "logit_bias");
    let too_many = SamplingParams {
        logit_bias: (0..=MAX_LOGIT_BIAS as u32).map(|t| (t, 1.0)).collect(),
        ..SamplingParams::default()
    };
    assert_eq!(too_many.validate().unwrap_err().param, "logit_bias");
}
