//! Progress bars (indicatif) and the one-line summary every stage ends with.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// True when progress bars should be drawn: stderr is a terminal and `PSLA_NO_PROGRESS` is unset.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("PSLA_NO_PROGRESS").is_none()
}

/// A bar over `len` items, drawn on stderr when `show`, hidden otherwise.
pub fn bar(show: bool, len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// `ingest: 22160 rows in, 75569 rows out, 0 rejects in 0.41 s (184,314 rows/s) - 22160 clips, ...`
pub fn summary_line(id: &str, rows_in: u64, rows_out: u64, rejects: u64, seconds: f64, detail: &str) -> String {
    let rate = if seconds > 0.0 { (rows_in.max(rows_out) as f64 / seconds) as u64 } else { 0 };
    let mut line = format!(
        "{id}: {} rows in, {} rows out, {} rejects in {seconds:.2} s ({} rows/s)",
        group(rows_in),
        group(rows_out),
        group(rejects),
        group(rate)
    );
    if !detail.is_empty() {
        line.push_str(" - ");
        line.push_str(detail);
    }
    line
}

/// 1234567 -> "1,234,567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
