//! Installing a public dataset with one of the project's fetch scripts (`data/fetch-*.sh`: they
//! download a verified archive and are idempotent), for the default run and the tests that need
//! real data: data that is missing is fetched, and a failed fetch is an error, never a skip.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// Makes sure `dir` holds a dataset, recognised by the file `marker` inside it; otherwise runs
/// `bash script dir`. Returns whether it fetched. Calls are serialised within a process, so
/// tests running in parallel fetch once.
pub fn install_with_script(script: &Path, dir: &Path, marker: &str) -> Result<bool> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if dir.join(marker).exists() {
        return Ok(false);
    }
    if !script.exists() {
        bail!(
            "{} has no {marker} and the fetch script {} is missing",
            dir.display(),
            script.display()
        );
    }
    let status = Command::new("bash")
        .arg(script)
        .arg(dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}) installing into {}",
            script.display(),
            dir.display()
        );
    }
    if !dir.join(marker).exists() {
        bail!(
            "{} succeeded but {} has no {marker}",
            script.display(),
            dir.display()
        );
    }
    Ok(true)
}

/// [`install_with_script`] for a script carried inside the binary (`include_str!`), so that an
/// installed binary, far from the source tree, can still fetch: the text is written to a
/// temporary file named `name` and run from there.
pub fn install_with_embedded_script(
    name: &str,
    text: &str,
    dir: &Path,
    marker: &str,
) -> Result<bool> {
    if dir.join(marker).exists() {
        return Ok(false);
    }
    let tmp = std::env::temp_dir().join(format!("maxsup-{}-{name}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let result = install_with_script(&tmp, dir, marker);
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_data_is_left_alone_and_failures_are_errors() {
        let dir = std::env::temp_dir().join(format!("maxsup-fetch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("marker"), b"x").unwrap();
        assert!(!install_with_script(Path::new("/nonexistent.sh"), &dir, "marker").unwrap());
        let e = install_with_script(Path::new("/nonexistent.sh"), &dir, "absent").unwrap_err();
        assert!(
            e.to_string()
                .contains("fetch script /nonexistent.sh is missing"),
            "{e}"
        );
        let failing = dir.join("fail.sh");
        std::fs::write(&failing, "exit 3\n").unwrap();
        let e = install_with_script(&failing, &dir, "absent").unwrap_err();
        assert!(e.to_string().contains("failed"), "{e}");
        let lying = dir.join("ok.sh");
        std::fs::write(&lying, "exit 0\n").unwrap();
        let e = install_with_script(&lying, &dir, "absent").unwrap_err();
        assert!(e.to_string().contains("succeeded but"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
