//! Parsers for the workload files in `shared/workloads` (see its README): the Azure
//! 2023 conversation trace (Splitwise), Mooncake's FAST'25 conversation trace, the
//! ShareGPT/arXiv length samples of Sarathi-Serve and Vidur, and ShareGPT first turns.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::BenchError;
use crate::workload::{RequestSpec, Workload};

/// Mooncake's prefix-block size in tokens.
pub const MOONCAKE_BLOCK: usize = 512;
/// Mooncake timestamps are quantized to buckets this wide (milliseconds).
const MOONCAKE_BUCKET_MS: f64 = 3000.0;

fn read(path: &Path) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|source| BenchError::WorkloadIo {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_err(path: &Path, line: usize, reason: impl Into<String>) -> BenchError {
    BenchError::WorkloadParse {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Loads a trace with arrivals, choosing the parser by extension (`.jsonl` Mooncake,
/// `.csv` Azure). `seed` spreads Mooncake's 3-second buckets.
pub fn load_trace(path: &Path, seed: u64) -> Result<Workload, BenchError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => mooncake(path, seed),
        Some("csv") => azure(path),
        _ => Err(parse_err(
            path,
            0,
            "expected an Azure .csv or a Mooncake .jsonl trace",
        )),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS.fffffff` → seconds since the epoch.
fn azure_timestamp(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    let whole = (days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60) as f64;
    Some(whole + sec)
}

/// The Azure LLM inference trace: `TIMESTAMP,ContextTokens,GeneratedTokens`.
pub fn azure(path: &Path) -> Result<Workload, BenchError> {
    let text = read(path)?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == "TIMESTAMP,ContextTokens,GeneratedTokens" => {}
        _ => {
            return Err(parse_err(
                path,
                1,
                "expected header TIMESTAMP,ContextTokens,GeneratedTokens",
            ))
        }
    }
    let mut requests = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let row = (f.len() == 3)
            .then(|| {
                Some((
                    azure_timestamp(f[0])?,
                    f[1].trim().parse().ok()?,
                    f[2].trim().parse().ok()?,
                ))
            })
            .flatten()
            .ok_or_else(|| parse_err(path, i + 1, format!("bad row `{line}`")))?;
        requests.push(RequestSpec {
            arrival_s: row.0,
            prompt_len: row.1,
            output_len: row.2,
            block_hashes: Vec::new(),
            client: None,
        });
    }
    requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    Ok(Workload {
        requests,
        block_size: 0,
        from_trace: true,
        source: format!("azure:{}", path.display()),
    })
}

#[derive(serde::Deserialize)]
struct MooncakeRow {
    timestamp: f64,
    input_length: usize,
    output_length: usize,
    hash_ids: Vec<u64>,
}

/// The Mooncake trace: JSONL of `{timestamp ms, input_length, output_length, hash_ids}`.
/// Requests are spread uniformly (seeded) within their 3-second timestamp bucket.
pub fn mooncake(path: &Path, seed: u64) -> Result<Workload, BenchError> {
    let text = read(path)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x000C_0C0A);
    let mut requests = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: MooncakeRow =
            serde_json::from_str(line).map_err(|e| parse_err(path, i + 1, e.to_string()))?;
        let ms = row.timestamp + rng.random_range(0.0..MOONCAKE_BUCKET_MS);
        requests.push(RequestSpec {
            arrival_s: ms / 1000.0,
            prompt_len: row.input_length,
            output_len: row.output_length,
            block_hashes: row.hash_ids,
            client: None,
        });
    }
    requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    Ok(Workload {
        requests,
        block_size: MOONCAKE_BLOCK,
        from_trace: true,
        source: format!("mooncake:{}", path.display()),
    })
}

/// A length-sample CSV (`num_prefill_tokens,num_decode_tokens,…`): (prompt, output) rows.
pub fn length_samples(path: &Path) -> Result<Vec<(usize, usize)>, BenchError> {
    let text = read(path)?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, h)| h).unwrap_or_default();
    if !header.starts_with("num_prefill_tokens,num_decode_tokens") {
        return Err(parse_err(
            path,
            1,
            "expected header num_prefill_tokens,num_decode_tokens,…",
        ));
    }
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let mut f = line.split(',');
            let mut num = || f.next().and_then(|x| x.trim().parse::<f64>().ok());
            match (num(), num()) {
                // Some files write counts as floats ("74.0"); they are whole numbers.
                (Some(p), Some(o)) if p >= 0.0 && o >= 0.0 => Ok((p as usize, o as usize)),
                _ => Err(parse_err(path, i + 1, format!("bad row `{line}`"))),
            }
        })
        .collect()
}

/// `n` requests whose lengths are drawn (with replacement, seeded) from `rows`.
pub fn lengths_workload(rows: &[(usize, usize)], n: usize, seed: u64, source: String) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let requests = (0..n)
        .filter(|_| !rows.is_empty())
        .map(|_| {
            let (p, o) = rows[rng.random_range(0..rows.len())];
            RequestSpec {
                arrival_s: 0.0,
                prompt_len: p.max(1),
                output_len: o.max(1),
                block_hashes: Vec::new(),
                client: None,
            }
        })
        .collect();
    Workload {
        requests,
        block_size: 0,
        from_trace: false,
        source,
    }
}

#[derive(serde::Deserialize)]
struct ShareGptEntry {
    conversations: Vec<ShareGptTurn>,
}

#[derive(serde::Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

/// ShareGPT first turns: the non-empty `human` texts, in file order.
pub fn sharegpt_prompts(path: &Path) -> Result<Vec<String>, BenchError> {
    let entries: Vec<ShareGptEntry> =
        serde_json::from_str(&read(path)?).map_err(|e| parse_err(path, 0, e.to_string()))?;
    Ok(entries
        .into_iter()
        .flat_map(|e| e.conversations)
        .filter(|t| t.from == "human" && !t.value.trim().is_empty())
        .map(|t| t.value)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_timestamps_parse_to_epoch_seconds() {
        let t = azure_timestamp("2023-11-16 18:15:46.6805900").unwrap();
        assert!((t - 1_700_158_546.680_59).abs() < 1e-3, "{t}");
    }
}
