//! Alibaba ServeGen per-client statistics (arXiv 2505.09999) as a workload.
//!
//! ServeGen publishes no requests, only each client's statistics: per 600 s window a
//! mean rate and an inter-arrival distribution (`Gamma` shape/scale or `Weibull`
//! shape/scale, seconds; empty when the client is idle), and per 6 h window the
//! probability mass functions of input and output lengths. Each active client runs its own
//! renewal process in each window, lengths are drawn from that client's pmfs for the time
//! of day, and the clients are superposed — bursty, multi-tenant traffic that a single
//! Poisson process does not produce.
//!
//! The fitted distributions keep their shape (so the burstiness, the CV of the gaps) but
//! are rescaled to the window's measured rate: fitted on heavy-tailed gaps, their means
//! stray from 1/rate (by 3x either way in this data), and the rate is what the trace
//! measured directly.
//!
//! The shared copy is one `.tar.xz` (members `…/chunk-<client>-trace.csv` and
//! `…/chunk-<client>-dataset.json`); it is decompressed in memory (`lzma-rs`) and read
//! with the small ustar reader below.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma, Weibull};

use crate::error::BenchError;
use crate::workload::{RequestSpec, Workload};

/// Width of a ServeGen arrival window, seconds.
pub const WINDOW_S: f64 = 600.0;

/// A client's arrival process in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrivals {
    /// No requests.
    Idle,
    /// Gamma-distributed gaps (shape, scale in seconds).
    Gamma {
        /// Shape k.
        shape: f64,
        /// Scale θ, seconds.
        scale: f64,
    },
    /// Weibull-distributed gaps (shape, scale in seconds).
    Weibull {
        /// Shape k.
        shape: f64,
        /// Scale λ, seconds.
        scale: f64,
    },
}

/// One row of `chunk-N-trace.csv`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArrivalWindow {
    /// Window start, seconds into the day.
    pub start_s: f64,
    /// Mean rate in the window, requests per second.
    pub rate: f64,
    /// Coefficient of variation of the gaps.
    pub cv: f64,
    /// The gap distribution.
    pub arrivals: Arrivals,
}

/// A probability mass function over token lengths, ready to sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Pmf {
    /// Lengths, ascending.
    pub values: Vec<usize>,
    /// Cumulative probabilities, normalized so the last is 1.
    pub cdf: Vec<f64>,
}

impl Pmf {
    /// Parses ServeGen's Python-dict text `{len: prob, …}`; `None` for an empty dict.
    pub fn parse(text: &str) -> Result<Option<Pmf>, String> {
        let body = text
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| format!("pmf `{}…` is not a {{len: prob}} dict", head(text)))?;
        let mut pairs: Vec<(usize, f64)> = Vec::new();
        for item in body.split(',').filter(|i| !i.trim().is_empty()) {
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| format!("pmf entry `{}` is not len: prob", item.trim()))?;
            let len: f64 = k
                .trim()
                .parse()
                .map_err(|_| format!("pmf length `{}` is not a number", k.trim()))?;
            let p: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("pmf probability `{}` is not a number", v.trim()))?;
            if !(len >= 0.0 && p >= 0.0 && p.is_finite()) {
                return Err(format!("pmf entry `{}` is negative", item.trim()));
            }
            // Lengths are whole token counts written as Python ints.
            pairs.push((len.round() as usize, p));
        }
        pairs.sort_by_key(|p| p.0);
        let total: f64 = pairs.iter().map(|p| p.1).sum();
        if pairs.is_empty() || total <= 0.0 {
            return Ok(None);
        }
        let mut acc = 0.0;
        let cdf = pairs
            .iter()
            .map(|p| {
                acc += p.1 / total;
                acc
            })
            .collect();
        Ok(Some(Pmf {
            values: pairs.iter().map(|p| p.0).collect(),
            cdf,
        }))
    }

    /// Draws one length.
    pub fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        let i = self.cdf.partition_point(|c| *c < u);
        self.values[i.min(self.values.len() - 1)]
    }
}

