//! The host side of a training step on CUDA: batches copied through `StagedUpload`'s two
//! page-locked buffers arrive exactly (three in a row, so the third reuses the first buffer),
//! 8-bit pixel batches normalize on the GPU as the loader does on the CPU, and the losses take
//! labels that stay on the host next to logits on the GPU, and a step's report read through
//! `ReadBack` arrives without waiting for the work queued after it.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use maxsup_data::{Batch, BatchImages, IMAGENET_MEAN, IMAGENET_STD};
use maxsup_ops::{ReadBack, StagedUpload};
use serde_json::{json, Value};

use crate::compare::{rel_error, values};

pub fn run(gpu: &Device) -> Result<Value> {
    let mut rows = vec![upload_row(gpu)?, pixels_row(gpu)?, read_back_row(gpu)?];
    rows.extend(host_label_rows(gpu)?);
    let pass = rows.iter().all(|r| r["pass"].as_bool() == Some(true));
    Ok(json!({"pass": pass, "host_side": rows}))
}

fn upload_row(gpu: &Device) -> Result<Value> {
    let shape = (8, 3, 224, 224);
    let n = 8 * 3 * 224 * 224;
    let mut staging = StagedUpload::new();
    let (mut bytes_sent, mut floats_sent, mut on_gpu) = (vec![], vec![], vec![]);
    for k in 0..3u64 {
        let floats = values(n, 100 + k);
        let bytes: Vec<u8> = floats.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
        on_gpu.push((
            staging.upload(&bytes, shape, gpu)?,
            staging.upload(&floats, shape, gpu)?,
        ));
        bytes_sent.push(bytes);
        floats_sent.push(floats);
    }
    let mut exact = true;
    for ((b, f), (bytes, floats)) in on_gpu.iter().zip(bytes_sent.iter().zip(&floats_sent)) {
        exact &= b.flatten_all()?.to_vec1::<u8>()? == *bytes;
        exact &= f.flatten_all()?.to_vec1::<f32>()? == *floats;
    }
    Ok(
        json!({"name": "staged upload, 3 batches of u8 and f32 through 2 page-locked buffers",
              "dtype": "u8/f32", "what": "exact", "pass": exact}),
    )
}

fn pixels_row(gpu: &Device) -> Result<Value> {
    let shape = [4, 3, 64, 64];
    let values: Vec<u8> = values(4 * 3 * 64 * 64, 7)
        .iter()
        .map(|v| ((v + 1.0) * 127.5) as u8)
        .collect();
    let batch = Batch {
        images: BatchImages::Pixels {
            values,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        },
        shape,
        labels: vec![0; 4],
        soft_targets: None,
        num_classes: 10,
        indices: (0..4).collect(),
    };
    let want = Tensor::from_slice(&batch.normalized_images(), shape.as_slice(), &Device::Cpu)?;
    let mut staging = StagedUpload::new();
    let got = maxsup_train::images_tensor(&batch, gpu, DType::F32, Some(&mut staging))?;
    let (err, finite) = rel_error(&got, &want)?;
    Ok(
        json!({"name": "8-bit pixel batch normalized on the GPU vs the loader's", "dtype": "f32",
              "what": "output", "rel_error": err, "tol": 1e-6, "pass": finite && err < 1e-6}),
    )
}

fn host_label_rows(gpu: &Device) -> Result<Vec<Value>> {
    let (b, k) = (64, 1000);
    let logits = Tensor::from_slice(&values(b * k, 11), (b, k), gpu)?;
    let labels: Vec<u32> = (0..b as u32).map(|i| (i * 37) % k as u32).collect();
    let on_host = Tensor::from_slice(&labels, b, &Device::Cpu)?;
    let on_gpu = on_host.to_device(gpu)?;
    let mut rows = vec![];
    for (name, loss) in [
        (
            "maxsup loss, labels on the host",
            maxsup_loss::maxsup as fn(&Tensor, &Tensor, f64) -> candle_core::Result<Tensor>,
        ),
        (
            "label smoothing loss, labels on the host",
            maxsup_loss::label_smoothing,
        ),
    ] {
        let got = {
            let _deferred = maxsup_loss::defer_finite_checks();
            loss(&logits, &on_host, 0.1)?
        };
        let want = loss(&logits, &on_gpu, 0.1)?;
        let (err, finite) = rel_error(&got, &want)?;
        rows.push(
            json!({"name": name, "dtype": "f32", "what": "output", "rel_error": err,
                         "tol": 1e-6, "pass": finite && err < 1e-6}),
        );
    }
    Ok(rows)
}

/// A report queued through `ReadBack`, then ~0.1 s of GPU work queued behind it: the read must
/// return the exact values well before that work is done (a plain `to_vec1` waits for it all).
fn read_back_row(gpu: &Device) -> Result<Value> {
    let report = Tensor::new(&[1.5f64, 64.0, -0.25, 1e-300], gpu)?;
    let a = Tensor::from_slice(&values(4096 * 4096, 5), (4096, 4096), gpu)?;
    let mut read_back = ReadBack::new();
    let start = std::time::Instant::now();
    let pending = read_back.queue(&report)?;
    let mut later = a.clone();
    for _ in 0..40 {
        later = (later.matmul(&a)? * 1e-3)?;
    }
    let queued_ms = start.elapsed().as_secs_f64() * 1e3;
    let got = read_back.read(pending)?;
    let read_ms = start.elapsed().as_secs_f64() * 1e3;
    later.sum_all()?.to_scalar::<f32>()?;
    let later_ms = start.elapsed().as_secs_f64() * 1e3;
    let exact = got == [1.5, 64.0, -0.25, 1e-300];
    Ok(
        json!({"name": "step report read back while later work runs", "dtype": "f64", "what": "exact, early",
              "queued_ms": queued_ms, "read_ms": read_ms, "later_work_done_ms": later_ms,
              "pass": exact && read_ms < 0.5 * later_ms}),
    )
}
