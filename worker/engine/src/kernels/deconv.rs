//! The core's transposed convolutions as `gemm` products scattered straight into the output.
//!
//! tract lowers a transposed convolution to one product holding every tap's contribution
//! (`[C_out·taps, positions]`: 88 MB for the last frequency decoder) and a `DeconvSum` that adds
//! them into place: two passes over memory. Here each thread owns a share of the
//! output channels: it multiplies a cache-sized block of input positions at a time and adds the
//! block's taps into its own channels right away, so nothing large is materialised and no two
//! threads write the same output.

use gemm::Parallelism;
use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{deconv, Deconv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::matmul::on_plan_pool;
use super::spatial::{in_range, per_channel, Geometry, SharedOut};

/// Transposed convolutions with fewer multiply-adds than this stay with tract.
const MIN_MACS: usize = 1 << 22;

/// Floats of one block's product (rows × positions): small enough to stay in L2.
const BLOCK_FLOATS: usize = 1 << 16;

/// Replaces the large f32 transposed convolutions of a decluttered `model` (group 1, channels
/// first, OIHW constant weights, one or two spatial axes) by [`DeconvGemm`] nodes. Returns how
/// many.
pub fn use_deconv_gemm(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        if let Some(op) = deconv_gemm_for(model, id)? {
            model.nodes[id].op = Box::new(op);
            replaced += 1;
        }
    }
    Ok(replaced)
}

fn deconv_gemm_for(model: &TypedModel, id: usize) -> TractResult<Option<DeconvGemm>> {
    let Some(deconv) = model.nodes[id].op_as::<Deconv>() else {
        return Ok(None);
    };
    let inputs = model.node_input_facts(id)?;
    if deconv.group != 1
        || deconv.kernel_format != KernelFormat::OIHW
        || !matches!(
            deconv.pool_spec.data_format,
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
    let op = DeconvGemm {
        deconv: deconv.clone(),
    };
    Ok(match op.geometry(x) {
        Ok(g) if g.macs() >= MIN_MACS => Some(op),
        _ => None,
    })
}

/// A tract [`Deconv`] computed as blocked `gemm` products added into the output. Inputs: data,
/// OIHW weights (`[C_out, C_in, kh, kw]`), bias (scalar or one per output channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeconvGemm {
    /// The transposed convolution it replaces: its geometry and output facts.
    deconv: Deconv,
}

impl DeconvGemm {
    /// The geometry, `input` and `output` being the data's sizes (the transposed convolution's).
    fn geometry(&self, x: &[usize]) -> TractResult<Geometry> {
        let spec = &self.deconv.pool_spec;
        let padding = spec.padding.compute_for_deconv(
            spec.data_format.shape(x)?.hw_dims(),
            &spec.kernel_shape,
            &spec.dilations(),
            &spec.strides(),
            &self.deconv.adjustments,
        )?;
        Geometry::new(spec, x, |a| {
            (padding[a].deconvoluted, padding[a].pad_before)
        })
    }
}

/// Adds a block's product into output channels `o0..`: `product` row `(o, i, j)` holds tap
/// `(i, j)` of channel `o0 + o` for input positions `q0..q0 + cols` of batch entry `b`.
fn scatter(
    g: &Geometry,
    product: &[f32],
    b: usize,
    o0: usize,
    q0: usize,
    cols: usize,
    y: &SharedOut,
) {
    let [oh, ow] = g.output;
    let iw = g.input[1];
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [ph, pw] = g.pad_before;
    for (r, row) in product.chunks_exact(cols).enumerate() {
        let (o, i, j) = (o0 + r / (kh * kw), (r / kw) % kh, r % kw);
        // Safety: channel o of entry b belongs to this caller alone.
        let plane =
            unsafe { std::slice::from_raw_parts_mut(y.at((b * g.c_out + o) * oh * ow), oh * ow) };
        let (mut q, mut t) = (q0, 0);
        while t < cols {
            let (iy, ix) = (q / iw, q % iw);
            let run = (iw - ix).min(cols - t);
            let oy = (iy * sh + i * dh) as isize - ph as isize;
            if oy >= 0 && oy < oh as isize {
                let dst = &mut plane[oy as usize * ow..][..ow];
                // Output column of input column ix + u is first + u·sw.
                let first = (ix * sw + j * dw) as isize - pw as isize;
                let (lo, hi) = in_range(first, sw, run, ow);
                let start = (first + (lo * sw) as isize) as usize;
                let src = &row[t + lo..t + hi];
                if sw == 1 {
                    for (d, s) in dst[start..start + src.len()].iter_mut().zip(src) {
                        *d += s;
                    }
                } else {
                    for (d, s) in dst[start..].iter_mut().step_by(sw).zip(src) {
                        *d += s;
                    }
                }
            }
            q += run;
            t += run;
        }
    }
}

impl Op for DeconvGemm {
    fn name(&self) -> StaticName {
        "DeconvGemm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.deconv.info()
    }

    op_as_typed_op!();
}

