//! A logger for tests that keeps every line, so that a test can check what the node says
//! (and that it never says a secret). Installed once per test binary.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Capture {
    lines: Mutex<Vec<String>>,
}

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // ureq logs request headers at trace level: keep it quieter, as the node must.
        !(metadata.target().starts_with("ureq") && metadata.level() > Level::Debug)
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}: {}", record.level(), record.target(), record.args());
            self.lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        }
    }

    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| Capture {
        lines: Mutex::new(Vec::new()),
    })
}

/// Installs the logger (once); later calls do nothing.
pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if log::set_logger(capture()).is_ok() {
            log::set_max_level(LevelFilter::Trace);
        }
    });
}

/// Every line logged so far, as `LEVEL target: message`.
pub fn lines() -> Vec<String> {
    capture()
        .lines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Whether some line contains every one of `parts`.
pub fn logged(parts: &[&str]) -> bool {
    lines()
        .iter()
        .any(|line| parts.iter().all(|p| line.contains(p)))
}
