//! Compiles `../maxsup-ops/kernels/ops.cu` as C++ for the host, with `emu/cuda_bf16.h` standing
//! in for CUDA's header, and the fiber scheduler of `emu/runtime.cpp`. Needs a C++ compiler
//! (g++ or clang++, as the `cc` crate finds it); no CUDA.

fn main() {
    for f in [
        "emu/cuda_bf16.h",
        "emu/runtime.cpp",
        "emu/ops_emulated.cpp",
        "emu/selftest.cpp",
        "../maxsup-ops/kernels/ops.cu",
        "../maxsup-ops/kernels/attention.cuh",
        "emu/mma.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include("emu")
        .file("emu/runtime.cpp")
        .file("emu/ops_emulated.cpp")
        .file("emu/selftest.cpp")
        .opt_level(2)
        // IEEE arithmetic as nvcc's default except FMA contraction (results may differ from
        // the GPU's in the last bit; the tests compare with tolerances).
        .flag_if_supported("-ffp-contract=off")
        .warnings(false)
        .compile("maxsup_kernel_emu");
}
