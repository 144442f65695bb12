//! Algorithms chosen by timing them (`set_cudnn_benchmark(true)`, PyTorch's `cudnn.benchmark`):
//! cuDNN's `cudnnFind*Algorithm` runs every algorithm of a pass on scratch buffers it allocates
//! itself and returns them fastest first. cudarc 0.19 keeps the handles of its safe descriptors
//! private, so the search builds its own (raw) handle and descriptors from the same
//! [`ConvShape`] and math type as the launch's, and hands back the algorithm as its integer
//! value with the workspace it needs; the launch then uses cudarc's safe descriptors.

use super::{ConvShape, Pass};
use candle_core::cuda_backend::cudarc::cudnn::{result, sys, CudnnError};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use std::cell::RefCell;
use std::collections::HashMap;

/// Largest workspace a timed choice may need (the search skips faster algorithms beyond it).
const MAX_WORKSPACE: usize = 4 << 30;

thread_local! {
    // A raw cuDNN handle per device (handles are not Send), on the device's stream.
    static HANDLES: RefCell<HashMap<DeviceId, RawHandle>> = RefCell::new(HashMap::new());
}

struct RawHandle(sys::cudnnHandle_t);

impl Drop for RawHandle {
    fn drop(&mut self) {
        // SAFETY: created by `result::create_handle` and destroyed once, here.
        let _ = unsafe { result::destroy_handle(self.0) };
    }
}

/// The raw descriptors of one convolution, destroyed together.
struct Raw {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created by its `result::create_*` and is destroyed once.
        unsafe {
            let _ = result::destroy_tensor_descriptor(self.x);
            let _ = result::destroy_filter_descriptor(self.w);
            let _ = result::destroy_tensor_descriptor(self.y);
            let _ = result::destroy_convolution_descriptor(self.conv);
        }
    }
}

fn describe(
    s: &ConvShape,
    data: sys::cudnnDataType_t,
    math: sys::cudnnMathType_t,
) -> Result<Raw, CudnnError> {
    let i = |v: usize| v as i32;
    let (oh, ow) = s.out_hw();
    let format = s.format();
    let raw = Raw {
        x: result::create_tensor_descriptor()?,
        w: result::create_filter_descriptor()?,
        y: result::create_tensor_descriptor()?,
        conv: result::create_convolution_descriptor()?,
    };
    // SAFETY: the descriptors were just created; the values are the launch descriptors'.
    unsafe {
        result::set_tensor4d_descriptor(raw.x, format, data, [i(s.n), i(s.c), i(s.h), i(s.w)])?;
        let filter = [i(s.o), i(s.c / s.groups), i(s.kh), i(s.kw)];
        result::set_filter4d_descriptor(raw.w, data, format, filter)?;
        result::set_tensor4d_descriptor(raw.y, format, data, [i(s.n), i(s.o), i(oh), i(ow)])?;
        result::set_convolution2d_descriptor(
            raw.conv,
            i(s.pad),
            i(s.pad),
            i(s.stride),
            i(s.stride),
            i(s.dil),
            i(s.dil),
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        )?;
        if s.groups > 1 {
            result::set_convolution_group_count(raw.conv, i(s.groups))?;
        }
        result::set_convolution_math_type(raw.conv, math)?;
    }
    Ok(raw)
}

/// One timed result, whatever the pass.
struct Timed {
    algo: u32,
    ok: bool,
    memory: usize,
    math: sys::cudnnMathType_t,
}

/// Runs one `cudnnFind*Algorithm` call with a perf array of `$n` entries (the pass's algorithm
/// count) and maps what it wrote to [`Timed`]s.
macro_rules! find_timed {
    ($call:path, $perf:ty, $n:expr, $handle:expr, ($a:expr, $b:expr, $conv:expr, $c:expr)) => {{
        let mut count = 0i32;
        let mut perf = [std::mem::zeroed::<$perf>(); $n];
        $call(
            $handle,
            $a,
            $b,
            $conv,
            $c,
            $n,
            &mut count,
            perf.as_mut_ptr(),
        )
        .result()?;
        Ok(perf[..count.clamp(0, $n) as usize]
            .iter()
            .map(|p| Timed {
                algo: p.algo as u32,
                ok: p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS,
                memory: p.memory,
                math: p.mathType,
            })
            .collect())
    }};
}

/// The fastest algorithm of `pass` for `s` that succeeded under the launch's math type (entries
/// timed under another one are skipped: the launch keeps its descriptor's math type) and needs
/// at most [`MAX_WORKSPACE`], with its workspace in bytes.
pub(super) fn fastest(
    dev: &CudaDevice,
    s: &ConvShape,
    pass: Pass,
    data: sys::cudnnDataType_t,
    math: sys::cudnnMathType_t,
) -> Result<(u32, usize), String> {
    // cuDNN's handle belongs to the context current on the thread.
    dev.cuda_stream()
        .context()
        .bind_to_thread()
        .map_err(|e| format!("cudnnFind: binding the CUDA context: {e}"))?;
    let timed = HANDLES
        .with(|h| -> Result<Vec<Timed>, CudnnError> {
            let mut handles = h.borrow_mut();
            let handle = match handles.get(&dev.id()) {
                Some(h) => h.0,
                None => {
                    let stream = dev.cuda_stream();
                    let raw = RawHandle(result::create_handle()?);
                    // SAFETY: a live handle, set to candle's stream of the device.
                    unsafe { result::set_stream(raw.0, stream.cu_stream() as *mut _) }?;
                    let h = raw.0;
                    handles.insert(dev.id(), raw);
                    h
                }
            };
            let d = describe(s, data, math)?;
            // SAFETY (each arm): live handle and descriptors, in the order the call takes them;
            // the perf array holds the count requested and cuDNN writes at most that many.
            unsafe {
                match pass {
                    Pass::Forward => find_timed!(
                        sys::cudnnFindConvolutionForwardAlgorithm,
                        sys::cudnnConvolutionFwdAlgoPerf_t,
                        8,
                        handle,
                        (d.x, d.w, d.conv, d.y)
                    ),
                    Pass::Data => find_timed!(
                        sys::cudnnFindConvolutionBackwardDataAlgorithm,
                        sys::cudnnConvolutionBwdDataAlgoPerf_t,
                        6,
                        handle,
                        (d.w, d.y, d.conv, d.x)
                    ),
                    Pass::Filter => find_timed!(
                        sys::cudnnFindConvolutionBackwardFilterAlgorithm,
                        sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                        7,
                        handle,
                        (d.x, d.y, d.conv, d.w)
                    ),
                }
            }
        })
        .map_err(|e| format!("cudnnFind ({pass:?}, {s:?}): {e:?}"))?;
    timed
        .iter()
        .find(|t| t.ok && t.math == math && t.memory <= MAX_WORKSPACE)
        .map(|t| (t.algo, t.memory))
        .ok_or_else(|| {
            format!(
                "cudnnFind ({pass:?}, {s:?}): none of {} timed algorithms usable",
                timed.len()
            )
        })
}
