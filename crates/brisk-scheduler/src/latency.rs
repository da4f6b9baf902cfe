//! A profiled step-latency model: how long one step of a given shape takes on this machine.
//!
//! The SLO policy needs to predict the future (will this prompt still make its TTFT? how many
//! prompt tokens can join a step before running decodes miss their TPOT?), and the simulator
//! needs step times without a model. Both use the same value type, as Dynamo's mocker and
//! HyGen's latency predictor do: a step costs a fixed overhead, plus a cost per prompt token
//! (the weight matmuls), per decoding sequence, per context token a decode attends over, and
//! per (query, key) pair of prompt attention. The coefficients are fitted by least squares on
//! steps measured by `brisk profile` (a grid over prefill tokens, decode sequences and
//! context), with the negative ones dropped and refitted (a step never gets cheaper with more
//! work, and never takes negative time), and the fit's error on held-out points is stored
//! beside them. The squares are of *relative* errors (each row weighted by 1/measured): a
//! 20 ms decode step mispredicted by 15 ms matters to a TPOT objective as much as a 2 s
//! prefill mispredicted by 1.5 s, and plain least squares would sacrifice the former.

use std::path::Path;

use brisk_types::LogitsWanted;
use serde::{Deserialize, Serialize};

use crate::plan::StepPlan;

/// The shape of one step: what its cost depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepShape {
    /// Prompt tokens computed (all chunks together).
    pub prefill_tokens: usize,
    /// Sequences decoding one token.
    pub decode_seqs: usize,
    /// Positions the decodes attend over, summed over the decoding sequences.
    pub decode_context: usize,
    /// (query, key) pairs of the prompt chunks' attention, summed over chunks.
    pub prefill_attention: f64,
}

impl StepShape {
    /// The shape of a planned step. A one-token chunk that wants logits counts as a decode.
    pub fn of_plan(plan: &StepPlan) -> Self {
        Self::of_sequences(
            plan.seqs
                .iter()
                .map(|s| (s.tokens.len(), s.start_pos, s.logits)),
        )
    }

    /// The shape of a step as the backend receives it (the same as its plan's).
    pub fn of_batch(batch: &brisk_types::StepBatch<'_>) -> Self {
        Self::of_sequences(
            batch
                .seqs
                .iter()
                .map(|s| (s.tokens.len(), s.start_pos, s.logits)),
        )
    }

    /// From each sequence's (tokens, start position, logits wanted). A chunk wanting every
    /// row verifies drafts: each of its rows costs what a decode costs (its logits are
    /// computed and sampled, which a prompt token's are not).
    fn of_sequences(seqs: impl Iterator<Item = (usize, usize, LogitsWanted)>) -> Self {
        let mut shape = Self::default();
        for (tokens, start_pos, logits) in seqs {
            if tokens == 1 && logits != LogitsWanted::None {
                shape.add_decode(start_pos + 1);
            } else if tokens > 1 && logits == LogitsWanted::All {
                for row in 1..=tokens {
                    shape.add_decode(start_pos + row);
                }
            } else {
                shape.add_prefill(start_pos, tokens);
            }
        }
        shape
    }

    /// Adds a prompt chunk of `len` tokens starting at position `start`.
    pub fn add_prefill(&mut self, start: usize, len: usize) {
        self.prefill_tokens += len;
        // Token i of the chunk attends over start + i + 1 keys.
        self.prefill_attention += len as f64 * start as f64 + (len * (len + 1)) as f64 / 2.0;
    }

    /// Adds a decoding sequence attending over `context` positions.
    pub fn add_decode(&mut self, context: usize) {
        self.decode_seqs += 1;
        self.decode_context += context;
    }

    fn features(&self) -> [f64; NUM_FEATURES] {
        [
            1.0,
            self.prefill_tokens as f64,
            self.decode_seqs as f64,
            self.decode_context as f64,
            self.prefill_attention,
        ]
    }
}

const NUM_FEATURES: usize = 5;

/// Seconds per unit of each feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyCoefficients {
    /// Fixed cost of a step.
    pub base_s: f64,
    /// Per prompt token.
    pub per_prefill_token_s: f64,
    /// Per decoding sequence.
    pub per_decode_seq_s: f64,
    /// Per position a decode attends over.
    pub per_decode_context_token_s: f64,
    /// Per (query, key) pair of prompt attention.
    pub per_prefill_attention_pair_s: f64,
}

