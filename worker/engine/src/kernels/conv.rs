//! The core's convolutions as blocked im2col + `gemm`, instead of tract's convolution kernels.
//!
//! After the products moved to `gemm` (see [`super::matmul`]), the convolutions were the next
//! largest cost of a segment: tract's DirectSpatialConv ran the decoder's 3x3 "rewrite"
//! convolutions at well under half the rate `gemm` reaches on the transformer's products
//! (`make bench-profile`). Here a block of output positions at a time is unfolded (im2col)
//! into a buffer small enough to stay in cache and multiplied by the weights with `gemm`; the
//! blocks are shared out over the thread pool tract runs the plan on. A whole-tensor im2col of
//! the widest convolution would be ~300 MB; a block is at most a few MB per thread.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::matmul::on_plan_pool;
use super::output::Output;
use super::spatial::{in_range, kernel_input_shape, per_channel, replace_nodes, Geometry};

/// Convolutions with fewer multiply-adds than this stay with tract.
const MIN_MACS: usize = 1 << 22;

/// How many blocks of output positions a batch entry is cut into, at least.
const BLOCKS: usize = 8;

/// The most output positions one block unfolds. Wider blocks repack the weights less often;
/// narrower ones keep the unfolded block in cache and share out evenly.
const MAX_BLOCK: usize = 1024;

/// Replaces the large f32 convolutions of a decluttered `model` (group 1, channels first, OIHW
/// constant weights, one or two spatial axes) by [`ConvGemm`] nodes. Returns how many.
pub fn use_conv_gemm(model: &mut TypedModel) -> TractResult<usize> {
    replace_nodes(model, conv_gemm_for)
}

fn conv_gemm_for(model: &TypedModel, id: usize) -> TractResult<Option<ConvGemm>> {
    let Some(conv) = model.nodes[id].op_as::<Conv>().filter(|c| takes(c)) else {
        return Ok(None);
    };
    let Some(x) = kernel_input_shape(model, id)? else {
        return Ok(None);
    };
    let op = ConvGemm { conv: conv.clone() };
    let large = op.geometry(&x).is_ok_and(|g| g.macs() >= MIN_MACS);
    Ok(large.then_some(op))
}

