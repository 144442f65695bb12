//! The bad-input corpus of the training binaries (`train-conv`; `train-vit` shares the code):
//! flags, resume and checkpoints, and damaged training data, each run as a user would run it.
//! Every case must end in a clear error naming what is wrong, or in the right result (see
//! `tests/bad_inputs/harness.rs`); the test prints the counts per category.
//!
//! The data is a tiny ImageFolder made here, so no download is needed.

#[path = "../../../tests/bad_inputs/harness.rs"]
mod harness;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use candle_core::{Device, Tensor};
use harness::{prints, run_corpus, Case};
use maxsup_train::{load_checkpoint, save_checkpoint, CheckpointTensors, RunState};

const EXE: &str = env!("CARGO_BIN_EXE_train-conv");

fn s(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

fn jpeg() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crates/maxsup-data/tests/data/photo_baseline.jpg"),
    )
    .unwrap()
}

/// root/{train,val}/{n01,n02}/{0..4}.jpg
fn folder(root: &Path, extra: Option<(&str, &[u8])>) -> PathBuf {
    for split in ["train", "val"] {
        for class in ["n01", "n02"] {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..4 {
                std::fs::write(d.join(format!("{i}.jpg")), jpeg()).unwrap();
            }
        }
    }
    if let Some((name, bytes)) = extra {
        std::fs::write(root.join("train/n02").join(name), bytes).unwrap();
    }
    root.to_path_buf()
}

/// A short training run on `data` into `out`.
fn train_args(data: &Path, out: &Path) -> Vec<OsString> {
    argv![
        "--folder",
        s(data),
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--eval-batch-size",
        "4",
        "--epochs",
        "1",
        "--no-progress",
        "--out-dir",
        s(out)
    ]
}

fn with(mut a: Vec<OsString>, more: Vec<OsString>) -> Vec<OsString> {
    a.extend(more);
    a
}

/// A change made to a checkpoint's tensors and state.
type Damage = Box<dyn FnOnce(&mut CheckpointTensors, &mut RunState)>;

/// A checkpoint derived from `good` by `change`.
fn damaged(
    good: &Path,
    dir: &Path,
    name: &str,
    change: impl FnOnce(&mut CheckpointTensors, &mut RunState),
) -> PathBuf {
    let (mut tensors, mut state): (CheckpointTensors, RunState) =
        load_checkpoint(good, &Device::Cpu).unwrap();
    change(&mut tensors, &mut state);
    let p = dir.join(format!("{name}.safetensors"));
    save_checkpoint(&p, &tensors, &state).unwrap();
    p
}

