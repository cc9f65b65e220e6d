//! The core's large matrix products, run by the `gemm` crate instead of tract's kernels.
//!
//! tract multiplies the transformer's large products (2688x512x2048) markedly slower than `gemm`,
//! which runs them about as fast as onnxruntime's MLAS, and those products are over half of a
//! segment (`make bench-profile` shows both). So after decluttering, every plain f32
//! product (one m, one k and one n axis, any batch axes) above [`MIN_MACS`] becomes a [`Gemm`]
//! node, which tract's optimiser then leaves alone ([`super::conv`] does the same for the
//! convolutions). Small products stay with tract. `Gemm` runs on the thread pool tract runs the
//! plan on.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;

use super::output::Output;

/// Products smaller than this (multiply-adds in all) stay with tract, whose per-call overhead is
/// lower and which fuses them with their neighbours.
const MIN_MACS: usize = 1 << 20;

/// Nor does a product whose batch entries are smaller than this each. Above it, a batch of many
/// small entries (the DConvs' 512 frequency rows of 336x48x18) runs several times faster one
/// entry per thread in `gemm` than in tract.
const MIN_ENTRY_MACS: usize = 1 << 14;

/// An m (or n) axis shorter than this leaves `gemm`'s kernel mostly idle.
const MIN_M: usize = 64;

/// Replaces the large plain f32 products of a decluttered `model` by [`Gemm`] nodes, each taking
/// in the constant it is then added to (a bias), if any. Returns how many it replaced.
pub fn use_gemm(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        if let Some(op) = gemm_for(model, id)? {
            match bias_after(model, id)? {
                // tract would fuse the add into its own product; unfused it is a pass over C.
                Some((add, bias)) => {
                    let mut patch = TypedModelPatch::default();
                    let mut inputs = patch.taps(model, &model.nodes[id].inputs)?;
                    inputs.push(patch.tap_model(model, bias)?);
                    let out = patch.wire_node(&model.nodes[id].name, op, &inputs)?;
                    patch.shunt_outside(model, add.into(), out[0])?;
                    patch.apply(model)?;
                }
                None => model.nodes[id].op = Box::new(op),
            }
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// The add node that node `id`'s output goes to and nothing else, with the constant it adds, if
/// that varies along one output axis at most (a bias), is f32 and of the output's rank.
fn bias_after(model: &TypedModel, id: usize) -> TractResult<Option<(usize, OutletId)>> {
    let output = OutletId::new(id, 0);
    if model.outputs.contains(&output) {
        return Ok(None);
    }
    let Some(add) = model.single_succ(id)? else {
        return Ok(None);
    };
    if !add.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<Add>()) {
        return Ok(None);
    }
    let Some(&other) = add.inputs.iter().find(|&&i| i != output) else {
        return Ok(None);
    };
    let (fact, c) = (model.outlet_fact(other)?, model.outlet_fact(output)?);
    let (Some(shape), Some(c_shape)) = (fact.shape.as_concrete(), c.shape.as_concrete()) else {
        return Ok(None);
    };
    let fits = fact.konst.is_some()
        && fact.datum_type == f32::datum_type()
        && shape.len() == c_shape.len()
        && shape.iter().zip(c_shape).all(|(&s, &c)| s == 1 || s == c)
        && shape.iter().filter(|&&s| s != 1).count() <= 1;
    Ok(fits.then_some((add.id, other)))
}

/// The [`Gemm`] that can stand in for node `id`, if it is a large plain f32 product.
fn gemm_for(model: &TypedModel, id: usize) -> TractResult<Option<Gemm>> {
    let Some(einsum) = model.nodes[id].op_as::<EinSum>() else {
        return Ok(None);
    };
    let inputs = model.node_input_facts(id)?;
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || inputs.len() != 2
        || inputs.iter().any(|f| f.datum_type != f32::datum_type())
    {
        return Ok(None);
    }
    let (Some(a), Some(b)) = (inputs[0].shape.as_concrete(), inputs[1].shape.as_concrete()) else {
        return Ok(None);
    };
    Ok(match Dims::of(&einsum.axes, a, b) {
        Some(d) if d.macs() >= MIN_MACS && d.m * d.k * d.n >= MIN_ENTRY_MACS => Some(Gemm {
            einsum: einsum.clone(),
        }),
        _ => None,
    })
}

/// A product `C[batch.., m, n] = A[batch.., m, k] · B[batch.., k, n]`, axes in any order,
/// batch axes broadcast when one side has size 1, plus an optional third input added to C: a
/// bias of C's rank that varies along one axis at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gemm {
    /// The decluttered product it replaces: its axes and its output facts.
    einsum: EinSum,
}

