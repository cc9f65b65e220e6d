//! Tensors, random cases and comparisons for the unit and property tests of the operators that
//! stand in for tract's.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{EvalContext, EvalOp};
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// A tensor of `shape` filled with a deterministic, sign-mixed sequence.
pub fn filled(shape: &[usize], seed: u32) -> Tensor {
    let len = shape.iter().product::<usize>();
    let values: Vec<f32> = (0..len as u32)
        .map(|i| {
            ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 1000) as f32 / 500.0 - 1.0
        })
        .collect();
    tract_ndarray::ArrayD::from_shape_vec(shape, values)
        .unwrap()
        .into_tensor()
}

/// The largest absolute difference between two f32 tensors of the same shape.
pub fn worst_difference(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape(), want.shape());
    let (got, want) = (
        got.to_plain_array_view::<f32>().unwrap(),
        want.to_plain_array_view::<f32>().unwrap(),
    );
    got.iter()
        .zip(want.iter())
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

/// Each element's absolute value.
pub fn abs(t: &Tensor) -> Tensor {
    t.to_plain_array_view::<f32>()
        .unwrap()
        .mapv(f32::abs)
        .into_tensor()
}

/// Checks `got` against tract's `want` within the error of floating-point summation. Our
/// kernels add the same products as tract's but in another order (`gemm`'s blocking and FMA
/// against tract-linalg's), so they are not bit-exact. A sum of `terms` rounded products, in any
/// order, is within about `terms`·ε·Σ|product| of the exact sum; two of them are within twice
/// that of each other. `magnitude` holds Σ|product| per element (the reference operator run on
/// absolute values).
pub fn within_summation_error(
    got: &Tensor,
    want: &Tensor,
    magnitude: &Tensor,
    terms: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape());
    let tolerance = 2.0 * (terms + 1) as f32 * f32::EPSILON;
    let views = [got, want, magnitude].map(|t| t.to_plain_array_view::<f32>().unwrap());
    for ((g, w), m) in views[0].iter().zip(views[1].iter()).zip(views[2].iter()) {
        prop_assert!(
            (g - w).abs() <= tolerance * m + f32::MIN_POSITIVE,
            "got {g}, tract {w}: off by more than {tolerance} × {m}"
        );
    }
    Ok(())
}

/// Runs `f` on the thread pool of a plan with `threads` threads (none for 1), as a segment runs.
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    if threads > 1 {
        multithread_tract_scope(Executor::multithread(threads), f)
    } else {
        f()
    }
}

/// Whether `op` gives the same bits on one thread as on `threads` (at least two) for `inputs`,
/// when it answers on both: our kernels share work out by shape, never by thread count.
pub fn same_on_any_thread_count<O: EvalOp + Sync>(
    op: &O,
    inputs: &TVec<TValue>,
    threads: usize,
) -> Result<(), TestCaseError> {
    let run = |threads| {
        on_threads(threads, || {
            op.eval(&EvalContext::out_of_plan(), inputs.clone())
        })
    };
    if let (Ok(one), Ok(more)) = (run(1), run(threads.max(2))) {
        prop_assert_eq!(&one[0], &more[0]);
    }
    Ok(())
}

/// How a random case pads: the four kinds of `PaddingSpec` a (transposed) convolution takes.
#[derive(Debug, Clone, Copy)]
pub enum Padding {
    /// Each axis' `before` and `after`.
    Explicit,
    Valid,
    SameUpper,
    SameLower,
}

/// A random (transposed) convolution: channels first, with or without a batch axis, one or two
/// spatial axes, f32 data, OIHW weights and a bias, and the threads to run it on. Sizes go down
/// to one position and one channel, and kernels wider than the input.
#[derive(Debug, Clone)]
pub struct SpatialCase {
    /// Batch entries; `None` for data without a batch axis (CHW).
    pub batch: Option<usize>,
    pub c_in: usize,
    pub c_out: usize,
    /// Per spatial axis.
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub dilation: Vec<usize>,
    pub before: Vec<usize>,
    pub after: Vec<usize>,
    /// A transposed convolution's output adjustment (below the stride).
    pub adjustment: Vec<usize>,
    pub padding: Padding,
    /// A scalar bias (what tract gives a convolution without one) or one per channel.
    pub scalar_bias: bool,
    pub threads: usize,
    /// Seed of the data, weights and bias values.
    pub seed: u32,
}

impl SpatialCase {
    /// The geometry tract's operators take.
    pub fn pool_spec(&self) -> PoolSpec {
        PoolSpec {
            data_format: if self.batch.is_some() {
                DataFormat::NCHW
            } else {
                DataFormat::CHW
            },
            kernel_shape: self.kernel.iter().copied().collect(),
            padding: match self.padding {
                Padding::Explicit => PaddingSpec::Explicit(
                    self.before.iter().copied().collect(),
                    self.after.iter().copied().collect(),
                ),
                Padding::Valid => PaddingSpec::Valid,
                Padding::SameUpper => PaddingSpec::SameUpper,
                Padding::SameLower => PaddingSpec::SameLower,
            },
            dilations: Some(self.dilation.iter().copied().collect()),
            strides: Some(self.stride.iter().copied().collect()),
            input_channels: self.c_in,
            output_channels: self.c_out,
        }
    }

    /// Data, weights and bias with the values of this case.
    pub fn inputs(&self) -> TVec<TValue> {
        let mut x: Vec<usize> = self.batch.into_iter().collect();
        x.push(self.c_in);
        x.extend(&self.input);
        let mut w = vec![self.c_out, self.c_in];
        w.extend(&self.kernel);
        let bias = if self.scalar_bias {
            tensor0(0.25f32)
        } else {
            filled(&[self.c_out], self.seed ^ 3)
        };
        tvec!(
            filled(&x, self.seed).into_tvalue(),
            filled(&w, self.seed ^ 2).into_tvalue(),
            bias.into_tvalue()
        )
    }

