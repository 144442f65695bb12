//! The bad-input corpus harness, shared by the corpus tests of `maxsup` and `train-conv`
//! (included with `#[path]`): each case runs the binary as a user would, in its own process, and
//! is classified by what came back.
//!
//! A case passes as a *clear error* when the process exits with a failure status of its own
//! (not a panic's 101, not a signal) within the time limit, prints no panic message, and its
//! stderr names what was wrong (every needle of the case); or as a *right result* when it exits
//! 0 and its check of the output holds. Files a case marks as already written must be unchanged
//! afterwards, whatever the outcome.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A check of a successful run's stdout.
pub type OutputCheck = Box<dyn Fn(&str) -> Result<(), String>>;

/// What a case must produce.
pub enum Expect {
    /// A failure whose stderr contains every needle (the file, line, member, tensor, sample or
    /// flag at fault).
    Error(Vec<String>),
    /// Success, and the check accepts stdout (and whatever files the case wrote).
    Ok(OutputCheck),
}

pub struct Case {
    pub category: &'static str,
    pub name: String,
    pub args: Vec<OsString>,
    pub expect: Expect,
    /// Files that exist before the case runs and must be byte-identical after it.
    pub keep: Vec<PathBuf>,
}

impl Case {
    pub fn error(
        category: &'static str,
        name: impl Into<String>,
        args: Vec<OsString>,
        needles: &[&str],
    ) -> Self {
        Case {
            category,
            name: name.into(),
            args,
            expect: Expect::Error(needles.iter().map(|s| s.to_string()).collect()),
            keep: vec![],
        }
    }

    pub fn ok(
        category: &'static str,
        name: impl Into<String>,
        args: Vec<OsString>,
        check: impl Fn(&str) -> Result<(), String> + 'static,
    ) -> Self {
        Case {
            category,
            name: name.into(),
            args,
            expect: Expect::Ok(Box::new(check)),
            keep: vec![],
        }
    }

    /// Requires `path` (written before) to survive the case unchanged.
    pub fn keeping(mut self, path: &Path) -> Self {
        self.keep.push(path.to_path_buf());
        self
    }
}

/// Arguments from anything path- or string-like.
#[macro_export]
macro_rules! argv {
    ($($a:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from($a)),*]
    };
}

/// A check that stdout contains `needle`.
pub fn prints(needle: &'static str) -> impl Fn(&str) -> Result<(), String> {
    move |out: &str| {
        if out.contains(needle) {
            Ok(())
        } else {
            Err(format!("stdout lacks `{needle}`"))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    ClearError,
    RightResult,
    Panic,
    Abort,
    Hang,
    UnclearError,
    SilentResult,
    WrongResult,
    LostOutput,
}

impl Outcome {
    fn passed(&self) -> bool {
        matches!(self, Outcome::ClearError | Outcome::RightResult)
    }
}

/// Runs every case with `exe` (at most `limit` each) and returns the report; the caller
/// asserts on it. Prints one line per failed case and a table of counts per category.
pub fn run_corpus(exe: &Path, cases: Vec<Case>, limit: Duration) -> Report {
    let mut report = Report::default();
    for case in cases {
        let kept: Vec<(PathBuf, Vec<u8>)> = case
            .keep
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    std::fs::read(p).expect("a kept file exists before its case"),
                )
            })
            .collect();
        let (outcome, detail) = run_case(exe, &case, limit);
        let (outcome, detail) = match kept
            .iter()
            .find(|(p, b)| std::fs::read(p).ok().as_ref() != Some(b))
        {
            Some((p, _)) if outcome.passed() => {
                (Outcome::LostOutput, format!("{} changed", p.display()))
            }
            _ => (outcome, detail),
        };
        if !outcome.passed() {
            eprintln!(
                "FAIL [{}] {}: {outcome:?}: {detail}",
                case.category, case.name
            );
        }
        report.add(case.category, case.name, outcome);
    }
    report.print();
    report
}

fn run_case(exe: &Path, case: &Case, limit: Duration) -> (Outcome, String) {
    let mut child = Command::new(exe)
        .args(&case.args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let out_reader = spawn_reader(child.stdout.take().unwrap());
    let err_reader = spawn_reader(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let Some(status) = status else {
        return (Outcome::Hang, format!("no exit within {limit:?}"));
    };
    let tail = |s: &str| {
        s.chars()
            .rev()
            .take(600)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };
    if stderr.contains("panicked at") || status.code() == Some(101) {
        return (Outcome::Panic, tail(&stderr));
    }
    let Some(code) = status.code() else {
        return (
            Outcome::Abort,
            format!("killed by a signal: {status:?}; {}", tail(&stderr)),
        );
    };
    match (&case.expect, code) {
        (Expect::Error(needles), 0) => (
            Outcome::SilentResult,
            format!(
                "exit 0, expected an error naming {needles:?}; stdout: {}",
                tail(&stdout)
            ),
        ),
        (Expect::Error(needles), _) => {
            match needles.iter().find(|n| !stderr.contains(n.as_str())) {
                None => (Outcome::ClearError, String::new()),
                Some(n) => (
                    Outcome::UnclearError,
                    format!("stderr lacks `{n}`: {}", tail(&stderr)),
                ),
            }
        }
        (Expect::Ok(check), 0) => match check(&stdout) {
            Ok(()) => (Outcome::RightResult, String::new()),
            Err(e) => (
                Outcome::WrongResult,
                format!("{e}; stdout: {}", tail(&stdout)),
            ),
        },
        (Expect::Ok(_), _) => (
            Outcome::WrongResult,
            format!("exit {code}: {}", tail(&stderr)),
        ),
    }
}

fn spawn_reader(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut bytes = vec![];
        let _ = r.read_to_end(&mut bytes);
        s.push_str(&String::from_utf8_lossy(&bytes));
        s
    })
}

/// Counts per category and outcome.
#[derive(Default)]
pub struct Report {
    pub counts: BTreeMap<&'static str, BTreeMap<Outcome, usize>>,
    pub failed: Vec<String>,
    pub total: usize,
}

impl Report {
    fn add(&mut self, category: &'static str, name: String, outcome: Outcome) {
        self.total += 1;
        if !outcome.passed() {
            self.failed
                .push(format!("[{category}] {name}: {outcome:?}"));
        }
        *self
            .counts
            .entry(category)
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }

    fn print(&self) {
        eprintln!("bad-input corpus: {} cases", self.total);
        for (category, outcomes) in &self.counts {
            let parts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o:?} {n}")).collect();
            eprintln!("  {category:<14} {}", parts.join(", "));
        }
    }

    /// Panics (the test fails) unless every case passed and there were at least `min`.
    pub fn assert_all_passed(&self, min: usize) {
        assert!(
            self.failed.is_empty(),
            "{} of {} cases failed:\n{}",
            self.failed.len(),
            self.total,
            self.failed.join("\n")
        );
        assert!(
            self.total >= min,
            "the corpus has {} cases, fewer than {min}",
            self.total
        );
    }
}
