//! The output tensor of one of our operators while its threads fill it: uninitialised memory
//! written only through raw pointers and `MaybeUninit` until every element has been written once,
//! in ranges checked against the tensor's length.

use std::mem::MaybeUninit;

use tract_onnx::prelude::*;

/// The f32 data of an output tensor that is still uninitialised, shared by the threads that
/// fill it. It is only ever written through raw pointers or `MaybeUninit` until each element
/// has been written once; every range handed out is checked against the tensor's length.
pub struct Output {
    data: *mut f32,
    len: usize,
}

// SAFETY: `Output` is a pointer and a length. Sharing it lets threads write through it; the
// methods' contracts (each range used by one thread at a time) are what keeps those writes from
// racing, and every caller states why its ranges are disjoint.
unsafe impl Sync for Output {}

impl Output {
    /// The data of `tensor`, which must be a plain f32 tensor; its elements may be uninitialised.
    /// The tensor must outlive every use of the result and not be moved meanwhile (its storage
    /// is a heap block, so moving the `Tensor` value itself is harmless).
    pub fn of(tensor: &mut Tensor) -> TractResult<Output> {
        let len = tensor.len();
        let mut view = tensor.try_as_plain_ram_mut()?;
        // A raw pointer only: no `&mut [f32]` over memory that is not initialised yet.
        let data = view.as_ptr_mut::<f32>()?;
        Ok(Output { data, len })
    }

    /// Elements `start..start + n` as uninitialised memory, for a first write.
    ///
    /// # Safety
    /// No other thread reads or writes these elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn uninit(&self, start: usize, n: usize) -> &mut [MaybeUninit<f32>] {
        assert!(start <= self.len && n <= self.len - start);
        // SAFETY: in bounds (checked above) of one allocation of `len` f32s; `MaybeUninit`
        // makes no claim on the contents; exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(start).cast(), n) }
    }

    /// Elements `start..start + n`, every one of them written before.
    ///
    /// # Safety
    /// Each element was written (the range is initialised), and no other thread reads or writes
    /// these elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn init(&self, start: usize, n: usize) -> &mut [f32] {
        assert!(start <= self.len && n <= self.len - start);
        // SAFETY: in bounds (checked above), initialised and exclusive per the caller.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(start), n) }
    }

    /// A pointer to element `start`, for a writer (`gemm`) whose largest offset from it is
    /// `extent − 1`.
    ///
    /// # Safety
    /// The writer stays within `start..start + extent` and within the elements this thread
    /// owns.
    pub unsafe fn at(&self, start: usize, extent: usize) -> *mut f32 {
        assert!(start <= self.len && extent <= self.len - start);
        // SAFETY: `start` is within the allocation (checked above).
        unsafe { self.data.add(start) }
    }
}
