//! The core's convolutions as blocked im2col + `gemm`, instead of tract's convolution kernels.
//!
//! After the products moved to `gemm` (see [`super::matmul`]), the convolutions were the next
//! largest cost of a segment: tract's DirectSpatialConv ran the decoder's 3x3 "rewrite"
//! convolutions at well under half the rate `gemm` reaches on the transformer's products
//! (`make bench-profile`). Here a block of output positions at a time is unfolded (im2col)
//! into a buffer small enough to stay in cache and multiplied by the weights with `gemm`; the
//! blocks are shared out over the thread pool tract runs the plan on. A whole-tensor im2col of
//! the widest convolution would be ~300 MB; a block is at most a few MB per thread.

use gemm::Parallelism;
use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::matmul::on_plan_pool;
use super::spatial::{in_range, per_channel, Geometry, SharedOut};

/// Convolutions with fewer multiply-adds than this stay with tract.
const MIN_MACS: usize = 1 << 22;

/// The most output positions one block unfolds. Wider blocks repack the weights less often;
/// narrower ones keep the unfolded block in cache and share out evenly.
const MAX_BLOCK: usize = 1024;

/// Replaces the large f32 convolutions of a decluttered `model` (group 1, channels first, OIHW
/// constant weights, one or two spatial axes) by [`ConvGemm`] nodes. Returns how many.
pub fn use_conv_gemm(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        if let Some(op) = conv_gemm_for(model, id)? {
            model.nodes[id].op = Box::new(op);
            replaced += 1;
        }
    }
    Ok(replaced)
}

fn conv_gemm_for(model: &TypedModel, id: usize) -> TractResult<Option<ConvGemm>> {
    let Some(conv) = model.nodes[id].op_as::<Conv>() else {
        return Ok(None);
    };
    let inputs = model.node_input_facts(id)?;
    if conv.q_params.is_some()
        || conv.group != 1
        || conv.kernel_fmt != KernelFormat::OIHW
        || !matches!(
            conv.pool_spec.data_format,
            DataFormat::NCHW | DataFormat::CHW
        )
        || inputs.len() != 3
        || inputs.iter().any(|f| f.datum_type != f32::datum_type())
        || inputs[1].konst.is_none()
        || inputs[2].rank() > 1
    {
        return Ok(None);
    }
    let Some(x) = inputs[0].shape.as_concrete() else {
        return Ok(None);
    };
    let op = ConvGemm { conv: conv.clone() };
    Ok(match op.geometry(x) {
        Ok(g) if g.macs() >= MIN_MACS => Some(op),
        _ => None,
    })
}

/// A tract [`Conv`] computed as blocked im2col + `gemm`. Inputs: data, OIHW weights, bias
/// (scalar or one per output channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvGemm {
    /// The convolution it replaces: its geometry and output facts.
    conv: Conv,
}

impl ConvGemm {
    fn geometry(&self, x: &[usize]) -> TractResult<Geometry> {
        let spec = &self.conv.pool_spec;
        let padding = spec.computed_padding(spec.data_format.shape(x)?.hw_dims());
        Geometry::new(spec, x, |a| (padding[a].convoluted, padding[a].pad_before))
    }
}

/// Unfolds output positions `p0..p0 + cols` of batch entry `b` of `x` into `col`, row
/// `(c, i, j)` holding the input under kernel tap `(i, j)` of channel `c` (zero in the padding).
fn unfold(g: &Geometry, x: &[f32], b: usize, p0: usize, cols: usize, col: &mut [f32]) {
    let [ih, iw] = g.input;
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [ph, pw] = g.pad_before;
    let ow = g.output[1];
    for c in 0..g.c_in {
        let plane = &x[(b * g.c_in + c) * ih * iw..][..ih * iw];
        for i in 0..kh {
            for j in 0..kw {
                let row = &mut col[((c * kh + i) * kw + j) * cols..][..cols];
                let (mut p, mut q) = (p0, 0);
                while q < cols {
                    let (oy, ox) = (p / ow, p % ow);
                    let run = (ow - ox).min(cols - q);
                    let dst = &mut row[q..q + run];
                    let y = (oy * sh + i * dh) as isize - ph as isize;
                    if y < 0 || y >= ih as isize {
                        dst.fill(0.0);
                    } else {
                        let src = &plane[y as usize * iw..][..iw];
                        // Input column of output column ox + t is first + t·sw.
                        let first = (ox * sw + j * dw) as isize - pw as isize;
                        let (lo, hi) = in_range(first, sw, run, iw);
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let start = (first + (lo * sw) as isize) as usize;
                        if sw == 1 {
                            dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                        } else {
                            for (d, s) in
                                dst[lo..hi].iter_mut().zip(src[start..].iter().step_by(sw))
                            {
                                *d = *s;
                            }
                        }
                    }
                    p += run;
                    q += run;
                }
            }
        }
    }
}

impl Op for ConvGemm {
    fn name(&self) -> StaticName {
        "ConvGemm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.conv.info()
    }