/// Whether [`ConvGemm`] computes `conv`: f32, one group, OIHW weights, channels first.
fn takes(conv: &Conv) -> bool {
    conv.q_params.is_none()
        && conv.group == 1
        && conv.kernel_fmt == KernelFormat::OIHW
        && matches!(
            conv.pool_spec.data_format,
            DataFormat::NCHW | DataFormat::CHW
        )
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
        Geometry::new(spec, x, None, |hw| {
            let padding = spec.computed_padding(hw);
            Ok(padding
                .iter()
                .map(|p| (p.convoluted, p.pad_before))
                .collect())
        })
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
                        // No tap of the run inside the row (a kernel wider than the padded
                        // input): `start` would lie outside it.
                        if lo == hi {
                            p += run;
                            q += run;
                            continue;
                        }
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
        ensure!(inputs.len() == 3, "ConvGemm takes data, weights and bias");
        ensure!(takes(&self.conv), "ConvGemm cannot compute {:?}", self.conv);
        let (x, weights, bias) = (&inputs[0], &inputs[1], &inputs[2]);
        let spec = &self.conv.pool_spec;
        let g = self.geometry(x.shape())?;
        let out_shape = spec.output_shape(x.shape())?.shape;
        g.check_operands(spec, x.shape(), weights.shape(), &out_shape)?;
        let bias = per_channel(bias, g.c_out)?;
        let (k, positions) = (g.c_in * g.taps(), g.output[0] * g.output[1]);
        let (x_view, w_view) = (x.try_as_plain_ram()?, weights.try_as_plain_ram()?);
        let (x, w) = (x_view.as_slice::<f32>()?, w_view.as_slice::<f32>()?);
        // SAFETY: the elements are written before anything reads them: the blocks below
        // partition y (batch entry × run of positions, all output channels of each), and each
        // block writes its bias before gemm adds the product to it.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if positions == 0 {
            // A kernel wider than the padded input: no output position (y is empty).
            return Ok(tvec!(y.into_tvalue()));
        }
        let out = Output::of(&mut y)?;

        // The blocks follow from the shape alone: gemm's summation order within a block
        // depends on the block's width, so blocks sized by thread count would make the stems
        // differ in the last bits between machines of different core counts. Eight blocks
        // (when positions allow) let a few threads even out.
        let cols = positions
            .div_ceil(BLOCKS)
            .next_multiple_of(16)
            .clamp(16, MAX_BLOCK)
            .min(positions);
        let per_entry = positions.div_ceil(cols);
        on_plan_pool(|threads| {
            let block = |col: &mut Vec<f32>, index: usize| {
                let (b, p0) = (index / per_entry, (index % per_entry) * cols);
                let n = cols.min(positions - p0);
                col.resize(k * n, 0.0);
                unfold(&g, x, b, p0, n, col);
                // Output channel o of this block starts at first + o·positions (y is
                // [batch, c_out, positions], checked by `check_operands`).
                let first = b * g.c_out * positions + p0;
                for (o, &v) in bias.iter().enumerate() {
                    // SAFETY: positions p0..p0 + n of entry b belong to this block alone.
                    unsafe { out.uninit(first + o * positions, n) }.fill(MaybeUninit::new(v));
                }
                // SAFETY: gemm writes (and, read_dst, first reads) C[o][q] at
                // first + o·positions + q for o < c_out, q < n: this block's elements, within
                // the extent `at` checks, and all written just above. It reads A = w
                // (c_out × k, rows k apart: the OIHW weights, checked) and B = col (k × n,
                // rows n apart), both within their lengths.
                unsafe {
                    gemm::gemm(
                        g.c_out,
                        n,
                        k,
                        out.at(first, (g.c_out - 1) * positions + n),
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
    use crate::kernels::test_tensors::{
        absolute, any_case, filled, on_threads, reference, same_on_any_thread_count, spatial_case,
        within_summation_error, worst_difference, SpatialCase,
    };
    use proptest::prelude::*;
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

    fn conv_of(case: &SpatialCase) -> Conv {
        Conv {
            pool_spec: case.pool_spec(),
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whatever a model holds, the kernel answers with a result or an error: it checks
        /// every size before it indexes or writes, and never panics.
        #[test]
        fn nonsense_is_an_error_never_a_panic(case in any_case()) {
            let op = ConvGemm {
                conv: Conv {
                    pool_spec: case.spec.clone(),
                    kernel_fmt: KernelFormat::OIHW,
                    group: 1,
                    q_params: None,
                },
            };
            let _ = op.eval(&EvalContext::out_of_plan(), case.inputs());
        }

        /// Any geometry, down to one position, one channel and kernels wider than the input:
        /// tract's result within summation error, on 1 to 3 threads; an error (never a panic)
        /// where tract has no answer.
        #[test]
        fn random_convolutions_match_tract(case in spatial_case()) {
            let conv = conv_of(&case);
            let inputs = case.inputs();
            let op = ConvGemm { conv: conv.clone() };
            let ours = on_threads(case.threads, || {
                op.eval(&EvalContext::out_of_plan(), inputs.clone())
            });
            let want = reference(|| conv.eval(&EvalContext::out_of_plan(), inputs.clone()));
            match (ours, want) {
                (Ok(got), Some(Ok(want))) => {
                    let magnitude = conv
                        .eval(&EvalContext::out_of_plan(), absolute(&inputs))
                        .unwrap();
                    within_summation_error(&got[0], &want[0], &magnitude[0], case.terms())?;
                }
                (Err(e), Some(Ok(want))) => {
                    prop_assert!(false, "tract gives {:?}, ConvGemm fails: {e}", want[0].shape())
                }
                (Ok(got), _) => prop_assert_eq!(got[0].len(), 0, "tract has no answer"),
                (Err(_), _) => {}
            }
        }

        /// The blocks are shared out by thread count, but each output element is one `gemm`
        /// dot product over the same k in the same order: bit-exact on any number of threads.
        #[test]
        fn threads_do_not_change_a_convolution(case in spatial_case()) {
            same_on_any_thread_count(&ConvGemm { conv: conv_of(&case) }, &case.inputs(), case.threads)?;
        }
    }

    #[test]
    fn a_bias_of_the_wrong_length_is_an_error() {
        let case = SpatialCase {
            batch: Some(1),
            c_in: 2,
            c_out: 3,
            input: vec![5, 5],
            kernel: vec![3, 3],
            stride: vec![1, 1],
            dilation: vec![1, 1],
            before: vec![1, 1],
            after: vec![1, 1],
            adjustment: vec![0, 0],
            padding: crate::kernels::test_tensors::Padding::Explicit,
            scalar_bias: false,
            threads: 1,
            seed: 7,
        };
        let op = ConvGemm {
            conv: conv_of(&case),
        };
        for len in [2, 4] {
            let mut inputs = case.inputs();
            inputs[2] = filled(&[len], 1).into_tvalue();
            let e = op.eval(&EvalContext::out_of_plan(), inputs).unwrap_err();
            assert!(e.to_string().contains("bias of"), "{e}");
        }
    }

    /// How many of the convolutions of a model holding one large convolution of `group` groups
    /// `use_conv_gemm` replaces.
    fn replaced(group: usize) -> usize {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 8, 64, 64])).unwrap();
        let w = model
            .add_const("w", filled(&[16, 8 / group, 3, 3], 1))
            .unwrap();
        let b = model.add_const("b", filled(&[16], 2)).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                dilations: None,
                strides: None,
                input_channels: 8,
                output_channels: 16,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, w, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        use_conv_gemm(&mut model).unwrap()
    }

    #[test]
    fn grouped_convolutions_stay_with_tract() {
        assert_eq!(replaced(1), 1);
        assert_eq!(replaced(2), 0);
        assert_eq!(replaced(8), 0);
    }
}
