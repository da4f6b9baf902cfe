//! Profiling against a mock backend whose step time grows with the tokens it runs: every
//! batch fits the pool it was given, and the fit orders step shapes as their cost does.

use std::time::Duration;

use brisk_scheduler::StepShape;
use brisk_sim::profile::{measure_point, profile, ProfileError, ProfileGrid};
use brisk_testkit::CountingBackend;

/// Steps cost 200 µs plus 20 µs per token.
fn spinning_backend() -> CountingBackend {
    CountingBackend::new(32, 2048)
        .with_step_cost(Duration::from_micros(200), Duration::from_micros(20))
}

#[test]
fn a_profile_covers_the_grid_and_orders_shapes_by_cost() {
    let grid = ProfileGrid::quick();
    let mut calls = 0;
    let model = profile(&spinning_backend(), &grid, 16, "mock", |done, total| {
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
    let e = measure_point(&spinning_backend(), 64, 1, 2040, 1, 16).unwrap_err();
    assert!(matches!(e, ProfileError::Grid(_)), "{e}");
}
