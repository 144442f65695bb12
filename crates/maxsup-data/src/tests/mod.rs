//! Tests that reach the crate's internals (PIL operations, RandAugment's op table, the resampler,
//! the file formats' constants), kept as unit tests since those are not public.

mod augment;
mod cifar;
mod decode;
mod fashion_mnist;
