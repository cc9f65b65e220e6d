//! Our own tract operators for what dominates a segment: the large matrix products
//! ([`matmul`]), the convolutions ([`conv`]) and the transposed convolutions ([`deconv`]), each
//! swapped into the decluttered model in place of tract's before it is optimised.
//!
//! They are `unsafe` code on the path of every song, and a model may come from anyone: each
//! checks its operands' shapes against the sizes it indexes with before any raw write, failing
//! with a tract error otherwise; writes into its uninitialised output only through raw pointers
//! and `MaybeUninit` ([`output::Output`]); and carries a `SAFETY` argument on every `unsafe`
//! block. Their property tests compare them with tract's own operators on random geometries and
//! feed them nonsense, which must be an error, never a panic.

pub mod conv;
pub mod deconv;
pub mod matmul;
mod output;
mod spatial;
#[cfg(test)]
mod test_tensors;
