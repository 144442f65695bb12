//! The terminal side of `train-conv` and `train-vit`: one argument set on top of the recipe
//! presets, a progress bar, the summary table and the fetch of CIFAR-10 for the default run.
//!
//! Unlike the library crates, this crate owns the terminal by design: it is the body of the two
//! binaries, which only choose their model family and default recipe.

pub mod allocator;
mod args;
pub mod cpu_threads;
mod dataset_args;
mod progress;
mod run;

pub use args::TrainArgs;
pub use dataset_args::DatasetArgs;
pub use run::{default_recipe, train_main, train_with_args, ModelFamily};
