//! The sizes of a convolution or transposed convolution, and the index arithmetic that
//! [`super::conv`] and [`super::deconv`] share.
//!
//! Every size a kernel indexes with comes from [`Geometry::new`], which checks the data's rank,
//! the operator's parameters and every operand's length before any raw write, so that a model
//! that does not fit is an error, never a write out of bounds.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

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
    /// The geometry of `spec` on channels-first data of shape `x`, given `padding`, which
    /// computes each spatial axis' output size and padding before (tract's own computation,
    /// called only once the sizes are known not to make it underflow). `deconv_adjustments` are the transposed
    /// convolution's output adjustments (`None` for a convolution).
    pub fn new(
        spec: &PoolSpec,
        x: &[usize],
        deconv_adjustments: Option<&[usize]>,
        padding: impl FnOnce(&[usize]) -> TractResult<TVec<(usize, usize)>>,
    ) -> TractResult<Geometry> {
        let rank = spec.rank();
        ensure!(
            rank == 1 || rank == 2,
            "1 or 2 spatial axes only, not {rank}"
        );
        ensure!(
            matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW),
            "channels-first data only, not {:?}",
            spec.data_format
        );
        let has_n = spec.data_format.has_n();
        // tract's data shape reads its axes unchecked: the rank must be right first.
        ensure!(
            x.len() == rank + 1 + has_n as usize,
            "data of shape {x:?} for {rank} spatial axes"
        );
        let (strides, dilations) = (spec.strides(), spec.dilations());
        ensure!(
            strides.len() == rank && dilations.len() == rank,
            "strides {strides:?} and dilations {dilations:?} for {rank} spatial axes"
        );
        let shape = spec.data_format.shape(x)?;
        let hw = shape.hw_dims();
        for a in 0..rank {
            let (k, s, d) = (spec.kernel_shape[a], strides[a], dilations[a]);
            ensure!(
                k >= 1 && s >= 1 && d >= 1 && hw[a] >= 1,
                "axis {a}: kernel {k}, stride {s}, dilation {d} on {} positions",
                hw[a]
            );
            // Sizes this large cannot be real data; refusing them keeps every product below
            // (and tract's padding arithmetic) from overflowing.
            let field = (k - 1).checked_mul(d).and_then(|f| f.checked_add(1));
            let span = (hw[a] - 1).checked_mul(s);
            ensure!(
                field.is_some_and(|f| f < 1 << 32) && span.is_some_and(|v| v < 1 << 32),
                "axis {a}: sizes overflow"
            );
            if let Some(adjustments) = deconv_adjustments {
                ensure!(adjustments.len() == rank, "adjustments {adjustments:?}");
                // tract computes (input − 1)·stride + field − before − after + adjustment
                // left to right in usize.
                let room = span.unwrap() + field.unwrap();
                let crop = match &spec.padding {
                    PaddingSpec::Explicit(b, e) | PaddingSpec::ExplicitOnnxPool(b, e, _) => {
                        ensure!(b.len() == rank && e.len() == rank, "paddings {b:?} {e:?}");
                        b[a].saturating_add(e[a])
                    }
                    PaddingSpec::SameUpper | PaddingSpec::SameLower => {
                        (field.unwrap() + adjustments[a]).saturating_sub(s)
                    }
                    PaddingSpec::Valid => 0,
                };
                ensure!(crop <= room, "axis {a}: padding crops more than the output");
            } else if let PaddingSpec::Explicit(b, e) | PaddingSpec::ExplicitOnnxPool(b, e, _) =
                &spec.padding
            {
                ensure!(b.len() == rank && e.len() == rank, "paddings {b:?} {e:?}");
                ensure!(
                    b[a].max(e[a]) < 1 << 32,
                    "axis {a}: padding {} {}",
                    b[a],
                    e[a]
                );
            }
        }
        let padded = padding(hw)?;
        ensure!(padded.len() == rank);
        // Rank 1 is height 1: one row, one tap along it, stride and dilation 1, no padding.
        let two = |f: &dyn Fn(usize) -> usize, height: usize| {
            if rank == 1 {
                [height, f(0)]
            } else {
                [f(0), f(1)]
            }
        };
        let g = Geometry {
            batch: shape.n().copied().unwrap_or(1),
            c_in: *shape.c(),
            c_out: spec.output_channels,
            input: two(&|a| hw[a], 1),
            output: two(&|a| padded[a].0, 1),
            kernel: two(&|a| spec.kernel_shape[a], 1),
            stride: two(&|a| strides[a], 1),
            dilation: two(&|a| dilations[a], 1),
            pad_before: two(&|a| padded[a].1, 0),
        };
        ensure!(
            g.c_in == spec.input_channels,
            "{} input channels, the operator takes {}",
            g.c_in,
            spec.input_channels
        );
        ensure!(
            g.batch >= 1 && g.c_in >= 1 && g.c_out >= 1,
            "empty batch or channels: {g:?}"
        );
        Ok(g)
    }

    /// Kernel taps per channel pair.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Multiply-adds of the whole operation (saturating: only compared with thresholds).
    pub fn macs(&self) -> usize {
        let positions = self.output[0].saturating_mul(self.output[1]);
        [self.c_out, self.c_in, self.taps(), positions]
            .iter()
            .fold(self.batch, |acc, &f| acc.saturating_mul(f))
    }

    /// Checks that the operands hold what this geometry indexes: data `x` of
    /// `batch × c_in × input` elements, OIHW weights `[c_out, c_in, kh(, kw)]`, and an output
    /// of shape `y` that is `[batch,] c_out, output` channels-first. A kernel calls this before
    /// any raw write; its index arithmetic then stays within these lengths.
    pub fn check_operands(
        &self,
        spec: &PoolSpec,
        x: &[usize],
        weights: &[usize],
        y: &[usize],
    ) -> TractResult<()> {
        let elements = |dims: &[usize]| dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let input = [self.batch, self.c_in, self.input[0], self.input[1]];
        ensure!(
            elements(x) == elements(&input),
            "data {x:?} does not hold {input:?}"
        );
        let mut want_w: TVec<usize> = tvec![self.c_out, self.c_in];
        want_w.extend(spec.kernel_shape.iter().copied());
        ensure!(
            weights == &*want_w,
            "weights of shape {weights:?}, the operator takes OIHW {want_w:?}"
        );
        let out_hw: TVec<usize> = if spec.rank() == 1 {
            tvec![self.output[1]]
        } else {
            self.output[..].into()
        };
        let want_y = spec
            .data_format
            .from_n_c_hw(self.batch, self.c_out, out_hw)?
            .shape;
        ensure!(
            y == &*want_y,
            "output of shape {y:?}, the geometry gives {want_y:?}"
        );
        ensure!(elements(y).is_some(), "output of shape {y:?} is too large");
        Ok(())
    }
}

