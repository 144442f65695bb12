//! The bad-input corpus of the `maxsup` binary: map files, zip archives, images, CIFAR-10 and
//! Fashion-MNIST files, weight files, feature files and flags, each run as a user would run it.
//! Every case must end in a clear error naming what is wrong, or in the right result (see
//! `tests/bad_inputs/harness.rs`); the test prints the counts per category.
//!
//! Everything is generated here in a temporary directory; no downloaded data is needed.

#[path = "../../../tests/bad_inputs/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use harness::{prints, run_corpus, Case};

const EXE: &str = env!("CARGO_BIN_EXE_maxsup");

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/maxsup-data/tests/data")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn jpeg() -> Vec<u8> {
    fixture("photo_baseline.jpg")
}

fn s(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// CRC-32 (PNG's, ISO-HDLC) for patched PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = vec![];
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        w.write_image_data(&data).unwrap();
    }
    out
}

/// A valid PNG whose IHDR then claims `width` x `height` (CRC fixed, so only the size is wrong).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut p = png(4, 4);
    // Signature (8), length (4), "IHDR" (4), width, height...
    p[16..20].copy_from_slice(&width.to_be_bytes());
    p[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&p[12..29]);
    p[29..33].copy_from_slice(&crc.to_be_bytes());
    p
}

/// The JPEG with its frame header (SOF0) claiming `width` x `height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut j = jpeg();
    let sof = j
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    j[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    j
}

/// The JPEG with the middle of its entropy-coded data replaced by `fill`.
fn jpeg_scan_filled(fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut j = jpeg();
    let sos = j.windows(2).position(|w| w == [0xFF, 0xDA]).expect("SOS");
    let (a, b) = (sos + 40, j.len() - 40);
    for (k, x) in j[a..b].iter_mut().enumerate() {
        *x = fill(k);
    }
    j
}

struct Fixtures {
    root: PathBuf,
    folder: PathBuf,
    zip: PathBuf,
    cifar: PathBuf,
    fashion: PathBuf,
    weights: PathBuf,
    features: PathBuf,
}

fn build_fixtures(root: &Path) -> Fixtures {
    let folder = root.join("folder");
    for split in ["train", "val"] {
        for class in ["n01", "n02"] {
            let d = folder.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("a.jpg"), jpeg()).unwrap();
            std::fs::write(d.join("b.JPEG"), fixture("gray.jpg")).unwrap();
        }
    }
    let zip = root.join("zip");
    let built = Command::new(EXE)
        .args(["data", "build-zip", "--folder"])
        .arg(&folder)
        .arg("--out")
        .arg(&zip)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let cifar = root.join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    std::fs::write(
        cifar.join("test_batch.bin"),
        cifar_batch(|i| (i % 10) as u8),
    )
    .unwrap();

    let fashion = root.join("fashion");
    std::fs::create_dir_all(&fashion).unwrap();
    std::fs::write(
        fashion.join("t10k-images-idx3-ubyte"),
        idx_images(10_000, 28, 28),
    )
    .unwrap();
    std::fs::write(
        fashion.join("t10k-labels-idx1-ubyte"),
        idx_labels(10_000, |i| (i % 10) as u8),
    )
    .unwrap();

    let weights = root.join("resnet20.safetensors");
    let model = maxsup_models::create_model(
        "resnet20_cifar",
        &maxsup_models::ModelOptions {
            num_classes: Some(10),
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let tensors: HashMap<String, Tensor> = model
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.var.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, &weights).unwrap();

    let features = root.join("features.safetensors");
    save_features(&features, &feature_tensors(60, 8, 3));
    Fixtures {
        root: root.to_path_buf(),
        folder,
        zip,
        cifar,
        fashion,
        weights,
        features,
    }
}

fn cifar_batch(label: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(10_000 * 3073);
    for i in 0..10_000 {
        b.push(label(i));
        b.extend((0..3072).map(|p| ((p + i) % 256) as u8));
    }
    b
}

fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = vec![];
    b.extend(0x0000_0803u32.to_be_bytes());
    b.extend(n.to_be_bytes());
    b.extend(rows.to_be_bytes());
    b.extend(cols.to_be_bytes());
    b.extend((0..n * rows * cols).map(|i| (i % 256) as u8));
    b
}

fn idx_labels(n: u32, label: impl Fn(u32) -> u8) -> Vec<u8> {
    let mut b = vec![];
    b.extend(0x0000_0801u32.to_be_bytes());
    b.extend(n.to_be_bytes());
    b.extend((0..n).map(label));
    b
}

/// Features of `n` rows in `k` well-separated classes, with their logits and labels.
fn feature_tensors(n: usize, d: usize, k: usize) -> HashMap<String, Tensor> {
    let labels: Vec<i64> = (0..n).map(|i| (i % k) as i64).collect();
    let features: Vec<f32> = (0..n * d)
        .map(|j| {
            let (i, c) = (j / d, j % d);
            let center = if c == (i % k) { 3.0 } else { 0.0 };
            center + ((j * 7919 % 101) as f32 / 101.0 - 0.5)
        })
        .collect();
    let logits: Vec<f32> = (0..n * k)
        .map(|j| {
            if j % k == (j / k) % k {
                2.0
            } else {
                -1.0 + (j % 5) as f32 * 0.1
            }
        })
        .collect();
    HashMap::from([
        (
            "features".to_string(),
            Tensor::from_vec(features, (n, d), &Device::Cpu).unwrap(),
        ),
        (
            "logits".to_string(),
            Tensor::from_vec(logits, (n, k), &Device::Cpu).unwrap(),
        ),
        (
            "labels".to_string(),
            Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
        ),
    ])
}

fn save_features(path: &Path, t: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(t, path).unwrap();
}

/// A zip-cache directory derived from the good one.
fn zip_variant(f: &Fixtures, name: &str, change: impl FnOnce(&Path)) -> PathBuf {
    let d = f.root.join("zip-variants").join(name);
    copy_dir(&f.zip, &d);
    change(&d);
    d
}

