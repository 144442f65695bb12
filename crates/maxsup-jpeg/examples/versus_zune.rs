//! Compares full decodes with zune-jpeg (pixel difference and time) on a directory of JPEGs.
//! `cargo run --release -p maxsup-jpeg --example versus_zune -- DIR`
use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};

fn zune(b: &[u8]) -> Vec<u8> {
    let o = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(b), o)
        .decode()
        .unwrap()
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: versus_zune DIR");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    let blobs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    for (f, b) in files.iter().zip(&blobs) {
        let ours = maxsup_jpeg::decode(b).unwrap();
        let theirs = zune(b);
        let n = ours.data.len();
        assert_eq!(n, theirs.len());
        let diffs: Vec<i32> = ours
            .data
            .iter()
            .zip(&theirs)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / n as f64;
        let max = diffs.iter().max().unwrap();
        println!(
            "{}: {}x{} mean |diff| {mean:.3} max {max}",
            f.file_name().unwrap().to_string_lossy(),
            ours.width,
            ours.height
        );
    }
    let reps = 5;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for b in &blobs {
            std::hint::black_box(maxsup_jpeg::decode(b).unwrap());
        }
    }
    let ours = t.elapsed().as_secs_f64() * 1e3 / (reps * blobs.len()) as f64;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for b in &blobs {
            std::hint::black_box(zune(b));
        }
    }
    let theirs = t.elapsed().as_secs_f64() * 1e3 / (reps * blobs.len()) as f64;
    // Entropy decoding alone: the bottom-right pixel needs every scan read to the end.
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for b in &blobs {
            let i = maxsup_jpeg::read_info(b).unwrap();
            let r = maxsup_jpeg::Region {
                x: i.width - 1,
                y: i.height - 1,
                width: 1,
                height: 1,
            };
            std::hint::black_box(maxsup_jpeg::decode_region(b, 1, r).unwrap());
        }
    }
    let entropy = t.elapsed().as_secs_f64() * 1e3 / (reps * blobs.len()) as f64;
    // RandomResizedCrop-like regions (area 8-100%, aspect 3/4-4/3) resized to 224: the scale is
    // the largest 1/d with the scaled crop still >= 224, as maxsup-data's loader chooses it.
    let mut seed = 7u64;
    let mut uniform = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut crops = Vec::new();
    for _ in 0..reps * blobs.len() {
        let area = 0.08 + 0.92 * uniform();
        let aspect = ((0.75f64).ln() + uniform() * ((4.0f64 / 3.0).ln() - (0.75f64).ln())).exp();
        crops.push((area, aspect, uniform(), uniform()));
    }
    let t = std::time::Instant::now();
    for (i, &(area, aspect, fx, fy)) in crops.iter().enumerate() {
        let b = &blobs[i % blobs.len()];
        let info = maxsup_jpeg::read_info(b).unwrap();
        let a = area * (info.width * info.height) as f64;
        let w = ((a * aspect).sqrt() as usize).clamp(1, info.width);
        let h = ((a / aspect).sqrt() as usize).clamp(1, info.height);
        let x = ((info.width - w) as f64 * fx) as usize;
        let y = ((info.height - h) as f64 * fy) as usize;
        let d = [8, 4, 2]
            .into_iter()
            .find(|&d| w >= 224 * d && h >= 224 * d)
            .unwrap_or(1);
        let (sw, sh) = maxsup_jpeg::scaled_size(info.width, info.height, d);
        let (x1, y1) = ((x + w).div_ceil(d).min(sw), (y + h).div_ceil(d).min(sh));
        let r = maxsup_jpeg::Region {
            x: x / d,
            y: y / d,
            width: x1 - x / d,
            height: y1 - y / d,
        };
        std::hint::black_box(maxsup_jpeg::decode_region(b, d, r).unwrap());
    }
    let crop = t.elapsed().as_secs_f64() * 1e3 / crops.len() as f64;
    println!("full decode ms/img: maxsup-jpeg {ours:.2} (entropy decoding {entropy:.2}; random crop {crop:.2}), zune-jpeg {theirs:.2}");
}
