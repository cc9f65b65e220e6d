//! demucs' shifts (test-time augmentation, `apply_model(shifts=n)`): the song is separated `n`
//! times, each pass after a random lead of silence of up to half a second, and the passes, their
//! leads cut off again, are averaged. The model is not equivariant to time shifts, so the average
//! is a little better than any one pass, at `n` times the cost.
//!
//! The leads come from a seeded generator, so a result is reproducible: the same song, model,
//! shift count and seed give the same samples. Unlike one pass, the passes cannot stream: the
//! sum is held for the whole song (`sources × channels × samples` floats) until the last pass
//! ends.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bag::Bag;
use crate::dsp::stft::Stft;
use crate::separate::{separate, Input};
use crate::{EngineError, Progress, StemSink};

/// Samples per block the averaged stems are handed to the sink in.
const BLOCK: usize = 1 << 16;

/// The lead of each of `shifts` passes, in samples: `max_shift - offset` for demucs' uniform
/// `offset` in `0..=max_shift`.
pub fn leads(shifts: usize, seed: u64, max_shift: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..shifts)
        .map(|_| max_shift - rng.random_range(0..=max_shift))
        .collect()
}

/// Separates `input` (no lead of its own) once per lead, averages the passes and streams the
/// average to `sink`.
pub fn separate_shifted(
    (bag, stft): (&Bag, &Stft),
    input: Input,
    leads: &[usize],
    in_flight: usize,
    sink: &mut dyn StemSink,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let info = bag.info();
    let len = input.mix[0].len();
    let mut sum = vec![vec![vec![0.0f32; len]; info.channels]; info.sources.len()];
    let passes = leads.len();
    for (k, &lead) in leads.iter().enumerate() {
        let mut pass = Accumulate {
            sum: &mut sum,
            skip: lead,
            at: 0,
        };
        // The passes share 0..99 %; 100 % once the average is written.
        let report =
            |p: u8| progress.report(((k * 100 + usize::from(p)) * 99 / (passes * 100)) as u8);
        separate(
            bag,
            stft,
            Input { lead, ..input },
            in_flight,
            &mut pass,
            &report,
        )?;
    }
    let scale = 1.0 / passes as f32;
    for start in (0..len).step_by(BLOCK) {
        let end = (start + BLOCK).min(len);
        let block: Vec<Vec<Vec<f32>>> = sum
            .iter()
            .map(|source| {
                source
                    .iter()
                    .map(|c| c[start..end].iter().map(|&x| x * scale).collect())
                    .collect()
            })
            .collect();
        sink.push(&block)?;
    }
    progress.report(100);
    Ok(())
}

/// Adds a pass's output, less its first `skip` samples, into `sum`.
struct Accumulate<'a> {
    sum: &'a mut [Vec<Vec<f32>>],
    skip: usize,
    /// Pass samples received so far.
    at: usize,
}

impl StemSink for Accumulate<'_> {
    fn push(&mut self, block: &[Vec<Vec<f32>>]) -> Result<(), EngineError> {
        let n = block.first().and_then(|s| s.first()).map_or(0, Vec::len);
        // Block samples from `from` on land at song sample `to`.
        let from = self.skip.saturating_sub(self.at);
        if from >= n {
            // All of the block is lead.
            self.at += n;
            return Ok(());
        }
        let to = self.at + from - self.skip;
        for (dst, src) in self.sum.iter_mut().zip(block) {
            for (d, s) in dst.iter_mut().zip(src) {
                let room = d.len().saturating_sub(to).min(n - from);
                for (a, &b) in d[to..to + room].iter_mut().zip(&s[from..from + room]) {
                    *a += b;
                }
            }
        }
        self.at += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_are_seeded_and_within_half_a_second() {
        let a = leads(10, 7, 22_050);
        assert_eq!(a, leads(10, 7, 22_050), "the same seed, the same leads");
        assert_ne!(a, leads(10, 8, 22_050), "another seed, other leads");
        assert!(a.iter().all(|&l| l <= 22_050));
        assert_eq!(leads(3, 1, 0), [0, 0, 0]);
    }

    #[test]
    fn a_pass_is_added_without_its_lead() {
        let mut sum = vec![vec![vec![0.0f32; 5]]];
        let mut pass = Accumulate {
            sum: &mut sum,
            skip: 3,
            at: 0,
        };
        // Eight pass samples 0..8 in blocks of 2, 4 and 2: song samples are pass samples 3..8.
        for block in [vec![0.0, 1.0], vec![2.0, 3.0, 4.0, 5.0], vec![6.0, 7.0]] {
            pass.push(&[vec![block]]).unwrap();
        }
        assert_eq!(sum[0][0], [3.0, 4.0, 5.0, 6.0, 7.0]);
    }
}
