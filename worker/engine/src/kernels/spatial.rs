//! The sizes of a convolution or transposed convolution, and the index arithmetic that
//! [`super::conv`] and [`super::deconv`] share.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::PoolSpec;

/// The sizes of one (transposed) convolution, spatial rank 1 seen as height 1. `input` and
/// `output` are the data's spatial sizes; a tap `(i, j)` links input `(y, x)` and output
/// `(y·stride + i·dilation − pad_before, …)` for a transposed convolution, and the other way
/// round for a convolution.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub input: [usize; 2],
    pub output: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad_before: [usize; 2],
}

impl Geometry {
    /// The geometry of `spec` on data of shape `x`, given each spatial axis' output size and
    /// padding before.
    pub fn new(
        spec: &PoolSpec,
        x: &[usize],
        out_and_pad: impl Fn(usize) -> (usize, usize),
    ) -> TractResult<Geometry> {
        let shape = spec.data_format.shape(x)?;
        let rank = spec.rank();
        ensure!(rank == 1 || rank == 2, "1 or 2 spatial axes only");
        // Rank 1 is height 1: one row, one tap along it, stride and dilation 1, no padding.
        let two = |f: &dyn Fn(usize) -> usize, height: usize| {
            if rank == 1 {
                [height, f(0)]
            } else {
                [f(0), f(1)]
            }
        };
        let hw = shape.hw_dims();
        let g = Geometry {
            batch: shape.n().copied().unwrap_or(1),
            c_in: *shape.c(),
            c_out: spec.output_channels,
            input: two(&|a| hw[a], 1),
            output: two(&|a| out_and_pad(a).0, 1),
            kernel: two(&|a| spec.kernel_shape[a], 1),
            stride: two(&|a| spec.stride(a), 1),
            dilation: two(&|a| spec.dilation(a), 1),
            pad_before: two(&|a| out_and_pad(a).1, 0),
        };
        ensure!(g.c_in == spec.input_channels);
        Ok(g)
    }

    /// Kernel taps per channel pair.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Multiply-adds of the whole operation.
    pub fn macs(&self) -> usize {
        let positions = self.output[0] * self.output[1];
        self.batch * self.c_out * self.c_in * self.taps() * positions
    }
}

/// A convolution's bias as one value per output channel (ONNX allows a scalar).
pub fn per_channel(bias: &Tensor, c_out: usize) -> TractResult<Vec<f32>> {
    Ok(match bias.len() {
        1 => vec![bias.cast_to_scalar::<f32>()?; c_out],
        _ => bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
    })
}

/// Of `run` indices `first + t·step` (t = 0, 1, …), the range of t that falls in `0..len`.
pub fn in_range(first: isize, step: usize, run: usize, len: usize) -> (usize, usize) {
    let steps = |d: isize| (d.max(0) as usize).div_ceil(step);
    let lo = steps(-first).min(run);
    let hi = steps(len as isize - first).min(run).max(lo);
    (lo, hi)
}

/// The output tensor's data, written from several threads at once.
pub struct SharedOut(pub *mut f32);

// Safety: the callers write disjoint parts of the output from each thread.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` is within the output.
    pub unsafe fn at(&self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_range_clips_both_ends() {
        // Indices -3, -1, 1, 3, 5 of a length-4 axis: t = 2 and 3 are inside.
        assert_eq!(in_range(-3, 2, 5, 4), (2, 4));
        assert_eq!(in_range(0, 1, 3, 10), (0, 3));
        assert_eq!(in_range(12, 1, 3, 10), (0, 0));
        assert_eq!(in_range(-9, 4, 2, 10), (2, 2));
    }
}