/// An ImageFolder root whose train/n02 also holds `file` with `bytes`.
fn folder_with(f: &Fixtures, name: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let d = f.root.join("folder-variants").join(name);
    copy_dir(&f.folder.join("train"), &d.join("train"));
    let target = d.join("train/n02").join(file);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(target, bytes).unwrap();
    d
}

fn check_zip(dir: &Path) -> Vec<OsString> {
    argv![
        "data",
        "check",
        "--zip",
        s(dir),
        "--split",
        "val",
        "--decode-all"
    ]
}

fn check_folder(dir: &Path) -> Vec<OsString> {
    argv![
        "data",
        "check",
        "--folder",
        s(dir),
        "--split",
        "train",
        "--decode-all"
    ]
}

fn map_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let good_map = std::fs::read_to_string(f.zip.join("val_map.txt")).unwrap();
    let first = good_map.lines().next().unwrap().to_string();
    let (first_path, _) = first.split_once('\t').unwrap();
    cases.push(Case::ok(
        "map file",
        "the good zip cache",
        check_zip(&f.zip),
        prints("decoded: 4 of 4 samples, 0 failed"),
    ));
    let bad_lines: &[(&str, String, &str)] = &[
        ("no tab", format!("{first_path} 0"), "found no tab"),
        (
            "label not a number",
            format!("{first_path}\tzero"),
            "is not an integer",
        ),
        ("negative label", format!("{first_path}\t-1"), "negative"),
        (
            "label beyond u32",
            format!("{first_path}\t4294967296"),
            "too large",
        ),
        (
            "label of 20 digits",
            format!("{first_path}\t99999999999999999999"),
            "is not an integer",
        ),
        ("empty path", "\t0".to_string(), "empty path"),
        (
            "not an image extension",
            "val/n01/a.txt\t0".to_string(),
            "image extension",
        ),
        (
            "float label",
            format!("{first_path}\t1.0"),
            "is not an integer",
        ),
        (
            "member not in the zip",
            "val/n01/missing.jpg\t0".to_string(),
            "missing.jpg",
        ),
    ];
    for (name, line, needle) in bad_lines {
        let d = zip_variant(f, &format!("line-{}", name.replace(' ', "-")), |d| {
            let mut text = good_map.clone();
            text.push_str(line);
            text.push('\n');
            std::fs::write(d.join("val_map.txt"), text).unwrap();
        });
        let line_no = good_map.lines().count() + 1;
        let mut needles = vec![*needle];
        let at = format!("val_map.txt:{line_no}");
        if *name != "member not in the zip" {
            needles.push(&at);
        }
        cases.push(Case::error("map file", *name, check_zip(&d), &needles));
    }
    let d = zip_variant(f, "huge-label", |d| {
        let text = good_map.replacen(
            &format!("{first}\n"),
            &format!("{first_path}\t4294967295\n"),
            1,
        );
        std::fs::write(d.join("val_map.txt"), text).unwrap();
    });
    cases.push(Case::error(
        "map file",
        "a label near 2^32 allocates nothing",
        check_zip(&d),
        &["val_map.txt", "0..4294967296"],
    ));
    let d = zip_variant(f, "empty-map", |d| {
        std::fs::write(d.join("val_map.txt"), "").unwrap()
    });
    cases.push(Case::error(
        "map file",
        "empty map file",
        check_zip(&d),
        &["val_map.txt"],
    ));
    let d = zip_variant(f, "blank-map", |d| {
        std::fs::write(d.join("val_map.txt"), "\n\n  \n").unwrap()
    });
    cases.push(Case::error(
        "map file",
        "only blank lines",
        check_zip(&d),
        &["val_map.txt"],
    ));
    let d = zip_variant(f, "no-map", |d| {
        std::fs::remove_file(d.join("val_map.txt")).unwrap()
    });
    cases.push(Case::error(
        "map file",
        "map file missing",
        check_zip(&d),
        &["val_map.txt"],
    ));
    let d = zip_variant(f, "map-dir", |d| {
        std::fs::remove_file(d.join("val_map.txt")).unwrap();
        std::fs::create_dir(d.join("val_map.txt")).unwrap();
    });
    cases.push(Case::error(
        "map file",
        "map file is a directory",
        check_zip(&d),
        &["val_map.txt"],
    ));
    let d = zip_variant(f, "crlf", |d| {
        std::fs::write(d.join("val_map.txt"), good_map.replace('\n', "\r\n")).unwrap()
    });
    cases.push(Case::ok(
        "map file",
        "CRLF line ends",
        check_zip(&d),
        prints("decoded: 4 of 4 samples, 0 failed"),
    ));
    let d = zip_variant(f, "blank-lines", |d| {
        std::fs::write(
            d.join("val_map.txt"),
            format!("\n{}\n\n", good_map.replace('\n', "\n\n")),
        )
        .unwrap()
    });
    cases.push(Case::ok(
        "map file",
        "blank lines between entries",
        check_zip(&d),
        prints("decoded: 4 of 4 samples, 0 failed"),
    ));
    let d = zip_variant(f, "no-final-newline", |d| {
        std::fs::write(d.join("val_map.txt"), good_map.trim_end()).unwrap()
    });
    cases.push(Case::ok(
        "map file",
        "no final newline",
        check_zip(&d),
        prints("decoded: 4 of 4 samples, 0 failed"),
    ));
    let d = zip_variant(f, "duplicate", |d| {
        std::fs::write(d.join("val_map.txt"), format!("{good_map}{first}\n")).unwrap()
    });
    cases.push(Case::error(
        "map file",
        "an entry listed twice",
        check_zip(&d),
        &["val_map.txt", first_path],
    ));
    let d = zip_variant(f, "non-utf8", |d| {
        let mut b = good_map.clone().into_bytes();
        b.extend_from_slice(b"val/n01/\xff\xfe.jpg\t0\n");
        std::fs::write(d.join("val_map.txt"), b).unwrap();
    });
    cases.push(Case::error(
        "map file",
        "non-UTF-8 bytes",
        check_zip(&d),
        &["val_map.txt"],
    ));
    let d = zip_variant(f, "gap", |d| {
        let text: String = good_map
            .lines()
            .map(|l| {
                let (p, lab) = l.split_once('\t').unwrap();
                format!("{p}\t{}\n", if lab == "1" { "5" } else { lab })
            })
            .collect();
        std::fs::write(d.join("val_map.txt"), text).unwrap();
    });
    cases.push(Case::error(
        "map file",
        "classes with no samples (labels 0 and 5)",
        check_zip(&d),
        &["val_map.txt", "no samples"],
    ));
    cases.push(Case::error(
        "map file",
        "labels beyond --num-classes",
        [check_zip(&f.zip), argv!["--num-classes", "1"]].concat(),
        &["--num-classes"],
    ));
    cases.push(Case::ok(
        "map file",
        "--num-classes that fits",
        [check_zip(&f.zip), argv!["--num-classes", "2"]].concat(),
        prints("classes: 2"),
    ));
}