fn head(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Input and output length pmfs of one client for a window of the day.
#[derive(Clone, Debug, PartialEq)]
pub struct LengthWindow {
    /// Window start, seconds into the day.
    pub start_s: f64,
    /// Prompt tokens.
    pub input: Pmf,
    /// Output tokens (reasoning included, for reasoning models).
    pub output: Pmf,
}

/// One client (API customer) of ServeGen.
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    /// The `N` of `chunk-N-*`.
    pub id: u32,
    /// Arrival windows, by start.
    pub windows: Vec<ArrivalWindow>,
    /// Length windows with non-empty pmfs, by start.
    pub lengths: Vec<LengthWindow>,
}

impl Client {
    /// The length pmfs in force at `t`: the last window starting at or before `t`, else
    /// the first (a client with an empty pmf for part of the day keeps its nearest one).
    fn lengths_at(&self, t: f64) -> Option<&LengthWindow> {
        self.lengths
            .iter()
            .rev()
            .find(|w| w.start_s <= t)
            .or(self.lengths.first())
    }
}

/// Every client of one ServeGen tarball.
#[derive(Clone, Debug)]
pub struct ServeGen {
    /// Clients by id.
    pub clients: Vec<Client>,
}

fn parse_err(path: &Path, reason: impl Into<String>) -> BenchError {
    BenchError::WorkloadParse {
        path: path.to_path_buf(),
        line: 0,
        reason: reason.into(),
    }
}

/// The regular files of an uncompressed ustar/GNU tar archive, as (name, bytes).
pub fn untar(bytes: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let octal = |field: &[u8]| -> Result<usize, String> {
        let s = String::from_utf8_lossy(field);
        let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
        if s.is_empty() {
            return Ok(0);
        }
        usize::from_str_radix(s, 8).map_err(|_| format!("tar size `{s}` is not octal"))
    };
    let cstr = |field: &[u8]| {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(&field[..end]).into_owned()
    };
    let mut files = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size = octal(&h[124..136])?;
        let data_at = at + 512;
        let data = bytes
            .get(data_at..data_at + size)
            .ok_or_else(|| "tar member runs past the end of the archive".to_string())?;
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if matches!(h[156], b'0' | 0) {
            files.push((name, data));
        }
        at = data_at + size.div_ceil(512) * 512;
    }
    Ok(files)
}

fn arrival_row(line: &str) -> Option<ArrivalWindow> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != 6 {
        return None;
    }
    let num = |s: &str| s.parse::<f64>().ok().filter(|x| x.is_finite());
    let (start_s, rate) = (num(f[0])?, num(f[1])?);
    let params = || {
        let (shape, scale) = (num(f[4])?, num(f[5])?);
        (shape > 0.0 && scale > 0.0).then_some((shape, scale))
    };
    let arrivals = match f[3] {
        "" => Arrivals::Idle,
        "Gamma" => {
            let (shape, scale) = params()?;
            Arrivals::Gamma { shape, scale }
        }
        "Weibull" => {
            let (shape, scale) = params()?;
            Arrivals::Weibull { shape, scale }
        }
        _ => return None,
    };
    Some(ArrivalWindow {
        start_s,
        rate,
        cv: num(f[2]).unwrap_or(0.0),
        arrivals,
    })
}

/// `…/chunk-12-trace.csv` → (12, "trace").
fn member(name: &str) -> Option<(u32, &str)> {
    let base = name.rsplit('/').next()?;
    let rest = base.strip_prefix("chunk-")?;
    let (id, kind) = rest.split_once('-')?;
    let kind = kind
        .strip_suffix(".csv")
        .or_else(|| kind.strip_suffix(".json"))?;
    Some((id.parse().ok()?, kind))
}

/// Whether a `--trace` path names a ServeGen archive (`.tar.xz` or `.tar`).
pub fn is_servegen(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".tar.xz") || name.ends_with(".tar")
}