fn flag_cases(data: &Path, root: &Path, cases: &mut Vec<Case>) {
    let out = root.join("never-written");
    let base = || with(train_args(data, &out), argv!["--print-config"]);
    let bad: Vec<(&str, Vec<OsString>, Vec<&str>)> = vec![
        ("--epochs 0", argv!["--epochs", "0"], vec!["epochs"]),
        ("--batch-size 0", argv!["--batch-size", "0"], vec!["batch"]),
        (
            "--eval-batch-size 0",
            argv!["--eval-batch-size", "0"],
            vec!["batch"],
        ),
        ("--lr 0", argv!["--lr", "0"], vec!["learning rate"]),
        ("--lr -0.1", argv!["--lr=-0.1"], vec!["learning rate"]),
        ("--lr NaN", argv!["--lr", "NaN"], vec!["learning rate"]),
        (
            "--weight-decay -1",
            argv!["--weight-decay=-1"],
            vec!["--weight-decay"],
        ),
        (
            "--warmup-epochs with a step schedule",
            argv!["--recipe", "cifar100-resnet18", "--warmup-epochs", "2"],
            vec!["--warmup-epochs"],
        ),
        (
            "--min-lr with a step schedule",
            argv!["--recipe", "resnet50-imagenet-step", "--min-lr", "0"],
            vec!["--min-lr"],
        ),
        (
            "--cache without --zip",
            argv!["--cache"],
            vec!["--cache", "--zip"],
        ),
        (
            "--zip with --folder",
            argv!["--zip", "z"],
            vec!["--folder and --zip"],
        ),
        (
            "--cifar10 with --folder",
            argv!["--cifar10", "c"],
            vec!["--cifar10 and --folder"],
        ),
        (
            "--fashion-mnist with --folder",
            argv!["--fashion-mnist", "c"],
            vec!["--fashion-mnist and --folder"],
        ),
        ("--mixup -0.5", argv!["--mixup=-0.5"], vec!["mixup"]),
        ("--cutmix -1", argv!["--cutmix=-1"], vec!["cutmix"]),
        (
            "--eval-subset 0",
            argv!["--eval-subset", "0"],
            vec!["eval subset"],
        ),
        (
            "--train-subset 0",
            argv!["--train-subset", "0"],
            vec!["train subset"],
        ),
        (
            "--precision fp16",
            argv!["--precision", "fp16"],
            vec!["fp16"],
        ),
        (
            "--recipe unknown",
            argv!["--recipe", "imagenet-resnet9000"],
            vec!["imagenet-resnet9000"],
        ),
        (
            "--model unknown",
            argv!["--model", "resnet21_cifar"],
            vec!["resnet21_cifar"],
        ),
        (
            "--model of the other family",
            argv!["--model", "deit_tiny_patch4_32"],
            vec!["deit_tiny_patch4_32", "train-conv trains ResNet"],
        ),
        ("--loss unknown", argv!["--loss", "hinge"], vec!["hinge"]),
        (
            "--alpha-start -0.5",
            argv!["--alpha-start=-0.5"],
            vec!["--alpha-start"],
        ),
        (
            "--alpha-end 2",
            argv!["--alpha-end", "2"],
            vec!["--alpha-end"],
        ),
        (
            "--alpha-start with CE",
            argv!["--loss", "ce", "--alpha-start", "0.1"],
            vec!["--alpha-start does not apply"],
        ),
        (
            "--lp-beta with MaxSup",
            argv!["--lp-beta", "0.1"],
            vec!["--lp-beta does not apply"],
        ),
        (
            "--focal-gamma with MaxSup",
            argv!["--focal-gamma", "2"],
            vec!["--focal-gamma does not apply"],
        ),
        (
            "--zipf-weight with LS",
            argv!["--loss", "ls", "--zipf-weight", "1"],
            vec!["--zipf-weight does not apply"],
        ),
        (
            "--focal-gamma -1",
            argv!["--loss", "focal", "--focal-gamma=-1"],
            vec!["--focal-gamma"],
        ),
        (
            "--drop-path on a ResNet",
            argv!["--drop-path", "0.1"],
            vec!["--drop-path does not apply"],
        ),
        (
            "--ema-decay 1.5",
            argv!["--ema-decay", "1.5"],
            vec!["--ema-decay"],
        ),
        (
            "--ema-decay -1",
            argv!["--ema-decay=-1"],
            vec!["--ema-decay"],
        ),
        (
            "--clip-grad -1",
            argv!["--clip-grad=-1"],
            vec!["--clip-grad"],
        ),
        (
            "--image-size 0",
            argv!["--image-size", "0"],
            vec!["--image-size"],
        ),
        ("--seed -1", argv!["--seed=-1"], vec!["--seed"]),
        ("--epochs two", argv!["--epochs", "two"], vec!["--epochs"]),
        (
            "OLS with Mixup",
            argv!["--loss", "ols", "--mixup", "0.8"],
            vec!["ols", "Mixup"],
        ),
        ("an unknown flag", argv!["--epoch", "3"], vec!["--epoch"]),
    ];
    for (name, flags, needles) in bad {
        cases.push(Case::error("flag", name, with(base(), flags), &needles));
    }
    let cifar_size = argv![
        "--cifar10",
        s(&root.join("c")),
        "--image-size",
        "64",
        "--print-config"
    ];
    cases.push(Case::error(
        "flag",
        "--image-size 64 with CIFAR-10",
        cifar_size,
        &["--image-size 64 does not apply"],
    ));
    let runtime: Vec<(&str, Vec<OsString>, Vec<&str>)> = vec![
        ("--device gpu", argv!["--device", "gpu"], vec!["gpu"]),
        (
            "--device cuda without the feature",
            argv!["--device", "cuda"],
            vec!["cuda"],
        ),
        (
            "--precision bf16 on the CPU",
            argv!["--precision", "bf16"],
            vec!["bf16"],
        ),
    ];
    let runtime = [
        runtime,
        vec![
            ("--nproc 0", argv!["--nproc", "0"], vec!["--nproc 0"]),
            (
                "--nproc 2 on CUDA",
                argv!["--nproc", "2", "--device", "cuda"],
                vec!["cuda", "rank 0 of 2 failed"],
            ),
            ("--gpus 0", argv!["--gpus", "0"], vec!["--gpus 0"]),
            (
                "--gpus with --nproc",
                argv!["--gpus", "2", "--nproc", "2"],
                vec!["--nproc and --gpus"],
            ),
            (
                "--gpus with a CPU device",
                argv!["--gpus", "2", "--device", "cpu"],
                vec!["--device cpu does not apply to --gpus 2"],
            ),
            (
                "--gpus 2 without the feature",
                argv!["--gpus", "2"],
                vec!["--gpus 2", "built without CUDA support"],
            ),
            (
                "--gpus 1 without the feature",
                argv!["--gpus", "1"],
                vec!["cuda", "built without CUDA support"],
            ),
        ],
    ]
    .concat();
    for (name, flags, needles) in runtime {
        cases.push(Case::error(
            "flag",
            name,
            with(train_args(data, &out), flags),
            &needles,
        ));
    }
    cases.push(Case::ok(
        "flag",
        "--print-config applies the flags",
        with(base(), argv!["--lr", "0.05", "--loss", "ls"]),
        |out: &str| {
            let v: serde_json::Value = serde_json::from_str(out).map_err(|e| e.to_string())?;
            if v["lr"] == 0.05 && v["loss"] == "ls" && v["image_size"] == 32 {
                Ok(())
            } else {
                Err(format!(
                    "lr {} loss {} image_size {}",
                    v["lr"], v["loss"], v["image_size"]
                ))
            }
        },
    ));
    cases.push(Case::ok(
        "flag",
        "--list-recipes",
        argv!["--list-recipes"],
        prints("cifar10-resnet20"),
    ));
}

