//! The O(N·D) pass over 10^6 x 512 features, generated batch by batch (2 GB if held at once),
//! must finish with O(K·D) memory. Kept in its own test binary so the process peak-memory
//! reading (VmHWM) belongs to this test alone.

use maxsup_metrics::{ClassSeparation, SplitMix64};
use std::time::Instant;

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn million_by_512_pass_is_streaming_and_matches_expectation() {
    let (n, d, k, batch) = (1_000_000usize, 512usize, 10usize, 4096usize);
    // Class c: unit basis vector e_c plus symmetric uniform noise of per-coordinate variance 1/D.
    // Then ||x||² ≈ 2, x̂ ≈ (e_c + noise)/√2, so μ_c ≈ e_c/√2: d_within ≈ 1/2 and, the e_c being
    // orthogonal, d_total ≈ 1 - 1/(2K). Concentration in 512 dimensions keeps this within ~1e-2.
    let half_width = (3.0f32 / d as f32).sqrt();
    let before = vm_hwm_kib();
    let t0 = Instant::now();
    let mut acc = ClassSeparation::new(d);
    let mut rng = SplitMix64::new(42);
    let mut features = vec![0f32; batch * d];
    let mut labels = vec![0u32; batch];
    let mut done = 0;
    while done < n {
        let rows = batch.min(n - done);
        for i in 0..rows {
            let y = ((done + i) % k) as u32;
            labels[i] = y;
            let row = &mut features[i * d..(i + 1) * d];
            for v in row.iter_mut() {
                *v = (2.0 * rng.next_f32() - 1.0) * half_width;
            }
            row[y as usize] += 1.0;
        }
        acc.push(&features[..rows * d], &labels[..rows]).unwrap();
        done += rows;
    }
    let m = acc.finish().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let after = vm_hwm_kib();
    eprintln!(
        "10^6 x 512 pass: {secs:.2} s, VmHWM before {before:?} KiB, after {after:?} KiB, {m:?}"
    );
    assert_eq!(m.num_samples, n as u64);
    assert!((m.d_within - 0.5).abs() < 1e-2, "{m:?}");
    assert!((m.d_total - (1.0 - 0.5 / k as f64)).abs() < 1e-2, "{m:?}");
    if let (Some(b), Some(a)) = (before, after) {
        // Data would be 2 GB; a streaming pass needs the batch (8 MB) plus K·D sums.
        assert!(a < b + 64 * 1024, "peak memory grew by {} KiB", a - b);
    }
}
