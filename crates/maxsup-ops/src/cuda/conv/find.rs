//! The algorithms a convolution pass may run, best first: timed by cuDNN's
//! `cudnnFind*Algorithm` (`set_cudnn_benchmark(true)`, PyTorch's `cudnn.benchmark`: every
//! algorithm run on scratch buffers cuDNN allocates itself), or ranked by its heuristic
//! (`cudnnGet*Algorithm_v7`). Each list holds every entry that succeeded, with its workspace and
//! the math type it was ranked under, so the launch can fall through to the next when one fails
//! (a workspace that cannot be allocated, `NOT_SUPPORTED`), as PyTorch does; cudarc's
//! `pick_algorithm` keeps only the first entry and its algorithm alone. cudarc 0.19 keeps the
//! handles of its safe descriptors private, so the queries build their own (raw) handle and
//! descriptors from the same [`ConvShape`] and math type as the launch's; the launch then uses
//! cudarc's safe descriptors with the entry's math type.

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

/// One algorithm of a pass: its integer value, the workspace it needs and the math type it was
/// ranked under.
#[derive(Clone, Copy, Debug)]
pub(super) struct Choice {
    pub algo: u32,
    pub memory: usize,
    pub math: sys::cudnnMathType_t,
}

/// The same algorithm under the same math type, whatever workspace each list reports for it
/// (the timed and the heuristic lists may differ there): the fall-through tries it once.
impl PartialEq for Choice {
    fn eq(&self, other: &Self) -> bool {
        (self.algo, self.math) == (other.algo, other.math)
    }
}

/// Runs one `cudnnFind*Algorithm` or `cudnnGet*Algorithm_v7` call (same parameters) with a
/// perf array of `$n` entries and keeps the entries that succeeded, in cuDNN's order.
macro_rules! ranked {
    ($call:expr, $perf:ty, $n:expr, $handle:expr, ($a:expr, $b:expr, $conv:expr, $c:expr)) => {{
        let n: i32 = ($n).max(1);
        let mut count = 0i32;
        let mut perf: Vec<$perf> = (0..n).map(|_| std::mem::zeroed()).collect();
        let call = $call;
        call($handle, $a, $b, $conv, $c, n, &mut count, perf.as_mut_ptr()).result()?;
        Ok(perf[..count.clamp(0, n) as usize]
            .iter()
            .filter(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .map(|p| Choice {
                algo: p.algo as u32,
                memory: p.memory,
                math: p.mathType,
            })
            .collect())
    }};
}

/// The pass's algorithm count as cuDNN reports it (`cudnnGet*AlgorithmMaxCount`: entries come
/// once per math type, so there may be more than the algorithm enum has).
macro_rules! max_count {
    ($call:path, $handle:expr) => {{
        let mut n = 0i32;
        $call($handle, &mut n).result()?;
        n
    }};
}

/// How the list is ranked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Ranking {
    Timed,
    Heuristic,
}

