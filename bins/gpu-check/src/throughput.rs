//! Training throughput of ours on the GPU: ResNet-50 and DeiT-S at 224 px, bf16, CE + MaxSup,
//! SGD with momentum / AdamW, warm-up steps excluded, one loss read per step after the next step
//! is queued, through `ReadBack`, labels on the host (as the trainer; PyTorch's side reads no
//! loss until the end, the strongest baseline).
//! Peak memory is the device pool's high-water mark over the timed steps. ResNet-50 runs in
//! four rows: NCHW and channels-last (`--channels-last true`: the batch converted in each step,
//! as the trainer does, and the NHWC kernels through the network), each with cuDNN's heuristic
//! and with timed algorithms (`--cudnn-benchmark true`, as PyTorch's side runs); DeiT-S in two,
//! with the unfused attention and the fused kernels (`--fused-attention true`). After the timed
//! span, a few steps are timed phase by phase (forward, backward, optimizer). The phase's file is
//! rewritten after each model, so a time limit costs only the model it cut off.

use crate::compare::values;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use maxsup_models::{create_model, ModelOptions};
use maxsup_optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use serde_json::{json, Value};
use std::time::Instant;

/// The device pool's used-memory high-water mark in bytes (`reset` starts a new measurement).
fn pool_high_water(device: &Device, reset: bool) -> Result<u64> {
    let Device::Cuda(d) = device else {
        anyhow::bail!("not a CUDA device")
    };
    Ok(maxsup_ops::peak_memory(d, reset)?)
}

/// What one row measures.
struct Case<'a> {
    model: &'a str,
    channels_last: bool,
    /// Convolution algorithms timed by cuDNN (`set_cudnn_benchmark`) instead of its heuristic.
    timed: bool,
    /// DeiT's attention forward and backward as tensor-core kernels (`set_fused_attention`).
    fused_attention: bool,
}

fn attention_name(fused: bool) -> &'static str {
    if fused {
        "fused"
    } else {
        "unfused"
    }
}

fn algorithms_name(timed: bool) -> &'static str {
    if timed {
        "timed"
    } else {
        "heuristic"
    }
}

fn measure(case: &Case, gpu: &Device, batch: usize, warmup: usize, steps: usize) -> Result<Value> {
    let name = case.model;
    maxsup_ops::set_cudnn_benchmark(case.timed);
    maxsup_ops::set_fused_attention(case.fused_attention);
    // Each row's peak memory counts the workspace its own convolutions need.
    maxsup_ops::release_conv_workspaces();
    let is_vit = maxsup_models::model_family(name) == Some(maxsup_models::ModelFamily::DeiT);
    let options = ModelOptions {
        num_classes: Some(1000),
        drop_path_rate: if is_vit { 0.1 } else { 0.0 },
        ..Default::default()
    };
    let model = create_model(name, &options, gpu)?;
    let params: Vec<_> = model
        .params()
        .trainable()
        .map(|e| (e.name.clone(), e.var.clone()))
        .collect();
    let mut opt: Box<dyn Optimizer> = if is_vit {
        Box::new(AdamW::new(
            vec![ParamGroup::new(params, 0.05)],
            AdamWConfig {
                lr: 5e-4,
                betas: (0.9, 0.999),
                eps: 1e-8,
            },
        )?)
    } else {
        Box::new(Sgd::new(
            vec![ParamGroup::new(params, 5e-5)],
            SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: false,
            },
        )?)
    };
    let x = Tensor::from_vec(
        values(batch * 3 * 224 * 224, 3),
        (batch, 3, 224, 224),
        &Device::Cpu,
    )?
    .to_device(gpu)?
    .to_dtype(DType::BF16)?;
    // As the trainer: the labels stay on the host, where the loss checks their range (no read
    // from the GPU), and the loss's finiteness is checked on the value read back, not inside the
    // step; each step's loss comes back through `ReadBack`, read after the next step is queued
    // (the last one at the end, inside the timed span).
    let y: Vec<u32> = (0..batch as u32).map(|i| (i * 37) % 1000).collect();
    let y = Tensor::from_vec(y, batch, &Device::Cpu)?;
    let loss_of = |logits: &Tensor| -> Result<Tensor> {
        let _deferred = maxsup_loss::defer_finite_checks();
        Ok(maxsup_loss::maxsup(&logits.to_dtype(DType::F32)?, &y, 0.1)?)
    };
    let mut read_back = maxsup_ops::ReadBack::new();
    let mut step = |read_back: &mut maxsup_ops::ReadBack| -> Result<maxsup_ops::PendingRead> {
        let logits = match case.channels_last {
            true => model.forward_t(&maxsup_ops::to_channels_last(&x)?, true)?,
            false => model.forward_t(&x, true)?,
        };
        let loss = loss_of(&logits)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        Ok(read_back.queue(&loss.to_dtype(DType::F64)?)?)
    };
    let mut run = |n: usize, read_back: &mut maxsup_ops::ReadBack| -> Result<f64> {
        let mut pending: Option<maxsup_ops::PendingRead> = None;
        let mut last = f64::NAN;
        let read = |done, read_back: &mut maxsup_ops::ReadBack| -> Result<f64> {
            let loss = read_back.read(done)?[0];
            anyhow::ensure!(loss.is_finite(), "the training loss is {loss}");
            Ok(loss)
        };
        for _ in 0..n {
            let queued = step(read_back)?;
            if let Some(done) = pending.replace(queued) {
                last = read(done, read_back)?;
            }
        }
        if let Some(done) = pending {
            last = read(done, read_back)?;
        }
        Ok(last)
    };
    run(warmup, &mut read_back)?;
    pool_high_water(gpu, true)?;
    let t = Instant::now();
    let last = run(steps, &mut read_back)?;
    let seconds = t.elapsed().as_secs_f64();
    let peak = pool_high_water(gpu, false)?;
    let (split, kernels) = phase_split(
        gpu,
        SPLIT_STEPS,
        || {
            let logits = match case.channels_last {
                true => model.forward_t(&maxsup_ops::to_channels_last(&x)?, true)?,
                false => model.forward_t(&x, true)?,
            };
            loss_of(&logits)
        },
        |loss| loss.backward().map_err(Into::into),
        |grads| opt.step(grads).map_err(Into::into),
    )?;
    Ok(json!({
        "model": name, "layout": crate::models::layout_name(case.channels_last),
        "algorithms": algorithms_name(case.timed), "attention": attention_name(case.fused_attention),
        "batch": batch, "image": 224, "dtype": "bf16",
        "steps": steps, "warmup": warmup,
        "ours_img_s": (batch * steps) as f64 / seconds, "ours_step_ms": 1e3 * seconds / steps as f64,
        "ours_mem_gb": peak as f64 / 1e9, "last_loss": last, "ours_split_ms": split,
        "ours_kernels": kernels,
    }))
}

