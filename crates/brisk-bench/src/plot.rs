//! `brisk bench plot REPORT… --output PNG`: TTFT and TPOT CDFs of several reports (one
//! line per server or run) side by side, as a small PNG.
//!
//! Self-contained on purpose: a few-pixel bitmap font, Bresenham lines and a PNG
//! encoder (zlib via `flate2`) instead of a plotting stack with system fonts, so the
//! same figure renders on any machine and in CI.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::BenchError;

/// `brisk bench plot` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct PlotArgs {
    /// Report JSON files written by `brisk bench` (one line each).
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long, short)]
    pub output: PathBuf,
}

const W: usize = 960;
const H: usize = 420;
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

/// A 3×5 glyph, one row per byte, bit 2 leftmost.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' | 'O' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' | 'S' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'T' => [7, 2, 2, 2, 2],
        'F' => [7, 4, 6, 4, 4],
        'P' => [7, 5, 7, 4, 4],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'M' => [5, 7, 7, 5, 5],
        _ => [0; 5],
    }
}

struct Canvas {
    rgb: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            rgb: vec![255; W * H * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.set(x0, y0, c);
            self.set(x0, y0 + 1, c);
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

/// One CDF panel: x from 0 to the largest value, y from 0 to 1.
fn panel(c: &mut Canvas, x0: i64, title: &str, series: &[Vec<f64>]) {
    let (left, right, top, bottom) = (x0 + 50, x0 + 450, 30_i64, (H - 40) as i64);
    let xmax = series
        .iter()
        .flatten()
        .copied()
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    for k in 0..=4 {
        let x = left + (right - left) * k / 4;
        let y = bottom - (bottom - top) * k / 4;
        c.line((x, top), (x, bottom), GREY);
        c.line((left, y), (right, y), GREY);
        c.text(x - 12, bottom + 8, &label(xmax * k as f64 / 4.0), BLACK);
        c.text(left - 40, y - 5, &label(k as f64 / 4.0), BLACK);
    }
    c.text(left + 150, bottom + 24, title, BLACK);
    c.text(left - 40, top - 22, "CDF", BLACK);
    for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
        let n = s.len() as f64;
        let px = |v: f64| left + ((right - left) as f64 * v / xmax).round() as i64;
        let py = |q: f64| bottom - ((bottom - top) as f64 * q).round() as i64;
        let mut prev = (left, bottom);
        for (i, v) in s.iter().enumerate() {
            let step = (px(*v), prev.1);
            let up = (px(*v), py((i + 1) as f64 / n));
            c.line(prev, step, *color);
            c.line(step, up, *color);
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
    let mut raw = Vec::with_capacity((W * 3 + 1) * H);
    for row in c.rgb.chunks(W * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).expect("writing to a Vec");
    let idat = z.finish().expect("writing to a Vec");
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(W as u32).to_be_bytes());
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

/// Renders the CDFs of `reports` into a PNG's bytes; prints which color is which file.
pub fn render(reports: &[(PathBuf, serde_json::Value)]) -> Vec<u8> {
    let mut c = Canvas::new();
    let ttft: Vec<Vec<f64>> = reports.iter().map(|(_, r)| successful(r, "ttft")).collect();
    let tpot: Vec<Vec<f64>> = reports.iter().map(|(_, r)| successful(r, "tpot")).collect();
    panel(&mut c, 0, "TTFT MS", &ttft);
    panel(&mut c, 480, "TPOT MS", &tpot);
    for (i, ((path, _), color)) in reports.iter().zip(COLORS.iter().cycle()).enumerate() {
        let y = 6 + i as i64 * 14;
        for dy in 0..8 {
            c.line((W as i64 - 60, y + dy), (W as i64 - 50, y + dy), *color);
        }
        c.text(W as i64 - 40, y - 1, &(i + 1).to_string(), BLACK);
        println!("line {} ({:?}): {}", i + 1, color, path.display());
    }
    encode_png(&c)
}

fn read_report(path: &Path) -> Result<serde_json::Value, BenchError> {
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

/// `brisk bench plot`.
pub fn plot(args: &PlotArgs) -> Result<(), BenchError> {
    let reports = args
        .reports
        .iter()
        .map(|p| Ok((p.clone(), read_report(p)?)))
        .collect::<Result<Vec<_>, BenchError>>()?;
    std::fs::write(&args.output, render(&reports)).map_err(|source| BenchError::Output {
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
        let png = render(&[(PathBuf::from("a.json"), r)]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
