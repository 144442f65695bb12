//! Subcommand modules, one file each.
pub mod calibration;
pub mod data;
pub mod extract;
pub mod gradcam;
pub mod inspect_model;
pub mod logits;
pub mod metrics;
pub mod probe;
pub mod project;
pub mod table1;
pub mod table2;

/// The value parser of counts that must be at least 1 (batch sizes, bins, iterations): clap then
/// refuses 0 naming the flag, before any work starts.
pub fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}
