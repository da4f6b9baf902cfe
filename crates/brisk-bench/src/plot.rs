//! `brisk bench plot FILE… --output PNG`: several servers (or runs) on one figure, one
//! color each.
//!
//! - Reports of single runs give TTFT and TPOT CDFs side by side.
//! - Sweep summaries (`--sweep-rates`, `--find-capacity`) give the latency–throughput
//!   curves: p50 (dashed) and p99 (solid) TTFT and TPOT against the offered rate, and
//!   goodput against the rate, with the 90 %-attainment capacity marked.
//!
//! Self-contained on purpose: a 3×5 bitmap font, Bresenham lines and a PNG encoder
//! (zlib via `flate2`) instead of a plotting stack that needs system fonts (plotters'
//! bitmap backend does), so the same figure renders on any machine and in CI, and a
//! figure is a few tens of kilobytes.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::BenchError;

/// `brisk bench plot` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct PlotArgs {
    /// Reports or sweep summaries written by `brisk bench` (one color each; all of one kind).
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Legend names, comma-separated, one per file (default: the file names without `.json`).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// The PNG to write.
    #[arg(long, short)]
    pub output: PathBuf,
}

const H: usize = 440;
const PANEL_W: i64 = 480;
const COLORS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [23, 190, 207],
];
const GREY: [u8; 3] = [200, 200, 200];
const BLACK: [u8; 3] = [0, 0, 0];

/// A 3×5 glyph, one row per byte, bit 2 leftmost (upper case; lower case is drawn as upper).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [7, 5, 7, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        ';' => [0, 2, 0, 2, 4],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '=' => [0, 7, 0, 7, 0],
        '_' => [0, 0, 0, 0, 7],
        '/' => [1, 1, 2, 4, 4],
        '%' => [5, 1, 2, 4, 5],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '<' => [1, 2, 4, 2, 1],
        '>' => [4, 2, 1, 2, 4],
        _ => [0; 5],
    }
}

struct Canvas {
    w: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(w: usize) -> Self {
        Self {
            w,
            rgb: vec![255; w * H * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..self.w as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * self.w + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A two-pixel-thick line; `dash` draws only the first half of every 8 pixels.
    fn line(&mut self, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], dash: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        let mut k = 0;
        loop {
            if !dash || k % 8 < 4 {
                self.set(x0, y0, c);
                self.set(x0, y0 + 1, c);
            }
            k += 1;
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    fn dot(&mut self, (x, y): (i64, i64), c: [u8; 3]) {
        for dx in -2..=2 {
            for dy in -2..=2 {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// Text at scale 2 (6×10 pixel glyphs, 8 pixels apart).
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            for (row, bits) in glyph(ch.to_ascii_uppercase()).iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(x + k as i64 * 8 + col * 2 + dx, y + row as i64 * 2 + dy, c);
                        }
                    }
                }
            }
        }
    }
}

fn label(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The smallest 1, 2, 2.5 or 5 × 10^k at or above `v`, so the four grid steps read well.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * base)
}

/// One panel's frame: its pixel box and data ranges (both from 0).
struct Panel {
    left: i64,
    right: i64,
    top: i64,
    bottom: i64,
    xmax: f64,
    ymax: f64,
}

impl Panel {
    /// Draws the grid, tick labels and titles of the panel at `x0`.
    fn new(c: &mut Canvas, x0: i64, (xmax, ymax): (f64, f64), xtitle: &str, ytitle: &str) -> Self {
        let p = Panel {
            left: x0 + 56,
            right: x0 + PANEL_W - 24,
            top: 60,
            bottom: (H - 44) as i64,
            xmax: nice_ceil(xmax),
            ymax: nice_ceil(ymax),
        };
        for k in 0..=4 {
            let x = p.left + (p.right - p.left) * k / 4;
            let y = p.bottom - (p.bottom - p.top) * k / 4;
            c.line((x, p.top), (x, p.bottom), GREY, false);
            c.line((p.left, y), (p.right, y), GREY, false);
            let xl = label(p.xmax * k as f64 / 4.0);
            c.text(x - 4 * xl.len() as i64, p.bottom + 8, &xl, BLACK);
            let yl = label(p.ymax * k as f64 / 4.0);
            c.text(p.left - 6 - 8 * yl.len() as i64, y - 5, &yl, BLACK);
        }
        let mid = (p.left + p.right) / 2;
        c.text(mid - 4 * xtitle.len() as i64, p.bottom + 26, xtitle, BLACK);
        c.text(p.left - 48, p.top - 20, ytitle, BLACK);
        p
    }