/// Reads a ServeGen `.tar.xz` (or an uncompressed `.tar`).
pub fn load(path: &Path) -> Result<ServeGen, BenchError> {
    let file = std::fs::File::open(path).map_err(|source| BenchError::WorkloadIo {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tar = Vec::new();
    if path.extension().is_some_and(|e| e == "xz") {
        lzma_rs::xz_decompress(&mut BufReader::new(file), &mut tar)
            .map_err(|e| parse_err(path, format!("xz: {e}")))?;
    } else {
        use std::io::Read as _;
        BufReader::new(file)
            .read_to_end(&mut tar)
            .map_err(|source| BenchError::WorkloadIo {
                path: path.to_path_buf(),
                source,
            })?;
    }
    let files = untar(&tar).map_err(|e| parse_err(path, e))?;
    let mut windows: BTreeMap<u32, Vec<ArrivalWindow>> = BTreeMap::new();
    let mut lengths: BTreeMap<u32, Vec<LengthWindow>> = BTreeMap::new();
    for (name, data) in files {
        let Some((id, kind)) = member(&name) else {
            continue;
        };
        let text =
            std::str::from_utf8(data).map_err(|_| parse_err(path, format!("{name}: not UTF-8")))?;
        match kind {
            "trace" => {
                let mut rows = Vec::new();
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
                    rows.push(arrival_row(line).ok_or_else(|| {
                        parse_err(path, format!("{name}:{}: bad row `{line}`", i + 1))
                    })?);
                }
                rows.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
                windows.insert(id, rows);
            }
            "dataset" => {
                let doc: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
                    serde_json::from_str(text)
                        .map_err(|e| parse_err(path, format!("{name}: {e}")))?;
                let mut rows = Vec::new();
                for (start, fields) in doc {
                    let start_s: f64 = start
                        .parse()
                        .map_err(|_| parse_err(path, format!("{name}: window `{start}`")))?;
                    let pmf = |key: &str| -> Result<Option<Pmf>, BenchError> {
                        let text = fields
                            .get(key)
                            .and_then(|v| v.as_str())
                            .ok_or_else(|| parse_err(path, format!("{name}: no `{key}` text")))?;
                        Pmf::parse(text)
                            .map_err(|e| parse_err(path, format!("{name} [{start}] {key}: {e}")))
                    };
                    if let (Some(input), Some(output)) =
                        (pmf("input_tokens")?, pmf("output_tokens")?)
                    {
                        rows.push(LengthWindow {
                            start_s,
                            input,
                            output,
                        });
                    }
                }
                rows.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
                lengths.insert(id, rows);
            }
            _ => {}
        }
    }
    let clients: Vec<Client> = windows
        .into_iter()
        .filter_map(|(id, windows)| {
            let lengths = lengths.remove(&id).unwrap_or_default();
            (!lengths.is_empty()).then_some(Client {
                id,
                windows,
                lengths,
            })
        })
        .collect();
    if clients.is_empty() {
        return Err(parse_err(
            path,
            "no client has both chunk-N-trace.csv and a non-empty chunk-N-dataset.json",
        ));
    }
    Ok(ServeGen { clients })
}

impl ServeGen {
    /// Superposes every client's arrivals from the start of the day, window by window,
    /// with lengths from its pmfs; stops after `limit` requests (the whole day without one).
    pub fn workload(&self, seed: u64, limit: Option<usize>, source: String) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5E4E_6E11);
        let n_windows = self
            .clients
            .iter()
            .map(|c| c.windows.len())
            .max()
            .unwrap_or(0);
        let mut requests: Vec<RequestSpec> = Vec::new();
        for w in 0..n_windows {
            let mut batch = Vec::new();
            for c in &self.clients {
                let Some(win) = c.windows.get(w) else {
                    continue;
                };
                let gap = |rng: &mut StdRng| -> Option<f64> {
                    if win.rate <= 0.0 {
                        return None;
                    }
                    let mean = 1.0 / win.rate;
                    match win.arrivals {
                        Arrivals::Idle => None,
                        Arrivals::Gamma { shape, .. } => {
                            Gamma::new(shape, mean / shape).ok().map(|d| d.sample(rng))
                        }
                        Arrivals::Weibull { shape, .. } => {
                            Weibull::new(mean / gamma_fn(1.0 + 1.0 / shape), shape)
                                .ok()
                                .map(|d| d.sample(rng))
                        }
                    }
                };
                let end = win.start_s + WINDOW_S;
                let mut t = win.start_s;
                while let Some(g) = gap(&mut rng) {
                    t += g;
                    if t >= end {
                        break;
                    }
                    let Some(len) = c.lengths_at(t) else { break };
                    batch.push(RequestSpec {
                        arrival_s: t,
                        prompt_len: len.input.sample(&mut rng).max(1),
                        output_len: len.output.sample(&mut rng).max(1),
                        block_hashes: Vec::new(),
                        client: Some(c.id),
                    });
                }
            }
            batch.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
            requests.extend(batch);
            if limit.is_some_and(|n| requests.len() >= n) {
                break;
            }
        }
        if let Some(n) = limit {
            requests.truncate(n);
        }
        Workload {
            requests,
            block_size: 0,
            from_trace: true,
            source,
        }
    }
}