/// Steps timed phase by phase after the throughput span (then one more, per kernel).
const SPLIT_STEPS: usize = 3;

/// Our kernels listed per row (longest first).
const KERNEL_ROWS: usize = 15;

/// Median milliseconds of the forward (with the loss), the backward and the optimizer step over
/// `steps` steps, the device synchronised around each phase: where a step's time goes, to set
/// beside PyTorch's same split (`bench/torch_gpu_steps.py`). Each phase then also pays its
/// launch latency without overlap, so the three add up to more than a pipelined step. Then one
/// step with each of our launches timed (ops.cu's kernels and cuDNN's convolutions, by name;
/// the rest of the step's GPU time is cuBLAS's and candle's).
fn phase_split(
    gpu: &Device,
    steps: usize,
    mut forward: impl FnMut() -> Result<Tensor>,
    mut backward: impl FnMut(&Tensor) -> Result<candle_core::backprop::GradStore>,
    mut optimizer: impl FnMut(&candle_core::backprop::GradStore) -> Result<()>,
) -> Result<(Value, Value)> {
    let mut times = [vec![], vec![], vec![]];
    for _ in 0..steps {
        gpu.synchronize()?;
        let t = Instant::now();
        let loss = forward()?;
        gpu.synchronize()?;
        times[0].push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let grads = backward(&loss)?;
        gpu.synchronize()?;
        times[1].push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        optimizer(&grads)?;
        gpu.synchronize()?;
        times[2].push(t.elapsed().as_secs_f64() * 1e3);
    }
    let [f, b, o] = times.map(|mut v| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    });
    gpu.synchronize()?;
    maxsup_ops::set_kernel_timing(true);
    let profiled = (|| -> Result<()> {
        let loss = forward()?;
        let grads = backward(&loss)?;
        optimizer(&grads)?;
        gpu.synchronize()?;
        Ok(())
    })();
    maxsup_ops::set_kernel_timing(false);
    let kernels = maxsup_ops::kernel_times()?;
    profiled?;
    let total: f64 = kernels.iter().map(|k| k.ms).sum();
    let top: Vec<Value> = kernels
        .iter()
        .take(KERNEL_ROWS)
        .map(|k| json!({"name": k.name, "launches": k.launches, "ms": k.ms}))
        .collect();
    Ok((
        json!({"forward": f, "backward": b, "optimizer": o}),
        json!({"timed_ms": total, "names": kernels.len(), "top": top}),
    ))
}

/// The rows, each written to `out` as soon as it is measured (the caller writes the final file).
pub fn run(
    gpu: &Device,
    (batch, warmup, steps): (usize, usize, usize),
    out: &std::path::Path,
) -> Result<Value> {
    maxsup_ops::set_tf32(true);
    let case = |model, channels_last, timed| Case {
        model,
        channels_last,
        timed,
        fused_attention: false,
    };
    let cases = [
        case("resnet50", false, false),
        case("deit_small_patch16_224", false, false),
        case("resnet50", true, false),
        Case {
            fused_attention: true,
            ..case("deit_small_patch16_224", false, false)
        },
        // Timed algorithms last (a time limit cuts these first), channels-last first among
        // them: PyTorch's side is channels_last with cudnn.benchmark.
        case("resnet50", true, true),
        case("resnet50", false, true),
    ];
    let mut rows = Vec::new();
    for case in &cases {
        // The fallbacks are recorded process-wide: a row lists those that came while it ran.
        let earlier = maxsup_ops::cudnn_benchmark_fallbacks().len();
        rows.push(match measure(case, gpu, batch, warmup, steps) {
            Ok(v) => v,
            Err(e) => json!({"model": case.model, "layout": crate::models::layout_name(case.channels_last),
                             "algorithms": algorithms_name(case.timed), "attention": attention_name(case.fused_attention),
                             "batch": batch, "error": format!("{e:#}")}),
        });
        if case.timed {
            if let Some(row) = rows.last_mut() {
                let all = maxsup_ops::cudnn_benchmark_fallbacks();
                row["timing_fallbacks"] = json!(all.get(earlier..).unwrap_or_default());
            }
        }
        let so_far = json!({"throughput": rows});
        std::fs::write(out, serde_json::to_string_pretty(&so_far)? + "\n")?;
    }
    Ok(json!({"throughput": rows}))
}
