//! `train-conv`: trains a ResNet. With no arguments: resnet20_cifar with MaxSup on CIFAR-10
//! (fetched on first use). `train-conv --help` lists every option; `--recipe` picks a preset.

/// mimalloc keeps freed pages mapped: with glibc's allocator every large activation tensor was a
/// fresh mmap, and the page faults and kernel page clearing cost ~10% of a training step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    maxsup_cli::allocator::retain_freed_pages();
    maxsup_cli::train_main(
        "train-conv",
        maxsup_cli::ModelFamily::Conv,
        "cifar10-resnet20",
    )
}