impl LatencyCoefficients {
    fn as_array(&self) -> [f64; NUM_FEATURES] {
        [
            self.base_s,
            self.per_prefill_token_s,
            self.per_decode_seq_s,
            self.per_decode_context_token_s,
            self.per_prefill_attention_pair_s,
        ]
    }

    fn from_array(a: [f64; NUM_FEATURES]) -> Self {
        Self {
            base_s: a[0],
            per_prefill_token_s: a[1],
            per_decode_seq_s: a[2],
            per_decode_context_token_s: a[3],
            per_prefill_attention_pair_s: a[4],
        }
    }
}

/// How well a model predicts steps it was not fitted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitQuality {
    /// Points the coefficients were fitted on.
    pub train_points: usize,
    /// Points held out.
    pub holdout_points: usize,
    /// Mean |predicted − measured| / measured over the held-out points.
    pub holdout_mean_abs_rel_error: f64,
    /// Largest such error.
    pub holdout_max_abs_rel_error: f64,
}

/// One measured step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepSample {
    /// What ran.
    pub shape: StepShape,
    /// How long it took, seconds.
    pub seconds: f64,
}

/// One step as the engine ran it, for calibrating the model on a live server
/// (`brisk serve --record-steps`, then `brisk profile --from-steps`).
///
/// `seconds` is the whole engine iteration — scheduling, the backend, sampling and handing
/// tokens to the server — while the server's threads, the tokenizer and any client on the
/// machine compete for the cores: what the simulator's clock must advance per step for its
/// TPOT to match a loaded server. `execute_s` is the backend alone, what `brisk profile`'s grid
/// measures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's number.
    pub step: u64,
    /// When it started, seconds since the engine started.
    pub at_s: f64,
    /// What ran.
    pub shape: StepShape,
    /// The backend's share, seconds.
    pub execute_s: f64,
    /// The whole iteration, seconds.
    pub seconds: f64,
}

impl StepRecord {
    /// The measurement a model is fitted on.
    pub fn sample(&self) -> StepSample {
        StepSample {
            shape: self.shape,
            seconds: self.seconds,
        }
    }
}

/// The step-latency model (see the module docs). Serialized as JSON by `brisk profile`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyModel {
    /// What it was measured on (model file, machine notes).
    pub source: String,
    /// The coefficients.
    pub coefficients: LatencyCoefficients,
    /// Held-out error of the fit, when it was fitted.
    pub fit: Option<FitQuality>,
    /// The measurements, kept so a model can be refitted or inspected.
    #[serde(default)]
    pub samples: Vec<StepSample>,
}

/// Why a latency model could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    /// Too few or degenerate measurements.
    #[error("cannot fit a latency model: {0}")]
    Fit(String),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not a latency model.
    #[error("{path} is not a brisk latency model: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Shortest step the model ever predicts, seconds (a fit can go slightly negative near 0).
const MIN_STEP_S: f64 = 1e-5;

impl LatencyModel {
    /// A model with the given coefficients and no fit data (tests, hand-written models).
    pub fn from_coefficients(coefficients: LatencyCoefficients) -> Self {
        Self {
            source: "coefficients".into(),
            coefficients,
            fit: None,
            samples: Vec::new(),
        }
    }

    /// Predicted duration of a step, seconds.
    pub fn predict(&self, shape: &StepShape) -> f64 {
        let c = self.coefficients.as_array();
        let x = shape.features();
        (0..NUM_FEATURES)
            .map(|i| c[i] * x[i])
            .sum::<f64>()
            .max(MIN_STEP_S)
    }

    /// Predicted time to compute a `tokens`-token prompt from position `start`, in chunks of at
    /// most `chunk` tokens, each step also carrying `decode_seqs` decodes over
    /// `decode_context` positions.
    pub fn prefill_time(
        &self,
        start: usize,
        tokens: usize,
        chunk: usize,
        decode_seqs: usize,
        decode_context: usize,
    ) -> f64 {
        let chunk = chunk.max(1);
        let (mut done, mut total) = (0, 0.0);
        while done < tokens {
            let len = chunk.min(tokens - done);
            let mut shape = StepShape {
                decode_seqs,
                decode_context,
                ..StepShape::default()
            };
            shape.add_prefill(start + done, len);
            total += self.predict(&shape);
            done += len;
        }
        total
    }

