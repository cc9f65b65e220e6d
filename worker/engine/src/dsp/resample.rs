//! Sample-rate conversion of whole planar signals (rubato's FFT resampler).

use rubato::{FftFixedIn, Resampler};

use crate::EngineError;

/// Input block size per resampler call, in samples per channel.
const CHUNK: usize = 1024;

/// Resamples planar `channels` from `from` Hz to `to` Hz, compensating the resampler's delay so
/// output sample `i` is at time `i / to`; the result has `round(len * to / from)` samples per
/// channel. Returns the input unchanged when the rates match.
pub fn resample(channels: Vec<Vec<f32>>, from: u32, to: u32) -> Result<Vec<Vec<f32>>, EngineError> {
    if from == to || channels.is_empty() {
        return Ok(channels);
    }
    let n_in = channels[0].len();
    let want = ((n_in as u128 * to as u128 + from as u128 / 2) / from as u128) as usize;
    let mut resampler =
        FftFixedIn::<f32>::new(from as usize, to as usize, CHUNK, 2, channels.len())
            .map_err(|e| EngineError::Input(format!("cannot resample from {from} Hz: {e}")))?;
    let delay = resampler.output_delay();
    let mut out: Vec<Vec<f32>> = channels
        .iter()
        .map(|_| Vec::with_capacity(delay + want + resampler.output_frames_max()))
        .collect();
    let mut block = resampler.output_buffer_allocate(true);
    let mut pos = 0;
    while out[0].len() < delay + want {
        let need = resampler.input_frames_next();
        let (_, written) = if pos + need <= n_in {
            let input: Vec<&[f32]> = channels.iter().map(|c| &c[pos..pos + need]).collect();
            resampler.process_into_buffer(&input, &mut block, None)
        } else {
            // Past the end: zero-padded partial blocks flush the resampler's delay line.
            let rest = pos.min(n_in);
            let input: Vec<&[f32]> = channels.iter().map(|c| &c[rest..]).collect();
            let input = (rest < n_in).then_some(input.as_slice());
            resampler.process_partial_into_buffer(input, &mut block, None)
        }
        .map_err(|e| EngineError::Inference(format!("resampling failed: {e}")))?;
        pos += need;
        for (o, b) in out.iter_mut().zip(&block) {
            o.extend_from_slice(&b[..written]);
        }
    }
    drop(channels);
    for o in &mut out {
        o.drain(..delay);
        o.truncate(want);
        o.shrink_to_fit();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sine_survives_48k_to_44k1_in_phase() {
        let f = 1000.0;
        let n = 48_000;
        let x: Vec<f32> = (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / 48_000.0).sin() as f32)
            .collect();
        let y = resample(vec![x.clone(), x], 48_000, 44_100).unwrap();
        assert_eq!(y[0].len(), 44_100);
        // Away from the ends the output is the same sine sampled at 44.1 kHz, not delayed.
        let err = (2_000..42_000)
            .map(|i| {
                let ideal = (2.0 * std::f64::consts::PI * f * i as f64 / 44_100.0).sin() as f32;
                (y[1][i] - ideal).abs()
            })
            .fold(0.0f32, f32::max);
        assert!(err < 1e-3, "max error {err}");
    }
}