impl EvalOp for DeconvGemm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, weights, bias) = (&inputs[0], &inputs[1], &inputs[2]);
        let g = self.geometry(x.shape())?;
        let out_shape =
            deconv::output_shape(&self.deconv.pool_spec, x.shape(), &self.deconv.adjustments)?;
        let (taps, c_in, c_out) = (g.taps(), g.c_in, g.c_out);
        let positions = g.input[0] * g.input[1];
        ensure!(
            weights.len() == c_out * c_in * taps,
            "DeconvGemm: weights are not OIHW"
        );
        let bias = per_channel(bias, c_out)?;
        let (x_view, w_view) = (x.try_as_plain_ram()?, weights.try_as_plain_ram()?);
        let (x, w) = (x_view.as_slice::<f32>()?, w_view.as_slice::<f32>()?);
        // Rows (o, tap), columns c: one product yields every tap of a block of channels.
        let mut w_rows = vec![0.0f32; c_out * taps * c_in];
        for o in 0..c_out {
            for c in 0..c_in {
                for t in 0..taps {
                    w_rows[(o * taps + t) * c_in + c] = w[(o * c_in + c) * taps + t];
                }
            }
        }
        // Safety: every element is written: bias first, then the taps added.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let out_plane = g.output[0] * g.output[1];
        let out = SharedOut(
            y.try_as_plain_ram_mut()?
                .as_slice_mut::<f32>()?
                .as_mut_ptr(),
        );

        on_plan_pool(|threads| {
            // Each task owns a run of output channels of one batch entry.
            let per_task = c_out.div_ceil(threads);
            let shares = c_out.div_ceil(per_task);
            let task = |index: usize| {
                let (b, o0) = (index / shares, (index % shares) * per_task);
                let channels = per_task.min(c_out - o0);
                let rows = channels * taps;
                for (o, &value) in bias.iter().enumerate().skip(o0).take(channels) {
                    // Safety: channel o of entry b belongs to this task.
                    unsafe {
                        std::slice::from_raw_parts_mut(
                            out.at((b * c_out + o) * out_plane),
                            out_plane,
                        )
                        .fill(value);
                    }
                }
                let cols = (BLOCK_FLOATS / rows).clamp(16, positions);
                let mut product = vec![0.0f32; rows * cols];
                for q0 in (0..positions).step_by(cols) {
                    let n = cols.min(positions - q0);
                    // Safety: `product` holds rows × n floats; the operands are read only.
                    unsafe {
                        gemm::gemm(
                            rows,
                            n,
                            c_in,
                            product.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            w_rows[o0 * taps * c_in..].as_ptr(),
                            1,
                            c_in as isize,
                            x[b * c_in * positions + q0..].as_ptr(),
                            1,
                            positions as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                    scatter(&g, &product[..rows * n], b, o0, q0, n, &out);
                }
            };
            let tasks = g.batch * shares;
            if threads > 1 {
                (0..tasks).into_par_iter().for_each(task);
            } else {
                (0..tasks).for_each(task);
            }
        });
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for DeconvGemm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.deconv.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_tensors::{filled, worst_difference};
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    /// DeconvGemm against tract's own Deconv on NCHW (or NCW) input of `x` shape, 1 and 2 threads.
    fn agrees(x: &[usize], c_out: usize, kernel: &[usize], stride: &[usize], pad: &[usize]) {
        let c_in = x[1];
        let deconv = Deconv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: kernel.into(),
                padding: PaddingSpec::Explicit(pad.into(), pad.into()),
                dilations: None,
                strides: Some(stride.into()),
                input_channels: c_in,
                output_channels: c_out,
            },
            kernel_format: KernelFormat::OIHW,
            adjustments: tvec![0; kernel.len()],
            group: 1,
        };
        let mut w_shape = vec![c_out, c_in];
        w_shape.extend_from_slice(kernel);
        for bias in [filled(&[c_out], 3), tensor0(0.5f32)] {
            let inputs = tvec!(
                filled(x, 1).into_tvalue(),
                filled(&w_shape, 2).into_tvalue(),
                bias.into_tvalue(),
            );
            let want = deconv
                .eval(&EvalContext::out_of_plan(), inputs.clone())
                .unwrap();
            let op = DeconvGemm {
                deconv: deconv.clone(),
            };
            for threads in [1, 2] {
                let got = multithread_tract_scope(Executor::multithread(threads), || {
                    op.eval(&EvalContext::out_of_plan(), inputs.clone())
                })
                .unwrap();
                let worst = worst_difference(&got[0], &want[0]);
                assert!(
                    worst < 1e-3,
                    "{x:?} {kernel:?} on {threads} threads: off by {worst}"
                );
            }
        }
    }

    #[test]
    fn transposed_convolutions_match_tract() {
        // The frequency decoders: 8 taps at stride 4 along the rows.
        agrees(&[1, 5, 16, 9], 7, &[8, 1], &[4, 1], &[0, 0]);
        // Two batch entries, taps along both axes, padding.
        agrees(&[2, 3, 6, 5], 4, &[3, 2], &[2, 3], &[1, 1]);
        // The time decoders: one spatial axis.
        agrees(&[1, 4, 37], 3, &[8], &[4], &[0]);
        agrees(&[1, 4, 37], 6, &[5], &[2], &[2]);
    }
}
