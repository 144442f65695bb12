//! maxsup-ops' CUDA kernels, run on the CPU.
//!
//! `build.rs` compiles `kernels/ops.cu` as C++ with a stand-in for the CUDA header; [`launch`]
//! runs a kernel over a [`Launch`] grid (taken from `maxsup_ops::kernel_geometry`, as the CUDA
//! launchers do) with every block's threads as fibers that switch at `__syncthreads` and warp
//! shuffles. What this checks: the kernels' indexing, reductions, barriers and shuffles, their
//! bf16 rounding, and that the launch shapes cover the work. What it cannot: timing-dependent
//! behaviour (races show up only as far as the sequential order exposes them), the GPU's last
//! bits (FMA contraction, `expf`/`erff` ulps), and the argument lists the launchers pass through
//! cudarc.

use std::ffi::{c_char, c_void, CStr};

pub use maxsup_ops::kernel_geometry::Launch;

extern "C" {
    fn emu_launch(
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        shared_limit: u32,
        body: extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        err: *mut c_char,
        err_cap: usize,
    ) -> i32;
}

extern "C" fn call_body<F: Fn()>(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `&F` that `launch` passed and keeps alive for the whole launch.
    let f = unsafe { &*(ctx as *const F) };
    f();
}

/// Runs `thread_body` once per thread of every block of `geometry` (blocks one after another,
/// threads as fibers). `thread_body` calls one kernel of [`Kernels`]; `Err` says why the launch
/// could not complete (a size the GPU rejects, a barrier some threads cannot reach).
///
/// `thread_body` must not panic (it runs on a fiber stack under C frames: a panic aborts).
pub fn launch<F: Fn()>(geometry: Launch, thread_body: F) -> Result<(), String> {
    launch_with_shared_limit(geometry, DEFAULT_SHARED_LIMIT, thread_body)
}

/// The dynamic shared memory a launch may use without the kernel's opt-in attribute.
pub const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// [`launch`] for a kernel whose launcher raises its dynamic shared memory limit to
/// `shared_limit` bytes (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`).
pub fn launch_with_shared_limit<F: Fn()>(
    geometry: Launch,
    shared_limit: u32,
    thread_body: F,
) -> Result<(), String> {
    let grid = [geometry.grid.0, geometry.grid.1, geometry.grid.2];
    let block = [geometry.block.0, geometry.block.1, geometry.block.2];
    let mut err = [0 as c_char; 256];
    // SAFETY: the arrays live for the call; `call_body::<F>` receives the `&F` it expects.
    let rc = unsafe {
        emu_launch(
            grid.as_ptr(),
            block.as_ptr(),
            geometry.shared_bytes,
            shared_limit,
            call_body::<F>,
            &thread_body as *const F as *mut c_void,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the runtime wrote a NUL-terminated message into `err`.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
    Err(msg.to_string_lossy().into_owned())
}

mod kernels;
pub use kernels::{
    attention_bwd_d32_bf16, attention_bwd_d64_bf16, attention_fwd_d32_bf16, attention_fwd_d64_bf16,
};
pub use kernels::{bn_bwd_finalize, column_sum_f32};
pub use kernels::{softmax_loss_grad_f32, softmax_loss_mean_f32, softmax_loss_rows_f32};

use maxsup_ops::multi_tensor::table::{batches, Entry, Update};

/// Runs a multi-tensor optimizer update over `entries` (host addresses) the way the CUDA
/// launcher does: the same batches of at most 32 tensors, one launch each.
///
/// # Safety
/// Every address in `entries` points to a live f32 buffer of the entry's length, and the
/// buffers the update writes do not overlap.
pub unsafe fn multi_tensor(update: Update, entries: &[Entry]) -> Result<(), String> {
    for batch in batches(entries) {
        let table = batch.table;
        // SAFETY: the caller's contract covers every address in the table.
        launch(batch.launch(), || unsafe {
            kernels::multi_tensor(update, table)
        })?;
    }
    Ok(())
}
pub use kernels::{Kernels, BF16, F32};

/// Kernels that test the emulator itself (`emu/selftest.cpp`).
#[doc(hidden)]
pub mod selftest {
    extern "C" {
        pub fn emu_selftest_block_sum(input: *const f32, out: *mut f32);
        pub fn emu_selftest_divergent_sync();
        pub fn emu_selftest_shuffle_after_exit(out: *mut f32);
        pub fn emu_selftest_bf16_round(input: *const f32, out: *mut f32, n: usize);
    }
}
