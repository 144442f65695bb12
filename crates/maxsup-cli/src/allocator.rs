//! The global allocator of every workspace binary (they all link this crate): mimalloc, tuned
//! with [`retain_freed_pages`] at the start of `main`.
//!
//! Why: a training step allocates and frees dozens of activation-sized tensors (8 MB each for
//! ResNet-20 at batch 128). glibc's allocator returned each to the kernel, and mimalloc by default
//! purges freed pages after a delay (1 s in the v3 that libmimalloc-sys builds, 10 ms in v2), about
//! one training step; either way every step paid page faults and kernel page
//! clearing, measured at 10-15% of a CPU training step. Keeping freed pages mapped holds the
//! process at its peak footprint instead, which a training run reaches in its first step anyway.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's option enum, v2 and v3 alike (libmimalloc-sys exports no
/// constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's default purge delays in milliseconds (v3, v2), to check that the index is right.
const DEFAULT_PURGE_DELAYS_MS: [std::os::raw::c_long; 2] = [1000, 10];

/// Tells mimalloc never to return freed pages to the OS. Call first thing in `main`. Returns
/// false (and changes nothing) if the linked mimalloc does not look like the expected version.
pub fn retain_freed_pages() -> bool {
    // SAFETY: plain option getters/setters of the C library, valid at any time.
    unsafe {
        if !DEFAULT_PURGE_DELAYS_MS.contains(&libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY))
        {
            return false;
        }
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == -1
    }
}
