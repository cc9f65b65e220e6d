//! The core's transposed convolutions as `gemm` products scattered straight into the output.
//!
//! tract lowers a transposed convolution to one product holding every tap's contribution
//! (`[C_out·taps, positions]`: 88 MB for the last frequency decoder) and a `DeconvSum` that adds
//! them into place: two passes over memory. Here each task owns a share of the
//! output channels: it multiplies a cache-sized block of input positions at a time and adds the
//! block's taps into its own channels right away, so nothing large is materialised and no two
//! threads write the same output.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{deconv, Deconv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::matmul::on_plan_pool;
use super::output::Output;
use super::spatial::{in_range, kernel_input_shape, per_channel, replace_nodes, Geometry};

/// Transposed convolutions with fewer multiply-adds than this stay with tract.
const MIN_MACS: usize = 1 << 22;

/// How many runs of output channels a batch entry is shared out in, at most.
const SHARES: usize = 4;

/// Floats of one block's product (rows × positions): small enough to stay in L2.
const BLOCK_FLOATS: usize = 1 << 16;

/// Replaces the large f32 transposed convolutions of a decluttered `model` (group 1, channels
/// first, OIHW constant weights, one or two spatial axes) by [`DeconvGemm`] nodes. Returns how
/// many.
pub fn use_deconv_gemm(model: &mut TypedModel) -> TractResult<usize> {
    replace_nodes(model, deconv_gemm_for)
}

fn deconv_gemm_for(model: &TypedModel, id: usize) -> TractResult<Option<DeconvGemm>> {
    let Some(deconv) = model.nodes[id].op_as::<Deconv>().filter(|d| takes(d)) else {
        return Ok(None);
    };
    let Some(x) = kernel_input_shape(model, id)? else {
        return Ok(None);
    };
    let op = DeconvGemm {
        deconv: deconv.clone(),
    };
    let large = op.geometry(&x).is_ok_and(|g| g.macs() >= MIN_MACS);
    Ok(large.then_some(op))
}

/// Whether [`DeconvGemm`] computes `deconv`: one group, OIHW weights, channels first.
fn takes(deconv: &Deconv) -> bool {
    deconv.group == 1
        && deconv.kernel_format == KernelFormat::OIHW
        && matches!(
            deconv.pool_spec.data_format,
            DataFormat::NCHW | DataFormat::CHW
        )
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
        let adjustments = &self.deconv.adjustments;
        Geometry::new(spec, x, Some(adjustments), |hw| {
            let padding = spec.padding.compute_for_deconv(
                hw,
                &spec.kernel_shape,
                &spec.dilations(),
                &spec.strides(),
                adjustments,
            )?;
            Ok(padding
                .iter()
                .map(|p| (p.deconvoluted, p.pad_before))
                .collect())
        })
    }
}

