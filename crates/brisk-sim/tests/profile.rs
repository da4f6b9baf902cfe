//! Profiling against a mock backend whose step time grows with the tokens it runs: every
//! batch fits the pool it was given, and the fit orders step shapes as their cost does.

use std::time::{Duration, Instant};

use brisk_scheduler::StepShape;
use brisk_sim::profile::{measure_point, profile, ProfileError, ProfileGrid};
use brisk_types::{
    Backend, BackendCapabilities, BackendError, ModelGeometry, StepBatch, StepOutput, TokenId,
};

const VOCAB: usize = 32;

/// Busy-waits 20 µs per token plus 200 µs per step; checks that block tables fit the pool.
struct SpinningBackend {
    geometry: ModelGeometry,
}

impl SpinningBackend {
    fn new() -> Self {
        Self {
            geometry: ModelGeometry {
                num_layers: 1,
                num_kv_heads: 1,
                head_dim: 2,
                vocab_size: VOCAB,
                max_context: 2048,
                kv_bytes_per_token: 16,
            },
        }
    }
}

impl Backend for SpinningBackend {
    /// The number of blocks allocated.
    type KvPool = usize;

    fn geometry(&self) -> &ModelGeometry {
        &self.geometry
    }
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            name: "spinning-mock".into(),
            mixed_batches: true,
        }
    }
    fn stop_tokens(&self) -> &[TokenId] {
        &[]
    }
    fn allocate_kv(&self, num_blocks: usize, _: usize) -> Result<usize, BackendError> {
        Ok(num_blocks)
    }
    fn execute(&self, batch: &StepBatch<'_>, pool: &mut usize) -> Result<StepOutput, BackendError> {
        let mut rows = 0;
        for s in &batch.seqs {
            assert!(s.block_table.iter().all(|&b| (b as usize) < *pool));
            assert!(s.tokens.iter().all(|&t| (t as usize) < VOCAB));
            rows += s.logit_rows();
        }
        let work = Duration::from_micros(200 + 20 * batch.num_tokens() as u64);
        let t = Instant::now();
        while t.elapsed() < work {
            std::hint::spin_loop();
        }
        Ok(StepOutput {
            logits: vec![0.0; rows * VOCAB],
            vocab_size: VOCAB,
            first_row: (0..batch.seqs.len()).collect(),
        })
    }
}

#[test]
fn a_profile_covers_the_grid_and_orders_shapes_by_cost() {
    let grid = ProfileGrid::quick();
    let mut calls = 0;
    let model = profile(&SpinningBackend::new(), &grid, 16, "mock", |done, total| {
        calls += 1;
        assert_eq!(total, grid.points().len());
        assert_eq!(done, calls);
    })
    .unwrap();
    assert_eq!(calls, 16);
    let fit = model.fit.unwrap();
    assert_eq!((fit.train_points, fit.holdout_points), (12, 4));
    assert_eq!(model.samples.len(), 16);
    let mut long = StepShape::default();
    long.add_prefill(0, 128);
    let mut decode = StepShape::default();
    decode.add_decode(32);
    assert!(model.predict(&long) > model.predict(&decode) * 3.0);
}

#[test]
fn a_point_past_the_context_is_refused() {
    let e = measure_point(&SpinningBackend::new(), 64, 1, 2040, 1, 16).unwrap_err();
    assert!(matches!(e, ProfileError::Grid(_)), "{e}");
}
