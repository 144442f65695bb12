//! Loading the embedded kernels once per device and launching them on candle's stream.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::CudnnDataType;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig,
    ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::{DType, Layout, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// SASS for the target GPU plus PTX, from `build.rs`.
static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/maxsup_ops.fatbin"));

/// Per device: the loaded module and the functions looked up in it so far
/// (`cuModuleGetFunction` runs once per name, not per launch as in candle's
/// `get_or_load_custom_func`).
struct Loaded {
    module: Arc<CudaModule>,
    functions: HashMap<String, CudaFunction>,
}

fn cache() -> &'static Mutex<HashMap<DeviceId, Loaded>> {
    static CACHE: OnceLock<Mutex<HashMap<DeviceId, Loaded>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(crate) fn wrap<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> candle_core::Error + '_ {
    move |e| candle_core::Error::Cuda(format!("maxsup-ops: {what}: {e}").into())
}

/// The kernel `name` of `kernels/ops.cu` on `dev` (the module is loaded on first use).
pub(crate) fn function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    let mut loaded = cache()
        .lock()
        .map_err(|_| candle_core::Error::Msg("maxsup-ops: kernel cache poisoned".into()))?;
    let entry = match loaded.entry(dev.id()) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let image = candle_core::cuda_backend::cudarc::nvrtc::Ptx::from_binary(FATBIN.to_vec());
            let module = dev
                .cuda_stream()
                .context()
                .load_module(image)
                .map_err(wrap(
                    "loading maxsup-ops' kernels (built for another GPU? see docs/cuda.md)",
                ))?;
            v.insert(Loaded {
                module,
                functions: HashMap::new(),
            })
        }
    };
    if let Some(f) = entry.functions.get(name) {
        return Ok(f.clone());
    }
    let f = entry.module.load_function(name).map_err(wrap(name))?;
    entry.functions.insert(name.to_string(), f.clone());
    Ok(f)
}

/// The element types of the CUDA kernels: f32 and bf16 storage, f32 arithmetic.
pub(crate) trait Elem:
    CudnnDataType + DeviceRepr + CudaDType + ValidAsZeroBits + Copy + 'static
{
    const ONE: Self;
    const ZERO: Self;
    const DTYPE: DType;
    /// The suffix of the kernel names in `kernels/ops.cu`.
    const SUFFIX: &'static str;
}
impl Elem for f32 {
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;
    const DTYPE: DType = DType::F32;
    const SUFFIX: &'static str = "f32";
}
impl Elem for half::bf16 {
    const ONE: Self = half::bf16::ONE;
    const ZERO: Self = half::bf16::ZERO;
    const DTYPE: DType = DType::BF16;
    const SUFFIX: &'static str = "bf16";
}

/// `base_f32` or `base_bf16`.
pub(crate) fn name_for<T: Elem>(base: &str) -> String {
    format!("{base}_{}", T::SUFFIX)
}

/// Runs the generic `$f::<T>(args)` for the element type `$dtype` (f32 or bf16), or errors
/// naming the op.
macro_rules! by_dtype {
    ($dtype:expr, $op:expr, $f:ident ( $($a:expr),* $(,)? )) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($a),*),
            candle_core::DType::BF16 => $f::<half::bf16>($($a),*),
            other => candle_core::bail!("{}: the CUDA kernels take f32 or bf16, got {other:?}", $op),
        }
    };
}
pub(crate) use by_dtype;

/// A contiguous view of `s` under `l` as `T`, or an error naming `what`.
pub(crate) fn view<'a, T: CudaDType + DeviceRepr>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let slice = s.as_cuda_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => candle_core::bail!("maxsup-ops: {what} must be contiguous (layout {l:?})"),
    }
}

/// A contiguous f32 view of a per-channel parameter or statistics tensor, or an error naming
/// `what` when it is not f32 (norm parameters stay f32 next to bf16 activations).
pub(crate) fn f32_view<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaView<'a, f32>> {
    if s.dtype() != DType::F32 {
        candle_core::bail!("{what} must be f32, got {:?}", s.dtype());
    }
    view::<f32>(s, l, what)
}

/// The device address of an optional operand, for a kernel parameter that may be null (0 when
/// absent). The view must outlive the launch.
pub(crate) fn address_or_null<T>(v: Option<&CudaView<'_, T>>, dev: &CudaDevice) -> u64 {
    let stream = dev.cuda_stream();
    v.map_or(0, |v| v.device_ptr(&stream).0)
}

/// An uninitialised device buffer of `n` elements for a kernel that writes all of them.
pub(crate) fn output<T: DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller launches a kernel that writes all `n` elements before any read.
    unsafe { dev.alloc::<T>(n.max(1)) }
}

impl From<crate::kernel_geometry::Launch> for LaunchConfig {
    fn from(l: crate::kernel_geometry::Launch) -> Self {
        LaunchConfig {
            grid_dim: l.grid,
            block_dim: l.block,
            shared_mem_bytes: l.shared_bytes,
        }
    }
}

/// Launches kernel `$name` of `kernels/ops.cu` on `$dev`'s stream with the given argument
/// references (bind scalars to locals first: the references must outlive the launch).
///
/// The caller guarantees that the argument list matches the kernel's signature and that every
/// buffer holds the element counts passed.
macro_rules! launch_kernel {
    ($dev:expr, $name:expr, $cfg:expr, $($arg:expr),* $(,)?) => {{
        #[allow(unused_imports)]
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        let name: &str = &$name;
        let func = $crate::cuda::function($dev, name)?;
        let cfg = LaunchConfig::from($cfg);
        let stream = $dev.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        $( builder.arg($arg); )*
        $crate::cuda::kernel_times::timed(&stream, name, || {
            // SAFETY: see the macro's contract above.
            unsafe { builder.launch(cfg) }.map_err(|e| {
                candle_core::Error::Cuda(format!("maxsup-ops: launching {name}: {e}").into())
            })
        })?;
    }};
}
pub(crate) use launch_kernel;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_carry_the_dtype_suffix() {
        assert_eq!(name_for::<f32>("relu_fwd"), "relu_fwd_f32");
        assert_eq!(name_for::<half::bf16>("bn_apply"), "bn_apply_bf16");
    }
}