    /// Fits the coefficients on `train` (least squares; features whose coefficient comes out
    /// negative are dropped and the rest refitted) and measures the error on `holdout`.
    pub fn fit(
        source: impl Into<String>,
        train: &[StepSample],
        holdout: &[StepSample],
    ) -> Result<Self, LatencyError> {
        if train.len() < NUM_FEATURES {
            return Err(LatencyError::Fit(format!(
                "{} measurements, at least {NUM_FEATURES} are needed",
                train.len()
            )));
        }
        if let Some(bad) = train
            .iter()
            .chain(holdout)
            .find(|s| !(s.seconds.is_finite() && s.seconds > 0.0))
        {
            return Err(LatencyError::Fit(format!(
                "a measured step took {} s",
                bad.seconds
            )));
        }
        // A feature no measurement exercises (say, prompt attention in decode-only steps)
        // cannot be fitted: its coefficient stays 0.
        let mut active = [false; NUM_FEATURES];
        for s in train {
            for (a, x) in active.iter_mut().zip(s.shape.features()) {
                *a |= x != 0.0;
            }
        }
        let coefficients = loop {
            let c = least_squares(train, &active)?;
            match (0..NUM_FEATURES).find(|&i| active[i] && c[i] < 0.0) {
                Some(i) if active.iter().filter(|a| **a).count() > 1 => active[i] = false,
                _ => break c,
            }
        };
        let mut model = Self {
            source: source.into(),
            coefficients: LatencyCoefficients::from_array(coefficients),
            fit: None,
            samples: train.iter().chain(holdout).copied().collect(),
        };
        let errors: Vec<f64> = holdout
            .iter()
            .map(|s| (model.predict(&s.shape) - s.seconds).abs() / s.seconds)
            .collect();
        model.fit = Some(FitQuality {
            train_points: train.len(),
            holdout_points: holdout.len(),
            holdout_mean_abs_rel_error: errors.iter().sum::<f64>() / errors.len().max(1) as f64,
            holdout_max_abs_rel_error: errors.iter().copied().fold(0.0, f64::max),
        });
        Ok(model)
    }

