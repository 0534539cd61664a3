//! What the tests of the benchmark binaries share: running one as a user
//! would, and finding a line of what it printed or wrote.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// How a benchmark binary ended, and what it printed.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary at `exe` with `args` (and `--out dir` when given) to
/// its end.
pub fn run(exe: &str, args: &[&str], out: Option<&Path>) -> Ran {
    let mut command = Command::new(exe);
    command.args(args);
    if let Some(dir) = out {
        command.arg("--out").arg(dir);
    }
    let output = command.output().unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Ran {
    /// Panics, with what it printed, unless it exited 0.
    pub fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "{}\n{}", self.stdout, self.stderr);
    }

    /// Whether it exited 2 because no network lab could be made here (then
    /// says so, as a skip).
    pub fn without_lab(&self) -> bool {
        let without = self.code == Some(2);
        if without {
            eprintln!("SKIPPED: {}", self.stderr);
        }
        without
    }
}

/// The first line of `text` that starts with `prefix`.
pub fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
}

/// Whether this test runs as root (the network lab needs it).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
