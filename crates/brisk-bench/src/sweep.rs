//! `--sweep-rates` and `--find-capacity`: the workload at several rates, one report per
//! rate, and a summary whose `capacity` is the highest rate up to which SLO attainment
//! stays ≥ 90 % (DistServe's definition). `--find-capacity MAX` bisects between 0 and MAX.

use std::path::{Path, PathBuf};

use crate::args::{BenchArgs, BenchConfig};
use crate::error::BenchError;
use crate::prompts::PromptBuilder;
use crate::report::{self, Report};
use crate::workload::Workload;

/// Attainment a rate must keep to count toward capacity.
pub const CAPACITY_ATTAINMENT: f64 = 0.9;

/// One rate's line in the sweep summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepPoint {
    /// The rate asked for.
    pub rate: f64,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Good requests per second.
    pub request_goodput: f64,
    /// Share of good requests.
    pub slo_attainment: f64,
    /// Failed requests.
    pub failed: usize,
    /// SLO attainment of each class, by name.
    pub class_attainment: std::collections::BTreeMap<String, f64>,
    /// Goodput of each class, by name.
    pub class_goodput: std::collections::BTreeMap<String, f64>,
    /// Latency keys copied from the report (`mean_ttft_ms`, `p99_tpot_ms`, …).
    pub latency: std::collections::BTreeMap<String, f64>,
    /// The per-rate report file.
    pub report: PathBuf,
}

/// The sweep summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepSummary {
    /// ISO-8601 date.
    pub date: String,
    /// The objective.
    pub slo: std::collections::BTreeMap<&'static str, Option<f64>>,
    /// Highest rate up to which attainment stays ≥ 0.9 (it and every lower rate pass), if any.
    pub capacity: Option<f64>,
    /// One point per rate, in the order run.
    pub points: Vec<SweepPoint>,
}

/// `report.json` → `report.rate-2.5.json`.
pub fn per_rate_path(output: &Path, rate: f64) -> PathBuf {
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("report");
    output.with_file_name(format!("{stem}.rate-{rate}.json"))
}

/// The highest rate up to which attainment stays ≥ [`CAPACITY_ATTAINMENT`]: the largest
/// rate such that it and every lower rate measured pass. A passing rate above a failing one
/// does not count — on a shared machine that is noise, not capacity.
pub fn capacity(points: &[(f64, f64)]) -> Option<f64> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
        .iter()
        .take_while(|(_, a)| *a >= CAPACITY_ATTAINMENT)
        .map(|(r, _)| *r)
        .last()
}

/// The summary line of one rate's report (also used by `brisk sim`).
pub fn point(rate: f64, r: &Report, path: PathBuf) -> SweepPoint {
    SweepPoint {
        rate,
        request_throughput: r.request_throughput,
        request_goodput: r.request_goodput,
        slo_attainment: r.slo_attainment,
        failed: r.failed,
        class_attainment: r
            .slo_classes
            .iter()
            .map(|c| (c.name.clone(), c.slo_attainment))
            .collect(),
        class_goodput: r
            .slo_classes
            .iter()
            .map(|c| (c.name.clone(), c.request_goodput))
            .collect(),
        latency: r.latency.clone(),
        report: path,
    }
}

/// Which rates to run.
#[derive(Clone, Debug, PartialEq)]
pub enum RateSearch {
    /// These rates, in order.
    List(Vec<f64>),
    /// Bisection on (0, max]: `max` first, then `steps` midpoints.
    Bisect {
        /// The highest rate tried.
        max: f64,
        /// Midpoints tried after `max` fails.
        steps: usize,
    },
}

impl RateSearch {
    /// The next rate to run given the (rate, attainment) results so far, or `None` when done.
    pub fn next(&self, done: &[(f64, f64)]) -> Option<f64> {
        match self {
            RateSearch::List(rates) => rates.get(done.len()).copied(),
            RateSearch::Bisect { max, steps } => {
                let ok = |a: f64| a >= CAPACITY_ATTAINMENT;
                match done.first() {
                    None => return Some(*max),
                    Some((_, a)) if ok(*a) => return None,
                    _ if done.len() > *steps => return None,
                    _ => {}
                }
                let lo = done
                    .iter()
                    .filter(|(_, a)| ok(*a))
                    .map(|p| p.0)
                    .fold(0.0, f64::max);
                let hi = done
                    .iter()
                    .filter(|(_, a)| !ok(*a))
                    .map(|p| p.0)
                    .fold(*max, f64::min);
                // Rates with a few significant digits read better in file names and tables.
                let mid = ((lo + hi) / 2.0 * 1000.0).round() / 1000.0;
                (mid > lo && mid < hi).then_some(mid)
            }
        }
    }
}

