//! Element-wise functions written so that loops over them vectorize.

/// `e^x`, branch-free so that loops over it vectorize: `2^n · p(r)` with `x = n·ln2 + r`,
/// `|r| <= ln2/2`, and a degree-6 polynomial for `e^r` (relative error below 1e-6).
/// Arguments are clamped to `[-87, 88]`; below -87 the result is 0.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let clamped = x.clamp(-87.0, 88.0);
    let n = (clamped * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, clamped));
    let p = (1.0 / 720.0f32)
        .mul_add(r, 1.0 / 120.0)
        .mul_add(r, 1.0 / 24.0)
        .mul_add(r, 1.0 / 6.0)
        .mul_add(r, 0.5)
        .mul_add(r, 1.0)
        .mul_add(r, 1.0);
    // n is in [-126, 127]: the exponent field `n + 127` stays normal. Adding 2^23 puts it
    // in the low mantissa bits, and shifting those into the exponent field builds 2^n with
    // bit operations only (an `as i32` conversion would keep the loop from vectorizing).
    let scale = f32::from_bits((n + 8_388_735.0).to_bits() << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// `x · sigmoid(x)`, the SwiGLU gate.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            #[expect(clippy::cast_possible_truncation)] // the f32 inputs exp takes
            let x = (-90.0 + 178.0 * f64::from(i) / 200_000.0) as f32;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            if want > 1e-37 && x <= 88.0 {
                worst = worst.max(((got - want) / want).abs());
            } else if want <= 1e-37 {
                assert!(got <= 1e-37, "{x}");
            }
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn silu_matches_its_definition() {
        for i in -2000..=2000 {
            let x = i as f32 / 20.0;
            let want = f64::from(x) / (1.0 + (-f64::from(x)).exp());
            assert!(
                (f64::from(silu(x)) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{x}"
            );
        }
        assert!(silu(-1000.0).abs() < 1e-30);
        assert_eq!(silu(1000.0), 1000.0);
    }
}