/// Swaps the kernel `swap` makes for a node in its place, over every node of a decluttered
/// `model` in evaluation order. Returns how many it swapped.
pub fn replace_nodes<O: TypedOp>(
    model: &mut TypedModel,
    swap: impl Fn(&TypedModel, usize) -> TractResult<Option<O>>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        if let Some(op) = swap(model, id)? {
            model.nodes[id].op = Box::new(op);
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// The data's shape when node `id`'s inputs are what the spatial kernels take: data, constant
/// weights and a bias of rank 0 or 1, all f32, the data's shape known. `None` otherwise.
pub fn kernel_input_shape(model: &TypedModel, id: usize) -> TractResult<Option<Vec<usize>>> {
    let inputs = model.node_input_facts(id)?;
    let suits = inputs.len() == 3
        && inputs.iter().all(|f| f.datum_type == f32::datum_type())
        && inputs[1].konst.is_some()
        && inputs[2].rank() <= 1;
    Ok(suits
        .then(|| inputs[0].shape.as_concrete().map(<[usize]>::to_vec))
        .flatten())
}

/// A convolution's bias as one value per output channel: ONNX allows a scalar (also what tract
/// gives a convolution without bias), or exactly one value per channel.
pub fn per_channel(bias: &Tensor, c_out: usize) -> TractResult<Vec<f32>> {
    ensure!(bias.rank() <= 1, "bias of shape {:?}", bias.shape());
    Ok(match bias.len() {
        1 => vec![bias.cast_to_scalar::<f32>()?; c_out],
        n if n == c_out => bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        n => bail!("bias of {n} values for {c_out} output channels"),
    })
}

/// Of `run` indices `first + t·step` (t = 0, 1, …), the range of t that falls in `0..len`.
pub fn in_range(first: isize, step: usize, run: usize, len: usize) -> (usize, usize) {
    let steps = |d: isize| (d.max(0) as usize).div_ceil(step);
    let lo = steps(-first).min(run);
    let hi = steps(len as isize - first).min(run).max(lo);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The clipped range is exactly the run's indices that fall inside the axis: the bound
        /// every raw index of the kernels rests on.
        #[test]
        fn in_range_is_the_indices_inside(
            first in -40isize..40,
            step in 1usize..5,
            run in 0usize..20,
            len in 0usize..30,
        ) {
            let inside: Vec<usize> = (0..run)
                .filter(|&t| (0..len as isize).contains(&(first + (t * step) as isize)))
                .collect();
            let (lo, hi) = in_range(first, step, run, len);
            prop_assert!(lo <= hi && hi <= run);
            if let (Some(&a), Some(&b)) = (inside.first(), inside.last()) {
                prop_assert_eq!((lo, hi), (a, b + 1));
            } else {
                prop_assert_eq!(lo, hi);
            }
        }
    }

    #[test]
    fn in_range_clips_both_ends() {
        // Indices -3, -1, 1, 3, 5 of a length-4 axis: t = 2 and 3 are inside.
        assert_eq!(in_range(-3, 2, 5, 4), (2, 4));
        assert_eq!(in_range(0, 1, 3, 10), (0, 3));
        assert_eq!(in_range(12, 1, 3, 10), (0, 0));
        assert_eq!(in_range(-9, 4, 2, 10), (2, 2));
    }

    #[test]
    fn a_bias_must_have_one_value_or_one_per_channel() {
        let three = tensor1(&[1f32, 2., 3.]);
        assert_eq!(per_channel(&three, 3).unwrap(), vec![1., 2., 3.]);
        assert_eq!(per_channel(&tensor0(0.5f32), 2).unwrap(), vec![0.5, 0.5]);
        for c_out in [2, 4] {
            let e = per_channel(&three, c_out).unwrap_err().to_string();
            assert!(e.contains("3 values"), "{e}");
        }
    }
}
