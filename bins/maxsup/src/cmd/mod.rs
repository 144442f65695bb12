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