fn resume_cases(data: &Path, root: &Path, cases: &mut Vec<Case>) {
    let run = root.join("run");
    let out = Command::new(EXE)
        .args(train_args(data, &run))
        .args(["--ema-decay", "0.9"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the base run trains: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = run.join("last.safetensors");
    let resume =
        |ckpt: &Path, more: Vec<OsString>| with(argv!["--resume", s(ckpt), "--no-progress"], more);

    let longer = root.join("longer");
    cases.push(
        Case::ok(
            "resume",
            "train longer into a new --out-dir",
            resume(&good, argv!["--epochs", "2", "--out-dir", s(&longer)]),
            {
                let longer = longer.clone();
                move |out: &str| {
                    if !longer.join("last.safetensors").exists() {
                        return Err("no checkpoint in the new --out-dir".into());
                    }
                    if !out.contains("for 2 epochs") {
                        return Err("did not train to 2 epochs".into());
                    }
                    Ok(())
                }
            },
        )
        .keeping(&good),
    );
    let e = |name: &str, args: Vec<OsString>, needles: &[&str]| {
        Case::error("resume", name, args, needles).keeping(&good)
    };
    cases.push(e(
        "no more epochs to train",
        resume(&good, argv!["--epochs", "1"]),
        &["already completed 1 epochs"],
    ));
    cases.push(e(
        "--model of another depth",
        resume(&good, argv!["--model", "resnet32_cifar"]),
        &["--model does not apply to --resume"],
    ));
    cases.push(e(
        "--loss changed",
        resume(&good, argv!["--loss", "ce"]),
        &["--loss does not apply"],
    ));
    cases.push(e(
        "--seed changed",
        resume(&good, argv!["--seed", "7"]),
        &["--seed does not apply"],
    ));
    cases.push(e(
        "--ema-decay changed",
        resume(&good, argv!["--ema-decay", "0.5"]),
        &["--ema-decay does not apply"],
    ));
    cases.push(e(
        "--image-size changed",
        resume(&good, argv!["--image-size", "64"]),
        &["--image-size does not apply"],
    ));
    cases.push(e(
        "--recipe changed",
        resume(&good, argv!["--recipe", "cifar100-resnet18"]),
        &["--recipe cifar100-resnet18 does not apply"],
    ));
    cases.push(Case::error(
        "resume",
        "checkpoint missing",
        resume(&root.join("gone.safetensors"), vec![]),
        &["gone.safetensors"],
    ));
    cases.push(Case::error(
        "resume",
        "--resume without a path in an empty --out-dir",
        argv![
            "--resume",
            "--out-dir",
            s(&root.join("empty-run")),
            "--no-progress"
        ],
        &["no checkpoint in", "empty-run"],
    ));
    let text = root.join("notes.safetensors");
    std::fs::write(&text, "not a checkpoint").unwrap();
    cases.push(Case::error(
        "resume",
        "a text file",
        resume(&text, vec![]),
        &["notes.safetensors"],
    ));
    let bytes = std::fs::read(&good).unwrap();
    let cut = root.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    cases.push(Case::error(
        "resume",
        "a truncated checkpoint",
        resume(&cut, vec![]),
        &["cut.safetensors"],
    ));
    let sparse = root.join("sparse.safetensors");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    cases.push(Case::error(
        "resume",
        "a sparse 1 TiB file allocates nothing",
        resume(&sparse, vec![]),
        &["sparse.safetensors"],
    ));
    let (tensors, _): (CheckpointTensors, RunState) = load_checkpoint(&good, &Device::Cpu).unwrap();
    let plain = root.join("plain.safetensors");
    candle_core::safetensors::save(&tensors.model, &plain).unwrap();
    cases.push(Case::error(
        "resume",
        "plain weights, not a checkpoint",
        resume(&plain, vec![]),
        &["not a training checkpoint"],
    ));

    let dir = root.join("damaged");
    std::fs::create_dir_all(&dir).unwrap();
    let d = |name: &str, change: Damage| damaged(&good, &dir, name, change);
    let table: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        (
            "a model tensor missing",
            d(
                "missing",
                Box::new(|t, _| {
                    t.model.remove("layer3.2.bn2.weight");
                }),
            ),
            vec!["layer3.2.bn2.weight"],
        ),
        (
            "a model tensor of the wrong shape",
            d(
                "shape",
                Box::new(|t, _| {
                    t.model.insert(
                        "fc.weight".into(),
                        Tensor::zeros((3, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
                    );
                }),
            ),
            vec!["fc.weight", "[3, 64]"],
        ),
        (
            "optimizer state missing",
            d(
                "optim",
                Box::new(|t, _| {
                    let k = t
                        .optimizer
                        .keys()
                        .find(|k| k.starts_with("layer1.0.conv1.weight"))
                        .cloned()
                        .unwrap();
                    t.optimizer.remove(&k);
                }),
            ),
            vec!["lacks the optimizer state", "layer1.0.conv1.weight"],
        ),
        (
            "EMA average missing",
            d(
                "ema",
                Box::new(|t, _| {
                    t.ema.remove("conv1.weight");
                }),
            ),
            vec!["lacks the EMA average of `conv1.weight`"],
        ),
        (
            "a DeiT run given to train-conv",
            d(
                "family",
                Box::new(|_, s| {
                    s.config.model = "deit_tiny_patch4_32".into();
                }),
            ),
            vec!["train-conv trains ResNet", "deit_tiny_patch4_32"],
        ),
        (
            "an unknown model in the state",
            d(
                "unknown",
                Box::new(|_, s| {
                    s.config.model = "resnet9000".into();
                }),
            ),
            vec!["resnet9000"],
        ),
        (
            "a NaN in the model",
            d(
                "nan",
                Box::new(|t, _| {
                    t.model.insert(
                        "fc.bias".into(),
                        Tensor::full(f32::NAN, 2, &Device::Cpu).unwrap(),
                    );
                }),
            ),
            vec!["fc.bias", "non-finite"],
        ),
    ];
    for (name, path, needles) in table {
        cases.push(Case::error(
            "checkpoint",
            name,
            resume(&path, argv!["--epochs", "2"]),
            &needles,
        ));
    }
    // Metadata that is not the state a checkpoint needs.
    let bad_state = dir.join("state.safetensors");
    let mut map = std::collections::HashMap::new();
    map.insert(
        "format".to_string(),
        "maxsup-train-checkpoint-v1".to_string(),
    );
    map.insert("state".to_string(), "{\"config\": 3}".to_string());
    let loaded = candle_core::safetensors::load(&good, &Device::Cpu).unwrap();
    let view: Vec<(String, Tensor)> = loaded.into_iter().collect();
    candle_core::safetensors::save(
        &view
            .iter()
            .cloned()
            .collect::<std::collections::HashMap<_, _>>(),
        &bad_state,
    )
    .unwrap();
    // candle's `save` writes no metadata: re-save through safetensors with the broken state.
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = view
        .iter()
        .map(|(n, t)| {
            let v: Vec<f32> = t
                .flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            (
                n.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                t.dims().to_vec(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, b, shape)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, Some(map), &bad_state).unwrap();
    cases.push(Case::error(
        "checkpoint",
        "state metadata that does not parse",
        resume(&bad_state, vec![]),
        &["state.safetensors", "state"],
    ));
}

fn data_cases(root: &Path, cases: &mut Vec<Case>) {
    let mut cut = jpeg();
    cut.truncate(cut.len() / 2);
    let bad: Vec<(&str, &str, Vec<u8>)> = vec![
        ("a truncated JPEG in the training split", "cut.jpg", cut),
        ("a zero-byte JPEG", "empty.jpg", vec![]),
        ("text named .jpg", "note.jpg", b"not an image".to_vec()),
    ];
    for (name, file, bytes) in bad {
        let data = folder(&root.join(format!("data-{file}")), Some((file, &bytes)));
        let out = root.join(format!("out-{file}"));
        cases.push(Case::error(
            "training data",
            name,
            train_args(&data, &out),
            &[file],
        ));
    }
    let empty_val = root.join("data-no-val");
    folder(&empty_val, None);
    std::fs::remove_dir_all(empty_val.join("val")).unwrap();
    cases.push(Case::error(
        "training data",
        "no val/ split",
        train_args(&empty_val, &root.join("o1")),
        &["val"],
    ));
    let few = folder(&root.join("data-few"), None);
    cases.push(Case::error(
        "training data",
        "fewer samples than one batch",
        train_args(&few, &root.join("o2"))
            .into_iter()
            .map(|a| if a == "4" { "64".into() } else { a })
            .collect(),
        &["fewer samples than one batch"],
    ));
    cases.push(Case::error(
        "training data",
        "--train-subset beyond the data",
        with(
            train_args(&few, &root.join("o3")),
            argv!["--train-subset", "1000"],
        ),
        &["--train-subset"],
    ));
    let mismatch = folder(&root.join("data-classes"), None);
    std::fs::create_dir_all(mismatch.join("val/n03")).unwrap();
    std::fs::write(mismatch.join("val/n03/0.jpg"), jpeg()).unwrap();
    cases.push(Case::error(
        "training data",
        "val/ with a class train/ lacks",
        train_args(&mismatch, &root.join("o4")),
        &["n03"],
    ));
}

#[test]
fn every_bad_input_gets_a_clear_error_or_the_right_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder(&dir.path().join("data"), None);
    let mut cases = vec![];
    flag_cases(&data, dir.path(), &mut cases);
    resume_cases(&data, dir.path(), &mut cases);
    data_cases(dir.path(), &mut cases);
    let report = run_corpus(Path::new(EXE), cases, Duration::from_secs(120));
    report.assert_all_passed(60);
}
