//! `train-vit`: trains a DeiT. With no arguments: deit_tiny_patch4_32 with MaxSup on CIFAR-10
//! (fetched on first use). `train-vit --help` lists every option; `--recipe` picks a preset.

fn main() -> std::process::ExitCode {
    maxsup_cli::allocator::retain_freed_pages();
    maxsup_cli::cpu_threads::candle_ops_on_calling_thread();
    if let Err(e) = maxsup_cli::cpu_threads::join_rayon_pool(None) {
        eprintln!("warning: {e:#}; parallel ops run slower");
    }
    maxsup_cli::train_main("train-vit", maxsup_cli::ModelFamily::DeiT)
}