/// Where the m, k and n axes sit in the operands, and their sizes.
struct Dims {
    m: usize,
    k: usize,
    n: usize,
    /// Positions of m in A and C, of k in A and B, of n in B and C.
    m_at: (usize, usize),
    k_at: (usize, usize),
    n_at: (usize, usize),
    /// Every other output axis, looped over around the products.
    batch: Vec<BatchAxis>,
}

/// An output axis that is neither m nor n: shared by both operands, or a second m (or n) axis.
/// An operand missing it, or holding it at size 1, is read at stride 0 along it.
struct BatchAxis {
    size: usize,
    a: Option<usize>,
    b: Option<usize>,
    c: usize,
}

impl Dims {
    /// The layout of a plain product, or `None` for anything else (an axis summed in one operand
    /// only, repeated axes, mismatched sizes).
    fn of(axes: &AxesMapping, a: &[usize], b: &[usize]) -> Option<Dims> {
        // The mapping indexes the shapes: they must have the ranks it expects.
        if axes.input_count() != 2
            || axes.output_count() != 1
            || axes.rank(InOut::In(0)) != a.len()
            || axes.rank(InOut::In(1)) != b.len()
        {
            return None;
        }
        let (mut k, mut batch) = (None, Vec::new());
        // Axes of the output and of one operand only: one becomes m (or n), any other is looped
        // over like a batch axis.
        let (mut m_like, mut n_like) = (Vec::new(), Vec::new());
        for axis in axes.iter_all_axes() {
            let at = |v: &TVec<usize>| match v.len() {
                0 => Ok(None),
                1 => Ok(Some(v[0])),
                _ => Err(()),
            };
            let (Ok(pa), Ok(pb), Ok(pc)) = (
                at(&axis.inputs[0]),
                at(&axis.inputs[1]),
                at(&axis.outputs[0]),
            ) else {
                return None;
            };
            let (size_a, size_b) = (pa.map_or(1, |p| a[p]), pb.map_or(1, |p| b[p]));
            if size_a != size_b && size_a != 1 && size_b != 1 {
                return None;
            }
            match (pa, pb, pc) {
                (Some(pa), None, Some(pc)) => m_like.push((a[pa], pa, pc)),
                (None, Some(pb), Some(pc)) => n_like.push((b[pb], pb, pc)),
                (Some(pa), Some(pb), None) if k.is_none() && size_a == size_b => k = Some((pa, pb)),
                (Some(_), Some(_), Some(c)) => batch.push(BatchAxis {
                    size: size_a.max(size_b),
                    a: pa.filter(|_| size_a > 1),
                    b: pb.filter(|_| size_b > 1),
                    c,
                }),
                // A size-1 axis summed away carries nothing.
                (_, _, None) if size_a == 1 && size_b == 1 => {}
                // An output axis in neither operand has size 1 (a convolution's batch axis).
                (None, None, Some(c)) => batch.push(BatchAxis {
                    size: 1,
                    a: None,
                    b: None,
                    c,
                }),
                _ => return None,
            }
        }
        // Of the axes long enough to feed the kernel, the innermost in its operand: `gemm` then
        // packs contiguous runs (a 1x1 convolution's width rather than its height), far faster.
        let key = |&(size, at, _): &(usize, usize, usize)| (size >= MIN_M, at, size);
        m_like.sort_by_key(key);
        n_like.sort_by_key(key);
        let (_, m_a, m_c) = m_like.pop()?;
        let (_, n_b, n_c) = n_like.pop()?;
        batch.extend(m_like.into_iter().map(|(size, pa, c)| BatchAxis {
            size,
            a: Some(pa),
            b: None,
            c,
        }));
        batch.extend(n_like.into_iter().map(|(size, pb, c)| BatchAxis {
            size,
            a: None,
            b: Some(pb),
            c,
        }));
        let (m_at, k_at, n_at) = ((m_a, m_c), k?, (n_b, n_c));
        Some(Dims {
            m: a[m_at.0],
            k: a[k_at.0],
            n: b[n_at.0],
            m_at,
            k_at,
            n_at,
            batch,
        })
    }

    /// Multiply-adds of the whole product.
    fn macs(&self) -> usize {
        self.m * self.k * self.n * self.batch.iter().map(|axis| axis.size).product::<usize>()
    }

