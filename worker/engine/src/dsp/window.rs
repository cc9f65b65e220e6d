//! Analysis/synthesis windows.

/// The periodic Hann window of `len` samples, as `torch.hann_window(len)` (default
/// `periodic=True`) builds it: `w[n] = 0.5 - 0.5 cos(2πn / len)`.
pub fn hann_periodic(len: usize) -> Vec<f32> {
    (0..len)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * n as f64 / len as f64;
            (0.5 - 0.5 * phase.cos()) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_hann_sums_to_constant_at_quarter_hop() {
        let n = 4096;
        let w = hann_periodic(n);
        assert_eq!(w[0], 0.0);
        assert!((w[n / 2] - 1.0).abs() < 1e-7);
        // Σ w² over 4 frames at hop n/4 is 1.5 everywhere: the iSTFT envelope.
        for i in 0..n / 4 {
            let s: f32 = (0..4).map(|k| w[i + k * n / 4].powi(2)).sum();
            assert!((s - 1.5).abs() < 1e-5, "{i}: {s}");
        }
    }
}