    op_as_typed_op!();
}

impl EvalOp for ConvGemm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, weights, bias) = (&inputs[0], &inputs[1], &inputs[2]);
        let g = self.geometry(x.shape())?;
        let (k, positions) = (g.c_in * g.taps(), g.output[0] * g.output[1]);
        ensure!(
            weights.len() == g.c_out * k,
            "ConvGemm: weights are not OIHW"
        );
        let bias = per_channel(bias, g.c_out)?;
        let out_shape = self.conv.pool_spec.output_shape(x.shape())?.shape;
        // Safety: every element is written: bias first, then the product added.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let (x_view, w_view) = (x.try_as_plain_ram()?, weights.try_as_plain_ram()?);
        let (x, w) = (x_view.as_slice::<f32>()?, w_view.as_slice::<f32>()?);
        let out = SharedOut(
            y.try_as_plain_ram_mut()?
                .as_slice_mut::<f32>()?
                .as_mut_ptr(),
        );

        on_plan_pool(|threads| {
            // About four blocks per thread, so the last ones even out.
            let cols = positions
                .div_ceil(4 * threads)
                .next_multiple_of(16)
                .clamp(16, MAX_BLOCK)
                .min(positions);
            let per_entry = positions.div_ceil(cols);
            let block = |col: &mut Vec<f32>, index: usize| {
                let (b, p0) = (index / per_entry, (index % per_entry) * cols);
                let n = cols.min(positions - p0);
                col.resize(k * n, 0.0);
                unfold(&g, x, b, p0, n, col);
                // Safety: block (b, p0..p0+n) of C is written by this call only; C holds
                // batch × c_out × positions elements.
                unsafe {
                    let dst = out.at(b * g.c_out * positions + p0);
                    for (o, &v) in bias.iter().enumerate() {
                        std::slice::from_raw_parts_mut(dst.add(o * positions), n).fill(v);
                    }
                    gemm::gemm(
                        g.c_out,
                        n,
                        k,
                        dst,
                        1,
                        positions as isize,
                        true,
                        w.as_ptr(),
                        1,
                        k as isize,
                        col.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            };
            let blocks = g.batch * per_entry;
            if threads > 1 {
                (0..blocks)
                    .into_par_iter()
                    .for_each_init(Vec::new, |col, index| block(col, index));
            } else {
                let mut col = Vec::new();
                (0..blocks).for_each(|index| block(&mut col, index));
            }
        });
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for ConvGemm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.conv.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_tensors::{filled, worst_difference};
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    /// ConvGemm against tract's own Conv, NCHW (or NCW) input of `x` shape, on 1 and 2 threads.
    fn agrees(
        x: &[usize],
        c_out: usize,
        kernel: &[usize],
        stride: &[usize],
        dil: &[usize],
        pad: &[usize],
    ) {
        let c_in = x[1];
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: kernel.into(),
                padding: PaddingSpec::Explicit(pad.into(), pad.into()),
                dilations: Some(dil.into()),
                strides: Some(stride.into()),
                input_channels: c_in,
                output_channels: c_out,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let mut w_shape = vec![c_out, c_in];
        w_shape.extend_from_slice(kernel);
        // A bias per output channel, and the scalar one a convolution without bias gets.
        for bias in [filled(&[c_out], 3), tensor0(0.5f32)] {
            let inputs = tvec!(
                filled(x, 1).into_tvalue(),
                filled(&w_shape, 2).into_tvalue(),
                bias.into_tvalue(),
            );
            let want = conv
                .eval(&EvalContext::out_of_plan(), inputs.clone())
                .unwrap();
            let op = ConvGemm { conv: conv.clone() };
            for threads in [1, 2] {
                let got = multithread_tract_scope(Executor::multithread(threads), || {
                    op.eval(&EvalContext::out_of_plan(), inputs.clone())
                })
                .unwrap();
                assert_eq!(got[0].shape(), want[0].shape(), "{x:?} {kernel:?}");
                let worst = worst_difference(&got[0], &want[0]);
                assert!(
                    worst < 1e-3,
                    "{x:?} {kernel:?} on {threads} threads: off by {worst}"
                );
            }
        }
    }

    #[test]
    fn convolutions_match_tract() {
        // The encoders' frequency convolution: 8 taps at stride 4 along the rows.
        agrees(&[1, 5, 64, 9], 7, &[8, 1], &[4, 1], &[1, 1], &[2, 0]);
        // The decoders' 3x3 rewrite, two batch entries, and a dilated one.
        agrees(&[2, 6, 11, 13], 12, &[3, 3], &[1, 1], &[1, 1], &[1, 1]);
        agrees(&[1, 3, 10, 12], 4, &[3, 2], &[2, 3], &[2, 1], &[2, 1]);
        // The time branch: one spatial axis, strided, and a padded 3-tap rewrite.
        agrees(&[1, 4, 103], 6, &[8], &[4], &[1], &[2]);
        agrees(&[1, 4, 50], 8, &[3], &[1], &[1], &[1]);
    }
}
