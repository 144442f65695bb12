//! `train-conv`'s front end run in this process, on a CIFAR-10-shaped directory of random
//! images: what the data-parallel check and the default run's estimate train on (the lent GPU
//! machine has no CIFAR-10, and a run's time does not depend on the pixels).

use std::ffi::OsString;
use std::path::Path;

use anyhow::Result;
use maxsup_data::CifarSplit;

/// A CIFAR-10-shaped directory of random images (every split file at its real size: 10,000
/// records of a label byte and 3x32x32 pixel bytes).
pub fn fake_cifar(dir: &Path) -> Result<()> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    std::fs::create_dir_all(dir)?;
    let files = CifarSplit::Train
        .files()
        .iter()
        .chain(CifarSplit::Test.files());
    for (i, file) in files.enumerate() {
        let mut rng = maxsup_rng::SplitMix64::new(1000 + i as u64);
        let mut bytes = vec![0u8; 10_000 * RECORD];
        for record in bytes.chunks_exact_mut(RECORD) {
            for b in record.iter_mut() {
                *b = (rng.next_u64() >> 56) as u8;
            }
            record[0] %= 10;
        }
        std::fs::write(dir.join(file), bytes)?;
    }
    Ok(())
}

/// `train-conv` with `flags` (after the program name), in this process: its caches (cuDNN's
/// algorithms, the loaded kernels) outlive the run.
pub fn train(flags: &[&str]) -> Result<()> {
    let argv: Vec<OsString> = std::iter::once("train-conv")
        .chain(flags.iter().copied())
        .map(OsString::from)
        .collect();
    maxsup_cli::train_with_args("train-conv", maxsup_cli::ModelFamily::ResNet, &argv)
}