fn zip_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let original = std::fs::read(f.zip.join("val.zip")).unwrap();
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to half", original[..original.len() / 2].to_vec()),
        ("zero bytes", vec![]),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        (
            "central directory cut",
            original[..original.len() - 30].to_vec(),
        ),
        ("text file", b"this is not a zip archive\n".to_vec()),
    ];
    for (name, bytes) in variants {
        let d = zip_variant(f, &format!("zip-{}", name.replace(' ', "-")), |d| {
            std::fs::write(d.join("val.zip"), bytes).unwrap()
        });
        cases.push(Case::error(
            "zip archive",
            name,
            check_zip(&d),
            &["val.zip"],
        ));
    }
    let d = zip_variant(f, "zip-missing", |d| {
        std::fs::remove_file(d.join("val.zip")).unwrap()
    });
    cases.push(Case::error(
        "zip archive",
        "archive missing",
        check_zip(&d),
        &["val.zip"],
    ));
    // A member's data damaged in place: the JPEG inside no longer decodes (stored members).
    let d = zip_variant(f, "zip-member-damaged", |d| {
        let mut z = original.clone();
        let soi = z.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF]).unwrap();
        let sos = soi + z[soi..].windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        for x in &mut z[sos + 40..sos + 4000] {
            *x = 0xFF;
        }
        std::fs::write(d.join("val.zip"), z).unwrap();
    });
    cases.push(Case::error(
        "zip archive",
        "a member's data damaged",
        check_zip(&d),
        &["val.zip", "val/n0"],
    ));
    // A member whose local header declares 4 GiB - 1 uncompressed.
    let d = zip_variant(f, "zip-member-huge", |d| {
        let mut z = original.clone();
        let mut at = 0;
        while let Some(p) = z[at..]
            .windows(4)
            .position(|w| w == [0x50, 0x4B, 0x01, 0x02])
        {
            let h = at + p;
            z[h + 24..h + 28].copy_from_slice(&u32::MAX.to_le_bytes());
            at = h + 4;
        }
        std::fs::write(d.join("val.zip"), z).unwrap();
    });
    cases.push(Case::error(
        "zip archive",
        "members declaring 4 GiB",
        check_zip(&d),
        &["val/n0"],
    ));
    let d = zip_variant(f, "zip-dir", |d| {
        std::fs::remove_file(d.join("val.zip")).unwrap();
        std::fs::create_dir(d.join("val.zip")).unwrap();
    });
    cases.push(Case::error(
        "zip archive",
        "archive is a directory",
        check_zip(&d),
        &["val.zip"],
    ));
    cases.push(Case::error(
        "zip archive",
        "zip cache directory missing",
        check_zip(&f.root.join("no-such-dir")),
        &["no-such-dir"],
    ));
    cases.push(Case::ok(
        "zip archive",
        "--cache reads the archive into memory",
        [check_zip(&f.zip), argv!["--cache"]].concat(),
        prints("decoded: 4 of 4 samples, 0 failed"),
    ));
    cases.push(Case::ok(
        "zip archive",
        "the train split",
        argv![
            "data",
            "check",
            "--zip",
            s(&f.zip),
            "--split",
            "train",
            "--decode-all"
        ],
        prints("decoded: 4 of 4 samples, 0 failed"),
    ));
}

