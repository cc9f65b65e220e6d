//! A whole song through the core, the way demucs' `Separator` → `apply_model` (split on) does it
//! (`model/README.md` §4); one pass of it per shift when shifts are asked for ([`crate::shifts`]):
//!
//! 1. normalise by the mono mix's mean and unbiased std (+1e-8);
//! 2. segments of `T` samples at offsets `0, stride, 2·stride, … < L`, `stride = int((1-overlap)·T)`,
//!    each padded to `T` with the neighbouring real samples (centred; zeros only past the song's
//!    ends), run through STFT → core → iSTFT + time branch, then centre-trimmed back;
//! 3. overlap-add with a triangular weight (cut to the chunk's length for the last ones), divide by
//!    the summed weights, de-normalise.
//!
//! Memory stays flat in the song length: the normalised mix is never materialised (each segment
//! normalises its own window), at most `in_flight` segments (`2·in_flight - 1` while a song opens)
//! are between the workers and the overlap-add, and once the chunk at offset `o_i` is added every
//! sample before `o_{i+1}` is final and is handed to the [`StemSink`] and dropped.
//!
//! The sink (the MP3 encoders) runs on a thread of its own, at most `in_flight` blocks behind the
//! overlap-add, so a worker never waits on the encoder to be told it may start its next segment.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Condvar, Mutex};

use tract_onnx::tract_core::prelude::multithread::Executor;

use crate::bag::Bag;
use crate::dsp::stft::{Stft, StftScratch};
use crate::model::{pool_of, CoreOutput};
use crate::{EngineError, Progress, StemSink};

/// The chunking of a song of `len` samples into segments of `segment` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunking {
    /// Song length, in samples per channel.
    pub len: usize,
    /// Chunking segment, in samples (the core may take more: a chunk is padded to it).
    pub segment: usize,
    /// Distance between chunk starts, in samples.
    pub stride: usize,
}

impl Chunking {
    /// demucs' chunking: `stride = int((1 - overlap) * segment)` computed in f64 as Python does.
    pub fn new(len: usize, segment: usize, overlap: f64) -> Chunking {
        let stride = (((1.0 - overlap) * segment as f64) as usize).max(1);
        Chunking {
            len,
            segment,
            stride,
        }
    }

    /// Number of chunks (`ceil(len / stride)`).
    pub fn count(&self) -> usize {
        self.len.div_ceil(self.stride)
    }

    /// Start of chunk `i`, in samples.
    pub fn offset(&self, i: usize) -> usize {
        i * self.stride
    }

    /// Length of chunk `i` before padding, in samples.
    pub fn chunk_len(&self, i: usize) -> usize {
        (self.len - self.offset(i)).min(self.segment)
    }

    /// The triangular overlap-add weight for position `i` of a segment:
    /// `min(i + 1, T - i) / (T - T/2)`, in f32 as torch computes it.
    pub fn weight(&self, i: usize) -> f32 {
        let t = self.segment;
        (i + 1).min(t - i) as f32 / (t - t / 2) as f32
    }
}

/// The Separator's normalisation: mean and unbiased std (+1e-8) of the mono mix, as f32 scalars.
pub fn normalisation(mix: &[Vec<f32>]) -> (f32, f32) {
    let n = mix[0].len();
    let mono = |i: usize| mix.iter().map(|c| c[i]).sum::<f32>() / mix.len() as f32;
    // f64 sums stand in for torch's pairwise f32 reductions; naive f32 would drift on long songs.
    let mean = (0..n).map(|i| mono(i) as f64).sum::<f64>() / n as f64;
    let var = (0..n).map(|i| (mono(i) as f64 - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
    (mean as f32, var.sqrt() as f32 + 1e-8)
}

/// The song a pass separates: the mix, normalised by `(mean, std)` as segments read it, after
/// `lead` samples of (normalised) silence — demucs' shifts pad the song's start so.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The song, planar, at the model's rate and channel count.
    pub mix: &'a [Vec<f32>],
    /// Silence before the song, in samples.
    pub lead: usize,
    /// The whole song's normalisation ([`normalisation`]).
    pub norm: (f32, f32),
    /// Fraction of a segment consecutive segments share.
    pub overlap: f64,
}

impl Input<'_> {
    /// Length of the pass: the lead and the song, in samples.
    fn len(&self) -> usize {
        self.lead + self.mix[0].len()
    }
}

