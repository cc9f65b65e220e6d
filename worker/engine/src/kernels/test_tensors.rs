//! Tensors for the unit tests of the operators that stand in for tract's.

use tract_onnx::prelude::*;

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
