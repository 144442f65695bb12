//! Datasets (ImageNet zip cache with map files, ImageFolder, CIFAR-10), decoding, augmentation and a
//! parallel, deterministic loader. Free of candle: batches are plain `f32` buffers with shapes, so the
//! training engine decides how to move them to a device.

pub mod batch;
pub mod bounded_read;
pub mod build_zip;
pub mod cifar;
pub mod class_map;
pub mod color_jitter;
pub mod dataset;
pub mod decode;
pub mod fashion_mnist;
pub mod fetch;
pub mod geometry;
pub mod image;
pub mod image_folder;
pub mod loader;
pub mod map_file;
pub mod mixup;
pub mod normalize;
pub mod pil_affine;
pub mod pil_ops;
pub mod pipeline;
pub mod randaugment;
pub mod random_erasing;
pub mod resample;
pub mod rng;
pub mod subset;
pub mod zip_cache;

pub use batch::Batch;
pub use build_zip::build_zip_from_folder;
pub use cifar::{Cifar10, CifarSplit};
pub use class_map::ClassIndexConverter;
pub use color_jitter::ColorJitter;
pub use dataset::{Dataset, RawSample};
pub use fashion_mnist::{FashionMnist, FashionSplit};
pub use geometry::Geometry;
pub use image::RgbImage;
pub use image_folder::ImageFolder;
pub use loader::{EpochBatches, Loader, LoaderConfig, Sharding};
pub use mixup::Mixup;
pub use pipeline::Pipeline;
pub use randaugment::{AugmentOp, OpContext, RandAugment};
pub use random_erasing::{EraseMode, RandomErasing};
pub use resample::Interpolation;
pub use rng::Rng;
pub use subset::Subset;
pub use zip_cache::{ZipCache, ZipCacheOptions};
