//! End to end on real data: a few epochs of resnet20_cifar with MaxSup on 1,000 CIFAR-10 images.
//! The loss falls, accuracy beats chance by a wide margin, and a run stopped after an epoch and
//! resumed from its checkpoint ends with exactly the weights of an uninterrupted run.
//!
//! Needs CIFAR-10 in data/cifar-10-batches-bin (`bash data/fetch-cifar10.sh`, which CI runs).

use std::path::{Path, PathBuf};

use maxsup_train::{Silent, TrainConfig, Trainer, LAST_CHECKPOINT};

fn cifar_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-batches-bin")
}

fn config(out_dir: &Path, epochs: usize) -> TrainConfig {
    let dir = cifar_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fetch-cifar10.sh");
    maxsup_data::fetch::install_with_script(&script, &dir, "test_batch.bin")
        .expect("CIFAR-10 is needed by this test and could not be installed");
    let mut c = TrainConfig::preset("cifar10-resnet20").unwrap();
    c.input.source = maxsup_train::DataSource::Cifar10 { dir };
    c.epochs = epochs;
    c.batch_size = 50;
    c.eval_batch_size = 250;
    c.lr = 0.05;
    c.train_subset = Some(1000);
    c.eval_subset = Some(500);
    c.out_dir = out_dir.to_path_buf();
    c
}

fn weights(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
    trainer
        .model()
        .params()
        .entries()
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                e.var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn trains_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let full_config = config(&dir.path().join("full"), 4);

    // Uninterrupted run.
    let mut full = Trainer::new(full_config).unwrap();
    let mut losses = vec![];
    let mut last_top1 = 0.0;
    for _ in 0..4 {
        let (train, eval) = full.run_epoch(&mut Silent).unwrap();
        losses.push(train.loss);
        last_top1 = eval.top1;
    }
    assert!(
        losses[3] < losses[0] - 0.2,
        "training loss should fall: {losses:?}"
    );
    assert!(
        last_top1 > 0.25,
        "test top-1 {last_top1} should beat chance (0.10) by a wide margin"
    );

    // The same run stopped after two epochs (the process is gone: only the checkpoint is left)
    // and resumed.
    let resumed_dir = dir.path().join("resumed");
    let mut first = Trainer::new(config(&resumed_dir, 4)).unwrap();
    first.run_epoch(&mut Silent).unwrap();
    first.run_epoch(&mut Silent).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&resumed_dir.join(LAST_CHECKPOINT)).unwrap();
    assert_eq!(resumed.state.next_epoch, 2);
    let state = resumed.run(&mut Silent).unwrap();
    assert_eq!(state.next_epoch, 4);
    assert_eq!(
        weights(&resumed),
        weights(&full),
        "resumed run must end with identical weights"
    );
    assert!(resumed_dir.join("best.safetensors").exists());
}

#[test]
fn a_checkpoint_missing_optimizer_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 2);
    c.train_subset = Some(100);
    c.eval_subset = Some(50);
    let mut t = Trainer::new(c).unwrap();
    t.run_epoch(&mut Silent).unwrap();
    drop(t);
    let path = dir.path().join(LAST_CHECKPOINT);
    let (mut tensors, state): (maxsup_train::CheckpointTensors, maxsup_train::RunState) =
        maxsup_train::load_checkpoint(&path, &candle_core::Device::Cpu).unwrap();
    let victim = tensors
        .optimizer
        .keys()
        .find(|k| k.ends_with(".momentum_buffer"))
        .cloned()
        .expect("SGD with momentum saves buffers");
    tensors.optimizer.remove(&victim);
    maxsup_train::save_checkpoint(&path, &tensors, &state).unwrap();
    let e = format!("{:#}", Trainer::resume(&path).err().expect("must refuse"));
    let name = victim.trim_end_matches(".momentum_buffer");
    assert!(
        e.contains("lacks the optimizer state") && e.contains(name),
        "{e}"
    );
}

/// Records the evaluations the trainer reports.
#[derive(Default)]
struct Evals {
    model: Vec<maxsup_train::EvalStats>,
    ema: Vec<maxsup_train::EvalStats>,
}

impl maxsup_train::Observer for Evals {
    fn on_event(&mut self, event: &maxsup_train::Event) -> anyhow::Result<()> {
        match event {
            maxsup_train::Event::Eval(e) => self.model.push(e.clone()),
            maxsup_train::Event::EmaEval(e) => self.ema.push(e.clone()),
            _ => {}
        }
        Ok(())
    }
}

