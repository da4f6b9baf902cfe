//! Workloads: which requests arrive when, with which lengths.
//!
//! Arrivals follow vLLM's `benchmark_serving`: with a finite `--rate` the gaps are
//! gamma-distributed with shape = burstiness and mean 1/rate (burstiness 1 is a
//! Poisson process); without a rate every request is sent at once. Trace arrivals
//! are kept, rebased to zero, and rescaled when `--rate` is given.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};

/// A distribution of token lengths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LengthDist {
    /// Always this many tokens.
    Fixed(usize),
    /// Uniform over `lo..=hi`.
    Uniform(usize, usize),
    /// `first` tokens with probability `first_share`, else `second`: two kinds of traffic in
    /// one run (long best-effort prompts among short interactive ones), told apart by
    /// `--slo-class` rules on prompt length.
    Mix {
        /// The first length.
        first: usize,
        /// The second length.
        second: usize,
        /// The probability of the first.
        first_share: f64,
    },
}

impl LengthDist {
    fn sample(&self, rng: &mut StdRng) -> usize {
        match *self {
            LengthDist::Fixed(n) => n,
            LengthDist::Uniform(lo, hi) => rng.random_range(lo..=hi),
            LengthDist::Mix {
                first,
                second,
                first_share,
            } => {
                if rng.random::<f64>() < first_share {
                    first
                } else {
                    second
                }
            }
        }
    }
}

/// `--synthetic prompt=…,output=…`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Prompt lengths.
    pub prompt: LengthDist,
    /// Output lengths.
    pub output: LengthDist,
}

/// One request of a workload, before its prompt is built.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSpec {
    /// When to send it, seconds after the start.
    pub arrival_s: f64,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Output tokens to ask for.
    pub output_len: usize,
    /// Mooncake prefix-block hash ids: equal ids mean equal prompt blocks.
    pub block_hashes: Vec<u64>,
    /// The client that sent it, where the workload knows (ServeGen's client number).
    pub client: Option<u32>,
}

/// The requests of a run plus what the prompt builder must know about them.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Requests sorted by arrival.
    pub requests: Vec<RequestSpec>,
    /// Tokens per shared prefix block (Mooncake's 512, scaled by `--scale-lengths`).
    pub block_size: usize,
    /// Whether arrivals came from a trace (so `--rate` rescales rather than generates).
    pub from_trace: bool,
    /// A short description for the report.
    pub source: String,
}

impl RequestSpec {
    /// The `user` that `--send-user` sends (and `brisk sim` plays) for this request of SLO
    /// class `class`: its ServeGen client, else its class.
    pub fn user(&self, class: &str) -> String {
        match self.client {
            Some(n) => format!("client-{n}"),
            None => class.to_owned(),
        }
    }
}

/// Draws `n` synthetic requests.
pub fn synthetic(spec: &SyntheticSpec, n: usize, seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let requests = (0..n)
        .map(|_| RequestSpec {
            arrival_s: 0.0,
            prompt_len: spec.prompt.sample(&mut rng),
            output_len: spec.output.sample(&mut rng),
            block_hashes: Vec::new(),
            client: None,
        })
        .collect();
    Workload {
        requests,
        block_size: 0,
        from_trace: false,
        source: "synthetic".into(),
    }
}

/// Arrival times for `n` requests: all at zero without a finite rate, else cumulative
/// gamma gaps (shape `burstiness`, scale `1 / (rate · burstiness)`), the first at zero.
pub fn synthetic_arrivals(n: usize, rate: Option<f64>, burstiness: f64, seed: u64) -> Vec<f64> {
    let Some(rate) = rate.filter(|r| r.is_finite()) else {
        return vec![0.0; n];
    };
    // A separate stream from the lengths', so changing the rate keeps the same requests.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_A771_7A15);
    let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness)).expect("validated > 0");
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            if i > 0 {
                t += gamma.sample(&mut rng);
            }
            t
        })
        .collect()
}

/// Settings that shape any workload after it is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Shaping {
    /// Target mean rate (generates arrivals, or rescales a trace's).
    pub rate: Option<f64>,
    /// Gamma shape of synthetic gaps.
    pub burstiness: f64,
    /// Keep the first N requests.
    pub num_requests: Option<usize>,
    /// Keep requests arriving within this many seconds.
    pub duration_s: Option<f64>,
    /// Multiply lengths by this.
    pub scale_lengths: f64,
    /// Clamp prompt lengths.
    pub max_prompt_tokens: Option<usize>,
    /// Clamp output lengths.
    pub max_output_tokens: Option<usize>,
    /// Seed of the arrival process.
    pub seed: u64,
}

fn scale(n: usize, f: f64) -> usize {
    // Lengths are small integers: the f64 round trip is exact.
    ((n as f64 * f).round() as usize).max(1)
}

impl Workload {
    /// Applies truncation, arrivals, rate rescaling, length scaling and clamps, in that order.
    pub fn shape(mut self, s: &Shaping) -> Workload {
        if let Some(n) = s.num_requests {
            self.requests.truncate(n);
        }
        if self.from_trace {
            let t0 = self.requests.first().map_or(0.0, |r| r.arrival_s);
            self.requests.iter_mut().for_each(|r| r.arrival_s -= t0);
            let span = self.requests.last().map_or(0.0, |r| r.arrival_s);
            match s.rate {
                Some(rate) if rate.is_finite() && span > 0.0 => {
                    let current = (self.requests.len() - 1) as f64 / span;
                    let k = current / rate;
                    self.requests.iter_mut().for_each(|r| r.arrival_s *= k);
                }
                Some(_) => self.requests.iter_mut().for_each(|r| r.arrival_s = 0.0),
                None => {}
            }
        } else {
            let arrivals = synthetic_arrivals(self.requests.len(), s.rate, s.burstiness, s.seed);
            for (r, t) in self.requests.iter_mut().zip(arrivals) {
                r.arrival_s = t;
            }
        }
        if let Some(d) = s.duration_s {
            self.requests.retain(|r| r.arrival_s <= d);
        }
        if s.scale_lengths != 1.0 {
            self.block_size = scale(self.block_size, s.scale_lengths);
        }
        for r in &mut self.requests {
            if s.scale_lengths != 1.0 {
                r.prompt_len = scale(r.prompt_len, s.scale_lengths);
                r.output_len = scale(r.output_len, s.scale_lengths);
            }
            if let Some(m) = s.max_prompt_tokens {
                r.prompt_len = r.prompt_len.min(m);
            }
            if let Some(m) = s.max_output_tokens {
                r.output_len = r.output_len.min(m);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_arrivals_have_the_requested_mean_rate() {
        let t = synthetic_arrivals(20_000, Some(4.0), 0.5, 7);
        let rate = (t.len() - 1) as f64 / t[t.len() - 1];
        assert!((rate - 4.0).abs() < 0.2, "rate {rate}");
        assert_eq!(t, synthetic_arrivals(20_000, Some(4.0), 0.5, 7));
    }

    #[test]
    fn infinite_rate_sends_everything_at_once() {
        assert_eq!(
            synthetic_arrivals(3, Some(f64::INFINITY), 1.0, 0),
            vec![0.0; 3]
        );
    }
}
