//! Intercepted audio on disk: one 8 kHz mono 16-bit WAV per call direction, written as the
//! decoded samples arrive (placed by their position: a gap is silence, a repeat is skipped),
//! and the two mixed into a third when the call closes.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;

const SPEC: hound::WavSpec = hound::WavSpec {
    channels: 1,
    sample_rate: 8000,
    bits_per_sample: 16,
    sample_format: hound::SampleFormat::Int,
};

/// Longest silence inserted for a gap (60 s): a wild timestamp must not fill the disk.
const MAX_GAP: u64 = 8000 * 60;

/// One direction's track.
pub(crate) struct Track {
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    pub path: PathBuf,
    written: u64,
}

impl Track {
    pub fn create(path: &Path) -> anyhow::Result<Track> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let writer = hound::WavWriter::create(path, SPEC)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Track {
            writer: Some(writer),
            path: path.to_path_buf(),
            written: 0,
        })
    }

    /// Writes `samples` at `at` (samples from the track's origin).
    pub fn put(&mut self, at: u64, samples: &[i16]) -> anyhow::Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        if at > self.written {
            let gap = (at - self.written).min(MAX_GAP);
            for _ in 0..gap {
                w.write_sample(0i16)?;
            }
            self.written += gap;
        }
        let skip = usize::try_from(self.written.saturating_sub(at)).unwrap_or(usize::MAX);
        for s in samples.iter().skip(skip) {
            w.write_sample(*s)?;
        }
        self.written += samples.len().saturating_sub(skip) as u64;
        Ok(())
    }

    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.writer.take() {
            w.finalize()
                .with_context(|| format!("finishing {}", self.path.display()))?;
        }
        Ok(())
    }
}

/// Mixes finished tracks (same origin) into `out`, saturating.
pub(crate) fn mix(inputs: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let mut tracks: Vec<Vec<i16>> = Vec::new();
    for p in inputs {
        let mut r =
            hound::WavReader::open(p).with_context(|| format!("reading {}", p.display()))?;
        tracks.push(r.samples::<i16>().collect::<Result<_, _>>()?);
    }
    let n = tracks.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = hound::WavWriter::create(out, SPEC)
        .with_context(|| format!("creating {}", out.display()))?;
    for i in 0..n {
        let s: i32 = tracks
            .iter()
            .map(|t| i32::from(t.get(i).copied().unwrap_or(0)))
            .sum();
        w.write_sample(s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16)?;
    }
    w.finalize()?;
    Ok(())
}
