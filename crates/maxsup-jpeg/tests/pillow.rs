//! Decoding against Pillow / libjpeg-turbo (fixtures from fixtures/gen_fixtures.py): full decodes,
//! DCT-domain scaled decodes, regions, and broken streams.

use std::path::PathBuf;

use maxsup_jpeg::{decode, decode_region, read_info, scaled_size, JpegError, Region};

const NAMES: [&str; 8] = [
    "baseline_420",
    "baseline_422",
    "baseline_444",
    "baseline_420_restart",
    "progressive_420",
    "progressive_444",
    "progressive_420_restart",
    "gray_progressive",
];

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// RGB pixels of a fixture PNG.
fn png_rgb(name: &str) -> (usize, usize, Vec<u8>) {
    let bytes = data(name);
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{name}");
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

/// The whole image at scale `1/denom` (the fixtures are 83x61).
fn whole(bytes: &[u8], denom: usize) -> maxsup_jpeg::Rgb {
    let (w, h) = scaled_size(83, 61, denom);
    let all = Region {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    decode_region(bytes, denom, all).unwrap()
}

/// (max, mean) absolute difference.
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    let mean = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64;
    (max, mean)
}

#[test]
fn header_is_read() {
    let info = read_info(&data("progressive_420.jpg")).unwrap();
    assert_eq!(
        (info.width, info.height, info.components, info.progressive),
        (83, 61, 3, true)
    );
    let info = read_info(&data("gray_progressive.jpg")).unwrap();
    assert_eq!(info.components, 1);
    assert!(!read_info(&data("baseline_444.jpg")).unwrap().progressive);
}

#[test]
fn full_decodes_match_libjpeg() {
    for name in NAMES {
        let img = decode(&data(&format!("{name}.jpg"))).unwrap();
        let (w, h, expect) = png_rgb(&format!("{name}.png"));
        assert_eq!((img.width, img.height), (w, h));
        let (max, mean) = diff(&img.data, &expect);
        eprintln!("{name}: max {max} mean {mean:.3}");
        // Float IDCT vs libjpeg's integer one, and linear chroma interpolation vs its fancy
        // upsampling: a few levels at most, well under one level on average.
        assert!(max <= 6 && mean <= 0.6, "{name}: max {max} mean {mean}");
    }
}

#[test]
fn scaled_decodes_match_libjpeg_dct_scaling() {
    for name in NAMES {
        let bytes = data(&format!("{name}.jpg"));
        for denom in [2, 4, 8] {
            let (w, h) = scaled_size(83, 61, denom);
            let img = whole(&bytes, denom);
            let (ew, eh, expect) = png_rgb(&format!("{name}.d{denom}.png"));
            assert_eq!((w, h), (ew, eh));
            let (max, mean) = diff(&img.data, &expect);
            eprintln!("{name} 1/{denom}: max {max} mean {mean:.3}");
            // libjpeg-turbo picks one (square) transform size per component, so for 4:2:2 it
            // decodes chroma at n x n and upsamples it horizontally; we transform straight to the
            // non-square output (n/2 x n). Elsewhere both are the same box filter in the DCT domain.
            let (max_tol, mean_tol) = if name.contains("422") {
                (32, 2.5)
            } else {
                (4, 0.5)
            };
            assert!(
                max <= max_tol && mean <= mean_tol,
                "{name} 1/{denom}: max {max} mean {mean}"
            );
        }
    }
}

#[test]
fn regions_equal_crops_of_the_whole_image() {
    let mut seed = 12345u64;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    for name in NAMES {
        let bytes = data(&format!("{name}.jpg"));
        for denom in [1, 2, 4, 8] {
            let (w, h) = scaled_size(83, 61, denom);
            let full = whole(&bytes, denom);
            for _ in 0..12 {
                let (x, y) = (next(w), next(h));
                let (rw, rh) = (1 + next(w - x), 1 + next(h - y));
                let part = decode_region(
                    &bytes,
                    denom,
                    Region {
                        x,
                        y,
                        width: rw,
                        height: rh,
                    },
                )
                .unwrap();
                for row in 0..rh {
                    let expect = &full.data[((y + row) * w + x) * 3..((y + row) * w + x + rw) * 3];
                    assert_eq!(
                        &part.data[row * rw * 3..(row + 1) * rw * 3],
                        expect,
                        "{name} 1/{denom} region {rw}x{rh} at ({x}, {y}), row {row}"
                    );
                }
            }
        }
    }
}

#[test]
fn truncated_streams_are_errors() {
    for name in NAMES {
        let bytes = data(&format!("{name}.jpg"));
        // Cut inside the entropy-coded data (the headers take the first ~600 bytes).
        for cut in [bytes.len() * 2 / 3, bytes.len() - 40] {
            let r = decode(&bytes[..cut]);
            assert!(
                matches!(r, Err(JpegError::Corrupt(_))),
                "{name} cut to {cut} of {} bytes: {r:?}",
                bytes.len()
            );
        }
    }
    assert!(matches!(decode(b"not a jpeg"), Err(JpegError::Corrupt(_))));
}

#[test]
fn damaged_streams_never_panic() {
    // Overwrite bytes all over each file: the decoder must return Ok or Err, never panic or hang.
    let mut seed = 99u64;
    for name in NAMES {
        let bytes = data(&format!("{name}.jpg"));
        for _ in 0..200 {
            let mut b = bytes.clone();
            for _ in 0..4 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % b.len();
                b[i] = (seed >> 20) as u8;
            }
            let _ = decode(&b);
        }
    }
}

#[test]
fn unsupported_features_say_so() {
    // Lossless (SOF3) frame header: the caller is told to use another decoder.
    let mut bytes = data("baseline_444.jpg");
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 1] = 0xC3;
    assert!(matches!(decode(&bytes), Err(JpegError::Unsupported(_))));
}
