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

/// The draw as a full sort of the vocabulary defines it. Sums run in token-id order until
/// the order by weight exists (after top-k), then in that order, as `draw_filtered`'s do:
/// float sums depend on their order, and near a top-p boundary that decides a token.
fn full_sort_draw(p: &SamplingParams, logits: &[f32], draw: f32) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, ((l - max) / p.temperature).exp()))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    if p.min_p > 0.0 {
        let top = probs.iter().map(|&(_, w)| w).fold(0.0, f32::max);
        probs.retain(|&(_, w)| w >= p.min_p * top);
    }
    let top_k = p.top_k > 0 && p.top_k < probs.len();
    let id_order_total: f32 = probs.iter().map(|&(_, w)| w).sum();
    probs.sort_unstable_by(by_weight);
    if top_k {
        probs.truncate(p.top_k);
    }
    let sorted_total = |probs: &[(usize, f32)]| probs.iter().map(|&(_, w)| w).sum::<f32>();
    let mut total = if top_k {
        sorted_total(&probs)
    } else {
        id_order_total
    };
    if p.top_p < 1.0 {
        let (mut cum, mut keep) = (0.0, probs.len());
        for (i, &(_, w)) in probs.iter().enumerate() {
            cum += w / total;
            if cum >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        total = sorted_total(&probs);
    }
    let target = draw * total;
    let mut cum = 0.0;
    for &(i, w) in &probs {
        cum += w;
        if target < cum {
            return i;
        }
    }
    probs.last().unwrap().0
}

#[test]
fn sorting_only_the_walked_prefix_draws_what_a_full_sort_draws() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for case in 0..300 {
        let vocab = [3, 64, 65, 1000, 5000][case % 5];
        // Peaked rows with ties (rounded logits) and a flat row now and then.
        let logits: Vec<f32> = (0..vocab)
            .map(|_| {
                if case % 7 == 0 {
                    0.0
                } else {
                    (rng.random::<f32>() * 16.0).round() / 2.0
                }
            })
            .collect();
        let params = SamplingParams {
            temperature: [1.0, 0.7, 1.5][case % 3],
            top_p: [1.0, 0.9, 0.5, 0.999][case % 4],
            top_k: [0, 40, 1000, 2][case / 4 % 4],
            min_p: [0.0, 0.0, 0.05][case % 3],
            ..SamplingParams::default()
        };
        let s = sampler(params.clone());
        for draw in [0.0, 0.3, 0.77, 0.999_999] {
            assert_eq!(
                s.sample_with_draw(&logits, &[], &[], draw).token as usize,
                full_sort_draw(&params, &logits, draw),
                "case {case}, draw {draw}, {params:?}"
            );
        }
    }
}

#[test]
fn a_sampler_rebuilt_from_its_state_draws_what_it_would_have() {
    let params = SamplingParams {
        temperature: 1.0,
        seed: Some(11),
        ..SamplingParams::greedy()
    };
    let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
    let mut original = Sampler::new(params, 0);
    for _ in 0..5 {
        original.sample_token(&logits, &[], &[]);
    }
    // Through JSON, as it crosses between processes.
    let state = original.state();
    let json = serde_json::to_string(&state).unwrap();
    let mut rebuilt = Sampler::from_state(serde_json::from_str(&json).unwrap());
    let draws = |s: &mut Sampler| -> Vec<u32> {
        (0..20).map(|_| s.sample_token(&logits, &[], &[])).collect()
    };
    let (a, b) = (draws(&mut original), draws(&mut rebuilt));
    assert_eq!(a, b);
    assert!(a.iter().any(|&t| t != a[0]), "the draws vary: {a:?}");
}

/// Seeded requests draw what they drew before the sampler named its generator directly.
#[test]
fn the_generator_is_rands_std_rng() {
    let mut ours = rand_chacha::ChaCha12Rng::seed_from_u64(7);
    let mut std = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..100 {
        assert_eq!(
            ours.random::<f32>().to_bits(),
            std.random::<f32>().to_bits()
        );
    }
}