    /// The output shape.
    fn c_shape(&self) -> Vec<usize> {
        let mut shape = vec![1; self.batch.len() + 2];
        shape[self.m_at.1] = self.m;
        shape[self.n_at.1] = self.n;
        for axis in &self.batch {
            shape[axis.c] = axis.size;
        }
        shape
    }
}

impl Op for Gemm {
    fn name(&self) -> StaticName {
        "Gemm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![self.einsum.axes.to_string()])
    }

    op_as_typed_op!();
}

impl EvalOp for Gemm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 2 || inputs.len() == 3,
            "Gemm takes two operands and a bias"
        );
        let (a, b) = (&inputs[0], &inputs[1]);
        let d = Dims::of(&self.einsum.axes, a.shape(), b.shape())
            .context("Gemm operands no longer form a plain product")?;
        let c_shape = d.c_shape();
        let bias = inputs.get(2);
        // SAFETY: every element is written before anything reads it: by the bias if there is
        // one, then (or else) by the one product whose batch entry holds it.
        let mut c = unsafe { Tensor::uninitialized::<f32>(&c_shape)? };
        if c.len() == 0 {
            return Ok(tvec!(c.into_tvalue()));
        }
        let out = Output::of(&mut c)?;
        if let Some(bias) = bias {
            fill_with(&out, &c_shape, bias)?;
        }
        let layout = Layout::new(&d, a.strides(), b.strides(), c.strides());
        let (a_view, b_view) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let data = Data(
            a_view.as_slice::<f32>()?.as_ptr(),
            b_view.as_slice::<f32>()?.as_ptr(),
            // SAFETY: the whole of C, which the products below write entry by entry.
            unsafe { out.at(0, c.len()) },
        );
        let entries = layout.entries();
        let with_bias = bias.is_some();
        // SAFETY (all three): `layout` was built from the operands' shapes (which `Dims::of`
        // matched against the product's axes) and strides, and C's; the entries are disjoint
        // parts of C, each written by one call at a time; C was filled with the bias first when
        // `with_bias` makes the products add to it.
        on_plan_pool(|threads| {
            // One entry per thread when there are enough to share out (attention heads), else
            // each product split.
            if threads > 1 && entries >= 2 * threads {
                (0..entries).into_par_iter().for_each(|entry| unsafe {
                    layout.product(entry, &data, with_bias, Parallelism::None)
                })
            } else {
                let parallelism = match threads {
                    1 => Parallelism::None,
                    t => Parallelism::Rayon(t),
                };
                (0..entries).for_each(|entry| unsafe {
                    layout.product(entry, &data, with_bias, parallelism)
                })
            }
        });
        Ok(tvec!(c.into_tvalue()))
    }
}

/// Writes `bias` (of C's rank, varying along one axis at most, that axis' size or 1) broadcast
/// over all of C, the uninitialised `out` of shape `shape`.
fn fill_with(out: &Output, shape: &[usize], bias: &Tensor) -> TractResult<()> {
    let dims = bias.shape();
    let varying: TVec<usize> = (0..dims.len()).filter(|&i| dims[i] != 1).collect();
    ensure!(
        dims.len() == shape.len()
            && varying.len() <= 1
            && varying.iter().all(|&i| dims[i] == shape[i]),
        "bias of shape {dims:?} for a product of shape {shape:?}"
    );
    let view = bias.try_as_plain_ram()?;
    let values = view.as_slice::<f32>()?;
    // SAFETY: all of C, written here before the products run; nothing else touches C meanwhile.
    let c = unsafe { out.uninit(0, shape.iter().product()) };
    match varying.first() {
        None => c.fill(MaybeUninit::new(values[0])),
        Some(&axis) if axis + 1 == shape.len() => {
            for row in c.chunks_exact_mut(values.len()) {
                for (d, &v) in row.iter_mut().zip(values) {
                    *d = MaybeUninit::new(v);
                }
            }
        }
        Some(&axis) => {
            // Runs of `inner` elements share one value, the axis' index cycling run by run.
            let inner: usize = shape[axis + 1..].iter().product();
            for (run, out) in c.chunks_exact_mut(inner).enumerate() {
                out.fill(MaybeUninit::new(values[run % values.len()]));
            }
        }
    }
    Ok(())
}

