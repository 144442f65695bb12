//! `join_rayon_pool` makes the caller a worker of the global pool. Its own test binary: the
//! global pool is built once per process.

use rayon::prelude::*;

#[test]
fn the_caller_becomes_worker_zero_and_runs_its_share() {
    assert_eq!(rayon::current_thread_index(), None);
    maxsup_cli::cpu_threads::join_rayon_pool(Some(2)).unwrap();
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert_eq!(rayon::current_num_threads(), 2);

    // A parallel op started here runs (in part) on this thread, and its result is complete.
    let caller = std::thread::current().id();
    let ran_here: Vec<bool> = (0..64)
        .into_par_iter()
        .map(|_| std::thread::current().id() == caller)
        .collect();
    assert_eq!(ran_here.len(), 64);
    assert!(ran_here.iter().any(|&here| here));

    let again = maxsup_cli::cpu_threads::join_rayon_pool(Some(2)).unwrap_err();
    assert!(again.to_string().contains("rayon's pool"), "{again}");
}
