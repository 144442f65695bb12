//! f32 CPU kernels behind the public ops, and the glue that moves tensors in and out of them.

/// Compiles the function it wraps for AVX-512, AVX2+FMA, SSE4.2 and the baseline, and picks the
/// best the CPU has at run time (`multiversion`, whose own `"simd"` set leaves AVX-512 out).
macro_rules! simd_kernel {
    ($($item:tt)*) => {
        #[multiversion::multiversion(targets(
            "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
            "x86_64+avx2+fma",
            "x86_64+sse4.2",
        ))]
        $($item)*
    };
}

pub mod batch_norm_images;
pub mod batch_norm_nhwc;
pub mod conv;
pub mod direct3x3;
pub mod exp;
pub mod gemm;
pub mod im2col;
pub mod lanes;
pub mod normal;
pub mod slices;
pub mod transpose;
pub mod uninit;
pub mod winograd;
