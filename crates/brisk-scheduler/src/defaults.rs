//! What a server runs with when no flag says otherwise, and how a server's default objectives
//! combine with a request's own. `brisk serve` and `brisk sim` both read this module, so a
//! simulation without flags plays a server without flags.

use crate::RequestSlo;

/// Step budget under the slo policy (vLLM's default): the policy cuts it to the decodes' TPOT
/// allowance whenever a step carries decodes, so it only bounds prompt-only steps.
pub const SLO_BATCHED_TOKENS: usize = 2048;

/// Step budget under fcfs, which spends all of it every step it can.
pub const FCFS_BATCHED_TOKENS: usize = 512;

/// The TPOT objective, milliseconds, of requests that bring none under the slo policy: faster
/// than people read, and room on a one-thread CPU for prompt chunks beside the decodes.
pub const TPOT_MS: f64 = 150.0;

/// The step budget when the flags name none.
pub fn batched_tokens(slo_policy: bool) -> usize {
    if slo_policy {
        SLO_BATCHED_TOKENS
    } else {
        FCFS_BATCHED_TOKENS
    }
}

/// Parses an objective flag in milliseconds: a positive number, or `none` (infinity) for no
/// objective even where the policy would set a default.
pub fn parse_ms(text: &str) -> Result<f64, String> {
    if text.trim() == "none" {
        return Ok(f64::INFINITY);
    }
    match text.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err(format!("{text:?} is not a positive number of milliseconds")),
    }
}

/// A server's default objectives, milliseconds (`None`: unbounded), for requests that bring
/// none or only part of one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SloDefaults {
    /// Time to first token.
    pub ttft_ms: Option<f64>,
    /// Time per output token.
    pub tpot_ms: Option<f64>,
}

impl SloDefaults {
    /// The defaults the flags `--ttft-slo`/`--tpot-slo` (parsed by [`parse_ms`]) ask for:
    /// `none` is no objective; without `--tpot-slo` the slo policy uses [`TPOT_MS`].
    pub fn from_flags(ttft_ms: Option<f64>, tpot_ms: Option<f64>, slo_policy: bool) -> Self {
        let tpot_ms = match tpot_ms {
            Some(ms) => Some(ms),
            None => slo_policy.then_some(TPOT_MS),
        };
        Self {
            ttft_ms: ttft_ms.filter(|ms| ms.is_finite()),
            tpot_ms: tpot_ms.filter(|ms| ms.is_finite()),
        }
    }

    /// Whether any request without an objective of its own gets one.
    pub fn is_bounded(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some()
    }

    /// The objective of a request asking for `ttft_ms`/`tpot_ms` (each overrides its default);
    /// `None` when nothing bounds it.
    pub fn objective(&self, ttft_ms: Option<f64>, tpot_ms: Option<f64>) -> Option<RequestSlo> {
        let ttft = ttft_ms.or(self.ttft_ms);
        let tpot = tpot_ms.or(self.tpot_ms);
        if ttft.is_none() && tpot.is_none() {
            return None;
        }
        let secs = |ms: Option<f64>| ms.map_or(f64::INFINITY, |ms| ms / 1e3);
        Some(RequestSlo {
            ttft: secs(ttft),
            tpot: secs(tpot),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slo_policy_bounds_tpot_by_default_and_none_lifts_it() {
        let slo = SloDefaults::from_flags(None, None, true);
        assert_eq!(slo.tpot_ms, Some(TPOT_MS));
        assert_eq!(slo.ttft_ms, None);
        assert!(!SloDefaults::from_flags(None, None, false).is_bounded());
        let none = parse_ms("none").unwrap();
        assert!(!SloDefaults::from_flags(None, Some(none), true).is_bounded());
        assert!(parse_ms("0").is_err() && parse_ms("-3").is_err() && parse_ms("x").is_err());
    }

    #[test]
    fn a_request_overrides_each_default_it_names() {
        let slo = SloDefaults::from_flags(Some(2000.0), None, true);
        let own = slo.objective(Some(500.0), None).unwrap();
        assert_eq!((own.ttft, own.tpot), (0.5, 0.15));
        let default = slo.objective(None, None).unwrap();
        assert_eq!((default.ttft, default.tpot), (2.0, 0.15));
        assert_eq!(SloDefaults::default().objective(None, None), None);
        let tpot_only = SloDefaults::default().objective(None, Some(80.0)).unwrap();
        assert_eq!((tpot_only.ttft, tpot_only.tpot), (f64::INFINITY, 0.08));
    }
}
