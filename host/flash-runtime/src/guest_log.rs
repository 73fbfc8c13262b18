//! Guest stdout and stderr: forwarded to the host's log, one tagged line per guest line,
//! escaped, and capped per call.
//!
//! Guests print their logs. Inheriting the host's stdio (what this replaced) let a guest
//! fill the disk under the host's log, and forge host log lines: printing
//! `"\n2026-01-01T00:00:00Z  INFO flash_host: …"` put a line in the host's log that looked
//! like the host's own. Each call now gets a [`GuestOutput`] for both streams:
//!
//! - every guest line becomes one `tracing` event, target [`TARGET`], with the fields
//!   `function`, `job` (the job id, when the call has one), `trace` (the job a peer call
//!   was made for, when it was) and `stream` (`stdout` or
//!   `stderr`), at level INFO. The line is the event's message: it always follows the
//!   host's own prefix and target, never starts a line of the host's log;
//! - control characters (CR, ESC, NEL, …), Unicode line and paragraph separators and
//!   bidirectional overrides are escaped (`\r`, `\u{1b}`), so one guest line is one host
//!   log line and cannot rewrite it on a terminal; invalid UTF-8 is replaced with U+FFFD;
//! - a line longer than [`MAX_LINE`] is cut into several, so the host buffers at most that
//!   much per stream;
//! - past the call's cap ([`crate::InvokeLimits::max_guest_output_bytes`], stdout and
//!   stderr together; `FLASH_GUEST_OUTPUT_MAX_KB` in `flash-host`) bytes are dropped and
//!   counted: one warning when it starts, one with the total when the call ends.
//!
//! Writes never fail, not even past the cap: Rust's `print!` panics on a failed write, and
//! a guest should not die of logging too much.
//!
//! Where these lines go from here (the worker's log, a job's logs) is the host's logging
//! setup; this module only bounds and tags them. `RUST_LOG=info,guest=off` silences them.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The `tracing` target of guest output.
pub const TARGET: &str = "guest";

/// Longest guest line logged as one event; longer lines are cut.
pub const MAX_LINE: usize = 16 << 10;

/// Default of [`crate::InvokeLimits::max_guest_output_bytes`]: 1 MiB per call.
pub const DEFAULT_MAX_GUEST_OUTPUT: usize = 1 << 20;

/// How much a guest may write in one `write` (wasi `check-write`'s permit).
const WRITE_PERMIT: usize = 64 << 10;

/// One call's stdout and stderr. Cheap to create: one allocation, buffers grow on first use.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<Mutex<Shared>>);

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