/// Separates `input` into the model's sources, streaming the result (lead included) to `sink`,
/// with `in_flight` segments computed in parallel (and the `n % in_flight` a song's `n`
/// segments leave over alongside its first ones).
pub fn separate(
    bag: &Bag,
    stft: &Stft,
    input: Input,
    in_flight: usize,
    sink: &mut dyn StemSink,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let info = bag.info();
    let (channels, sources) = (info.channels, info.sources.len());
    assert_eq!(
        input.mix.len(),
        channels,
        "mix must have the model's channel count"
    );
    let chunking = Chunking::new(input.len(), info.segment_samples, input.overlap);
    let (mean, std) = input.norm;
    let n_chunks = chunking.count();
    let in_flight = in_flight.clamp(1, n_chunks.max(1));
    // A segment alone runs on the model's pool; segments side by side share its threads out,
    // each on a pool of its own (or its own thread).
    let threads_each = bag.threads() / in_flight;
    // Left to the end, the `n_chunks % in_flight` odd segments would run on one share of the
    // cores while the other shares idle (1 of 11 on a 1-min song: a tenth of its time). Alone on
    // the whole pool they still leave cores idle through tract's one-thread elementwise operators
    // (`make bench` with STEMSEP_BENCH_IN_FLIGHT=1 against 2 shows it). So they open the song together with the
    // first `in_flight`, each on its share of the cores, and the OS shares the cores out.
    let extra = n_chunks % in_flight;
    let opening = in_flight + extra;

    let next_index = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    // Index of the next chunk the overlap-add needs; past the opening chunks, workers stay within
    // `in_flight` of it.
    let frontier = (Mutex::new(0usize), Condvar::new());
    let (tx, rx) = mpsc::channel::<(usize, Result<Vec<f32>, EngineError>)>();

    std::thread::scope(|scope| {
        for _ in 0..opening {
            let tx = tx.clone();
            let (next_index, abort, frontier, chunking) =
                (&next_index, &abort, &frontier, &chunking);
            scope.spawn(move || {
                let mut scratch = stft.scratch();
                let own = (opening > 1).then(|| pool_of(threads_each));
                loop {
                    let i = next_index.fetch_add(1, Ordering::SeqCst);
                    if i >= n_chunks || abort.load(Ordering::SeqCst) {
                        return;
                    }
                    {
                        let (lock, cv) = frontier;
                        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                        let _g = cv
                            .wait_while(guard, |f| {
                                let ready = i < opening || i < *f + in_flight;
                                !ready && !abort.load(Ordering::SeqCst)
                            })
                            .unwrap_or_else(|p| p.into_inner());
                    }
                    if abort.load(Ordering::SeqCst) {
                        return;
                    }
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        let segment = (i, own.as_ref().unwrap_or(bag.pool()));
                        run_chunk(bag, stft, input, chunking, segment, &mut scratch)
                    }))
                    .unwrap_or_else(|_| {
                        Err(EngineError::Internal(format!("segment {i} panicked")))
                    });
                    if tx.send((i, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);

        let (block_tx, block_rx) = mpsc::sync_channel(in_flight);
        let writer = scope.spawn(move || write_blocks(block_rx, sink, progress));
        progress.report(0);
        let added = overlap_add(
            &chunking,
            sources,
            channels,
            (mean, std),
            &rx,
            &frontier,
            &block_tx,
        );
        drop(block_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(EngineError::Internal("the stem writer panicked".into())));
        // A sink that failed stops the overlap-add, whose own error then only says so.
        let result = written.and(added);
        if result.is_err() {
            abort.store(true, Ordering::SeqCst);
            frontier.1.notify_all();
        }
        drop(rx);
        result
    })
}

/// A finished block of every stem (`[S][C][n]`) and the song's progress once it is written.
type Block = (Vec<Vec<Vec<f32>>>, u8);

/// The sink's thread: writes blocks in order until the overlap-add hangs up or the sink fails.
fn write_blocks(
    blocks: Receiver<Block>,
    sink: &mut dyn StemSink,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    for (block, percent) in blocks {
        sink.push(&block)?;
        progress.report(percent);
    }
    Ok(())
}

/// The consumer side: receives chunk outputs in any order, adds them in offset order, sends the
/// finished prefix on to the sink's thread after each one.
fn overlap_add(
    chunking: &Chunking,
    sources: usize,
    channels: usize,
    (mean, std): (f32, f32),
    rx: &mpsc::Receiver<(usize, Result<Vec<f32>, EngineError>)>,
    frontier: &(Mutex<usize>, Condvar),
    blocks: &SyncSender<Block>,
) -> Result<(), EngineError> {
    let n_chunks = chunking.count();
    let planes = sources * channels;
    // acc[p][k] and wsum[k] hold song samples base + k.
    let mut acc: Vec<Vec<f32>> = vec![Vec::new(); planes];
    let mut wsum: Vec<f32> = Vec::new();
    let mut base = 0usize;
    let mut pending: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    let mut next = 0usize;
    while next < n_chunks {
        let (i, result) = rx
            .recv()
            .map_err(|_| EngineError::Inference("segment workers stopped early".into()))?;
        pending.insert(i, result?);
        while let Some(chunk) = pending.remove(&next) {
            let (offset, len) = (chunking.offset(next), chunking.chunk_len(next));
            let start = offset - base;
            if wsum.len() < start + len {
                wsum.resize(start + len, 0.0);
                for a in &mut acc {
                    a.resize(start + len, 0.0);
                }
            }
            for (p, a) in acc.iter_mut().enumerate() {
                let out = &chunk[p * len..(p + 1) * len];
                for (k, (dst, &y)) in a[start..start + len].iter_mut().zip(out).enumerate() {
                    *dst += chunking.weight(k) * y;
                }
            }
            for (k, w) in wsum[start..start + len].iter_mut().enumerate() {
                *w += chunking.weight(k);
            }
            next += 1;
            {
                let (lock, cv) = frontier;
                *lock.lock().unwrap_or_else(|p| p.into_inner()) = next;
                cv.notify_all();
            }
            // Later chunks start at or after the next offset: everything before it is final.
            let done = if next < n_chunks {
                chunking.offset(next)
            } else {
                chunking.len
            };
            let k = done - base;
            let block: Vec<Vec<Vec<f32>>> = (0..sources)
                .map(|s| {
                    (0..channels)
                        .map(|c| {
                            acc[s * channels + c][..k]
                                .iter()
                                .zip(&wsum[..k])
                                .map(|(&a, &w)| a / w * std + mean)
                                .collect()
                        })
                        .collect()
                })
                .collect();
            for a in &mut acc {
                a.drain(..k);
            }
            wsum.drain(..k);
            base = done;
            blocks
                .send((block, ((next * 100) / n_chunks) as u8))
                .map_err(|_| EngineError::Internal("the stem writer stopped early".into()))?;
        }
    }
    Ok(())
}

/// Runs chunk `i`: pads it to the core's length from the song (zeros past its ends and in the
/// lead), normalises, runs STFT → cores → iSTFT + time branch, and returns the centre-trimmed,
/// weighted output `[S][C][len]`.
fn run_chunk(
    bag: &Bag,
    stft: &Stft,
    input: Input,
    chunking: &Chunking,
    (i, executor): (usize, &Executor),
    scratch: &mut StftScratch,
) -> Result<Vec<f32>, EngineError> {
    let channels = bag.info().channels;
    let (mix, (mean, std)) = (input.mix, input.norm);
    let (offset, len) = (chunking.offset(i), chunking.chunk_len(i));
    let t = bag.core_length(len);
    let delta = t - len;
    // In song samples: the pass's position less the lead.
    let start = offset as isize - (delta / 2) as isize - input.lead as isize;
    let song = mix[0].len() as isize;
    let mut u = vec![0.0f32; channels * t];
    for (c, plane) in u.chunks_exact_mut(t).enumerate() {
        let lo = (-start).clamp(0, t as isize) as usize;
        let hi = (song - start).clamp(0, t as isize) as usize;
        let src = &mix[c][(start + lo as isize) as usize..(start + hi as isize) as usize];
        for (dst, &x) in plane[lo..hi].iter_mut().zip(src) {
            *dst = (x - mean) / std;
        }
    }
    if t != stft.segment() {
        // Cores that take any length run a song's short last chunk at its own length, with an STFT
        // planned for it.
        let info = bag.info();
        let short = Stft::new(info.n_fft, info.hop_length, t)
            .map_err(|e| EngineError::Input(format!("a chunk of {t} samples: {e}")))?;
        return transform_and_run(
            bag,
            &short,
            u,
            executor,
            &mut short.scratch(),
            delta / 2,
            len,
        );
    }
    transform_and_run(bag, stft, u, executor, scratch, delta / 2, len)
}

/// The STFT of the normalised segment `u`, then the bag on both.
fn transform_and_run(
    bag: &Bag,
    stft: &Stft,
    u: Vec<f32>,
    executor: &Executor,
    scratch: &mut StftScratch,
    trim: usize,
    len: usize,
) -> Result<Vec<f32>, EngineError> {
    let channels = bag.info().channels;
    let mut spec = vec![0.0f32; stft.spec_len(channels)];
    stft.forward_into(&u, channels, &mut spec, scratch);
    bag.run(executor, stft, u, spec, scratch, trim, len)
}

/// The core's two branches as one waveform per source: iSTFT of the frequency branch plus the
/// time branch, samples `trim..trim + len` of the segment, `[S][C][len]` flat; sources `used`
/// says nothing of are left silent, untransformed.
pub fn combine(
    stft: &Stft,
    core: &CoreOutput,
    channels: usize,
    scratch: &mut StftScratch,
    trim: usize,
    len: usize,
    used: &[bool],
) -> Result<Vec<f32>, EngineError> {
    let fail = |e: tract_onnx::prelude::TractError| EngineError::Inference(format!("{e:#}"));
    let freq_view = core.freq.try_as_plain_ram().map_err(fail)?;
    let time_view = core.time.try_as_plain_ram().map_err(fail)?;
    let freq = freq_view.as_slice::<f32>().map_err(fail)?;
    let time = time_view.as_slice::<f32>().map_err(fail)?;
    let t = stft.segment();
    let spec_len = stft.spec_len(channels);
    let sources = freq.len() / spec_len;
    let mut y = vec![0.0f32; channels * t];
    let mut out = vec![0.0f32; sources * channels * len];
    for s in (0..sources).filter(|&s| used.get(s) == Some(&true)) {
        stft.inverse_into(
            &freq[s * spec_len..(s + 1) * spec_len],
            channels,
            &mut y,
            scratch,
        );
        for c in 0..channels {
            let p = s * channels + c;
            let time_plane = &time[p * t + trim..p * t + trim + len];
            let freq_plane = &y[c * t + trim..c * t + trim + len];
            for ((o, &xt), &x) in out[p * len..(p + 1) * len]
                .iter_mut()
                .zip(time_plane)
                .zip(freq_plane)
            {
                *o = xt + x;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stemsep_audio::AudioError;

    #[test]
    fn chunking_matches_demucs_numbers() {
        let c = Chunking::new(1_000_000, 343_980, 0.25);
        assert_eq!(c.stride, 257_985);
        assert_eq!(c.count(), 4);
        assert_eq!(c.chunk_len(3), 1_000_000 - 3 * 257_985);
        assert_eq!(Chunking::new(10, 44_100, 0.25).stride, 33_075);
        // Weight ramps 1/T2 .. 1 .. 1/T2 with T2 = T - T/2.
        let t = Chunking::new(10, 5, 0.25);
        let w: Vec<f32> = (0..5).map(|i| t.weight(i)).collect();
        assert_eq!(w, [1.0 / 3.0, 2.0 / 3.0, 1.0, 2.0 / 3.0, 1.0 / 3.0]);
    }

    /// Takes one block, then fails as a full disk would.
    struct FailingSink {
        pushed: usize,
    }

    impl StemSink for FailingSink {
        fn push(&mut self, _: &[Vec<Vec<f32>>]) -> Result<(), EngineError> {
            self.pushed += 1;
            match self.pushed {
                1 => Ok(()),
                _ => Err(AudioError::Encode("disk full".into()).into()),
            }
        }
    }

    #[test]
    fn a_failing_sink_stops_the_song_with_its_own_error() {
        let tiny =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model/tiny/tiny.onnx");
        let bag = Bag::load(&tiny, 1).unwrap();
        let info = bag.info().clone();
        let stft = Stft::new(info.n_fft, info.hop_length, info.segment_samples).unwrap();
        // Seven segments: the sink fails while most are still to come.
        let n = 5 * info.segment_samples;
        let tone: Vec<f32> = (0..n).map(|i| (i as f32 * 0.01).sin() * 0.3).collect();
        let mut sink = FailingSink { pushed: 0 };
        let mix = [tone.clone(), tone];
        let input = Input {
            mix: &mix,
            lead: 0,
            norm: normalisation(&mix),
            overlap: info.overlap,
        };
        let err = separate(&bag, &stft, input, 2, &mut sink, &|_| {})
            .expect_err("the sink's failure ends the song");
        assert!(
            matches!(&err, EngineError::Audio(AudioError::Encode(m)) if m == "disk full"),
            "the sink's own error comes back, got: {err}"
        );
        assert_eq!(sink.pushed, 2, "nothing is pushed after the failure");
    }

    #[test]
    fn normalisation_is_unbiased() {
        let (m, s) = normalisation(&[vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0]]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-6);
    }
}