    /// Reads a model written by [`LatencyModel::save`].
    pub fn load(path: &Path) -> Result<Self, LatencyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LatencyError::Io {
            path: name.clone(),
            source,
        })?;
        let model: Self = serde_json::from_str(&text).map_err(|e| LatencyError::Parse {
            path: name.clone(),
            message: e.to_string(),
        })?;
        if model.coefficients.as_array().iter().any(|c| !c.is_finite()) {
            return Err(LatencyError::Parse {
                path: name,
                message: "a coefficient is not a finite number".into(),
            });
        }
        Ok(model)
    }

    /// Writes the model as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), LatencyError> {
        let text = serde_json::to_string_pretty(self).expect("latency models serialize");
        std::fs::write(path, text + "\n").map_err(|source| LatencyError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Least squares of relative errors over the active features (each row divided by its
/// measured time; columns scaled to unit maximum for conditioning), solved by Gaussian
/// elimination with partial pivoting on the normal equations.
fn least_squares(
    samples: &[StepSample],
    active: &[bool; NUM_FEATURES],
) -> Result<[f64; NUM_FEATURES], LatencyError> {
    let cols: Vec<usize> = (0..NUM_FEATURES).filter(|&i| active[i]).collect();
    let k = cols.len();
    let mut scale = vec![0.0f64; k];
    for s in samples {
        let x = s.shape.features();
        for (j, &c) in cols.iter().enumerate() {
            scale[j] = scale[j].max((x[c] / s.seconds).abs());
        }
    }
    for v in &mut scale {
        if *v == 0.0 {
            *v = 1.0;
        }
    }
    // Augmented normal equations [XᵀX | Xᵀy].
    let mut a = vec![vec![0.0f64; k + 1]; k];
    for s in samples {
        let x = s.shape.features();
        // Row and target divided by the measured time: the target becomes 1.
        let row: Vec<f64> = cols
            .iter()
            .enumerate()
            .map(|(j, &c)| x[c] / s.seconds / scale[j])
            .collect();
        for i in 0..k {
            for j in 0..k {
                a[i][j] += row[i] * row[j];
            }
            a[i][k] += row[i];
        }
    }
    for col in 0..k {
        let pivot = (col..k)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .expect("non-empty range");
        if a[pivot][col].abs() < 1e-12 {
            return Err(LatencyError::Fit(
                "the measurements do not vary enough to separate the cost terms (profile a wider grid)"
                    .into(),
            ));
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut out = [0.0; NUM_FEATURES];
    for (j, &c) in cols.iter().enumerate() {
        out[c] = a[j][k] / a[j][j] / scale[j];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth() -> LatencyModel {
        LatencyModel::from_coefficients(LatencyCoefficients {
            base_s: 0.008,
            per_prefill_token_s: 0.0004,
            per_decode_seq_s: 0.0006,
            per_decode_context_token_s: 2e-7,
            per_prefill_attention_pair_s: 1e-8,
        })
    }

    fn grid() -> Vec<StepSample> {
        let t = truth();
        let mut out = Vec::new();
        for p in [0, 16, 64, 256] {
            for d in [0, 1, 8, 32] {
                for ctx in [64, 512] {
                    if p == 0 && d == 0 {
                        continue;
                    }
                    let mut shape = StepShape::default();
                    if p > 0 {
                        shape.add_prefill(ctx, p);
                    }
                    for _ in 0..d {
                        shape.add_decode(ctx);
                    }
                    out.push(StepSample {
                        shape,
                        seconds: t.predict(&shape),
                    });
                }
            }
        }
        out
    }

    #[test]
    fn least_squares_recovers_exact_coefficients() {
        let g = grid();
        let (train, holdout) = g.split_at(g.len() - 6);
        let m = LatencyModel::fit("test", train, holdout).unwrap();
        let (got, want) = (m.coefficients.as_array(), truth().coefficients.as_array());
        for i in 0..NUM_FEATURES {
            assert!(
                (got[i] - want[i]).abs() <= 1e-6 * want[i].abs().max(1e-9),
                "{i}"
            );
        }
        assert!(m.fit.unwrap().holdout_max_abs_rel_error < 1e-6);
    }

    #[test]
    fn negative_coefficients_are_dropped() {
        // Steps that get cheaper with decode context cannot be real: that term goes.
        let mut g = grid();
        for s in &mut g {
            s.seconds -= 1e-6 * s.shape.decode_context as f64 - 0.01;
        }
        let m = LatencyModel::fit("test", &g, &[]).unwrap();
        assert!(m.coefficients.as_array().iter().skip(1).all(|&c| c >= 0.0));
        assert_eq!(m.coefficients.per_decode_context_token_s, 0.0);
    }

    #[test]
    fn features_no_step_exercises_are_left_at_zero() {
        let g: Vec<StepSample> = grid()
            .into_iter()
            .filter(|s| s.shape.prefill_tokens == 0)
            .map(|s| StepSample {
                seconds: truth().predict(&s.shape),
                ..s
            })
            .collect();
        let m = LatencyModel::fit("decodes only", &g, &[]).unwrap();
        assert_eq!(m.coefficients.per_prefill_token_s, 0.0);
        assert_eq!(m.coefficients.per_prefill_attention_pair_s, 0.0);
        let want = truth().coefficients.per_decode_seq_s;
        assert!((m.coefficients.per_decode_seq_s - want).abs() < 1e-9);
    }

    #[test]
    fn too_few_points_are_refused() {
        let g = grid();
        assert!(LatencyModel::fit("x", &g[..3], &[]).is_err());
    }

    #[test]
    fn json_round_trips() {
        let g = grid();
        let m = LatencyModel::fit("test", &g, &g[..4]).unwrap();
        let text = serde_json::to_string(&m).unwrap();
        let back: LatencyModel = serde_json::from_str(&text).unwrap();
        // serde_json's float parsing may differ in the last bit.
        assert_eq!(back.samples.len(), m.samples.len());
        assert_eq!(back.fit.map(|f| f.train_points), Some(g.len()));
        for s in &g {
            let (a, b) = (back.predict(&s.shape), m.predict(&s.shape));
            assert!((a - b).abs() <= 1e-12 * b);
        }
    }

    #[test]
    fn prefill_time_adds_chunks() {
        let t = truth();
        let whole = t.prefill_time(0, 100, 1000, 0, 0);
        let chunked = t.prefill_time(0, 100, 10, 0, 0);
        // Ten steps pay the base cost ten times.
        assert!((chunked - whole - 9.0 * 0.008).abs() < 1e-9);
    }
}
