//! Convolutions through cuDNN: forward, backward-data and backward-filter, grouped convolutions
//! as one call (BlurPool's depthwise filter), algorithms chosen once per shape, one growable
//! workspace per device. candle itself runs cuDNN for the forward only and naive kernels for both
//! gradients.

use super::kernel_times::timed;
use super::launch::{output, Elem};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::safe::{
    ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn,
};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId};
use candle_core::{DType, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod find;

/// Everything that defines one convolution: the input's N, C, H, W and the weight's O, C/groups,
/// KH, KW (in NCHW / OIHW order whatever the format), square stride/padding/dilation, and the
/// memory format: NCHW data with OIHW weights, or NHWC data with OHWI weights (cuDNN's
/// `CUDNN_TENSOR_NHWC` for both, the layout of its tensor-core kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub groups: usize,
    pub nhwc: bool,
}

impl ConvShape {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let out =
            |len: usize, k: usize| (len + 2 * self.pad - self.dil * (k - 1) - 1) / self.stride + 1;
        (out(self.h, self.kh), out(self.w, self.kw))
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn w_len(&self) -> usize {
        self.o * (self.c / self.groups) * self.kh * self.kw
    }
    pub fn y_len(&self) -> usize {
        let (oh, ow) = self.out_hw();
        self.n * self.o * oh * ow
    }
    /// cuDNN's name of the memory format (of the data and of the filter).
    pub fn format(&self) -> sys::cudnnTensorFormat_t {
        match self.nhwc {
            false => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            true => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    Data,
    Filter,
}

/// The cached choice for one (shape, dtype, TF32, pass, timed or heuristic): cuDNN's algorithm
/// as its integer value and the workspace it needs.
type AlgoKey = (DeviceId, ConvShape, DType, bool, Pass, bool);

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per device per thread, like candle's.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static ALGOS: RefCell<HashMap<AlgoKey, find::Choice>> = RefCell::new(HashMap::new());
    static WORKSPACES: RefCell<HashMap<DeviceId, CudaSlice<u8>>> = RefCell::new(HashMap::new());
}

fn wrap_err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> candle_core::Error {
    move |e| candle_core::Error::Cuda(format!("cuDNN {what}: {e:?}").into())
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(wrap_err("handle"))?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// Lets go of this thread's convolution workspaces (stream-ordered frees into the pool); the
/// next convolution takes one of the size it needs. For measurements that compare peak memory
/// across configurations: a workspace grown by an earlier one would count in a later one.
pub fn release_workspaces() {
    WORKSPACES.with(|ws| ws.borrow_mut().clear());
}

/// Runs `f` with a workspace of at least `bytes` on `dev` (grown, not shrunk while what grew it
/// runs; stream-ordered, so reusing it from one call to the next needs no synchronisation). The
/// old buffer goes back to the pool before the larger one is taken, and a buffer grown for an
/// algorithm that then failed is let go, so that the cheaper one chosen next does not keep it.
fn with_workspace<R>(
    dev: &CudaDevice,
    bytes: usize,
    f: impl FnOnce(&mut CudaSlice<u8>) -> Result<R>,
) -> Result<R> {
    WORKSPACES.with(|ws| {
        let mut ws = ws.borrow_mut();
        let grow = ws.get(&dev.id()).is_none_or(|w| w.len() < bytes);
        if grow {
            ws.remove(&dev.id());
            ws.insert(dev.id(), output::<u8>(dev, bytes.max(1 << 20))?);
        }
        let ran = f(ws.get_mut(&dev.id()).expect("workspace inserted above"));
        if grow && ran.is_err() {
            ws.remove(&dev.id());
        }
        ran
    })
}

/// Descriptors of one convolution for element type `T` (compute in f32).
struct Descriptors<T: Elem> {
    conv: candle_core::cuda_backend::cudarc::cudnn::safe::ConvDescriptor<f32>,
    x: candle_core::cuda_backend::cudarc::cudnn::safe::TensorDescriptor<T>,
    w: candle_core::cuda_backend::cudarc::cudnn::safe::FilterDescriptor<T>,
    y: candle_core::cuda_backend::cudarc::cudnn::safe::TensorDescriptor<T>,
}

fn descriptors<T: Elem>(cudnn: &Arc<Cudnn>, s: &ConvShape) -> Result<Descriptors<T>> {
    let i = |v: usize| v as i32;
    let mut conv = cudnn
        .create_conv2d::<f32>(
            [i(s.pad), i(s.pad)],
            [i(s.stride), i(s.stride)],
            [i(s.dil), i(s.dil)],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(wrap_err("convolution descriptor"))?;
    if s.groups > 1 {
        conv.set_group_count(i(s.groups))
            .map_err(wrap_err("group count"))?;
    }
    conv.set_math_type(math_type::<T>())
        .map_err(wrap_err("math type"))?;
    // cuDNN takes the dimensions in N, C, H, W order for either format.
    let format = s.format();
    let (oh, ow) = s.out_hw();
    let x = cudnn
        .create_4d_tensor::<T>(format, [i(s.n), i(s.c), i(s.h), i(s.w)])
        .map_err(wrap_err("input descriptor"))?;
    let w = cudnn
        .create_4d_filter::<T>(format, [i(s.o), i(s.c / s.groups), i(s.kh), i(s.kw)])
        .map_err(wrap_err("filter descriptor"))?;
    let y = cudnn
        .create_4d_tensor::<T>(format, [i(s.n), i(s.o), i(oh), i(ow)])
        .map_err(wrap_err("output descriptor"))?;
    Ok(Descriptors { conv, x, w, y })
}

/// As PyTorch: bf16 on tensor cores; f32 with TF32 allowed: the default (TF32 tensor cores,
/// never a conversion to 16-bit types); strict f32: FMA kernels only (within 1e-4 of the CPU).
fn math_type<T: Elem>() -> sys::cudnnMathType_t {
    match (T::DTYPE, super::tf32()) {
        (DType::F32, false) => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        (DType::F32, true) => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        _ => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
    }
}

fn key<T: Elem>(dev: &CudaDevice, s: &ConvShape, pass: Pass) -> AlgoKey {
    let timed = super::cudnn_benchmark();
    (dev.id(), *s, T::DTYPE, super::tf32(), pass, timed)
}

static FALLBACKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Why timed choices fell back to the heuristic (distinct messages, at most 16).
pub(crate) fn find_fallbacks() -> Vec<String> {
    FALLBACKS.lock().map(|v| v.clone()).unwrap_or_default()
}

fn note_fallback(why: String) {
    if let Ok(mut v) = FALLBACKS.lock() {
        if v.len() < 16 && !v.contains(&why) {
            v.push(why);
        }
    }
}

/// Runs `pass` of `s` with `launch(descriptors, algorithm, workspace)`: with the algorithm
/// cached for it, else with each candidate in turn until one runs, which is then cached. The
/// candidates are cuDNN's timed list when `set_cudnn_benchmark(true)` (a failed timing is kept
/// for [`find_fallbacks`]) followed by its heuristic list; each runs under the math type it was
/// ranked under, with its workspace. So an algorithm whose workspace cannot be allocated, or
/// that cuDNN refuses at launch, costs one try instead of failing every step.
fn run_pass<T: Elem>(
    dev: &CudaDevice,
    s: &ConvShape,
    pass: Pass,
    d: &mut Descriptors<T>,
    mut launch: impl FnMut(&Descriptors<T>, u32, &mut CudaSlice<u8>) -> Result<()>,
) -> Result<()> {
    let key = key::<T>(dev, s, pass);
    let mut attempt = |d: &mut Descriptors<T>, c: find::Choice| -> Result<()> {
        d.conv
            .set_math_type(c.math)
            .map_err(wrap_err("math type"))?;
        with_workspace(dev, c.memory, |ws| launch(d, c.algo, ws))
    };
    if let Some(c) = ALGOS.with(|a| a.borrow().get(&key).copied()) {
        return attempt(d, c);
    }
    let math = math_type::<T>();
    let ranked = |ranking| find::candidates(dev, s, pass, T::DATA_TYPE, math, ranking);
    let mut lists = Vec::new();
    if key.5 {
        match ranked(find::Ranking::Timed) {
            Ok(timed) => lists.push(timed),
            Err(why) => note_fallback(why),
        }
    }
    let mut failures = Vec::new();
    match ranked(find::Ranking::Heuristic) {
        Ok(h) => lists.push(h),
        Err(why) => failures.push(why),
    }
    match crate::fall_through::first_that_runs(lists, |c| attempt(d, c)) {
        Ok(c) => {
            ALGOS.with(|m| m.borrow_mut().insert(key, c));
            return Ok(());
        }
        Err(tried) => failures.extend(
            tried
                .into_iter()
                .map(|(c, e)| format!("algorithm {} ({:?}): {e}", c.algo, c.math)),
        ),
    }
    candle_core::bail!(
        "cuDNN {pass:?} convolution {s:?}: no algorithm ran: {}",
        failures.join("; ")
    )
}

fn fwd_algo(v: u32) -> sys::cudnnConvolutionFwdAlgo_t {
    // SAFETY: `v` was produced from this enum by `algorithm`'s pick (`as u32`), same layout.
    unsafe { std::mem::transmute::<u32, sys::cudnnConvolutionFwdAlgo_t>(v) }
}
fn data_algo(v: u32) -> sys::cudnnConvolutionBwdDataAlgo_t {
    // SAFETY: as `fwd_algo`.
    unsafe { std::mem::transmute::<u32, sys::cudnnConvolutionBwdDataAlgo_t>(v) }
}
fn filter_algo(v: u32) -> sys::cudnnConvolutionBwdFilterAlgo_t {
    // SAFETY: as `fwd_algo`.
    unsafe { std::mem::transmute::<u32, sys::cudnnConvolutionBwdFilterAlgo_t>(v) }
}

fn typed_forward<T: Elem>(
    dev: &CudaDevice,
    s: &ConvShape,
    x: &CudaView<T>,
    w: &CudaView<T>,
) -> Result<CudaStorage> {
    let cudnn = handle(dev)?;
    let mut d = descriptors::<T>(&cudnn, s)?;
    let mut y = output::<T>(dev, s.y_len())?;
    run_pass::<T>(dev, s, Pass::Forward, &mut d, |d, algo, ws| {
        let op = ConvForward {
            conv: &d.conv,
            x: &d.x,
            w: &d.w,
            y: &d.y,
        };
        timed(&dev.cuda_stream(), "cudnn conv forward", || {
            // SAFETY: x, w and y match the descriptors (shapes from `s`, element type `T`).
            unsafe { op.launch(fwd_algo(algo), Some(ws), (T::ONE, T::ZERO), x, w, &mut y) }
                .map_err(cudnn_err_status("forward"))
        })
    })?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

fn cudnn_err_status(
    what: &'static str,
) -> impl FnOnce(candle_core::cuda_backend::cudarc::cudnn::CudnnError) -> candle_core::Error {
    move |e| candle_core::Error::Cuda(format!("cuDNN {what}: {e:?}").into())
}

/// The input and weight gradients of one convolution, each when asked for.
fn typed_backward<T: Elem>(
    dev: &CudaDevice,
    s: &ConvShape,
    x: &CudaView<T>,
    w: &CudaView<T>,
    dy: &CudaView<T>,
    need_dx: bool,
    need_dw: bool,
) -> Result<(Option<CudaStorage>, Option<CudaStorage>)> {
    let cudnn = handle(dev)?;
    let mut d = descriptors::<T>(&cudnn, s)?;
    let mut grads = (None, None);
    if need_dx {
        let mut dx = output::<T>(dev, s.x_len())?;
        run_pass::<T>(dev, s, Pass::Data, &mut d, |d, algo, ws| {
            let op = ConvBackwardData {
                conv: &d.conv,
                dx: &d.x,
                w: &d.w,
                dy: &d.y,
            };
            timed(&dev.cuda_stream(), "cudnn conv backward-data", || {
                // SAFETY: dx, w and dy match the descriptors.
                unsafe { op.launch(data_algo(algo), Some(ws), (T::ONE, T::ZERO), &mut dx, w, dy) }
                    .map_err(cudnn_err_status("backward-data"))
            })
        })?;
        grads.0 = Some(CudaStorage::wrap_cuda_slice(dx, dev.clone()));
    }
    if need_dw {
        let mut dw = output::<T>(dev, s.w_len())?;
        run_pass::<T>(dev, s, Pass::Filter, &mut d, |d, algo, ws| {
            let op = ConvBackwardFilter {
                conv: &d.conv,
                x: &d.x,
                dw: &d.w,
                dy: &d.y,
            };
            timed(&dev.cuda_stream(), "cudnn conv backward-filter", || {
                // SAFETY: x, dw and dy match the descriptors.
                unsafe {
                    op.launch(
                        filter_algo(algo),
                        Some(ws),
                        (T::ONE, T::ZERO),
                        x,
                        &mut dw,
                        dy,
                    )
                }
                .map_err(cudnn_err_status("backward-filter"))
            })
        })?;
        grads.1 = Some(CudaStorage::wrap_cuda_slice(dw, dev.clone()));
    }
    Ok(grads)
}

/// `conv2d(x, w)` for contiguous f32 or bf16 storages.
pub(crate) fn conv2d_forward(
    s: &ConvShape,
    x: &CudaStorage,
    xl: &candle_core::Layout,
    w: &CudaStorage,
    wl: &candle_core::Layout,
) -> Result<CudaStorage> {
    use super::launch::view;
    let dev = x.device.clone();
    match x.dtype() {
        DType::F32 => typed_forward::<f32>(
            &dev,
            s,
            &view(x, xl, "conv2d input")?,
            &view(w, wl, "conv2d weight")?,
        ),
        DType::BF16 => typed_forward::<half::bf16>(
            &dev,
            s,
            &view(x, xl, "conv2d input")?,
            &view(w, wl, "conv2d weight")?,
        ),
        other => candle_core::bail!("conv2d: CUDA path takes f32 or bf16, got {other:?}"),
    }
}

/// `(dx, dw)`, each when asked for by `need`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_backward(
    s: &ConvShape,
    x: &CudaStorage,
    xl: &candle_core::Layout,
    w: &CudaStorage,
    wl: &candle_core::Layout,
    dy: &CudaStorage,
    dyl: &candle_core::Layout,
    need: (bool, bool),
) -> Result<(Option<CudaStorage>, Option<CudaStorage>)> {
    use super::launch::view;
    let dev = x.device.clone();
    macro_rules! run {
        ($t:ty) => {
            typed_backward::<$t>(
                &dev,
                s,
                &view(x, xl, "conv2d input")?,
                &view(w, wl, "conv2d weight")?,
                &view(dy, dyl, "conv2d output gradient")?,
                need.0,
                need.1,
            )
        };
    }
    match x.dtype() {
        DType::F32 => run!(f32),
        DType::BF16 => run!(half::bf16),
        other => candle_core::bail!("conv2d backward: CUDA path takes f32 or bf16, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::im2col::ConvGeom;

    /// Batch 2 (or `n`), square input `hw`, square kernel `k`, dilation 1.
    fn shape(
        (n, c, hw): (usize, usize, usize),
        (o, k): (usize, usize),
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ConvShape {
        ConvShape {
            n,
            c,
            h: hw,
            w: hw,
            o,
            kh: k,
            kw: k,
            stride,
            pad,
            dil: 1,
            groups,
            nhwc: false,
        }
    }

    #[test]
    fn output_size_and_lengths_match_the_cpu_geometry() {
        for (c, hw, o, k, s, p) in [
            (3, 224, 64, 7, 2, 3),
            (64, 56, 64, 3, 1, 1),
            (256, 56, 512, 1, 2, 0),
            (3, 224, 384, 16, 16, 0),
            (16, 33, 8, 3, 2, 1),
        ] {
            let cs = shape((2, c, hw), (o, k), s, p, 1);
            let g = ConvGeom::new((2, c, hw, hw), (o, c, k, k), s, p, 1).unwrap();
            assert_eq!(cs.out_hw(), (g.oh, g.ow), "{cs:?}");
            assert_eq!(cs.y_len(), 2 * o * g.oh * g.ow);
            assert_eq!(cs.x_len(), 2 * c * hw * hw);
            assert_eq!(cs.w_len(), o * c * k * k);
        }
    }

    #[test]
    fn the_format_reaches_the_descriptors_and_the_cache_key() {
        let nchw = shape((2, 64, 56), (64, 3), 1, 1, 1);
        let nhwc = ConvShape { nhwc: true, ..nchw };
        assert_eq!(nchw.format(), sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW);
        assert_eq!(nhwc.format(), sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC);
        assert_ne!(nchw, nhwc, "each format gets its own cached algorithm");
        assert_eq!((nchw.x_len(), nchw.y_len()), (nhwc.x_len(), nhwc.y_len()));
    }

    #[test]
    fn grouped_weights_hold_in_channels_over_groups() {
        let depthwise = shape((4, 16, 16), (16, 3), 1, 1, 16);
        assert_eq!(depthwise.w_len(), 16 * 3 * 3);
        assert_eq!(depthwise.out_hw(), (16, 16));
    }
}
