//! Datasets (ImageNet zip cache with map files, ImageFolder, CIFAR-10), decoding, augmentation and a
//! parallel, deterministic loader. Free of candle: batches are plain `f32` buffers with shapes, so the
//! training engine decides how to move them to a device.

// Internals are private: the root below is the public surface (sources, images, transforms, the
// loader), so the modules can change without breaking users.
mod batch;
mod bounded_read;
mod build_zip;
mod cifar;
mod class_map;
mod color_jitter;
mod dataset;
mod decode;
mod fashion_mnist;
pub mod fetch;
mod geometry;
mod image;
mod image_folder;
mod loader;
mod map_file;
mod mixup;
mod normalize;
mod pil_affine;
mod pil_ops;
mod pipeline;
mod randaugment;
mod random_erasing;
mod resample;
mod rng;
mod subset;
mod zip_cache;

#[cfg(test)]
mod tests;

// Sources.
pub use build_zip::build_zip_from_folder;
pub use cifar::{Cifar10, CifarSplit};
pub use class_map::ClassIndexConverter;
pub use dataset::{Dataset, RawSample};
pub use fashion_mnist::{FashionMnist, FashionSplit};
pub use image_folder::ImageFolder;
pub use subset::Subset;
pub use zip_cache::{ZipCache, ZipCacheOptions};

// Images.
pub use decode::{decode as decode_image, verify as verify_image, MAX_PIXELS};
pub use image::RgbImage;

// Transforms.
pub use color_jitter::ColorJitter;
pub use geometry::Geometry;
pub use mixup::Mixup;
pub use pipeline::{Pipeline, CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD};
pub use randaugment::{AugmentOp, OpContext, RandAugment};
pub use random_erasing::{EraseMode, RandomErasing};
pub use resample::Interpolation;
pub use rng::Rng;

// The loader.
pub use batch::{Batch, BatchImages};
pub use loader::{EpochBatches, Loader, LoaderConfig, Sharding};