/// The algorithms of `pass` for `s` that cuDNN ranks (timed or by heuristic) as succeeding,
/// within [`MAX_WORKSPACE`], best first; an error says why there is no list.
pub(super) fn candidates(
    dev: &CudaDevice,
    s: &ConvShape,
    pass: Pass,
    data: sys::cudnnDataType_t,
    math: sys::cudnnMathType_t,
    ranking: Ranking,
) -> Result<Vec<Choice>, String> {
    let what = match ranking {
        Ranking::Timed => "cudnnFind",
        Ranking::Heuristic => "cudnnGet_v7",
    };
    // cuDNN's handle belongs to the context current on the thread.
    dev.cuda_stream()
        .context()
        .bind_to_thread()
        .map_err(|e| format!("{what}: binding the CUDA context: {e}"))?;
    let list = HANDLES
        .with(|h| -> Result<Vec<Choice>, CudnnError> {
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
                // The timed and the heuristic query of a pass take the same parameters.
                let timed = ranking == Ranking::Timed;
                match pass {
                    Pass::Forward => ranked!(
                        if timed {
                            sys::cudnnFindConvolutionForwardAlgorithm
                        } else {
                            sys::cudnnGetConvolutionForwardAlgorithm_v7
                        },
                        sys::cudnnConvolutionFwdAlgoPerf_t,
                        max_count!(sys::cudnnGetConvolutionForwardAlgorithmMaxCount, handle),
                        handle,
                        (d.x, d.w, d.conv, d.y)
                    ),
                    Pass::Data => ranked!(
                        if timed {
                            sys::cudnnFindConvolutionBackwardDataAlgorithm
                        } else {
                            sys::cudnnGetConvolutionBackwardDataAlgorithm_v7
                        },
                        sys::cudnnConvolutionBwdDataAlgoPerf_t,
                        max_count!(
                            sys::cudnnGetConvolutionBackwardDataAlgorithmMaxCount,
                            handle
                        ),
                        handle,
                        (d.w, d.y, d.conv, d.x)
                    ),
                    Pass::Filter => ranked!(
                        if timed {
                            sys::cudnnFindConvolutionBackwardFilterAlgorithm
                        } else {
                            sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7
                        },
                        sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                        max_count!(
                            sys::cudnnGetConvolutionBackwardFilterAlgorithmMaxCount,
                            handle
                        ),
                        handle,
                        (d.x, d.y, d.conv, d.w)
                    ),
                }
            }
        })
        .map_err(|e| format!("{what} ({pass:?}, {s:?}): {e:?}"))?;
    let usable = usable(&list, math);
    if usable.is_empty() {
        return Err(format!(
            "{what} ({pass:?}, {s:?}): none of {} ranked algorithms usable",
            list.len()
        ));
    }
    Ok(usable)
}

/// The entries a launch may run under the descriptor math type `math`, in their order, each
/// with the math type it will run under: strict f32 (`FMA_MATH`) runs every entry under FMA
/// (never on TF32 tensor cores, whatever the entry was ranked under); otherwise each entry runs
/// under its own math type, as cuDNN ranked it. Entries beyond [`MAX_WORKSPACE`] are dropped.
pub(super) fn usable(list: &[Choice], math: sys::cudnnMathType_t) -> Vec<Choice> {
    let strict = math == sys::cudnnMathType_t::CUDNN_FMA_MATH;
    let mut out: Vec<Choice> = Vec::new();
    for c in list.iter().filter(|c| c.memory <= MAX_WORKSPACE) {
        let c = Choice {
            math: if strict { math } else { c.math },
            ..*c
        };
        if !out.iter().any(|o| o.algo == c.algo && o.math == c.math) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::cudnnMathType_t::*;

    #[test]
    fn usable_entries_keep_their_order_and_math_type() {
        let c = |algo, memory, math| Choice { algo, memory, math };
        let list = [
            c(1, 10, CUDNN_TENSOR_OP_MATH),
            c(6, MAX_WORKSPACE + 1, CUDNN_TENSOR_OP_MATH),
            c(1, 10, CUDNN_DEFAULT_MATH),
            c(0, 0, CUDNN_FMA_MATH),
        ];
        assert_eq!(
            usable(&list, CUDNN_TENSOR_OP_MATH),
            vec![list[0], list[2], list[3]]
        );
        // Strict f32: everything under FMA, duplicates of one algorithm once.
        assert_eq!(
            usable(&list, CUDNN_FMA_MATH),
            vec![c(1, 10, CUDNN_FMA_MATH), c(0, 0, CUDNN_FMA_MATH)]
        );
    }

    #[test]
    fn an_algorithm_both_lists_report_is_tried_once_whatever_its_workspace() {
        let c = |algo, memory| Choice {
            algo,
            memory,
            math: CUDNN_TENSOR_OP_MATH,
        };
        let (timed, heuristic) = (vec![c(1, 100)], vec![c(1, 60), c(0, 0)]);
        let mut tried = Vec::new();
        let got = crate::fall_through::first_that_runs([timed, heuristic], |ch| {
            tried.push((ch.algo, ch.memory));
            if ch.algo == 0 {
                Ok(())
            } else {
                Err("refused")
            }
        });
        assert_eq!(got.map(|ch| ch.algo), Ok(0));
        assert_eq!(tried, [(1, 100), (0, 0)]);
    }
}
