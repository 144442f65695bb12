//! The emulator against closed forms: shuffles and shared memory give exact block sums under
//! every schedule, barrier misuse and launches a GPU rejects are errors (not hangs), and the
//! stand-in bf16 conversion rounds as the `half` crate (round to nearest, ties to even).

use half::bf16;
use maxsup_kernel_emu::selftest::*;
use maxsup_kernel_emu::{launch, Launch};
use maxsup_ops::kernel_geometry::blocks;

#[test]
fn block_sums_through_shuffles_and_shared_memory_are_exact() {
    // Small integers: every order of f32 additions gives the exact sum. Eight blocks cover all
    // four schedules twice.
    for threads in [32u32, 256, 1024] {
        let n = 8 * threads as usize;
        let input: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let mut out = vec![f32::NAN; 8];
        let (ip, op) = (input.as_ptr(), out.as_mut_ptr());
        launch(blocks(8, threads, 0), || unsafe {
            emu_selftest_block_sum(ip, op)
        })
        .unwrap();
        for (b, got) in out.iter().enumerate() {
            let t = threads as usize;
            let want: f32 = input[b * t..(b + 1) * t].iter().sum();
            assert_eq!(*got, want, "block {b} of {threads} threads");
        }
    }
}

#[test]
fn barrier_misuse_is_reported() {
    let err = launch(blocks(1, 64, 0), || unsafe {
        emu_selftest_divergent_sync()
    })
    .unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
    let mut out = vec![0f32; 32];
    let op = out.as_mut_ptr();
    let err = launch(blocks(1, 32, 0), || unsafe {
        emu_selftest_shuffle_after_exit(op)
    })
    .unwrap_err();
    assert!(
        err.contains("31 lanes wait at a full-mask shuffle"),
        "{err}"
    );
}

#[test]
fn launches_a_gpu_rejects_are_errors() {
    let body = || unsafe { emu_selftest_divergent_sync() };
    let too_many_threads = blocks(1, 2048, 0);
    assert!(launch(too_many_threads, body)
        .unwrap_err()
        .contains("block size"));
    let tall = Launch {
        grid: (1, 70_000, 1),
        block: (32, 1, 1),
        shared_bytes: 0,
    };
    assert!(launch(tall, body).unwrap_err().contains("grid size"));
    let big_shared = blocks(1, 32, 64 * 1024);
    assert!(launch(big_shared, body)
        .unwrap_err()
        .contains("shared memory"));
}

#[test]
fn bf16_conversion_rounds_to_nearest_even() {
    // Every bf16 value (round trip exact) and the midpoints between neighbours (ties to even),
    // plus values near the overflow threshold and NaNs.
    let mut input: Vec<f32> = (0..=u16::MAX)
        .map(|b| bf16::from_bits(b).to_f32())
        .collect();
    input.extend((0..=u16::MAX).map(|b| f32::from_bits(((b as u32) << 16) | 0x8000)));
    input.extend((0..=u16::MAX).map(|b| f32::from_bits(((b as u32) << 16) | 0x7fff)));
    input.extend([
        f32::MAX,
        3.3961e38,
        f32::INFINITY,
        -f32::NAN,
        f32::from_bits(0x7f80_0001),
    ]);
    let n = input.len();
    let mut out = vec![0f32; n];
    let (ip, op) = (input.as_ptr(), out.as_mut_ptr());
    launch(blocks(64, 256, 0), || unsafe {
        emu_selftest_bf16_round(ip, op, n)
    })
    .unwrap();
    for (x, got) in input.iter().zip(&out) {
        let want = bf16::from_f32(*x).to_f32();
        if want.is_nan() {
            assert!(got.is_nan(), "{x:e}: got {got:e}, want NaN");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{x:e} ({:#x})", x.to_bits());
        }
    }
}
