//! The STFT/iSTFT pair exactly as HT-Demucs computes it around its learned core
//! (`HTDemucs._spec` / `_ispec` over `torch.stft` / `torch.istft`, see `model/README.md` §2–3).
//!
//! Forward, per channel of one segment of `T` samples:
//! 1. reflect-pad (edge sample not repeated) by `pad_left = hop/2*3` on the left and
//!    `pad_right = pad_left + frames*hop - T` on the right, `frames = ceil(T / hop)`;
//! 2. frame `f` in `0..frames` is `padded[f*hop .. f*hop + n_fft]`, times the periodic Hann
//!    window, real FFT, scaled by `1/sqrt(n_fft)` (`normalized=True`);
//! 3. keep bins `0..n_fft/2` (the Nyquist bin is dropped) and store complex-as-channels:
//!    `spec[2c + 0][k][f]` = real part, `spec[2c + 1][k][f]` = imaginary part, frames fastest.
//!
//! (demucs gets there through a second, centring reflect pad and then drops 2 frames at each edge;
//! the kept frames never reach that second pad, so the direct form above is the same computation.)
//!
//! Inverse: the exact adjoint demucs runs — a zero Nyquist bin and 2 zero frames at each edge are
//! implied, each frame goes through an inverse real FFT scaled by `1/sqrt(n_fft)` (the DC bin's
//! imaginary part is ignored, as a c2r transform does), is windowed and overlap-added at `hop`,
//! divided by the envelope `Σ w²` of all `frames + 4` frames, and cropped back to the segment.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::window::hann_periodic;

/// FFT plans, window and envelope for one segment length; build once, share between threads
/// (each thread brings its own [`StftScratch`]).
pub struct Stft {
    n_fft: usize,
    hop: usize,
    segment: usize,
    frames: usize,
    pad_left: usize,
    window: Vec<f32>,
    /// iSTFT window envelope `Σ_j w[n + pad_left - j*hop]²` for each segment sample `n`.
    envelope: Vec<f32>,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
}

/// Per-thread working memory for [`Stft`]; reuse it across segments to avoid reallocating.
pub struct StftScratch {
    padded: Vec<f32>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft: Vec<Complex<f32>>,
}

impl Stft {
    /// Plans an STFT of `n_fft` samples at `hop` samples (`hop` must be `n_fft / 4`, as demucs
    /// asserts) over segments of `segment` samples per channel.
    pub fn new(n_fft: usize, hop: usize, segment: usize) -> Result<Stft, String> {
        let pad_left = hop / 2 * 3;
        if n_fft == 0 || hop * 4 != n_fft || segment == 0 {
            return Err(format!(
                "unsupported STFT geometry: n_fft {n_fft}, hop {hop}, segment {segment} \
                 (need hop = n_fft/4 and a segment)"
            ));
        }
        let frames = segment.div_ceil(hop);
        let window = hann_periodic(n_fft);
        // Overlap-added frame by frame (the frames in order for every sample, as a per-sample sum
        // would take them), so long segments cost frames × n_fft, not segment × frames. The 2 zero
        // frames at each edge contribute to the envelope, not to the signal.
        let mut envelope = vec![0.0f32; segment];
        for j in -2..frames as isize + 2 {
            let first = j * hop as isize - pad_left as isize;
            for (m, w) in window.iter().enumerate() {
                let n = first + m as isize;
                if (0..segment as isize).contains(&n) {
                    envelope[n as usize] += w * w;
                }
            }
        }
        let mut planner = RealFftPlanner::<f32>::new();
        Ok(Stft {
            n_fft,
            hop,
            segment,
            frames,
            pad_left,
            window,
            envelope,
            forward: planner.plan_fft_forward(n_fft),
            inverse: planner.plan_fft_inverse(n_fft),
        })
    }

    /// Frequency bins kept (`n_fft / 2`).
    pub fn bins(&self) -> usize {
        self.n_fft / 2
    }

    /// STFT frames per segment (`ceil(segment / hop)`).
    #[cfg(test)]
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Segment length, in samples per channel.
    pub fn segment(&self) -> usize {
        self.segment
    }