/// Runs `f(threads)` on the thread pool tract runs the current plan on, so that work shared out
/// with rayon inside `f` stays on the plan's threads; `threads` is 1 outside a multithreaded plan.
pub(super) fn on_plan_pool<R: Send>(f: impl FnOnce(usize) -> R + Send) -> R {
    match tract_linalg::multithread::current_tract_executor() {
        Executor::MultiThread(pool) => {
            let threads = pool.current_num_threads();
            pool.install(|| f(threads))
        }
        _ => f(1),
    }
}

/// Where the operands start: A, B and C.
struct Data(*const f32, *const f32, *mut f32);

// SAFETY: the threads sharing a `Data` only read A and B (the operator's inputs, which nothing
// writes while it runs) and write C in disjoint batch entries (see `Layout::product`).
unsafe impl Sync for Data {}

/// Sizes and strides (in elements) of the product of every batch entry.
struct Layout {
    m: usize,
    k: usize,
    n: usize,
    /// Per batch axis: size, then its stride in A, B and C (0 where broadcast).
    batch: Vec<[isize; 4]>,
    /// Row and column strides of A (m, k), B (k, n) and C (m, n).
    a: (isize, isize),
    b: (isize, isize),
    c: (isize, isize),
}

impl Layout {
    fn new(d: &Dims, sa: &[isize], sb: &[isize], sc: &[isize]) -> Layout {
        Layout {
            m: d.m,
            k: d.k,
            n: d.n,
            batch: d
                .batch
                .iter()
                .map(|axis| {
                    [
                        axis.size as isize,
                        axis.a.map_or(0, |p| sa[p]),
                        axis.b.map_or(0, |p| sb[p]),
                        sc[axis.c],
                    ]
                })
                .collect(),
            a: (sa[d.m_at.0], sa[d.k_at.0]),
            b: (sb[d.k_at.1], sb[d.n_at.0]),
            c: (sc[d.m_at.1], sc[d.n_at.1]),
        }
    }

    fn entries(&self) -> usize {
        self.batch.iter().map(|axis| axis[0] as usize).product()
    }