    /// Products summed into one output element, at most (one per input channel and tap), plus
    /// the bias.
    pub fn terms(&self) -> usize {
        self.c_in * self.kernel.iter().product::<usize>() + 1
    }
}

/// Each input with its elements' absolute values: run through the reference operator, they give
/// the Σ|product| that [`within_summation_error`] scales its tolerance by.
pub fn absolute(inputs: &TVec<TValue>) -> TVec<TValue> {
    inputs.iter().map(|t| abs(t).into_tvalue()).collect()
}

/// Random [`SpatialCase`]s.
pub fn spatial_case() -> impl Strategy<Value = SpatialCase> {
    (1..=2usize)
        .prop_flat_map(|rank| {
            let axis = (
                1..=12usize,
                1..=5usize,
                1..=3usize,
                1..=3usize,
                0..=3usize,
                0..=3usize,
            );
            let padding = prop_oneof![
                3 => Just(Padding::Explicit),
                1 => Just(Padding::Valid),
                1 => Just(Padding::SameUpper),
                1 => Just(Padding::SameLower),
            ];
            (
                prop::option::of(1..=2usize),
                1..=5usize,
                1..=6usize,
                prop::collection::vec((axis, 0..=2usize), rank),
                padding,
                any::<bool>(),
                1..=3usize,
                any::<u32>(),
            )
        })
        .prop_map(
            |(batch, c_in, c_out, axes, padding, scalar_bias, threads, seed)| {
                let pick =
                    |f: &dyn Fn(&AxisDraw) -> usize| axes.iter().map(f).collect::<Vec<usize>>();
                SpatialCase {
                    batch,
                    c_in,
                    c_out,
                    input: pick(&|a| a.0 .0),
                    kernel: pick(&|a| a.0 .1),
                    stride: pick(&|a| a.0 .2),
                    dilation: pick(&|a| a.0 .3),
                    before: pick(&|a| a.0 .4),
                    after: pick(&|a| a.0 .5),
                    adjustment: pick(&|a| a.1 % a.0 .2),
                    padding,
                    scalar_bias,
                    threads,
                    seed,
                }
            },
        )
}

/// One spatial axis as drawn: (input, kernel, stride, dilation, pad before, pad after), and the
/// seed of the transposed convolution's output adjustment.
type AxisDraw = ((usize, usize, usize, usize, usize, usize), usize);

/// Runs `f` (tract's own operator), `None` where it panics: tract does not guard every
/// degenerate geometry, and there is then nothing to compare with.
pub fn reference<R>(f: impl FnOnce() -> R) -> Option<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// A (transposed) convolution made of nonsense as often as not: any data format, rank 0 to 3,
/// zero kernels, strides and dilations, parameter lists of the wrong length, channel counts that
/// do not match, data and weights of any shape, and a bias of any length. What a model exported
/// by someone else could hold.
#[derive(Debug, Clone)]
pub struct AnyCase {
    pub spec: PoolSpec,
    pub adjustments: TVec<usize>,
    pub x: Vec<usize>,
    pub weights: Vec<usize>,
    pub bias: usize,
}

impl AnyCase {
    /// Data, weights and bias of this case's shapes.
    pub fn inputs(&self) -> TVec<TValue> {
        tvec!(
            filled(&self.x, 1).into_tvalue(),
            filled(&self.weights, 2).into_tvalue(),
            filled(&[self.bias], 3).into_tvalue()
        )
    }
}

/// Random [`AnyCase`]s.
pub fn any_case() -> impl Strategy<Value = AnyCase> {
    let list = |max: usize| prop::collection::vec(0..=max, 0..=3);
    let format = prop::sample::select(vec![
        DataFormat::NCHW,
        DataFormat::CHW,
        DataFormat::NHWC,
        DataFormat::HWC,
    ]);
    let padding = prop_oneof![
        Just(PaddingSpec::Valid),
        Just(PaddingSpec::SameUpper),
        Just(PaddingSpec::SameLower),
        (list(6), list(6)).prop_map(|(b, a)| PaddingSpec::Explicit(b.into(), a.into())),
        (list(6), list(6), any::<bool>()).prop_map(|(b, a, c)| PaddingSpec::ExplicitOnnxPool(
            b.into(),
            a.into(),
            c
        )),
    ];
    let spec = (
        format,
        list(4),
        padding,
        prop::option::of(list(3)),
        prop::option::of(list(3)),
        0..=3usize,
        0..=3usize,
    )
        .prop_map(
            |(data_format, kernel, padding, dilations, strides, c_in, c_out)| PoolSpec {
                data_format,
                kernel_shape: kernel.into(),
                padding,
                dilations: dilations.map(Into::into),
                strides: strides.map(Into::into),
                input_channels: c_in,
                output_channels: c_out,
            },
        );
    (
        spec,
        list(3),
        prop::collection::vec(0..=6usize, 0..=5),
        any::<bool>(),
        prop::collection::vec(0..=4usize, 0..=5),
        0..=4usize,
    )
        .prop_map(|(spec, adjustments, x, fitting, weights, bias)| {
            // Half the cases get the weights the operator expects, so they reach the kernel.
            let weights = if fitting {
                let mut w = vec![spec.output_channels, spec.input_channels];
                w.extend(spec.kernel_shape.iter());
                w
            } else {
                weights
            };
            AnyCase {
                spec,
                adjustments: adjustments.into(),
                x,
                weights,
                bias,
            }
        })
}