#[test]
fn ema_weights_are_evaluated_each_epoch_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 2);
    c.train_subset = Some(200);
    c.eval_subset = Some(100);
    c.ema_decay = Some(0.9);
    let mut t = Trainer::new(c.clone()).unwrap();
    let mut seen = Evals::default();
    t.run_epoch(&mut seen).unwrap();
    assert_eq!((seen.model.len(), seen.ema.len()), (1, 1));
    let (model, ema) = (&seen.model[0], &seen.ema[0]);
    assert_eq!(ema.samples, 100);
    assert_ne!(
        (model.top1, model.nll),
        (ema.top1, ema.nll),
        "the EMA weights are not the trained weights"
    );
    assert_eq!(t.state.last_ema_eval.as_ref(), Some(ema));
    let before = weights(&t);
    drop(t);

    // The model's own evaluation is unchanged by evaluating the EMA copy; a resumed run
    // evaluates the same EMA as an uninterrupted one.
    let path = dir.path().join(LAST_CHECKPOINT);
    let mut resumed = Trainer::resume(&path).unwrap();
    assert_eq!(weights(&resumed), before);
    let mut later = Evals::default();
    resumed.run_epoch(&mut later).unwrap();
    let mut full = Trainer::new(maxsup_train::TrainConfig {
        out_dir: dir.path().join("full"),
        ..c
    })
    .unwrap();
    let mut uninterrupted = Evals::default();
    full.run_epoch(&mut Silent).unwrap();
    full.run_epoch(&mut uninterrupted).unwrap();
    assert_eq!(later.ema, {
        let mut e = uninterrupted.ema.clone();
        e[0].seconds = later.ema[0].seconds;
        e
    });

    // A checkpoint of an EMA run without its average would restart the EMA: refused by name.
    let (mut tensors, state): (maxsup_train::CheckpointTensors, maxsup_train::RunState) =
        maxsup_train::load_checkpoint(&path, &candle_core::Device::Cpu).unwrap();
    tensors.ema.remove("conv1.weight").expect("EMA of conv1");
    maxsup_train::save_checkpoint(&path, &tensors, &state).unwrap();
    let e = format!("{:#}", Trainer::resume(&path).err().expect("must refuse"));
    assert!(e.contains("lacks the EMA average of `conv1.weight`"), "{e}");
}

/// The step's report is read after the next step is queued, and its finiteness check with it:
/// a diverging run still stops with an error naming the step and its samples, and leaves the
/// checkpoint of the last good epoch alone.
#[test]
fn a_non_finite_loss_stops_the_run_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 2);
    c.train_subset = Some(500);
    c.eval_subset = Some(250);
    let mut t = Trainer::new(c).unwrap();
    t.run_epoch(&mut Silent).unwrap();
    let last = std::fs::read(dir.path().join(LAST_CHECKPOINT)).unwrap();
    // Resume with a learning rate that blows the weights up within a few steps.
    let mut t = Trainer::resume_with(&dir.path().join(LAST_CHECKPOINT), |saved, _| {
        let mut diverging = saved.clone();
        diverging.lr = 1e30;
        Ok(diverging)
    })
    .unwrap();
    let e = format!(
        "{:#}",
        t.run_epoch(&mut Silent).expect_err("the run diverges")
    );
    assert!(e.contains("training step failed at epoch 1, batch "), "{e}");
    assert!(e.contains("training loss: loss is"), "{e}");
    assert!(e.contains("last good checkpoint"), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join(LAST_CHECKPOINT)).unwrap(),
        last
    );
}

/// `channels_last` changes the memory order only: a training step run channels-last (the
/// trainer's conversion, the NHWC kernels, the optimizer on permuted weight gradients) ends with
/// the NCHW run's weights and running statistics. One step of 50 images: over several steps
/// this early run is too sensitive to compare (the stem BatchNorm's small biases differ by 20%
/// after six steps between two NCHW runs whose learning rates differ by 1e-4 relative).
#[test]
fn a_channels_last_step_ends_with_the_nchw_weights() {
    let dir = tempfile::tempdir().unwrap();
    let run = |channels_last: bool| {
        let mut c = config(&dir.path().join(format!("cl-{channels_last}")), 1);
        c.channels_last = channels_last;
        c.train_subset = Some(50);
        let mut t = Trainer::new(c).unwrap();
        let (train, _) = t.run_epoch(&mut Silent).unwrap();
        (train.loss, weights(&t))
    };
    let (loss_nchw, nchw) = run(false);
    let (loss_cl, cl) = run(true);
    assert!(
        (loss_cl - loss_nchw).abs() < 1e-5 * loss_nchw.abs(),
        "{loss_cl} vs {loss_nchw}"
    );
    for ((name, a), (_, b)) in cl.iter().zip(&nchw) {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff / scale < 1e-4,
            "{name}: relative difference {}",
            diff / scale
        );
    }
}