    /// The product of batch entry `entry` (last batch axis fastest).
    ///
    /// With `accumulate`, the product is added to what C holds.
    ///
    /// # Safety
    /// `data` points at dense tensors of the shapes and strides this layout was built from;
    /// nothing else reads or writes this entry of C meanwhile; with `accumulate`, the entry has
    /// been written before.
    unsafe fn product(
        &self,
        entry: usize,
        data: &Data,
        accumulate: bool,
        parallelism: Parallelism,
    ) {
        let (mut oa, mut ob, mut oc, mut rest) = (0, 0, 0, entry as isize);
        for &[size, s_a, s_b, s_c] in self.batch.iter().rev() {
            let i = rest % size;
            rest /= size;
            oa += i * s_a;
            ob += i * s_b;
            oc += i * s_c;
        }
        // SAFETY: oa, ob and oc are the offsets of the entry's first element in A, B and C
        // (index below each batch size, times that axis' stride); gemm reaches m − 1, k − 1 and
        // n − 1 further along the m, k and n axes, all within the operands, whose sizes these
        // are. It writes only this entry of C, which the caller holds alone.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                data.2.offset(oc),
                self.c.1,
                self.c.0,
                accumulate,
                data.0.offset(oa),
                self.a.1,
                self.a.0,
                data.1.offset(ob),
                self.b.1,
                self.b.0,
                if accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

impl TypedOp for Gemm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.einsum.output_facts(&inputs[..2])
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_tensors::{
        abs, filled, on_threads, within_summation_error, worst_difference,
    };
    use proptest::prelude::*;
    use tract_linalg::multithread::multithread_tract_scope;

    /// Gemm against tract's own EinSum on `expr` with operands of these shapes, on 1 and 2 threads.
    fn agrees(expr: &str, a: &[usize], b: &[usize]) {
        let einsum = EinSum::new(expr.parse().unwrap(), f32::datum_type());
        let inputs = tvec!(filled(a, 1).into_tvalue(), filled(b, 2).into_tvalue());
        let want = einsum.eval_out_of_plan(inputs.clone()).unwrap().unwrap();
        assert!(Dims::of(&einsum.axes, a, b).is_some(), "{expr} not taken");
        let op = Gemm {
            einsum: einsum.clone(),
        };
        for threads in [1, 2] {
            let got = multithread_tract_scope(Executor::multithread(threads), || {
                op.eval(&EvalContext::out_of_plan(), inputs.clone())
            })
            .unwrap();
            assert_eq!(got[0].shape(), want[0].shape(), "{expr}");
            let worst = worst_difference(&got[0], &want[0]);
            assert!(worst < 1e-3, "{expr} on {threads} threads: off by {worst}");
        }
    }

    #[test]
    fn plain_products_match_tract() {
        agrees("mk,kn->mn", &[37, 19], &[19, 23]);
        agrees("km,nk->nm", &[19, 37], &[23, 19]);
        agrees("bmk,bkn->bmn", &[3, 37, 19], &[3, 19, 23]);
        // Batch broadcast from size 1, and a batch axis of A only (a second m).
        agrees("bmk,bkn->bmn", &[1, 37, 19], &[4, 19, 23]);
        agrees("btk,kn->btn", &[5, 37, 19], &[19, 23]);
        // A 1x1 convolution: two m-like axes, and an output axis in neither operand.
        agrees("hiw,oi->nohw", &[5, 7, 9], &[6, 7]);
        // The attention layout: heads outermost, output axes permuted.
        agrees("hqd,hkd->hkq", &[8, 40, 16], &[8, 33, 16]);
    }

    /// A model `(a · b) + bias` before and after `use_gemm`: the same result, from one Gemm node.
    fn takes_bias(bias_shape: &[usize]) {
        let mut model = TypedModel::default();
        let a = model.add_source("a", f32::fact([64, 128])).unwrap();
        let b = model.add_const("b", filled(&[128, 256], 2)).unwrap();
        let einsum = EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type());
        let c = model.wire_node("product", einsum, &[a, b]).unwrap()[0];
        let bias = model.add_const("bias", filled(bias_shape, 3)).unwrap();
        let add = tract_onnx::tract_core::ops::math::add();
        let y = model.wire_node("add", add, &[bias, c]).unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        let run = |model: &TypedModel| {
            let input = filled(&[64, 128], 1).into_tvalue();
            let plan = model.clone().into_runnable().unwrap();
            plan.run(tvec!(input)).unwrap().remove(0)
        };
        let want = run(&model);

        assert_eq!(use_gemm(&mut model).unwrap(), 1);
        let order = model.eval_order().unwrap();
        let ops: Vec<_> = order.iter().map(|&n| model.nodes[n].op.name()).collect();
        assert_eq!(ops.iter().filter(|op| *op == "Gemm").count(), 1, "{ops:?}");
        assert!(!ops.iter().any(|op| op.contains("Add")), "{ops:?}");
        let worst = worst_difference(&run(&model), &want);
        assert!(worst < 1e-3, "bias {bias_shape:?}: off by {worst}");
    }

    #[test]
    fn a_bias_added_to_a_product_is_taken_in() {
        takes_bias(&[1, 256]);
        takes_bias(&[64, 1]);
        takes_bias(&[1, 1]);
    }

    #[test]
    fn other_contractions_are_left_to_tract() {
        let taken =
            |expr: &str, a: &[usize], b: &[usize]| Dims::of(&expr.parse().unwrap(), a, b).is_some();
        // Two k axes, an axis summed in one operand only, an outer product.
        assert!(!taken("mkj,kjn->mn", &[4, 5, 6], &[5, 6, 7]));
        assert!(!taken("mkr,kn->mn", &[4, 5, 6], &[5, 7]));
        assert!(!taken("m,n->mn", &[4], &[7]));
    }

    /// The layouts of the core's products: plain, transposed, batched, broadcast, a batch axis
    /// of one operand only, a 1x1 convolution (an output axis in neither operand) and attention.
    const LAYOUTS: [&str; 8] = [
        "mk,kn->mn",
        "km,nk->nm",
        "bmk,bkn->bmn",
        "bmk,bkn->bnm",
        "btk,kn->btn",
        "hiw,oi->nohw",
        "hqd,hkd->hkq",
        "bhqd,bhkd->bhqk",
    ];

    /// A random product of one of [`LAYOUTS`].
    #[derive(Debug, Clone)]
    struct ProductCase {
        expr: &'static str,
        /// Size of each axis letter (a..z), 1 included.
        sizes: Vec<usize>,
        /// Whether A, or B, holds its batch axes at size 1 (broadcast).
        broadcast: (bool, bool),
        /// No bias, or one varying along this output axis (`None`: a single value).
        bias: Option<Option<usize>>,
        threads: usize,
        seed: u32,
    }

