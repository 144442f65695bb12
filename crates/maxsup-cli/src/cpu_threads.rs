//! candle's CPU element-wise ops run on its own thread pool ("candle-bp"), whose workers spin
//! (25,000 iterations by default) between ops before parking. Our heavy CPU work (convolutions,
//! GEMMs, BatchNorm, data loading) runs on rayon's threads, so on a machine whose cores rayon
//! already fills the spinning workers take cycles from it: on the 2-core box a ResNet-50 step
//! spent ~18% of its CPU time in that spin, and ran 1.2x slower than with candle's element-wise
//! ops kept on the calling thread (`bench/compare_torch.sh`, 2026-12-02).

/// Keeps candle's element-wise ops on the calling thread (`CANDLE_NUM_THREADS=1`) unless the
/// user set `CANDLE_NUM_THREADS`. Call first thing in `main`, before any other thread starts
/// and before the first candle op (candle reads the variable once, when it builds its pool).
pub fn candle_ops_on_calling_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, while the process has a single thread, so no
        // other thread reads the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

/// Makes the calling thread (call it from `main`) worker 0 of rayon's global pool, with `threads`
/// threads in all (None: `RAYON_NUM_THREADS`, else one per core).
///
/// Why: a thread outside the pool that starts a parallel op injects it into the pool and parks on
/// a latch until a worker has run it, then has to be woken; a training step is a few hundred such
/// ops, each paying two thread wake-ups, and the caller's core sits idle inside every one. As a
/// worker, the caller runs its share of each op itself and only waits for the part another worker
/// stole. A ResNet-50 step (batch 64, 32 px, 2 threads) took 0.86x the time of the same binary
/// with the caller outside the pool (`bench/ab_bench_train.sh`, 2026-12-03).
///
/// Call it before anything uses rayon: the global pool is built once, and an error says it
/// already was.
pub fn join_rayon_pool(threads: Option<usize>) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .use_current_thread()
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot make this thread part of rayon's pool: {e}"))
}