fn image_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let good = jpeg();
    let mut cut_eoi = good[..good.len() * 2 / 3].to_vec();
    cut_eoi.extend_from_slice(&[0xFF, 0xD9]);
    let bad: Vec<(&str, &str, Vec<u8>)> = vec![
        ("zero-byte JPEG", "empty.jpg", vec![]),
        ("truncated JPEG", "cut.jpg", good[..good.len() / 2].to_vec()),
        ("truncated JPEG with an end marker", "cut_eoi.jpg", cut_eoi),
        (
            "Huffman garbage",
            "garbage.jpg",
            jpeg_scan_filled(|k| (k * 37 % 256) as u8),
        ),
        (
            "scan of 0xFF bytes",
            "ffscan.jpg",
            jpeg_scan_filled(|_| 0xFF),
        ),
        ("only the start marker", "soi.jpg", vec![0xFF, 0xD8]),
        ("JPEG of width 0", "w0.jpg", jpeg_claiming(0, 100)),
        (
            "JPEG claiming 65500x65500",
            "huge.jpg",
            jpeg_claiming(65500, 65500),
        ),
        (
            "JPEG claiming 40000x40000 (over MAX_PIXELS)",
            "big.jpg",
            jpeg_claiming(40000, 40000),
        ),
        (
            "PNG claiming 100000x100000",
            "bomb.png",
            png_claiming(100_000, 100_000),
        ),
        ("PNG claiming 0x4", "zero.png", png_claiming(0, 4)),
        ("truncated PNG", "cut.png", png(16, 16)[..40].to_vec()),
        ("PNG with a bad CRC", "crc.png", {
            let mut p = png(16, 16);
            p[29] ^= 0xFF;
            p
        }),
        (
            "text named .jpg",
            "note.jpg",
            b"hello, not an image\n".to_vec(),
        ),
        (
            "GIF named .jpg",
            "anim.jpg",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
        ),
        (
            "random bytes named .png",
            "noise.png",
            (0..5000u32)
                .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
                .collect(),
        ),
        ("BMP header only", "pic.bmp", b"BM\x00\x00".to_vec()),
        (
            "WebP header only",
            "pic.webp",
            b"RIFF\x00\x00\x00\x00WEBP".to_vec(),
        ),
    ];
    for (name, file, bytes) in bad {
        let d = folder_with(f, &format!("img-{file}"), file, &bytes);
        cases.push(Case::error("image", name, check_folder(&d), &[file]));
    }
    let ok: Vec<(&str, &str, Vec<u8>)> = vec![
        ("a valid PNG", "ok.png", png(40, 30)),
        ("a CMYK JPEG", "cmyk.jpg", fixture("cmyk.jpg")),
        (
            "a progressive JPEG",
            "prog.jpeg",
            fixture("photo_progressive.jpg"),
        ),
        ("an upper-case extension", "UPPER.JPG", jpeg()),
        ("an image in a nested folder", "deeper/nested.jpg", jpeg()),
    ];
    for (name, file, bytes) in ok {
        let d = folder_with(f, &format!("ok-{}", file.replace('/', "-")), file, &bytes);
        cases.push(Case::ok(
            "image",
            name,
            check_folder(&d),
            prints("decoded: 5 of 5 samples, 0 failed"),
        ));
    }
    let d = folder_with(f, "readme", "README.txt", b"notes");
    cases.push(Case::ok(
        "image",
        "a non-image file is not a sample (torchvision's rule)",
        check_folder(&d),
        prints("samples: 4"),
    ));
    let d = folder_with(f, "skip", "bad.jpg", b"junk");
    cases.push(Case::ok(
        "image",
        "--skip-corrupt counts the bad file",
        [check_folder(&d), argv!["--skip-corrupt"]].concat(),
        prints("1 failed"),
    ));
    let d = f.root.join("folder-variants/empty-class");
    copy_dir(&f.folder.join("train"), &d.join("train"));
    std::fs::create_dir_all(d.join("train/n03")).unwrap();
    cases.push(Case::error(
        "image",
        "a class folder without images",
        check_folder(&d),
        &["n03", "no images"],
    ));
    let d = f.root.join("folder-variants/no-classes");
    std::fs::create_dir_all(d.join("train")).unwrap();
    cases.push(Case::error(
        "image",
        "a split without class folders",
        check_folder(&d),
        &["no class folders"],
    ));
    cases.push(Case::error(
        "image",
        "a split folder that does not exist",
        argv![
            "data",
            "check",
            "--folder",
            s(&f.folder),
            "--split",
            "train",
            "--decode-all"
        ]
        .into_iter()
        .map(|a| {
            if a == s(&f.folder) {
                s(&f.root.join("nowhere"))
            } else {
                a
            }
        })
        .collect(),
        &["nowhere"],
    ));
}

fn cifar_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let check = |d: &Path| {
        argv![
            "data",
            "check",
            "--cifar10",
            s(d),
            "--split",
            "val",
            "--decode-all"
        ]
    };
    cases.push(Case::ok(
        "cifar-10",
        "a valid test batch",
        check(&f.cifar),
        prints("samples: 10000"),
    ));
    let good = std::fs::read(f.cifar.join("test_batch.bin")).unwrap();
    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated by one byte",
            good[..good.len() - 1].to_vec(),
            "30729999 bytes",
        ),
        (
            "one byte too many",
            [good.clone(), vec![0]].concat(),
            "30730001 bytes",
        ),
        ("empty file", vec![], "0 bytes"),
        (
            "label 10",
            {
                let mut b = good.clone();
                b[3073 * 17] = 10;
                b
            },
            "record 17 has label 10",
        ),
        (
            "label 255",
            {
                let mut b = good.clone();
                b[0] = 255;
                b
            },
            "record 0 has label 255",
        ),
    ];
    for (name, bytes, needle) in variants {
        let d = f.root.join("cifar-variants").join(name.replace(' ', "-"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("test_batch.bin"), bytes).unwrap();
        cases.push(Case::error(
            "cifar-10",
            name,
            check(&d),
            &["test_batch.bin", needle],
        ));
    }
    let d = f.root.join("cifar-variants/sparse");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::File::create(d.join("test_batch.bin"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    cases.push(Case::error(
        "cifar-10",
        "a sparse 1 TiB batch allocates nothing",
        check(&d),
        &["test_batch.bin", "1099511627776 bytes"],
    ));
    let d = f.root.join("cifar-variants/missing");
    std::fs::create_dir_all(&d).unwrap();
    cases.push(Case::error(
        "cifar-10",
        "batch file missing",
        check(&d),
        &["test_batch.bin", "fetch-cifar10.sh"],
    ));
    cases.push(Case::error(
        "cifar-10",
        "directory missing",
        check(&f.root.join("no-cifar")),
        &["no-cifar"],
    ));
    cases.push(Case::error(
        "cifar-10",
        "the train split missing its batches",
        argv![
            "data",
            "check",
            "--cifar10",
            s(&f.cifar),
            "--split",
            "train"
        ],
        &["data_batch_1.bin"],
    ));
}

fn fashion_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let check = |d: &Path| {
        argv![
            "data",
            "check",
            "--fashion-mnist",
            s(d),
            "--split",
            "val",
            "--decode-all"
        ]
    };
    cases.push(Case::ok(
        "fashion-mnist",
        "valid test files",
        check(&f.fashion),
        prints("samples: 10000"),
    ));
    let images = std::fs::read(f.fashion.join("t10k-images-idx3-ubyte")).unwrap();
    let labels = std::fs::read(f.fashion.join("t10k-labels-idx1-ubyte")).unwrap();
    let variants: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "images truncated",
            images[..images.len() - 100].to_vec(),
            labels.clone(),
            "t10k-images-idx3-ubyte",
        ),
        (
            "labels magic wrong",
            images.clone(),
            {
                let mut l = labels.clone();
                l[3] = 0x03;
                l
            },
            "magic number",
        ),
        (
            "images given as labels",
            images.clone(),
            images.clone(),
            "t10k-labels-idx1-ubyte",
        ),
        (
            "27x28 images",
            idx_images(10_000, 27, 28),
            labels.clone(),
            "27",
        ),
        (
            "9,999 labels",
            images.clone(),
            idx_labels(9_999, |i| (i % 10) as u8),
            "9999",
        ),
        (
            "label 10",
            images.clone(),
            idx_labels(10_000, |i| if i == 42 { 10 } else { (i % 10) as u8 }),
            "10",
        ),
        (
            "still gzipped",
            images.clone(),
            [vec![0x1f, 0x8b, 8, 0], labels[4..].to_vec()].concat(),
            "gzip",
        ),
        (
            "empty labels file",
            images.clone(),
            vec![],
            "t10k-labels-idx1-ubyte",
        ),
    ];
    for (name, img, lab, needle) in variants {
        let d = f
            .root
            .join("fashion-variants")
            .join(name.replace([' ', ','], "-"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("t10k-images-idx3-ubyte"), img).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), lab).unwrap();
        cases.push(Case::error("fashion-mnist", name, check(&d), &[needle]));
    }
    let d = f.root.join("fashion-variants/labels-missing");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), &images).unwrap();
    cases.push(Case::error(
        "fashion-mnist",
        "labels file missing",
        check(&d),
        &["t10k-labels-idx1-ubyte", "fetch-fashion-mnist.sh"],
    ));
}

