//! Scratch: GEMM throughput (CPU time) of the conv GEMMs in different operand layouts.
use std::time::Instant;
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    (f[11] + f[12]) / 100.0
}
/// dst (m x n) with strides (rs, cs) = a (m x k, rs, cs) * b (k x n, rs, cs)
fn run(name: &str, m: usize, n: usize, k: usize, d: (usize, usize), a: (usize, usize), b: (usize, usize)) {
    let av = vec![0.5f32; m * k];
    let bv = vec![0.5f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let go = |c: &mut Vec<f32>| unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), d.1 as isize, d.0 as isize, false, av.as_ptr(), a.1 as isize, a.0 as isize,
            bv.as_ptr(), b.1 as isize, b.0 as isize, 1.0, 1.0, false, false, false, gemm::Parallelism::None)
    };
    go(&mut c);
    let reps = (2e10 / (2.0 * (m * n * k) as f64)).max(3.0) as usize;
    let (t, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..reps { go(&mut c); }
    let cpu = (cpu_seconds() - c0) / reps as f64;
    let wall = t.elapsed().as_secs_f64() / reps as f64;
    println!("{name:40} m{m} n{n} k{k}: {:.1} GF/s cpu, {:.1} wall", 2.0 * (m * n * k) as f64 / cpu / 1e9, 2.0 * (m * n * k) as f64 / wall / 1e9);
}
fn main() {
    for &(o, kk, p) in &[(64usize, 576usize, 1024usize), (256, 2304, 1024), (512, 4608, 512)] {
        println!("-- O {o} K {kk} P {p}");
        // forward: Y = W (O x K) cols (K x P)
        run("fwd dst[O][P] W rm, cols rm", o, p, kk, (p, 1), (kk, 1), (p, 1));
        run("fwd dst[P][O] (as PxO = colsT W^T)", p, o, kk, (o, 1), (1, p), (1, kk));
        run("fwd dst[P][O], cols stored [P][K]", p, o, kk, (o, 1), (kk, 1), (1, kk));
        // dx: dcols (K x P) = W^T (K x O) dY (O x P)
        run("dx dst[K][P]", kk, p, o, (p, 1), (1, kk), (p, 1));
        run("dx dst[P][K] = dY^T W", p, kk, o, (kk, 1), (1, p), (kk, 1));
        // dw: dW (O x K) = dY (O x P) cols^T (P x K)
        run("dw dst[O][K], cols rm [K][P]", o, kk, p, (kk, 1), (p, 1), (1, p));
        run("dw dst[K][O] = cols dY^T", kk, o, p, (o, 1), (p, 1), (1, p));
        run("dw dst[O][K], cols [P][K]", o, kk, p, (kk, 1), (p, 1), (kk, 1));
    }
}
