//! Output buffers that a kernel fills before anything reads them, held as `MaybeUninit<f32>`.
//!
//! `vec![0.0; len]` zeroes the whole buffer on the calling thread before the parallel kernel runs;
//! for the activation-sized outputs of a training step that single-threaded memset cost ~5% of
//! the step. So the kernels write into uninitialised slots instead: no `&[f32]` ever points at
//! memory that has not been written (which would be undefined behaviour even for a plain float),
//! and the one `unsafe` step, [`Output::assume_init`], sits at the end of each kernel where the
//! full write is visible. The helpers [`fill`] and [`copy`] turn slots into initialised floats
//! without `unsafe` at the call site.

use std::mem::{ManuallyDrop, MaybeUninit};

/// `len` f32 slots (plus capacity for `room` more) that a kernel writes in full.
pub struct Output {
    slots: Vec<MaybeUninit<f32>>,
}

impl Output {
    /// `len` unwritten slots.
    pub fn new(len: usize) -> Self {
        Self::with_room(len, 0)
    }

    /// `len` unwritten slots with capacity for `room` more elements, so that small results
    /// appended after the kernel (a packed backward's parameter gradients) do not reallocate it.
    pub fn with_room(len: usize, room: usize) -> Self {
        let mut slots = Vec::with_capacity(len + room);
        // SAFETY: a `MaybeUninit` needs no initialisation, and the capacity is at least `len`.
        unsafe { slots.set_len(len) };
        Self { slots }
    }

    /// The slots, for the kernel to write (`MaybeUninit::write`, [`fill`], [`copy`] or
    /// [`super::gemm::matmul_into`]).
    pub fn slots(&mut self) -> &mut [MaybeUninit<f32>] {
        &mut self.slots
    }

    /// The written buffer.
    ///
    /// # Safety
    /// Every one of the `len` slots must have been written.
    pub unsafe fn assume_init(self) -> Vec<f32> {
        let mut slots = ManuallyDrop::new(self.slots);
        let (ptr, len, cap) = (slots.as_mut_ptr(), slots.len(), slots.capacity());
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the allocation is handed over whole
        // (same pointer, length and capacity) and the caller guarantees every element is written.
        unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, cap) }
    }
}

/// Writes `v` into every slot and returns them as floats (a `memset` for +0.0, which is what
/// the kernels fill with).
pub fn fill(slots: &mut [MaybeUninit<f32>], v: f32) -> &mut [f32] {
    if v.to_bits() == 0 {
        // SAFETY: the all-zero bit pattern is +0.0; `slots` is valid for `len` writes.
        unsafe { std::ptr::write_bytes(slots.as_mut_ptr(), 0, slots.len()) };
    } else {
        for s in slots.iter_mut() {
            s.write(v);
        }
    }
    // SAFETY: every slot was written just above.
    unsafe { assume_init_mut(slots) }
}

/// Copies `src` into the slots (equal lengths, one `memcpy`) and returns them as floats.
pub fn copy<'a>(slots: &'a mut [MaybeUninit<f32>], src: &[f32]) -> &'a mut [f32] {
    assert_eq!(slots.len(), src.len(), "copy: lengths differ");
    // SAFETY: equal lengths; `src` is initialised and cannot overlap the exclusively borrowed
    // slots; `MaybeUninit<f32>` has `f32`'s layout.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), slots.as_mut_ptr().cast::<f32>(), src.len())
    };
    // SAFETY: every slot was written just above.
    unsafe { assume_init_mut(slots) }
}

/// The slots as floats.
///
/// # Safety
/// Every slot must have been written.
pub unsafe fn assume_init_mut(slots: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout; the caller guarantees initialisation.
    unsafe { &mut *(slots as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// An error unless the kernel inputs `what` have the expected element count (candle does not
/// check the shapes a custom op receives; a shorter input would leave output slots unwritten).
pub fn ensure_len(what: &str, got: usize, want: usize) -> candle_core::Result<()> {
    if got != want {
        candle_core::bail!("maxsup-ops: {what} has {got} elements, expected {want}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_buffers_keep_length_capacity_and_values() {
        let mut out = Output::with_room(5, 3);
        copy(&mut out.slots()[..2], &[1.0, 2.0]);
        fill(&mut out.slots()[2..4], 7.0);
        fill(&mut out.slots()[4..], 0.0);
        let v = unsafe { out.assume_init() };
        assert_eq!(v, vec![1.0, 2.0, 7.0, 7.0, 0.0]);
        assert!(v.capacity() >= 8);
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        assert!(ensure_len("relu gradient", 3, 4).is_err());
        assert!(ensure_len("relu gradient", 4, 4).is_ok());
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn copy_refuses_a_short_source() {
        let mut out = Output::new(3);
        copy(out.slots(), &[1.0]);
    }
}
