//! Feature metrics (intra-class variation, R^2), linear probe, calibration and logit statistics
//! for models trained with and without MaxSup.
//!
//! Everything here is streaming-friendly: accumulators take batches of rows (`&[f32]` row-major
//! with an explicit width) so the training loop and the feature extractor never need to hold a
//! whole dataset.

pub mod feature_file;
pub mod separation;

pub use feature_file::{
    labels_to_classes, write_feature_file, FeatureBatch, FeatureFile, FeatureFileWriter,
};
pub use maxsup_rng::SplitMix64;
pub use separation::{ClassSeparation, SeparationMetrics};
pub mod calibration;
mod histogram;
pub use histogram::Histogram;
pub mod logits;
mod softmax_row;

pub use calibration::{
    CalibrationAccumulator, CalibrationReport, ReliabilityBin, ReliabilityDiagram,
};
pub use logits::{analyze_logits, near_zero_share, LogitSummary, DEFAULT_NEAR_ZERO_THRESHOLD};
pub use softmax_row::top1_probability;
pub mod projection;
pub use projection::{project_onto_class_plane, ClassPlaneProjection};
pub mod probe;
pub use probe::{run_probe, ProbeConfig, ProbeData, ProbeReport};
