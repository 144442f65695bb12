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
