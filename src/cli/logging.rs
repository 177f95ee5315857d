//! Logs and progress: human-readable logs on a terminal, JSON with `--log-format json`,
//! and a spinner naming the current stage when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crm_marts::run::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Writes log lines to stderr, hiding the spinner while a line is printed.
#[derive(Clone, Copy)]
struct SuspendingStderr;

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BAR.get() {
            Some(bar) if !bar.is_finished() => bar.suspend(|| std::io::stderr().write(buf)),
            _ => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for SuspendingStderr {
    type Writer = SuspendingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info,datafusion=warn",
        1 => "debug,datafusion=info",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("CRM_MARTS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(SuspendingStderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
    }
}

/// A spinner on a terminal; nothing elsewhere (logs already say what happens).
pub struct Spinner {
    bar: Option<ProgressBar>,
}

impl Spinner {
    pub fn new(format: LogFormat) -> Self {
        if format != LogFormat::Human || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = BAR
            .get_or_init(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                        .expect("valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone();
        Self { bar: Some(bar) }
    }
}

impl Progress for Spinner {
    fn stage(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
        }
    }
    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