fn extract_args(f: &Fixtures, weights: &Path, out: &Path) -> Vec<OsString> {
    let mut a = extract_args_for(f, weights, out);
    a.extend(argv!["--model", "resnet20_cifar"]);
    a
}

/// `extract` without `--model`.
fn extract_args_for(f: &Fixtures, weights: &Path, out: &Path) -> Vec<OsString> {
    argv![
        "extract",
        "--weights",
        s(weights),
        "--cifar10",
        s(&f.cifar),
        "--limit",
        "8",
        "--batch-size",
        "4",
        "--out",
        s(out)
    ]
}

fn weight_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let out = f.root.join("extracted.safetensors");
    cases.push(Case::ok(
        "weights",
        "plain safetensors with --model",
        extract_args(f, &f.weights, &out),
        prints("wrote 8 samples (64-d features, 10 logits)"),
    ));
    let good = candle_core::safetensors::load(&f.weights, &Device::Cpu).unwrap();
    let variant = |name: &str, change: &dyn Fn(&mut HashMap<String, Tensor>)| -> PathBuf {
        let mut t = good.clone();
        change(&mut t);
        let p = f.root.join(format!("weights-{name}.safetensors"));
        candle_core::safetensors::save(&t, &p).unwrap();
        p
    };
    // Outputs written before must survive a failing extract.
    let kept = f.root.join("kept.safetensors");
    std::fs::copy(&f.features, &kept).unwrap();
    let shaped = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
    let bad: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        (
            "a tensor missing",
            variant("missing", &|t| {
                t.remove("layer2.1.conv2.weight");
            }),
            vec!["layer2.1.conv2.weight"],
        ),
        (
            "an unexpected tensor",
            variant("extra", &|t| {
                t.insert("layer9.weight".into(), shaped(&[3]));
            }),
            vec!["layer9.weight"],
        ),
        (
            "a wrong shape",
            variant("shape", &|t| {
                t.insert("conv1.weight".into(), shaped(&[16, 3, 5, 5]));
            }),
            vec!["conv1.weight", "[16, 3, 5, 5]"],
        ),
        (
            "a 0-d classifier weight",
            variant("fc0d", &|t| {
                t.insert("fc.weight".into(), Tensor::new(1f32, &Device::Cpu).unwrap());
            }),
            vec!["fc.weight"],
        ),
        (
            "a 3-d classifier weight",
            variant("fc3d", &|t| {
                t.insert("fc.weight".into(), shaped(&[10, 64, 1]));
            }),
            vec!["fc.weight"],
        ),
        (
            "an integer weight",
            variant("int", &|t| {
                t.insert(
                    "conv1.weight".into(),
                    Tensor::zeros((16, 3, 3, 3), DType::I64, &Device::Cpu).unwrap(),
                );
            }),
            vec!["conv1.weight"],
        ),
        (
            "a NaN weight",
            variant("nan", &|t| {
                let w = t["fc.bias"].clone();
                let nan = Tensor::full(f32::NAN, w.shape(), &Device::Cpu).unwrap();
                t.insert("fc.bias".into(), nan);
            }),
            vec!["non-finite"],
        ),
    ];
    for (name, path, needles) in bad {
        let out = f
            .root
            .join(format!("out-{}.safetensors", name.replace(' ', "-")));
        cases.push(Case::error(
            "weights",
            name,
            extract_args(f, &path, &out),
            &needles,
        ));
    }
    cases.push(
        Case::error(
            "weights",
            "a failing extract leaves an existing output alone",
            extract_args(
                f,
                &variant("missing2", &|t| {
                    t.remove("fc.bias");
                }),
                &kept,
            ),
            &["fc.bias"],
        )
        .keeping(&kept),
    );
    let f64_path = variant("f64", &|t| {
        for v in t.values_mut() {
            if v.dtype() == DType::F32 {
                *v = v.to_dtype(DType::F64).unwrap();
            }
        }
    });
    cases.push(Case::ok(
        "weights",
        "f64 weights (converted)",
        extract_args(f, &f64_path, &f.root.join("o64.safetensors")),
        prints("wrote 8 samples"),
    ));
    let raw = std::fs::read(&f.weights).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("truncated safetensors", raw[..raw.len() / 2].to_vec()),
        ("zero-byte weights", vec![]),
        (
            "a header length of 2^60",
            [(1u64 << 60).to_le_bytes().to_vec(), raw[8..].to_vec()].concat(),
        ),
        (
            "a header that is not JSON",
            [16u64.to_le_bytes().to_vec(), b"not json at all!".to_vec()].concat(),
        ),
        (
            "random bytes",
            (0..3000u32)
                .map(|i| (i.wrapping_mul(747796405) >> 9) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in files {
        let p = f
            .root
            .join(format!("w-{}.safetensors", name.replace([' ', '^'], "-")));
        std::fs::write(&p, bytes).unwrap();
        let file_name = p.file_name().unwrap().to_string_lossy().to_string();
        let needles = [file_name.as_str()];
        cases.push(Case::error(
            "weights",
            name,
            extract_args(f, &p, &f.root.join("o.safetensors")),
            &needles,
        ));
    }
    for (name, bytes) in [
        ("garbage .pth", b"PK\x03\x04garbage".to_vec()),
        (
            "a pickle that is not a state dict",
            b"\x80\x02K\x05.".to_vec(),
        ),
    ] {
        let p = f.root.join(format!("{}.pth", name.replace(' ', "-")));
        std::fs::write(&p, bytes).unwrap();
        let file_name = p.file_name().unwrap().to_string_lossy().to_string();
        cases.push(Case::error(
            "weights",
            name,
            extract_args(f, &p, &f.root.join("o.safetensors")),
            &[file_name.as_str()],
        ));
    }
    cases.push(Case::error(
        "weights",
        "weights file missing",
        extract_args(f, &f.root.join("gone.safetensors"), &out),
        &["gone.safetensors"],
    ));
    cases.push(Case::error(
        "weights",
        "weights path is a directory",
        extract_args(f, &f.root, &out),
        &[f.root.to_str().unwrap()],
    ));
    cases.push(Case::error(
        "weights",
        "--model of another depth",
        [
            extract_args_for(f, &f.weights, &out),
            argv!["--model", "resnet56_cifar"],
        ]
        .concat(),
        &["layer1.3"],
    ));
    cases.push(Case::error(
        "weights",
        "plain weights without --model",
        extract_args_for(f, &f.weights, &out),
        &["--model"],
    ));
    cases.push(Case::error(
        "weights",
        "an unknown --model",
        [
            extract_args_for(f, &f.weights, &out),
            argv!["--model", "resnet21_cifar"],
        ]
        .concat(),
        &["resnet21_cifar"],
    ));
    cases.push(Case::error(
        "weights",
        "--ema on plain weights",
        [extract_args(f, &f.weights, &out), argv!["--ema"]].concat(),
        &["--ema"],
    ));
    cases.push(Case::ok(
        "weights",
        "inspect-model of a registry name",
        argv!["inspect-model", "resnet20_cifar"],
        prints("resnet20_cifar"),
    ));
    cases.push(Case::error(
        "weights",
        "inspect-model of an unknown name",
        argv!["inspect-model", "resnet7"],
        &["resnet7"],
    ));
}

fn feature_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let good = feature_tensors(60, 8, 3);
    let variant = |name: &str, change: &dyn Fn(&mut HashMap<String, Tensor>)| -> PathBuf {
        let mut t = good.clone();
        change(&mut t);
        let p = f.root.join(format!("feat-{name}.safetensors"));
        save_features(&p, &t);
        p
    };
    cases.push(Case::ok(
        "feature file",
        "metrics of a good file",
        argv!["metrics", s(&f.features)],
        prints("R^2"),
    ));
    let no_logits = variant("nologits", &|t| {
        t.remove("logits");
    });
    cases.push(Case::ok(
        "feature file",
        "metrics need no logits",
        argv!["metrics", s(&no_logits)],
        prints("R^2"),
    ));
    cases.push(Case::ok(
        "feature file",
        "calibration of a good file",
        argv!["calibration", s(&f.features)],
        prints("ECE"),
    ));
    let with_nan = |row: usize| {
        move |t: &mut HashMap<String, Tensor>| {
            let mut v: Vec<f32> = t["features"].flatten_all().unwrap().to_vec1().unwrap();
            v[row * 8 + 3] = f32::NAN;
            t.insert(
                "features".into(),
                Tensor::from_vec(v, (60, 8), &Device::Cpu).unwrap(),
            );
        }
    };
    let nan17 = variant("nan17", &with_nan(17));
    let inf = variant("inf", &|t| {
        let mut v: Vec<f32> = t["features"].flatten_all().unwrap().to_vec1().unwrap();
        v[5 * 8] = f32::INFINITY;
        t.insert(
            "features".into(),
            Tensor::from_vec(v, (60, 8), &Device::Cpu).unwrap(),
        );
    });
    let bad_logits = variant("nanlogits", &|t| {
        let mut v: Vec<f32> = t["logits"].flatten_all().unwrap().to_vec1().unwrap();
        v[9 * 3 + 1] = f32::NAN;
        t.insert(
            "logits".into(),
            Tensor::from_vec(v, (60, 3), &Device::Cpu).unwrap(),
        );
    });
    let no_features = variant("nofeatures", &|t| {
        t.remove("features");
    });
    let no_labels = variant("nolabels", &|t| {
        t.remove("labels");
    });
    let short_labels = variant("shortlabels", &|t| {
        t.insert("labels".into(), t["labels"].narrow(0, 0, 59).unwrap());
    });
    let flat = variant("flat", &|t| {
        t.insert("features".into(), t["features"].flatten_all().unwrap());
    });
    let negative = variant("neglabel", &|t| {
        let mut v: Vec<i64> = t["labels"].to_vec1().unwrap();
        v[4] = -3;
        t.insert(
            "labels".into(),
            Tensor::from_vec(v, 60, &Device::Cpu).unwrap(),
        );
    });
    let float_labels = variant("floatlabels", &|t| {
        t.insert("labels".into(), t["labels"].to_dtype(DType::F32).unwrap());
    });
    let empty = variant("empty", &|t| {
        t.insert(
            "features".into(),
            Tensor::zeros((0, 8), DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "logits".into(),
            Tensor::zeros((0, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "labels".into(),
            Tensor::zeros(0, DType::I64, &Device::Cpu).unwrap(),
        );
    });
    let wide_logits = variant("widelogits", &|t| {
        t.insert(
            "logits".into(),
            Tensor::zeros((60, 5), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let label_beyond = variant("labelbeyond", &|t| {
        let mut v: Vec<i64> = t["labels"].to_vec1().unwrap();
        v[2] = 7;
        t.insert(
            "labels".into(),
            Tensor::from_vec(v, 60, &Device::Cpu).unwrap(),
        );
    });
    let one_class = variant("oneclass", &|t| {
        t.insert(
            "labels".into(),
            Tensor::zeros(60, DType::I64, &Device::Cpu).unwrap(),
        );
    });
    let text = f.root.join("notes.safetensors");
    std::fs::write(&text, "features,labels\n1,2\n").unwrap();
    let dims = variant("dims", &|t| {
        t.insert(
            "features".into(),
            Tensor::zeros((60, 5), DType::F32, &Device::Cpu).unwrap(),
        );
    });

    for cmd in ["metrics", "calibration"] {
        let table: Vec<(&str, &PathBuf, Vec<&str>)> = vec![
            ("NaN feature in row 17", &nan17, vec!["row 17"]),
            ("an infinite feature in row 5", &inf, vec!["row 5"]),
            ("no features tensor", &no_features, vec!["features"]),
            ("no labels tensor", &no_labels, vec!["labels"]),
            ("59 labels for 60 rows", &short_labels, vec!["59", "60"]),
            ("1-d features", &flat, vec!["features"]),
            ("a negative label", &negative, vec!["row 4"]),
            ("float labels", &float_labels, vec!["labels"]),
            ("zero rows", &empty, vec!["no samples"]),
            ("not a safetensors file", &text, vec!["notes.safetensors"]),
        ];
        for (name, path, needles) in table {
            if cmd == "calibration" && name.contains("feature") && !name.contains("features tensor")
            {
                continue; // calibration reads logits, not features
            }
            cases.push(Case::error(
                "feature file",
                format!("{cmd}: {name}"),
                argv![cmd, s(path)],
                &needles,
            ));
        }
    }
    cases.push(Case::error(
        "feature file",
        "calibration: NaN logit in row 9",
        argv!["calibration", s(&bad_logits)],
        &["row 9"],
    ));
    cases.push(Case::error(
        "feature file",
        "calibration: no logits",
        argv!["calibration", s(&no_logits)],
        &["logits"],
    ));
    cases.push(Case::error(
        "feature file",
        "calibration: 5 logits for 3 classes... with labels up to 2",
        argv!["calibration", s(&label_beyond)],
        &["label"],
    ));
    cases.push(Case::ok(
        "feature file",
        "calibration: logits wider than the labels",
        argv!["calibration", s(&wide_logits)],
        prints("ECE"),
    ));
    cases.push(Case::error(
        "feature file",
        "calibration: --bins 0",
        argv!["calibration", s(&f.features), "--bins", "0"],
        &["--bins"],
    ));
    cases.push(Case::error(
        "feature file",
        "metrics: --batch-rows 0",
        argv!["metrics", s(&f.features), "--batch-rows", "0"],
        &["--batch-rows"],
    ));
    cases.push(Case::error(
        "feature file",
        "metrics: one class only",
        argv!["metrics", s(&one_class)],
        &["class"],
    ));

    let probe = |train: &Path, test: &Path| {
        argv![
            "probe",
            s(train),
            s(test),
            "--num-lambdas",
            "3",
            "--max-iter",
            "50"
        ]
    };
    cases.push(Case::ok(
        "feature file",
        "probe of good files",
        probe(&f.features, &f.features),
        prints("accuracy"),
    ));
    cases.push(Case::error(
        "feature file",
        "probe: feature widths differ",
        probe(&f.features, &dims),
        &["8", "5"],
    ));
    cases.push(Case::error(
        "feature file",
        "probe: NaN in the test features",
        probe(&f.features, &nan17),
        &["row 17"],
    ));
    cases.push(Case::error(
        "feature file",
        "probe: one class in training",
        probe(&one_class, &f.features),
        &["class"],
    ));
    cases.push(Case::error(
        "feature file",
        "probe: --val-fraction 1.5",
        [
            probe(&f.features, &f.features),
            argv!["--val-fraction", "1.5"],
        ]
        .concat(),
        &["--val-fraction"],
    ));
    cases.push(Case::error(
        "feature file",
        "probe: --num-lambdas 0",
        [probe(&f.features, &f.features), argv!["--num-lambdas", "0"]].concat(),
        &["--num-lambdas"],
    ));
    cases.push(Case::error(
        "feature file",
        "probe: --lambda-min above --lambda-max",
        [
            probe(&f.features, &f.features),
            argv!["--lambda-min", "10", "--lambda-max", "1"],
        ]
        .concat(),
        &["--lambda-min"],
    ));
    cases.push(Case::error(
        "feature file",
        "probe: test file missing",
        probe(&f.features, &f.root.join("absent.safetensors")),
        &["absent.safetensors"],
    ));

    let plots = f.root.join("plots");
    cases.push(Case::ok(
        "feature file",
        "logits plots of a good file",
        argv!["logits", s(&f.features), "--out-dir", s(&plots)],
        |_| Ok(()),
    ));
    cases.push(Case::error(
        "feature file",
        "logits: zero rows",
        argv!["logits", s(&empty), "--out-dir", s(&plots)],
        &["no samples"],
    ));
    cases.push(Case::error(
        "feature file",
        "logits: no logits tensor",
        argv!["logits", s(&no_logits), "--out-dir", s(&plots)],
        &["logits"],
    ));
    cases.push(Case::error(
        "feature file",
        "logits: --names count",
        argv![
            "logits",
            s(&f.features),
            "--names",
            "a",
            "b",
            "--out-dir",
            s(&plots)
        ],
        &["--names"],
    ));
    cases.push(Case::error(
        "feature file",
        "logits: NaN logit in row 9",
        argv!["logits", s(&bad_logits), "--out-dir", s(&plots)],
        &["row 9"],
    ));
    let png_out = f.root.join("proj.png");
    cases.push(Case::ok(
        "feature file",
        "project of a good file",
        argv![
            "project",
            s(&f.features),
            "--out",
            s(&png_out),
            "--per-class",
            "10"
        ],
        |_| Ok(()),
    ));
    cases.push(Case::error(
        "feature file",
        "project: a class not in the file",
        argv![
            "project",
            s(&f.features),
            "--classes",
            "0,1,7",
            "--out",
            s(&png_out)
        ],
        &["7"],
    ));
    cases.push(Case::error(
        "feature file",
        "project: --per-class 0",
        argv![
            "project",
            s(&f.features),
            "--per-class",
            "0",
            "--out",
            s(&png_out)
        ],
        &["--per-class"],
    ));
    cases.push(Case::error(
        "feature file",
        "project: NaN feature in row 17",
        argv!["project", s(&nan17), "--out", s(&png_out)],
        &["row 17"],
    ));
}

fn flag_cases(f: &Fixtures, cases: &mut Vec<Case>) {
    let out = f.root.join("flags-out.safetensors");
    let ex = || extract_args(f, &f.weights, &out);
    let flags: Vec<(&str, Vec<OsString>, Vec<&str>)> = vec![
        (
            "data check: two sources",
            argv![
                "data",
                "check",
                "--zip",
                s(&f.zip),
                "--folder",
                s(&f.folder)
            ],
            vec!["--folder and --zip"],
        ),
        (
            "data check: --cache without --zip",
            argv!["data", "check", "--folder", s(&f.folder), "--cache"],
            vec!["--cache"],
        ),
        (
            "data check: --image-size",
            argv![
                "data",
                "check",
                "--folder",
                s(&f.folder),
                "--image-size",
                "64"
            ],
            vec!["--image-size"],
        ),
        (
            "data check: no source",
            argv!["data", "check"],
            vec!["--cifar10"],
        ),
        (
            "data check: --split test",
            argv!["data", "check", "--cifar10", s(&f.cifar), "--split", "test"],
            vec!["--split"],
        ),
        (
            "extract: --limit 0",
            [ex(), argv!["--limit", "0"]].concat(),
            vec!["--limit"],
        ),
        (
            "extract: --batch-size 0",
            [ex(), argv!["--batch-size", "0"]].concat(),
            vec!["--batch-size"],
        ),
        (
            "extract: --class-order on CIFAR",
            [ex(), argv!["--class-order", "zip"]].concat(),
            vec!["--class-order"],
        ),
        (
            "extract: --image-size 64 on CIFAR",
            [ex(), argv!["--image-size", "64"]].concat(),
            vec!["--image-size"],
        ),
        (
            "extract: --device gpu",
            [ex(), argv!["--device", "gpu"]].concat(),
            vec!["gpu"],
        ),
        (
            "extract: --device cuda without the feature",
            [ex(), argv!["--device", "cuda"]].concat(),
            vec!["cuda"],
        ),
        (
            "extract: --split bogus",
            [ex(), argv!["--split", "bogus"]].concat(),
            vec!["bogus"],
        ),
        (
            "extract: two sources",
            [ex(), argv!["--folder", s(&f.folder)]].concat(),
            vec!["--cifar10 and --folder"],
        ),
        (
            "extract: no data for plain weights",
            argv![
                "extract",
                "--weights",
                s(&f.weights),
                "--model",
                "resnet20_cifar",
                "--out",
                s(&out)
            ],
            vec!["--cifar10"],
        ),
        (
            "gradcam: --names count",
            argv![
                "gradcam",
                "--weights",
                s(&f.weights),
                "--model",
                "resnet20_cifar",
                "--cifar10",
                s(&f.cifar),
                "--names",
                "a",
                "b",
                "--out",
                s(&f.root.join("g.png"))
            ],
            vec!["--names"],
        ),
        (
            "gradcam: --images 0",
            argv![
                "gradcam",
                "--weights",
                s(&f.weights),
                "--model",
                "resnet20_cifar",
                "--cifar10",
                s(&f.cifar),
                "--images",
                "0",
                "--out",
                s(&f.root.join("g.png"))
            ],
            vec!["--images"],
        ),
        (
            "gradcam: --class beyond the model",
            argv![
                "gradcam",
                "--weights",
                s(&f.weights),
                "--model",
                "resnet20_cifar",
                "--cifar10",
                s(&f.cifar),
                "--images",
                "2",
                "--class",
                "10",
                "--out",
                s(&f.root.join("g.png"))
            ],
            vec!["--class"],
        ),
        ("an unknown subcommand", argv!["trian"], vec!["trian"]),
        (
            "an unknown flag",
            argv!["metrics", s(&f.features), "--jsno"],
            vec!["--jsno"],
        ),
        (
            "table1: runs directory missing",
            argv!["table1", "--runs", s(&f.root.join("no-runs"))],
            vec!["no-runs"],
        ),
        (
            "table2: runs directory without runs",
            argv!["table2", "--runs", s(&f.folder)],
            vec![f.folder.to_str().unwrap()],
        ),
    ];
    for (name, args, needles) in flags {
        cases.push(Case::error("flag", name, args, &needles));
    }
    cases.push(Case::ok(
        "flag",
        "extract on Fashion-MNIST data",
        argv![
            "extract",
            "--weights",
            s(&f.weights),
            "--model",
            "resnet20_cifar",
            "--fashion-mnist",
            s(&f.fashion),
            "--limit",
            "4",
            "--out",
            s(&f.root.join("fm.safetensors"))
        ],
        prints("wrote 4 samples"),
    ));
    cases.push(Case::ok(
        "flag",
        "gradcam of two images",
        argv![
            "gradcam",
            "--weights",
            s(&f.weights),
            "--model",
            "resnet20_cifar",
            "--cifar10",
            s(&f.cifar),
            "--images",
            "2",
            "--out",
            s(&f.root.join("g.png"))
        ],
        |_| Ok(()),
    ));
}

#[test]
fn every_bad_input_gets_a_clear_error_or_the_right_result() {
    let dir = tempfile::tempdir().unwrap();
    let f = build_fixtures(dir.path());
    let mut cases = vec![];
    map_cases(&f, &mut cases);
    zip_cases(&f, &mut cases);
    image_cases(&f, &mut cases);
    cifar_cases(&f, &mut cases);
    fashion_cases(&f, &mut cases);
    weight_cases(&f, &mut cases);
    feature_cases(&f, &mut cases);
    flag_cases(&f, &mut cases);
    let report = run_corpus(Path::new(EXE), cases, Duration::from_secs(60));
    report.assert_all_passed(150);
}
