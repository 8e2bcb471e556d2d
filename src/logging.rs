//! Logging: env_logger to stderr with timestamps and per-subsystem targets, `info` by
//! default (`--debug`: `debug`; `RUST_LOG` overrides both), and optionally a copy to a
//! log file that is reopened on SIGHUP (for logrotate).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes every record to stderr and, when configured, to a file it reopens on request.
struct Tee {
    file: Option<(PathBuf, File)>,
    reopen: Arc<AtomicBool>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write_all(buf)?;
        if let Some((path, file)) = &mut self.file {
            if self.reopen.swap(false, Ordering::Relaxed)
                && let Ok(f) = open_append(path)
            {
                *file = f;
            }
            // A full disk must not stop the node: the copy on stderr is kept.
            let _ = file.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some((_, file)) = &mut self.file {
            let _ = file.flush();
        }
        io::stderr().flush()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// A handle that makes the log file be reopened before the next record.
#[derive(Clone, Debug)]
pub struct Reopen(Arc<AtomicBool>);

impl Reopen {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Installs the logger. Fails only when the log file cannot be opened.
pub fn init(debug: bool, logfile: Option<&Path>) -> io::Result<Reopen> {
    let reopen = Arc::new(AtomicBool::new(false));
    let file = match logfile {
        Some(p) => Some((p.to_path_buf(), open_append(p)?)),
        None => None,
    };
    let tee = Tee {
        file,
        reopen: reopen.clone(),
    };
    let default = if debug { "debug" } else { "info" };
    // Dependencies stay at warn unless asked for: their debug output is noise here, and
    // an HTTP client's request dump could show credentials.
    let filter = format!("{default},ureq=warn,ureq_proto=warn,tiny_http=warn,rustls=warn");
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter));
    builder
        .format_timestamp_millis()
        .target(env_logger::Target::Pipe(Box::new(tee)));
    // A second init (tests) keeps the first logger.
    let _ = builder.try_init();
    Ok(Reopen(reopen))
}