    impl ProductCase {
        /// The operands' shapes.
        fn spec(&self) -> (Vec<usize>, Vec<usize>) {
            let (inputs, output) = self.expr.split_once("->").unwrap();
            let (a, b) = inputs.split_once(',').unwrap();
            let size = |c: char| self.sizes[(c as u8 - b'a') as usize];
            // A batch axis (in both operands and the output) may be broadcast from size 1.
            let batch = |c: char| a.contains(c) && b.contains(c) && output.contains(c);
            let shape = |s: &str, broadcast: bool| {
                s.chars()
                    .map(|c| if broadcast && batch(c) { 1 } else { size(c) })
                    .collect::<Vec<usize>>()
            };
            (shape(a, self.broadcast.0), shape(b, self.broadcast.1))
        }
    }

    fn product_case() -> impl Strategy<Value = ProductCase> {
        (
            prop::sample::select(LAYOUTS.to_vec()),
            prop::collection::vec(1..=24usize, 26),
            any::<(bool, bool)>(),
            prop::option::of(prop::option::of(0..4usize)),
            1..=3usize,
            any::<u32>(),
        )
            .prop_map(
                |(expr, sizes, broadcast, bias, threads, seed)| ProductCase {
                    expr,
                    sizes,
                    broadcast,
                    bias,
                    threads,
                    seed,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Every layout at random sizes, with and without a bias: tract's EinSum (plus the
        /// bias) within summation error, on 1 to 3 threads.
        #[test]
        fn random_products_match_tract(case in product_case()) {
            let (a_shape, b_shape) = case.spec();
            let einsum = EinSum::new(case.expr.parse().unwrap(), f32::datum_type());
            let (a, b) = (filled(&a_shape, case.seed), filled(&b_shape, case.seed ^ 1));
            let d = Dims::of(&einsum.axes, &a_shape, &b_shape);
            prop_assert!(d.is_some(), "{} not taken", case.expr);
            let (k, c_shape) = d.map(|d| (d.k, d.c_shape())).unwrap();
            let mut inputs = tvec!(a.clone().into_tvalue(), b.clone().into_tvalue());
            let product = |a: &Tensor, b: &Tensor| {
                let inputs = tvec!(a.clone().into_tvalue(), b.clone().into_tvalue());
                let c = einsum.eval_out_of_plan(inputs).unwrap().unwrap().remove(0);
                c.to_plain_array_view::<f32>().unwrap().to_owned()
            };
            let (mut want, mut magnitude) = (product(&a, &b), product(&abs(&a), &abs(&b)));
            if let Some(axis) = case.bias {
                let mut shape = vec![1; c_shape.len()];
                if let Some(axis) = axis.filter(|&axis| axis < c_shape.len()) {
                    shape[axis] = c_shape[axis];
                }
                let bias = filled(&shape, case.seed ^ 2);
                want = &want + &bias.to_plain_array_view::<f32>().unwrap();
                magnitude = &magnitude + &abs(&bias).to_plain_array_view::<f32>().unwrap();
                inputs.push(bias.into_tvalue());
            }
            let op = Gemm { einsum: einsum.clone() };
            let got = on_threads(case.threads, || {
                op.eval(&EvalContext::out_of_plan(), inputs.clone())
            });
            prop_assert!(got.is_ok(), "{:?}", got.err());
            within_summation_error(
                &got.unwrap()[0],
                &want.into_tensor(),
                &magnitude.into_tensor(),
                k + 1,
            )?;
        }
    }

    #[test]
    fn a_bias_that_does_not_fit_is_an_error() {
        let einsum = EinSum::new("mk,kn->mn".parse().unwrap(), f32::datum_type());
        let op = Gemm { einsum };
        // Wrong rank, a size that is neither 1 nor the axis', two varying axes.
        for shape in [&[5][..], &[1, 4], &[2, 5]] {
            let inputs = tvec!(
                filled(&[2, 3], 1).into_tvalue(),
                filled(&[3, 5], 2).into_tvalue(),
                filled(shape, 3).into_tvalue(),
            );
            let e = op.eval(&EvalContext::out_of_plan(), inputs).unwrap_err();
            assert!(e.to_string().contains("bias of shape"), "{shape:?}: {e}");
        }
        // Operands of the wrong rank are refused, not indexed.
        let inputs = tvec!(
            filled(&[2, 3, 1], 1).into_tvalue(),
            filled(&[3, 5], 2).into_tvalue()
        );
        assert!(op.eval(&EvalContext::out_of_plan(), inputs).is_err());
    }
}
