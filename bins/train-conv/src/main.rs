//! `train-conv`: trains a ResNet. With no arguments: resnet20_cifar with MaxSup on CIFAR-10
//! (fetched on first use). `train-conv --help` lists every option; `--recipe` picks a preset.

fn main() -> std::process::ExitCode {
    maxsup_cli::allocator::retain_freed_pages();
    maxsup_cli::cpu_threads::candle_ops_on_calling_thread();
    if let Err(e) = maxsup_cli::cpu_threads::join_rayon_pool(None) {
        eprintln!("warning: {e:#}; parallel ops run slower");
    }
    maxsup_cli::train_main("train-conv", maxsup_cli::ModelFamily::ResNet)
}