    /// Length of the complex-as-channels spectrogram of `channels` channels, in f32 values
    /// (`2 * channels * bins * frames`).
    pub fn spec_len(&self, channels: usize) -> usize {
        2 * channels * self.bins() * self.frames
    }

    /// Fresh working memory for one thread.
    pub fn scratch(&self) -> StftScratch {
        let fft_len = self
            .forward
            .get_scratch_len()
            .max(self.inverse.get_scratch_len());
        StftScratch {
            padded: vec![0.0; self.frames * self.hop + 3 * self.hop],
            frame: vec![0.0; self.n_fft],
            spectrum: vec![Complex::default(); self.n_fft / 2 + 1],
            fft: vec![Complex::default(); fft_len],
        }
    }

    /// Forward STFT of `audio` (planar, `channels` × `segment` samples) into `spec`
    /// (`[2*channels][bins][frames]`, see the module docs).
    pub fn forward_into(
        &self,
        audio: &[f32],
        channels: usize,
        spec: &mut [f32],
        scratch: &mut StftScratch,
    ) {
        let (t, bins, frames) = (self.segment, self.bins(), self.frames);
        assert_eq!(
            audio.len(),
            channels * t,
            "audio must be channels × segment samples"
        );
        assert_eq!(
            spec.len(),
            self.spec_len(channels),
            "spec buffer has the wrong length"
        );
        let scale = 1.0 / (self.n_fft as f32).sqrt();
        for c in 0..channels {
            let x = &audio[c * t..(c + 1) * t];
            reflect_pad_into(x, self.pad_left, &mut scratch.padded);
            let (re_plane, im_plane) = {
                let (re, rest) = spec[2 * c * bins * frames..].split_at_mut(bins * frames);
                (re, &mut rest[..bins * frames])
            };
            for f in 0..frames {
                let start = f * self.hop;
                for ((dst, &s), &w) in scratch
                    .frame
                    .iter_mut()
                    .zip(&scratch.padded[start..start + self.n_fft])
                    .zip(&self.window)
                {
                    *dst = s * w;
                }
                self.forward
                    .process_with_scratch(
                        &mut scratch.frame,
                        &mut scratch.spectrum,
                        &mut scratch.fft,
                    )
                    .expect("buffer sizes come from the plan");
                for (k, z) in scratch.spectrum[..bins].iter().enumerate() {
                    re_plane[k * frames + f] = z.re * scale;
                    im_plane[k * frames + f] = z.im * scale;
                }
            }
        }
    }

    /// Allocating wrapper around [`Stft::forward_into`].
    pub fn forward(&self, audio: &[f32], channels: usize) -> Vec<f32> {
        let mut spec = vec![0.0; self.spec_len(channels)];
        self.forward_into(audio, channels, &mut spec, &mut self.scratch());
        spec
    }

    /// Inverse STFT of `spec` (`[2*channels][bins][frames]`) into `out` (planar, `channels` ×
    /// `segment` samples, overwritten).
    pub fn inverse_into(
        &self,
        spec: &[f32],
        channels: usize,
        out: &mut [f32],
        scratch: &mut StftScratch,
    ) {
        let (t, bins, frames) = (self.segment, self.bins(), self.frames);
        assert_eq!(
            spec.len(),
            self.spec_len(channels),
            "spec has the wrong length"
        );
        assert_eq!(
            out.len(),
            channels * t,
            "out must be channels × segment samples"
        );
        let scale = 1.0 / (self.n_fft as f32).sqrt();
        for c in 0..channels {
            let re_plane = &spec[2 * c * bins * frames..(2 * c + 1) * bins * frames];
            let im_plane = &spec[(2 * c + 1) * bins * frames..(2 * c + 2) * bins * frames];
            let acc = &mut scratch.padded;
            acc.fill(0.0);
            for f in 0..frames {
                for (k, z) in scratch.spectrum[..bins].iter_mut().enumerate() {
                    *z = Complex::new(re_plane[k * frames + f], im_plane[k * frames + f]);
                }
                // A c2r transform ignores these; realfft insists they be zero.
                scratch.spectrum[0].im = 0.0;
                scratch.spectrum[bins] = Complex::default();
                self.inverse
                    .process_with_scratch(
                        &mut scratch.spectrum,
                        &mut scratch.frame,
                        &mut scratch.fft,
                    )
                    .expect("buffer sizes come from the plan");
                let start = f * self.hop;
                for ((a, &y), &w) in acc[start..start + self.n_fft]
                    .iter_mut()
                    .zip(&scratch.frame)
                    .zip(&self.window)
                {
                    *a += y * scale * w;
                }
            }
            for ((o, &a), &e) in out[c * t..(c + 1) * t]
                .iter_mut()
                .zip(&acc[self.pad_left..self.pad_left + t])
                .zip(&self.envelope)
            {
                *o = a / e;
            }
        }
    }

