//! Per-thread reuse of large buffers across images (coefficients, masks, sample planes): a fresh
//! zeroed allocation per image costs page faults and a memset.

use std::cell::RefCell;
use std::collections::VecDeque;

/// Buffers handed back by earlier images. First in, first out: an image takes and returns its
/// buffers in component order, so each component gets back the one it had, already of the right
/// size. Buffers are never shortened, so one is grown (and zeroed) only past its largest use;
/// callers overwrite what they read.
pub(crate) struct BufferPool<T> {
    free: RefCell<VecDeque<Vec<T>>>,
}

/// Buffers kept per pool: one per component, and a spare.
const KEEP: usize = 4;

impl<T: Copy + Default> BufferPool<T> {
    pub const fn new() -> Self {
        BufferPool {
            free: RefCell::new(VecDeque::new()),
        }
    }

    /// A buffer of at least `len` elements; beyond what was zeroed when it grew, its contents are
    /// whatever an earlier image left there.
    pub fn take(&self, len: usize) -> Vec<T> {
        let mut buf = self.free.borrow_mut().pop_front().unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, T::default());
        }
        buf
    }

    /// Hands a buffer back for a later image.
    pub fn give(&self, buf: Vec<T>) {
        let mut free = self.free.borrow_mut();
        if !buf.is_empty() && free.len() < KEEP {
            free.push_back(buf);
        }
    }
}
