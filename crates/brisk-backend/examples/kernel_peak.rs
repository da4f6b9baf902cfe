//! Measures each kernel path's int8 multiply-add peak on this machine (registers only; see
//! `kernels::peak`), on one thread and on `BRISK_THREADS` (default: every core) at once,
//! so that the criterion benchmarks' GMAC/s can be read as a fraction of what the
//! instructions can do here.
//!
//! `cargo run --release -p brisk-backend --example kernel_peak`

use brisk_backend::internals::peak_macs_per_second;
use brisk_backend::KernelPath;

fn main() {
    let threads = std::env::var("BRISK_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    println!("path         one thread   {threads} threads (GMAC/s, int8)");
    for path in KernelPath::ALL {
        // AMX does 16,384 multiply-adds per instruction: fewer rounds for the same time.
        let rounds = if path == KernelPath::Amx {
            2_000_000
        } else {
            20_000_000
        };
        let Some(one) = peak_macs_per_second(path, rounds) else {
            let why = if path.available() {
                "no int8 instruction to time"
            } else {
                "this CPU lacks it"
            };
            println!("{:12} not measured: {why}", path.name());
            continue;
        };
        let all: f64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || peak_macs_per_second(path, rounds).unwrap_or(0.0)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        println!("{:12} {:10.1}   {:10.1}", path.name(), one / 1e9, all / 1e9);
    }
}