/// Runs the rates the search picks, writes the reports and the summary, prints a table.
pub async fn sweep(
    args: &BenchArgs,
    cfg: &BenchConfig,
    model: &str,
    base: &Workload,
    builder: &PromptBuilder,
    search: &RateSearch,
) -> Result<(), BenchError> {
    let mut points: Vec<SweepPoint> = Vec::new();
    let mut slo = Default::default();
    loop {
        let done: Vec<(f64, f64)> = points.iter().map(|p| (p.rate, p.slo_attainment)).collect();
        let Some(rate) = search.next(&done) else {
            break;
        };
        let r = crate::run_once(args, cfg, model, base, builder, Some(rate)).await?;
        let path = per_rate_path(&cfg.output, rate);
        crate::write_json(&path, &r)?;
        print!("{}", report::summary(&r));
        slo = r.slo.clone();
        points.push(point(rate, &r, path));
    }
    let pairs: Vec<(f64, f64)> = points.iter().map(|p| (p.rate, p.slo_attainment)).collect();
    let summary = SweepSummary {
        date: crate::now_iso8601(),
        slo,
        capacity: capacity(&pairs),
        points,
    };
    crate::write_json(&cfg.output, &summary)?;
    println!(
        "{:>10} {:>12} {:>12} {:>11} {:>14} {:>14}",
        "rate", "throughput", "goodput", "attainment", "p99 ttft ms", "p99 tpot ms"
    );
    for p in &summary.points {
        let g = |k: &str| p.latency.get(k).copied().unwrap_or(0.0);
        println!(
            "{:>10} {:>12.2} {:>12.2} {:>10.1}% {:>14.1} {:>14.1}",
            p.rate,
            p.request_throughput,
            p.request_goodput,
            p.slo_attainment * 100.0,
            g("p99_ttft_ms"),
            g("p99_tpot_ms")
        );
        if p.class_attainment.len() > 1 {
            let classes: Vec<String> = p
                .class_attainment
                .iter()
                .map(|(name, a)| format!("{name} {:.1}%", a * 100.0))
                .collect();
            println!("{:>10} attainment by class: {}", "", classes.join(", "));
        }
    }
    match summary.capacity {
        Some(c) => println!("capacity (attainment ≥ 90%): {c} req/s"),
        None => println!("capacity: no rate kept attainment ≥ 90%"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_narrows_onto_the_highest_passing_rate() {
        let search = RateSearch::Bisect { max: 8.0, steps: 3 };
        assert_eq!(search.next(&[]), Some(8.0));
        assert_eq!(search.next(&[(8.0, 0.95)]), None);
        assert_eq!(search.next(&[(8.0, 0.5)]), Some(4.0));
        assert_eq!(search.next(&[(8.0, 0.5), (4.0, 0.9)]), Some(6.0));
        assert_eq!(
            search.next(&[(8.0, 0.5), (4.0, 0.9), (6.0, 0.2)]),
            Some(5.0)
        );
        assert_eq!(
            search.next(&[(8.0, 0.5), (4.0, 0.9), (6.0, 0.2), (5.0, 1.0)]),
            None
        );
        let list = RateSearch::List(vec![1.0, 2.0]);
        assert_eq!(list.next(&[(1.0, 1.0)]), Some(2.0));
        assert_eq!(list.next(&[(1.0, 1.0), (2.0, 1.0)]), None);
    }

    #[test]
    fn capacity_is_the_highest_rate_that_keeps_ninety_percent() {
        assert_eq!(
            capacity(&[(1.0, 1.0), (2.0, 0.95), (4.0, 0.5), (3.0, 0.9)]),
            Some(3.0)
        );
        assert_eq!(capacity(&[(1.0, 0.2)]), None);
        assert_eq!(
            capacity(&[(1.0, 0.5), (2.0, 0.95)]),
            None,
            "not monotone: noise"
        );
        assert_eq!(capacity(&[(1.0, 1.0), (2.0, 0.5), (3.0, 1.0)]), Some(1.0));
        assert_eq!(
            per_rate_path(Path::new("/t/r.json"), 2.5),
            PathBuf::from("/t/r.rate-2.5.json")
        );
    }
}