    fn at(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x / self.xmax).clamp(0.0, 1.0);
        let fy = (y / self.ymax).clamp(0.0, 1.0);
        (
            self.left + ((self.right - self.left) as f64 * fx).round() as i64,
            self.bottom - ((self.bottom - self.top) as f64 * fy).round() as i64,
        )
    }

    /// A polyline through `points` with a dot at each.
    fn curve(&self, c: &mut Canvas, points: &[(f64, f64)], color: [u8; 3], dash: bool) {
        for w in points.windows(2) {
            c.line(
                self.at(w[0].0, w[0].1),
                self.at(w[1].0, w[1].1),
                color,
                dash,
            );
        }
        for p in points {
            c.dot(self.at(p.0, p.1), color);
        }
    }

    /// The empirical CDF of sorted `values` as a staircase.
    fn cdf(&self, c: &mut Canvas, values: &[f64], color: [u8; 3]) {
        let n = values.len() as f64;
        let mut prev = self.at(0.0, 0.0);
        for (i, v) in values.iter().enumerate() {
            let step = (self.at(*v, 0.0).0, prev.1);
            let up = self.at(*v, (i + 1) as f64 / n);
            c.line(prev, step, color, false);
            c.line(step, up, color, false);
            prev = up;
        }
    }
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An 8-bit RGB PNG of the canvas.
fn encode_png(c: &Canvas) -> Vec<u8> {
    let mut raw = Vec::with_capacity((c.w * 3 + 1) * H);
    for row in c.rgb.chunks(c.w * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).expect("writing to a Vec");
    let idat = z.finish().expect("writing to a Vec");
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(c.w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(H as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    }
    png
}

fn successful(report: &serde_json::Value, key: &str) -> Vec<f64> {
    let mut v: Vec<f64> = report["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["error"].is_null())
        .filter_map(|r| r[key].as_f64())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The legend across the top: a color swatch and a name per input, then `note`.
fn legend(c: &mut Canvas, names: &[String], note: &str) {
    let mut x = 16;
    for (name, color) in names.iter().zip(COLORS.iter().cycle()) {
        for dy in 0..10 {
            c.line((x, 12 + dy), (x + 14, 12 + dy), *color, false);
        }
        c.text(x + 20, 12, name, BLACK);
        x += 20 + 8 * name.len() as i64 + 24;
    }
    c.text(x + 8, 12, note, BLACK);
}

fn max_of<'a>(v: impl Iterator<Item = &'a f64>) -> f64 {
    v.copied().filter(|x| x.is_finite()).fold(0.0, f64::max)
}

/// TTFT and TPOT CDFs of single-run reports, one color per report.
pub fn render(reports: &[(String, serde_json::Value)]) -> Vec<u8> {
    let mut c = Canvas::new(2 * PANEL_W as usize);
    for (i, (key, title)) in [("ttft", "TTFT MS"), ("tpot", "TPOT MS")]
        .iter()
        .enumerate()
    {
        let series: Vec<Vec<f64>> = reports.iter().map(|(_, r)| successful(r, key)).collect();
        let xmax = max_of(series.iter().flatten());
        let p = Panel::new(&mut c, i as i64 * PANEL_W, (xmax, 1.0), title, "CDF");
        for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
            p.cdf(&mut c, s, *color);
        }
    }
    let names: Vec<String> = reports.iter().map(|(n, _)| n.clone()).collect();
    legend(&mut c, &names, "");
    encode_png(&c)
}

/// (rate, value) pairs of a sweep summary's points, by rate.
fn sweep_series(
    summary: &serde_json::Value,
    get: impl Fn(&serde_json::Value) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = summary["points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["rate"].as_f64()?, get(p)?)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Latency percentiles and goodput against the offered rate, one color per sweep summary.
pub fn render_sweeps(sweeps: &[(String, serde_json::Value)]) -> Vec<u8> {
    let mut c = Canvas::new(3 * PANEL_W as usize);
    let xmax = max_of(
        sweeps
            .iter()
            .flat_map(|(_, s)| sweep_series(s, |p| p["rate"].as_f64()))
            .map(|(r, _)| r)
            .collect::<Vec<_>>()
            .iter(),
    );
    for (i, (metric, title)) in [("ttft", "TTFT MS"), ("tpot", "TPOT MS")]
        .iter()
        .enumerate()
    {
        let curves: Vec<[Vec<(f64, f64)>; 2]> = sweeps
            .iter()
            .map(|(_, s)| {
                ["median", "p99"].map(|stat| {
                    sweep_series(s, |p| p["latency"][format!("{stat}_{metric}_ms")].as_f64())
                })
            })
            .collect();
        let ymax = max_of(curves.iter().flatten().flatten().map(|p| &p.1));
        let p = Panel::new(
            &mut c,
            i as i64 * PANEL_W,
            (xmax, ymax),
            "RATE REQ/S",
            title,
        );
        for (pair, color) in curves.iter().zip(COLORS.iter().cycle()) {
            p.curve(&mut c, &pair[0], *color, true);
            p.curve(&mut c, &pair[1], *color, false);
        }
    }
    let goodput: Vec<Vec<(f64, f64)>> = sweeps
        .iter()
        .map(|(_, s)| sweep_series(s, |p| p["request_goodput"].as_f64()))
        .collect();
    let ymax = max_of(goodput.iter().flatten().map(|p| &p.1)).max(xmax);
    let p = Panel::new(
        &mut c,
        2 * PANEL_W,
        (xmax, ymax),
        "RATE REQ/S",
        "GOODPUT REQ/S",
    );
    c.line(p.at(0.0, 0.0), p.at(p.xmax, p.xmax), GREY, true);
    for ((curve, (_, s)), color) in goodput.iter().zip(sweeps).zip(COLORS.iter().cycle()) {
        p.curve(&mut c, curve, *color, false);
        if let Some(cap) = s["capacity"].as_f64() {
            c.line(p.at(cap, 0.0), p.at(cap, p.ymax), *color, true);
        }
    }
    let names: Vec<String> = sweeps.iter().map(|(n, _)| n.clone()).collect();
    legend(
        &mut c,
        &names,
        "SOLID P99, DASHED P50; DASHED VERTICAL: CAPACITY (90% ATTAINMENT)",
    );
    encode_png(&c)
}

fn read_json(path: &Path) -> Result<serde_json::Value, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::WorkloadIo {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::WorkloadParse {
        path: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })
}

/// What a `brisk bench` JSON file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Report,
    Sweep,
}

fn kind(path: &Path, v: &serde_json::Value) -> Result<Kind, BenchError> {
    if v["points"].is_array() {
        Ok(Kind::Sweep)
    } else if v["requests"].is_array() {
        Ok(Kind::Report)
    } else {
        Err(BenchError::WorkloadParse {
            path: path.to_path_buf(),
            line: 0,
            reason: "neither a brisk bench report (`requests`) nor a sweep summary (`points`)"
                .into(),
        })
    }
}

/// `brisk bench plot`.
pub fn plot(args: &PlotArgs) -> Result<(), BenchError> {
    let names: Vec<String> = match &args.labels {
        Some(l) if l.len() != args.reports.len() => {
            return Err(BenchError::config(
                "labels",
                format!("{} labels for {} files", l.len(), args.reports.len()),
            ))
        }
        Some(l) => l.clone(),
        None => args
            .reports
            .iter()
            .map(|p| {
                p.file_stem()
                    .map_or("?".into(), |s| s.to_string_lossy().into_owned())
            })
            .collect(),
    };
    let mut inputs = Vec::new();
    let mut kinds = Vec::new();
    for (path, name) in args.reports.iter().zip(names) {
        let v = read_json(path)?;
        kinds.push(kind(path, &v)?);
        inputs.push((name, v));
    }
    let png = if kinds.iter().all(|k| *k == Kind::Report) {
        render(&inputs)
    } else if kinds.iter().all(|k| *k == Kind::Sweep) {
        render_sweeps(&inputs)
    } else {
        return Err(BenchError::config(
            "reports",
            "give single-run reports (CDFs) or sweep summaries (curves against rate), not both",
        ));
    };
    for ((name, _), color) in inputs.iter().zip(COLORS.iter().cycle()) {
        println!("{name}: rgb{color:?}");
    }
    std::fs::write(&args.output, png).map_err(|source| BenchError::Output {
        path: args.output.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_a_valid_signature_and_chunk_crcs() {
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
        let r = serde_json::json!({"requests": [{"ttft": 1.0, "tpot": 2.0, "error": null}]});
        let png = render(&[("a".into(), r)]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }

    #[test]
    fn axes_end_at_round_numbers() {
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(2.07), 2.5);
        assert_eq!(nice_ceil(11_248.0), 20_000.0);
        assert_eq!(nice_ceil(0.3), 0.5);
        assert_eq!(nice_ceil(0.0), 1.0);
    }

    #[test]
    fn sweep_curves_take_points_by_rate() {
        let s = serde_json::json!({"capacity": 2.0, "points": [
            {"rate": 4.0, "request_goodput": 1.0, "latency": {"p99_ttft_ms": 900.0}},
            {"rate": 2.0, "request_goodput": 1.9, "latency": {"p99_ttft_ms": 100.0}}]});
        assert_eq!(
            sweep_series(&s, |p| p["latency"]["p99_ttft_ms"].as_f64()),
            vec![(2.0, 100.0), (4.0, 900.0)]
        );
        let png = render_sweeps(&[("brisk".into(), s)]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(kind(Path::new("x"), &serde_json::json!({})).is_err());
    }
}
