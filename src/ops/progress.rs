//! Progress of long operator commands: a bar redrawn in place on a terminal, a line every few seconds elsewhere.
//!
//! Off a terminal (cron, CI, a log collector) a redrawn bar becomes one line per step: a breach
//! response over 3,000 accounts once wrote 3,000 lines. There, a line every few seconds and one
//! at the end say the same.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// How often a progress line is written when standard error is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: &'static str,
    terminal: bool,
    last_line: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// Progress written to standard error, in the form that suits it.
    pub fn new(label: &'static str) -> Self {
        Self { label, terminal: std::io::stderr().is_terminal(), last_line: None, drawn: false }
    }

    /// `done` of `total` steps are done.
    pub fn update(&mut self, done: usize, total: usize) {
        if let Some(text) = self.next_output(done, total, Instant::now()) {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(text.as_bytes());
            let _ = stderr.flush();
        }
    }

    /// Ends a bar's line; off a terminal, the last count was already written.
    pub fn finish(&mut self) {
        if self.terminal && self.drawn {
            eprintln!();
        }
    }

    fn next_output(&mut self, done: usize, total: usize, now: Instant) -> Option<String> {
        if self.terminal {
            self.drawn = true;
            let width = 30;
            let filled = (done * width).checked_div(total).unwrap_or(width).min(width);
            let bar = format!("{}{}", "#".repeat(filled), " ".repeat(width - filled));
            return Some(format!("\r{:<22} [{bar}] {done}/{total}", self.label));
        }
        let due = self.last_line.is_none_or(|last| now.duration_since(last) >= LINE_EVERY);
        if !due && done < total {
            return None;
        }
        self.last_line = Some(now);
        Some(format!("{}: {done}/{total}\n", self.label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_a_line_every_few_seconds_and_one_at_the_end() {
        let mut progress = Progress { label: "accounts", terminal: false, last_line: None, drawn: false };
        let start = Instant::now();
        let lines: Vec<String> = (1..=3_000)
            .filter_map(|done| progress.next_output(done, 3_000, start + Duration::from_millis(done as u64 * 4)))
            .collect();
        // 12 s of work: the first step, one line per 5 s, and the last.
        assert_eq!(
            lines,
            ["accounts: 1/3000\n", "accounts: 1251/3000\n", "accounts: 2501/3000\n", "accounts: 3000/3000\n"]
        );
    }

    #[test]
    fn on_a_terminal_the_bar_is_redrawn_in_place() {
        let mut progress = Progress { label: "accounts", terminal: true, last_line: None, drawn: false };
        let text = progress.next_output(15, 30, Instant::now()).unwrap();
        assert!(text.starts_with('\r') && text.contains("[###############               ] 15/30"), "{text}");
    }
}
