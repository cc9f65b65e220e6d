//! Mixes of stems: a `no_<stem>` track, demucs' `minus_<stem>`, any signed sum of signals.

/// `Σ sign × signal` over `terms`, channel by channel, as long as the shortest signal; an empty
/// list gives no channels.
pub fn mix(terms: &[(&[Vec<f32>], f32)]) -> Vec<Vec<f32>> {
    let Some(len) = terms
        .iter()
        .flat_map(|(signal, _)| signal.iter().map(Vec::len))
        .min()
    else {
        return Vec::new();
    };
    let channels = terms.iter().map(|(s, _)| s.len()).min().unwrap_or(0);
    let mut out = vec![vec![0.0f32; len]; channels];
    for &(signal, sign) in terms {
        for (o, c) in out.iter_mut().zip(signal) {
            o.iter_mut().zip(c).for_each(|(a, &b)| *a += sign * b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_sums_cut_to_the_shortest() {
        let a = vec![vec![1.0, 2.0, 3.0], vec![0.0, 0.0, 0.0]];
        let b = vec![vec![10.0, 20.0], vec![1.0, 1.0]];
        assert_eq!(
            mix(&[(&a, 1.0), (&b, -1.0)]),
            [vec![-9.0, -18.0], vec![-1.0, -1.0]]
        );
        assert!(mix(&[]).is_empty());
    }
}
