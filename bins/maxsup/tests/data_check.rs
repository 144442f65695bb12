//! `maxsup data check` fails on a JPEG that training could reject depending on its random crop.

use std::path::PathBuf;
use std::process::Command;

fn fixture() -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/maxsup-data/tests/data/photo_baseline.jpg");
    std::fs::read(p).unwrap()
}

fn check(root: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_maxsup"))
        .args(["data", "check", "--folder"])
        .arg(root)
        .args(["--decode-all"])
        .output()
        .unwrap()
}

#[test]
fn a_truncated_jpeg_with_an_end_marker_fails_the_check() {
    let root = std::env::temp_dir().join(format!("maxsup-data-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for class in ["n01", "n02"] {
        std::fs::create_dir_all(root.join("train").join(class)).unwrap();
        std::fs::write(root.join("train").join(class).join("good.jpg"), fixture()).unwrap();
    }
    let ok = check(&root);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let good = fixture();
    let mut cut = good[..good.len() * 2 / 3].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    std::fs::write(root.join("train").join("n02").join("cut.jpg"), cut).unwrap();
    let bad = check(&root);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "the damaged file passed");
    assert!(stderr.contains("cut.jpg"), "{stderr}");
    std::fs::remove_dir_all(&root).unwrap();
}