    /// Allocating wrapper around [`Stft::inverse_into`].
    #[cfg(test)]
    pub fn inverse(&self, spec: &[f32], channels: usize) -> Vec<f32> {
        let mut out = vec![0.0; channels * self.segment];
        self.inverse_into(spec, channels, &mut out, &mut self.scratch());
        out
    }
}

/// Writes `x` reflect-padded (numpy/torch `'reflect'`: the edge sample is not repeated) with
/// `left` samples before it, filling the rest of `out` after it. A signal too short to reflect
/// that far is first extended with zeros, as demucs' `pad1d` does (zeros to the right up to the
/// right pad, the rest to the left), so a short last chunk is padded as demucs pads it.
fn reflect_pad_into(x: &[f32], left: usize, out: &mut [f32]) {
    let n = x.len();
    let right = out.len() - left - n;
    let longest = left.max(right);
    if n <= longest {
        let extra = longest - n + 1;
        let extra_right = right.min(extra);
        let extra_left = extra - extra_right;
        let mut extended = vec![0.0f32; n + extra];
        extended[extra_left..extra_left + n].copy_from_slice(x);
        return reflect_pad_into(&extended, left - extra_left, out);
    }
    out[left..left + n].copy_from_slice(x);
    for i in 0..left {
        out[left - 1 - i] = x[1 + i];
    }
    for i in 0..right {
        out[left + n + i] = x[n - 2 - i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_padding_matches_numpy() {
        // np.pad([1,2,3,4,5], (3, 2), 'reflect') == [4,3,2,1,2,3,4,5,4,3]
        let mut out = vec![0.0; 10];
        reflect_pad_into(&[1.0, 2.0, 3.0, 4.0, 5.0], 3, &mut out);
        assert_eq!(out, [4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0]);
    }

    #[test]
    fn short_signals_are_zero_extended_before_reflecting_as_demucs_pad1d_does() {
        // demucs pad1d([1, 2, 3], (4, 2), 'reflect'): length 3 <= 4, so two zeros go right
        // ([1, 2, 3, 0, 0]), then reflect by (4, 0).
        let mut out = vec![0.0; 9];
        reflect_pad_into(&[1.0, 2.0, 3.0], 4, &mut out);
        assert_eq!(out, [0.0, 0.0, 3.0, 2.0, 1.0, 2.0, 3.0, 0.0, 0.0]);
        // pad1d([1, 2], (3, 1)): one zero right (the right pad's worth), one left
        // ([0, 1, 2, 0]), then reflect by (2, 0).
        let mut out = vec![0.0; 6];
        reflect_pad_into(&[1.0, 2.0], 3, &mut out);
        assert_eq!(out, [2.0, 1.0, 0.0, 1.0, 2.0, 0.0]);
    }

    #[test]
    fn demucs_geometry() {
        let s = Stft::new(4096, 1024, 343_980).unwrap();
        assert_eq!((s.bins(), s.frames(), s.pad_left), (2048, 336, 1536));
        assert_eq!(s.scratch().padded.len(), 1536 + 343_980 + 1620);
        assert!(s.envelope.iter().all(|e| (e - 1.5).abs() < 1e-5));
        assert!(Stft::new(4096, 512, 343_980).is_err());
    }
}