/// Adds a block's product into `mine`, the output channels `o0..` of batch entry `b` that the
/// caller owns: `product` row `(o, i, j)` holds tap `(i, j)` of channel `o0 + o` for input
/// positions `q0..q0 + cols`.
fn scatter(g: &Geometry, product: &[f32], q0: usize, cols: usize, mine: &mut [f32]) {
    let [oh, ow] = g.output;
    let iw = g.input[1];
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [ph, pw] = g.pad_before;
    for (r, row) in product.chunks_exact(cols).enumerate() {
        let (o, i, j) = (r / (kh * kw), (r / kw) % kh, r % kw);
        let plane = &mut mine[o * oh * ow..][..oh * ow];
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
                if lo == hi {
                    // No tap of the run lands inside the row: `start` would lie outside it.
                    q += run;
                    t += run;
                    continue;
                }
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
        ensure!(inputs.len() == 3, "DeconvGemm takes data, weights and bias");
        ensure!(
            takes(&self.deconv),
            "DeconvGemm cannot compute {:?}",
            self.deconv
        );
        let (x, weights, bias) = (&inputs[0], &inputs[1], &inputs[2]);
        let spec = &self.deconv.pool_spec;
        let g = self.geometry(x.shape())?;
        let out_shape = deconv::output_shape(spec, x.shape(), &self.deconv.adjustments)?;
        g.check_operands(spec, x.shape(), weights.shape(), &out_shape)?;
        let bias = per_channel(bias, g.c_out)?;
        let (taps, c_in, c_out) = (g.taps(), g.c_in, g.c_out);
        let positions = g.input[0] * g.input[1];
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
        // SAFETY: the elements are written before anything reads them: the tasks below
        // partition y (batch entry × run of output channels, whole planes), and each task
        // writes its planes' bias before it adds any tap.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let out_plane = g.output[0] * g.output[1];
        if out_plane == 0 {
            return Ok(tvec!(y.into_tvalue()));
        }
        let out = Output::of(&mut y)?;

        // Each task owns a run of output channels of one batch entry. The runs (and so each
        // product's shape, which sets gemm's summation order) follow from the shape alone, so
        // the stems are the same to the last bit on any number of threads.
        let per_task = c_out.div_ceil(SHARES);
        let shares = c_out.div_ceil(per_task);
        on_plan_pool(|threads| {
            let task = |index: usize| {
                let (b, o0) = (index / shares, (index % shares) * per_task);
                let channels = per_task.min(c_out - o0);
                // y is [batch, c_out, out_plane] (checked by `check_operands`).
                let first = (b * c_out + o0) * out_plane;
                for (o, &value) in bias[o0..o0 + channels].iter().enumerate() {
                    // SAFETY: channels o0..o0 + channels of entry b belong to this task alone.
                    unsafe { out.uninit(first + o * out_plane, out_plane) }
                        .fill(MaybeUninit::new(value));
                }
                // SAFETY: the same elements, all written just above, still this task's alone.
                let mine = unsafe { out.init(first, channels * out_plane) };
                let rows = channels * taps;
                let cols = (BLOCK_FLOATS / rows).max(16).min(positions);
                let mut product = vec![0.0f32; rows * cols];
                for q0 in (0..positions).step_by(cols) {
                    let n = cols.min(positions - q0);
                    // SAFETY: gemm writes rows × n floats of `product`, rows n apart, within its
                    // rows × cols. It reads A = w_rows from row o0·taps (rows × c_in, rows c_in
                    // apart: up to (o0 + channels)·taps·c_in ≤ its length) and B = positions
                    // q0..q0 + n of the c_in channels of entry b of x (rows `positions` apart:
                    // below (b + 1)·c_in·positions ≤ its length, checked by `check_operands`).
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
                    scatter(&g, &product[..rows * n], q0, n, mine);
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
    use crate::kernels::test_tensors::{
        absolute, any_case, filled, on_threads, reference, same_on_any_thread_count, spatial_case,
        within_summation_error, worst_difference, Padding, SpatialCase,
    };
    use proptest::prelude::*;
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

    fn deconv_of(case: &SpatialCase) -> Deconv {
        Deconv {
            pool_spec: case.pool_spec(),
            kernel_format: KernelFormat::OIHW,
            adjustments: case.adjustment.iter().copied().collect(),
            group: 1,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whatever a model holds, the kernel answers with a result or an error: it checks
        /// every size before it indexes or writes, and never panics.
        #[test]
        fn nonsense_is_an_error_never_a_panic(case in any_case()) {
            let op = DeconvGemm {
                deconv: Deconv {
                    pool_spec: case.spec.clone(),
                    kernel_format: KernelFormat::OIHW,
                    adjustments: case.adjustments.clone(),
                    group: 1,
                },
            };
            let _ = op.eval(&EvalContext::out_of_plan(), case.inputs());
        }

        /// Any geometry, down to one input position (fewer than a block's 16 once panicked
        /// here), one channel and kernels wider than the input, with output adjustments:
        /// tract's result within summation error, on 1 to 3 threads; an error (never a panic)
        /// where tract has no answer.
        #[test]
        fn random_transposed_convolutions_match_tract(case in spatial_case()) {
            let deconv = deconv_of(&case);
            let inputs = case.inputs();
            let op = DeconvGemm { deconv: deconv.clone() };
            let ours = on_threads(case.threads, || {
                op.eval(&EvalContext::out_of_plan(), inputs.clone())
            });
            let want = reference(|| deconv.eval(&EvalContext::out_of_plan(), inputs.clone()));
            match (ours, want) {
                (Ok(got), Some(Ok(want))) => {
                    let magnitude = deconv
                        .eval(&EvalContext::out_of_plan(), absolute(&inputs))
                        .unwrap();
                    within_summation_error(&got[0], &want[0], &magnitude[0], case.terms())?;
                }
                (Err(e), Some(Ok(want))) => prop_assert!(
                    false,
                    "tract gives {:?}, DeconvGemm fails: {e}",
                    want[0].shape()
                ),
                (Ok(got), _) => prop_assert_eq!(got[0].len(), 0, "tract has no answer"),
                (Err(_), _) => {}
            }
        }

        /// The tasks follow from the shape, not the thread count: bit-exact on any number of
        /// threads, as the convolutions are.
        #[test]
        fn threads_do_not_change_a_transposed_convolution(case in spatial_case()) {
            same_on_any_thread_count(&DeconvGemm { deconv: deconv_of(&case) }, &case.inputs(), case.threads)?;
        }
    }

    #[test]
    fn a_bias_of_the_wrong_length_is_an_error() {
        let case = SpatialCase {
            batch: None,
            c_in: 2,
            c_out: 3,
            input: vec![4],
            kernel: vec![3],
            stride: vec![2],
            dilation: vec![1],
            before: vec![0],
            after: vec![0],
            adjustment: vec![0],
            padding: Padding::Valid,
            scalar_bias: false,
            threads: 1,
            seed: 7,
        };
        let op = DeconvGemm {
            deconv: deconv_of(&case),
        };
        for len in [2, 4] {
            let mut inputs = case.inputs();
            inputs[2] = filled(&[len], 1).into_tvalue();
            let e = op.eval(&EvalContext::out_of_plan(), inputs).unwrap_err();
            assert!(e.to_string().contains("bias of"), "{e}");
        }
    }

    #[test]
    fn padding_that_crops_more_than_the_output_is_an_error() {
        // One input position, kernel 2: the output has 2 positions, and 3 are cropped.
        let case = SpatialCase {
            batch: Some(1),
            c_in: 1,
            c_out: 1,
            input: vec![1],
            kernel: vec![2],
            stride: vec![1],
            dilation: vec![1],
            before: vec![2],
            after: vec![1],
            adjustment: vec![0],
            padding: Padding::Explicit,
            scalar_bias: true,
            threads: 1,
            seed: 1,
        };
        let op = DeconvGemm {
            deconv: deconv_of(&case),
        };
        let e = op
            .eval(&EvalContext::out_of_plan(), case.inputs())
            .unwrap_err();
        assert!(e.to_string().contains("crops more"), "{e}");
    }

    #[test]
    fn grouped_transposed_convolutions_stay_with_tract() {
        let replaced = |group: usize| {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, 16, 32, 32])).unwrap();
            let w = model
                .add_const("w", filled(&[8, 16 / group, 4, 4], 1))
                .unwrap();
            let b = model.add_const("b", filled(&[8], 2)).unwrap();
            let deconv = Deconv {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec![4, 4],
                    padding: PaddingSpec::Valid,
                    dilations: None,
                    strides: Some(tvec![2, 2]),
                    input_channels: 16,
                    output_channels: 8,
                },
                kernel_format: KernelFormat::OIHW,
                adjustments: tvec![0, 0],
                group,
            };
            let y = model.wire_node("deconv", deconv, &[x, w, b]).unwrap();
            model.select_output_outlets(&y).unwrap();
            use_deconv_gemm(&mut model).unwrap()
        };
        assert_eq!(replaced(1), 1);
        assert_eq!(replaced(2), 0);
    }
}