/// Γ(x) for x > 0 (Lanczos, g = 7, nine terms: ~15 significant digits).
fn gamma_fn(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma_fn(1.0 - x));
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let sum: f64 = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmfs_parse_normalize_and_sample_within_support() {
        let p = Pmf::parse("{39: 0.25, 7: 0.5, 100: 0.25}")
            .unwrap()
            .unwrap();
        assert_eq!(p.values, vec![7, 39, 100]);
        assert_eq!(p.cdf, vec![0.5, 0.75, 1.0]);
        let mut rng = StdRng::seed_from_u64(1);
        let draws: Vec<usize> = (0..1000).map(|_| p.sample(&mut rng)).collect();
        assert!(draws.iter().all(|d| p.values.contains(d)));
        let sevens = draws.iter().filter(|d| **d == 7).count();
        assert!((400..600).contains(&sevens), "{sevens}");
        assert_eq!(Pmf::parse("{}").unwrap(), None);
        assert!(Pmf::parse("[1, 2]").is_err());
        assert!(Pmf::parse("{1: x}").is_err());
    }

    #[test]
    fn gamma_function_matches_known_values() {
        assert!((gamma_fn(5.0) - 24.0).abs() < 1e-9);
        assert!((gamma_fn(0.5) - std::f64::consts::PI.sqrt()).abs() < 1e-12);
        assert!((gamma_fn(1.0 + 1.0 / 1.284_750_591) - 0.925_6).abs() < 1e-3);
    }

    #[test]
    fn trace_rows_parse_idle_gamma_and_weibull() {
        let g = arrival_row("0,0.105,0.92,Gamma,1.168,8.05").unwrap();
        assert_eq!(
            g.arrivals,
            Arrivals::Gamma {
                shape: 1.168,
                scale: 8.05
            }
        );
        let idle = arrival_row("600,0,0,,,").unwrap();
        assert_eq!(idle.arrivals, Arrivals::Idle);
        assert!(matches!(
            arrival_row("0,1,1,Weibull,1.2,5").unwrap().arrivals,
            Arrivals::Weibull { .. }
        ));
        assert!(arrival_row("0,1,1,Pareto,1,1").is_none());
        assert!(arrival_row("0,1,1,Gamma,-1,1").is_none());
        assert_eq!(member("reason/x/chunk-12-trace.csv"), Some((12, "trace")));
    }

    #[test]
    fn untar_reads_ustar_members_and_refuses_truncated_ones() {
        let mut tar = vec![0u8; 512];
        tar[..5].copy_from_slice(b"a.txt");
        tar[124..135].copy_from_slice(b"00000000003");
        tar[156] = b'0';
        tar.extend_from_slice(b"abc");
        tar.resize(1024 + 1024, 0);
        let files = untar(&tar).unwrap();
        assert_eq!(files, vec![("a.txt".to_string(), &b"abc"[..])]);
        assert!(untar(&tar[..514]).is_err());
    }
}
