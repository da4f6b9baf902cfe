//! Step recordings: `brisk serve --record-steps FILE` writes one JSON line per engine step
//! (its shape and wall time), and `brisk profile --from-steps FILE` fits a latency model on
//! them.
//!
//! Why: `brisk profile` times the backend alone on an idle machine, but a loaded server's
//! steps also pay for sampling and share the two cores with the HTTP threads, the tokenizer
//! and often the benchmark client. A model fitted on what the live engine did predicts the
//! steps the SLO policy plans and the simulator replays (Vidur and DistServe calibrate their
//! simulators on real runs the same way).
//!
//! The engine sends records over a channel; a thread of its own writes them, so the engine
//! never waits on the disk. It flushes whenever it has caught up.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result};
use brisk_scheduler::StepRecord;

/// Creates `path` and starts the writer thread; the engine's sender ends it when dropped.
pub fn start_writer(path: &Path) -> Result<mpsc::Sender<StepRecord>> {
    let file = File::create(path)
        .with_context(|| format!("cannot create the step recording {}", path.display()))?;
    let (tx, rx) = mpsc::channel::<StepRecord>();
    let name = path.display().to_string();
    std::thread::Builder::new()
        .name("brisk-step-log".into())
        .spawn(move || {
            let mut out = BufWriter::new(file);
            fn write(out: &mut BufWriter<File>, record: &StepRecord) -> std::io::Result<()> {
                serde_json::to_writer(&mut *out, record)?;
                out.write_all(b"\n")
            }
            while let Ok(record) = rx.recv() {
                let mut result = write(&mut out, &record);
                while let (Ok(()), Ok(record)) = (&result, rx.try_recv()) {
                    result = write(&mut out, &record);
                }
                if let Err(e) = result.and_then(|()| out.flush()) {
                    tracing::error!("step recording {name} stopped: {e}");
                    return; // dropping the receiver tells the engine to stop sending
                }
            }
        })
        .context("cannot start the step recording thread")?;
    Ok(tx)
}

/// Reads a recording, naming the line of any record it cannot parse. A last line cut short
/// (the server was killed mid-write) is skipped.
pub fn read(path: &Path) -> Result<Vec<StepRecord>> {
    let file = File::open(path)
        .with_context(|| format!("cannot open the step recording {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<StepRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() && !line.ends_with('}') => {}
            Err(e) => anyhow::bail!(
                "{}:{}: not a step record ({e}); write recordings with `brisk serve --record-steps`",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use brisk_scheduler::StepShape;

    use super::*;

    fn record(step: u64) -> StepRecord {
        let mut shape = StepShape::default();
        shape.add_decode(10 + step as usize);
        StepRecord {
            step,
            at_s: step as f64 * 0.01,
            shape,
            execute_s: 0.008,
            seconds: 0.01,
        }
    }

    #[test]
    fn records_round_trip_through_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.jsonl");
        let tx = start_writer(&path).unwrap();
        for i in 0..100 {
            tx.send(record(i)).unwrap();
        }
        drop(tx);
        // The writer flushes once it has caught up; wait for all 100 lines.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = read(&path).unwrap();
            if got.len() == 100 {
                assert_eq!(got[42], record(42));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} records",
                got.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.jsonl");
        let line = serde_json::to_string(&record(1)).unwrap();
        std::fs::write(&path, format!("{line}\n{}", &line[..20])).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("{line}\nnot json\n{line}\n")).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("steps.jsonl:2"), "{err}");
    }
}
