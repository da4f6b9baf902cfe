//! Rotary position embeddings.

use crate::config::{ModelConfig, RopeScaling, RopeStyle};

/// Inverse frequencies of a model's rotary embedding, with scaling folded in.
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
    style: RopeStyle,
    position_scale: f32,
}

impl Rope {
    pub(crate) fn new(config: &ModelConfig, freq_factors: Option<&[f32]>) -> Self {
        let d = config.head_dim;
        let mut inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f32 / d as f32))
            .collect();
        if let Some(factors) = freq_factors {
            for (f, div) in inv_freq.iter_mut().zip(factors) {
                *f /= div;
            }
        }
        let position_scale = match config.rope_scaling {
            RopeScaling::Linear { factor } if factor > 0.0 => 1.0 / factor,
            _ => 1.0,
        };
        Self {
            inv_freq,
            style: config.rope_style,
            position_scale,
        }
    }

    /// `(cos, sin)` tables for `positions`, `head_dim / 2` values per position.
    pub(crate) fn tables(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let p = p as f32 * self.position_scale;
            for &f in &self.inv_freq {
                let (s, c) = (p * f).sin_cos();
                cos.push(c);
                sin.push(s);
            }
        }
        (cos, sin)
    }

    /// Rotates every head of every token in `x` (`tokens × heads × head_dim`) in place.
    pub(crate) fn apply(&self, x: &mut [f32], heads: usize, cos: &[f32], sin: &[f32]) {
        let half = self.inv_freq.len();
        let d = half * 2;
        for (t, token) in x.chunks_exact_mut(heads * d).enumerate() {
            let (c, s) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            for head in token.chunks_exact_mut(d) {
                match self.style {
                    RopeStyle::Interleaved => {
                        for i in 0..half {
                            let (a, b) = (head[2 * i], head[2 * i + 1]);
                            head[2 * i] = a * c[i] - b * s[i];
                            head[2 * i + 1] = a * s[i] + b * c[i];
                        }
                    }
                    RopeStyle::Neox => {
                        let (lo, hi) = head.split_at_mut(half);
                        for i in 0..half {
                            let (a, b) = (lo[i], hi[i]);
                            lo[i] = a * c[i] - b * s[i];
                            hi[i] = a * s[i] + b * c[i];
                        }
                    }
                }
            }
        }
    }
}
