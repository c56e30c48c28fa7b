//! What long-running commands show while they wait, and whether output may be coloured. Both follow the
//! terminal: a spinner line on stderr only when stderr is a terminal (a log file or a CI job gets no carriage
//! returns), colour only on a terminal and never when `NO_COLOR` is set (<https://no-color.org>).

use std::io::{IsTerminal, Write};

/// A one-line status that rewrites itself while a command waits. Silent unless built for a terminal.
pub struct Progress {
    out: Option<Box<dyn Write + Send>>,
    frame: usize,
    last: String,
}

const FRAMES: [char; 4] = ['|', '/', '-', '\\'];

impl Progress {
    /// On stderr when it is a terminal, silent otherwise.
    pub fn stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::to(Box::new(std::io::stderr()))
        } else {
            Self::quiet()
        }
    }

    /// Shows nothing: for pipes, files and library callers.
    pub fn quiet() -> Self {
        Progress {
            out: None,
            frame: 0,
            last: String::new(),
        }
    }

    /// Writes to `out` as it would to a terminal.
    pub fn to(out: Box<dyn Write + Send>) -> Self {
        Progress {
            out: Some(out),
            frame: 0,
            last: String::new(),
        }
    }

    /// Replaces the status line with `message` and advances the spinner.
    pub fn update(&mut self, message: &str) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let spinner = FRAMES[self.frame % FRAMES.len()];
        self.frame += 1;
        // \r and "erase line": the previous status disappears whatever its length.
        let _ = write!(out, "\r\x1b[2K{spinner} {message}");
        let _ = out.flush();
        self.last = message.to_string();
    }

    /// Erases the status line, so what is printed next starts on a clean line.
    pub fn clear(&mut self) {
        if let Some(out) = self.out.as_mut()
            && !self.last.is_empty()
        {
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
            self.last.clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Whether to colour output written to a stream: `is_terminal` says whether the stream is one, `never` is a
/// `--no-color` flag, and `NO_COLOR` in the environment turns colour off too.
pub fn color_enabled(never: bool, is_terminal: bool) -> bool {
    color_allowed(never, is_terminal, std::env::var_os("NO_COLOR"))
}

/// [`color_enabled`] with the environment variable's value given: any non-empty `NO_COLOR` disables colour.
pub fn color_allowed(never: bool, is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    !never && is_terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("buffer")).into_owned()
        }
    }

    #[test]
    fn a_terminal_sees_a_line_rewritten_in_place_and_erased_at_the_end() {
        let buffer = Buffer::default();
        let mut progress = Progress::to(Box::new(buffer.clone()));
        progress.update("waiting for config");
        progress.update("waiting for staging");
        drop(progress);
        assert_eq!(
            buffer.text(),
            "\r\x1b[2K| waiting for config\r\x1b[2K/ waiting for staging\r\x1b[2K"
        );
    }

    #[test]
    fn quiet_progress_writes_nothing() {
        let mut progress = Progress::quiet();
        progress.update("waiting");
        progress.clear();
        assert!(progress.out.is_none() && progress.last.is_empty());
    }

    #[test]
    fn no_color_wins_over_a_terminal() {
        assert!(color_allowed(false, true, None));
        assert!(!color_allowed(false, true, Some("1".into())));
        assert!(!color_allowed(false, true, Some("false".into())), "any value counts");
        assert!(color_allowed(false, true, Some("".into())), "empty means unset");
        assert!(!color_allowed(false, false, None), "not a terminal");
        assert!(!color_allowed(true, true, None), "--no-color");
    }
}