struct Shared {
    function: String,
    call: Option<String>,
    /// The job this call works for when a peer call made it on that job's behalf.
    trace: Option<String>,
    cap: usize,
    written: usize,
    dropped: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl GuestOutput {
    /// The output of one call of `function` (job `call`, if any), capped at `cap` bytes.
    pub(crate) fn new(function: &str, call: Option<&str>, cap: usize) -> Self {
        Self(Arc::new(Mutex::new(Shared {
            function: function.to_string(),
            call: call.map(str::to_string),
            trace: None,
            cap,
            written: 0,
            dropped: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })))
    }

    /// Starts another call on the same streams (a live instance): what the previous call
    /// left unfinished is logged, and the cap starts over.
    pub(crate) fn new_call(&self, function: &str) {
        let mut shared = self.lock();
        shared.finish();
        shared.function.clear();
        shared.function.push_str(function);
        shared.written = 0;
        shared.dropped = 0;
    }

    /// Starts the one call of an instance made before the call was known
    /// ([`crate::ready`]): its lines are tagged with `function`, `job` and `trace` from
    /// now on.
    pub(crate) fn start_call(&self, function: &str, call: Option<&str>, trace: Option<&str>) {
        self.new_call(function);
        let mut shared = self.lock();
        shared.call = call.map(str::to_string);
        shared.trace = trace.map(str::to_string);
    }

    /// Tags the lines with `trace` (the job a peer call was made for).
    pub(crate) fn set_trace(&self, trace: Option<&str>) {
        self.lock().trace = trace.map(str::to_string);
    }

    pub(crate) fn stdout(&self) -> GuestStream {
        GuestStream(self.clone(), Stream::Stdout)
    }

    pub(crate) fn stderr(&self) -> GuestStream {
        GuestStream(self.clone(), Stream::Stderr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while logging leaves nothing half-done that matters: keep going.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    fn buffer(&mut self, stream: Stream) -> &mut Vec<u8> {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let kept = bytes.len().min(self.cap.saturating_sub(self.written));
        let (kept, over) = bytes.split_at(kept);
        self.written += kept.len();
        let mut rest = kept;
        while !rest.is_empty() {
            // The buffer holds less than MAX_LINE bytes between writes.
            let room = MAX_LINE - self.buffer(stream).len();
            let window = &rest[..rest.len().min(room)];
            if let Some(end) = window.iter().position(|&b| b == b'\n') {
                self.buffer(stream).extend_from_slice(&window[..end]);
                self.emit(stream, false);
                rest = &rest[end + 1..];
            } else {
                self.buffer(stream).extend_from_slice(window);
                rest = &rest[window.len()..];
                if self.buffer(stream).len() == MAX_LINE {
                    self.emit(stream, true);
                }
            }
        }
        if !over.is_empty() {
            if self.dropped == 0 {
                self.flush_lines();
                self.event(
                    None,
                    format_args!(
                        "guest output past this call's cap of {} bytes is dropped \
                         (FLASH_GUEST_OUTPUT_MAX_KB sets the cap)",
                        self.cap
                    ),
                );
            }
            self.dropped = self.dropped.saturating_add(over.len());
        }
    }

    /// Logs the line buffered for `stream` (`cut`: it goes on in the next event).
    fn emit(&mut self, stream: Stream, cut: bool) {
        let line = std::mem::take(self.buffer(stream));
        let text = String::from_utf8_lossy(&line);
        let marker = if cut { " [line continues]" } else { "" };
        self.event(Some(stream), format_args!("{}{marker}", Escaped(&text)));
        // Keep the allocation for the next line.
        let mut line = line;
        line.clear();
        *self.buffer(stream) = line;
    }

    fn flush_lines(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.buffer(stream).is_empty() {
                self.emit(stream, false);
            }
        }
    }

    /// What a call ends with: unfinished lines, and how much was dropped.
    fn finish(&mut self) {
        self.flush_lines();
        if self.dropped > 0 {
            self.event(
                None,
                format_args!(
                    "dropped {} bytes of guest output past this call's cap of {} bytes \
                     (FLASH_GUEST_OUTPUT_MAX_KB)",
                    self.dropped, self.cap
                ),
            );
        }
    }

    /// Logs `message` at INFO as a line of `stream`, or at WARN about the output as a whole
    /// (`stream` `None`).
    fn event(&self, stream: Option<Stream>, message: fmt::Arguments<'_>) {
        let function = self.function.as_str();
        // Absent (`None`) fields are left out of the line.
        let (job, trace) = (self.call.as_deref(), self.trace.as_deref());
        match stream {
            Some(stream) => tracing::info!(
                target: TARGET, function, job, trace, stream = stream.name(), "{message}"
            ),
            None => tracing::warn!(target: TARGET, function, job, trace, "{message}"),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `text` with every character that could end, rewrite or reorder a log line escaped.
struct Escaped<'a>(&'a Cow<'a, str>);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if needs_escape(c) {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            // Line and paragraph separators; bidirectional marks, embeddings, overrides
            // and isolates.
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// One stream of a call's [`GuestOutput`], as WASI sees it.
#[derive(Clone)]
pub(crate) struct GuestStream(GuestOutput, Stream);

impl GuestStream {
    fn write_bytes(&self, bytes: &[u8]) {
        self.0.lock().write(self.1, bytes);
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host log lines `write` produces, without ANSI colours.
    fn logged(write: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, write);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn long_lines_are_cut_and_output_past_the_cap_is_dropped_and_counted() {
        let lines = logged(|| {
            let output = GuestOutput::new("f", Some("job-1"), MAX_LINE + 100);
            let (mut out, mut err) = (output.stdout(), output.stderr());
            // One line longer than MAX_LINE, written in two pieces, and a short one.
            out.write(Bytes::from(vec![b'a'; MAX_LINE - 10])).unwrap();
            out.write(Bytes::from(vec![b'a'; 20])).unwrap();
            err.write(Bytes::from_static(b"on stderr\nunfinished"))
                .unwrap();
            out.write(Bytes::from_static(b"\nshort\n")).unwrap();
            // Past the cap: dropped, yet the write succeeds.
            out.write(Bytes::from(vec![b'c'; 1000])).unwrap();
            out.write(Bytes::from_static(b"\nmore\n")).unwrap();
        });
        let body = |l: &String| l.split(" guest: ").nth(1).unwrap_or_default().to_string();
        assert_eq!(lines.len(), 8, "{lines:#?}");
        assert!(
            body(&lines[0]).starts_with(&format!("{} [line continues] ", "a".repeat(MAX_LINE)))
        );
        assert!(lines[0].contains(r#"function="f" job="job-1" stream="stdout""#));
        assert!(body(&lines[1]).starts_with("on stderr "), "{}", lines[1]);
        assert!(lines[1].contains(r#"stream="stderr""#));
        assert!(body(&lines[2]).starts_with(&format!("{} ", "a".repeat(10))));
        assert!(body(&lines[3]).starts_with("short "));
        // The cap is MAX_LINE + 100 bytes, and MAX_LINE + 37 were written: 63 of the 1000
        // `c`s are kept, and unfinished lines are logged before the warning.
        assert!(
            body(&lines[4]).starts_with(&format!("{} ", "c".repeat(63))),
            "{}",
            lines[4]
        );
        assert!(body(&lines[5]).starts_with("unfinished "), "{}", lines[5]);
        assert!(
            lines[6].contains("WARN") && lines[6].contains("is dropped"),
            "{}",
            lines[6]
        );
        // When the call ends: the total.
        assert!(
            lines[7].contains("WARN") && lines[7].contains("dropped 943 bytes"),
            "{}",
            lines[7]
        );
    }

    #[test]
    fn an_instance_made_before_its_call_tags_lines_with_that_call() {
        let lines = logged(|| {
            let output = GuestOutput::new("<instantiate>", None, 1024);
            let mut out = output.stdout();
            out.write(Bytes::from_static(b"while starting\n")).unwrap();
            output.start_call("embed", Some("job-7"), None);
            out.write(Bytes::from_static(b"in the call\n")).unwrap();
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains(r#"function="<instantiate>" stream="stdout""#));
        assert!(
            lines[1].contains(r#"function="embed" job="job-7" stream="stdout""#),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn escapes_what_could_forge_or_rewrite_a_line() {
        let text = Cow::Borrowed("a\rb\u{1b}[2Kc\u{85}d\u{202e}e\tf\u{7f}g ünï");
        assert_eq!(
            Escaped(&text).to_string(),
            "a\\rb\\u{1b}[2Kc\\u{85}d\\u{202e}e\tf\\u{7f}g ünï"
        );
    }
}
