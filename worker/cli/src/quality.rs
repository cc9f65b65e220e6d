//! Separation quality against ground truth: the corpus songs `model/corpus.py` renders and the SDR
//! the Music Demixing (MDX) challenge scores with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stemsep_audio::{decode, AudioError, PlanarAudio};
use stemsep_engine::{EngineError, Separator};

/// The MDX challenge's regulariser: silent references and perfect estimates stay finite.
const SDR_EPSILON: f64 = 1e-7;

/// Signal-to-distortion ratio in dB over the whole song and every channel, as the MDX challenge
/// defines it: `10·log10((‖s‖² + ε) / (‖s − ŝ‖² + ε))`. Channels or samples the estimate lacks
/// count as silence.
pub fn sdr(reference: &[Vec<f32>], estimate: &[Vec<f32>]) -> f64 {
    let (mut signal, mut error) = (0.0f64, 0.0f64);
    for (c, s) in reference.iter().enumerate() {
        let e = estimate.get(c).map_or(&[][..], Vec::as_slice);
        for (n, &s) in s.iter().enumerate() {
            let s = f64::from(s);
            signal += s * s;
            error += (s - e.get(n).copied().map_or(0.0, f64::from)).powi(2);
        }
    }
    10.0 * ((signal + SDR_EPSILON) / (error + SDR_EPSILON)).log10()
}

/// Scores as a table row: one 8-wide column per stem, then their average.
pub fn sdr_table_row(scores: &[f64]) -> String {
    let average = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    scores
        .iter()
        .chain(std::iter::once(&average))
        .map(|s| format!("{s:>8.2}"))
        .collect()
}

/// One rendered song: `mixture.wav` and one `<source>.wav` per source, in a directory of its own.
pub struct CorpusSong {
    /// The song's directory name.
    pub name: String,
    /// The mixture, the exact sum of the stems.
    pub mixture: PlanarAudio,
    /// Ground-truth stems, by source name.
    pub stems: Vec<(String, PlanarAudio)>,
}

impl CorpusSong {
    /// Reads `dir/mixture.wav` and `dir/<source>.wav` for each of `sources`.
    pub fn read(dir: &Path, sources: &[String]) -> Result<CorpusSong, AudioError> {
        let read = |name: &str| -> Result<PlanarAudio, AudioError> {
            let path = dir.join(format!("{name}.wav"));
            let bytes = std::fs::read(&path)
                .map_err(|e| AudioError::Corrupt(format!("{}: {e}", path.display())))?;
            decode(&bytes, Duration::from_secs(24 * 3600))
        };
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(CorpusSong {
            name,
            mixture: read("mixture")?,
            stems: sources
                .iter()
                .map(|s| Ok((s.clone(), read(s)?)))
                .collect::<Result<_, AudioError>>()?,
        })
    }

    /// The song directories under `split_dir` (e.g. `corpus/test`), sorted by name.
    pub fn dirs(split_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(split_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("mixture.wav").is_file())
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// SDR of each ground-truth stem (in `self.stems` order) when the mixture itself is the
    /// estimate: the score of doing nothing.
    pub fn mixture_sdr(&self) -> Vec<f64> {
        self.stems
            .iter()
            .map(|(_, stem)| sdr(&stem.channels, &self.mixture.channels))
            .collect()
    }

    /// SDR of each ground-truth stem (in `self.stems` order) against `separator`'s estimate of it
    /// from the mixture. A stem the model has no source for is scored against silence.
    pub fn model_sdr(&self, separator: &Separator) -> Result<Vec<f64>, EngineError> {
        let estimates = separator.separate_planar(self.mixture.clone(), &|_| {})?;
        let sources = &separator.info().sources;
        Ok(self
            .stems
            .iter()
            .map(|(name, stem)| {
                let estimate = sources.iter().position(|s| s == name);
                sdr(&stem.channels, estimate.map_or(&[][..], |i| &estimates[i]))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdr_follows_the_mdx_definition() {
        let s = vec![vec![1.0f32, -1.0, 0.5, 0.0]; 2];
        assert!(
            sdr(&s, &s) > 60.0,
            "perfect estimate is bounded only by epsilon"
        );
        // An estimate off by half the signal: 10·log10(1/0.25) = 6.02 dB.
        let half: Vec<Vec<f32>> = s
            .iter()
            .map(|c| c.iter().map(|v| v * 0.5).collect())
            .collect();
        assert!((sdr(&s, &half) - 6.0206).abs() < 1e-3);
        // Silence as the estimate of a signal: 0 dB; anything worse is negative.
        assert!(sdr(&s, &[vec![0.0; 4], vec![0.0; 4]]).abs() < 1e-6);
        assert!(sdr(&s, &[]).abs() < 1e-6, "a missing estimate is silence");
        let inverted: Vec<Vec<f32>> = s.iter().map(|c| c.iter().map(|v| -v).collect()).collect();
        assert!((sdr(&s, &inverted) + 6.0206).abs() < 1e-3);
    }
}
