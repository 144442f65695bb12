//! GPU time of our own launches (ops.cu's kernels and the cuDNN convolutions), by name, for the
//! GPU check's breakdown of a training step: a pair of timing events around each launch while
//! timing is on. Off (the default), a launch pays one relaxed atomic load. What is not timed
//! here (cuBLAS GEMMs and candle's own kernels) is the rest of the step's GPU time.

use crate::kernel_time::{summarize, KernelTime};
use candle_core::cuda_backend::cudarc::driver::{sys, CudaEvent, CudaStream};
use candle_core::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

static ON: AtomicBool = AtomicBool::new(false);

/// Launches timed since the last [`kernel_times`]: name, start and end events.
static PENDING: Mutex<Vec<(String, CudaEvent, CudaEvent)>> = Mutex::new(Vec::new());

/// Most launches kept for [`kernel_times`] (two events each); later ones run untimed until it is
/// called, so a run that leaves timing on does not accumulate events without bound.
const MAX_PENDING: usize = 1 << 16;

/// Turns per-launch timing on or off (off by default; on costs two events per launch).
pub fn set_kernel_timing(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

fn err(
    what: &str,
) -> impl FnOnce(candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error + '_
{
    move |e| candle_core::Error::Cuda(format!("kernel timing, {what}: {e}").into())
}

fn pending() -> Result<std::sync::MutexGuard<'static, Vec<(String, CudaEvent, CudaEvent)>>> {
    PENDING
        .lock()
        .map_err(|_| candle_core::Error::Msg("kernel timing: poisoned lock".into()))
}

/// Runs `launch` (which queues work on `stream`), between two timing events when timing is on.
pub(crate) fn timed<R>(
    stream: &Arc<CudaStream>,
    name: &str,
    launch: impl FnOnce() -> Result<R>,
) -> Result<R> {
    if !ON.load(Ordering::Relaxed) || pending()?.len() >= MAX_PENDING {
        return launch();
    }
    let ctx = stream.context();
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = ctx.new_event(timing).map_err(err("cuEventCreate"))?;
    let end = ctx.new_event(timing).map_err(err("cuEventCreate"))?;
    start.record(stream).map_err(err("cuEventRecord"))?;
    let out = launch()?;
    end.record(stream).map_err(err("cuEventRecord"))?;
    pending()?.push((name.to_string(), start, end));
    Ok(out)
}

/// The timed launches since the last call, summed by name, longest first (waits for them).
pub fn kernel_times() -> Result<Vec<KernelTime>> {
    let timed = std::mem::take(&mut *pending()?);
    let mut launches = Vec::with_capacity(timed.len());
    for (name, start, end) in timed {
        let ms = start.elapsed_ms(&end).map_err(err("cuEventElapsedTime"))?;
        launches.push((name, ms as f64));
    }
    Ok(summarize(launches))
}
