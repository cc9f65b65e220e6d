//! Our own tract operators for what dominates a segment: the large matrix products
//! ([`matmul`]), the convolutions ([`conv`]) and the transposed convolutions ([`deconv`]), each
//! swapped into the decluttered model in place of tract's before it is optimised.

pub mod conv;
pub mod deconv;
pub mod matmul;
mod spatial;
#[cfg(test)]
mod test_tensors;
