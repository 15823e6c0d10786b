//! A plugin's stdout and stderr, turned into log lines tagged with the plugin and channel.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line logged; a longer one is logged in pieces of this size.
const MAX_LINE: usize = 4 * 1024;

/// The stdout/stderr of one plugin instance.
#[derive(Clone)]
pub struct GuestOutput {
    plugin: Arc<str>,
    channel: Arc<str>,
}

impl GuestOutput {
    /// Output of `plugin` serving `channel`.
    pub fn new(plugin: Arc<str>, channel: String) -> Self {
        Self {
            plugin,
            channel: channel.into(),
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Lines {
            output: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// One stream's writer. Text is logged a whole line at a time: Rust's std writes a line
/// per write, but CPython's unbuffered stderr writes a traceback in many pieces, which
/// would otherwise become one log record per fragment.
struct Lines {
    output: GuestOutput,
    /// The start of a line not yet ended.
    pending: Vec<u8>,
}

impl Lines {
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if !text.trim().is_empty() {
            tracing::info!(target: "plugin", plugin = &*self.output.plugin, channel = &*self.output.channel, "{text}");
        }
    }

    fn write(&mut self, buf: &[u8]) {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
        while self.pending.len() > MAX_LINE {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            self.emit(&piece);
        }
    }

    fn flush_pending(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest);
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.flush_pending();
    }
}

impl AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_pending();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Lines {
        Lines {
            output: GuestOutput::new(Arc::from("p@1"), "c".into()),
            pending: Vec::new(),
        }
    }

    #[test]
    fn a_line_written_in_pieces_stays_pending_until_it_ends() {
        let mut writer = lines();
        writer.write(b"Traceback (most ");
        writer.write(b"recent call last):");
        assert_eq!(writer.pending, b"Traceback (most recent call last):");
        writer.write(b"\n  File \"app.py\"");
        assert_eq!(writer.pending, b"  File \"app.py\"");
        writer.write(&vec![b'x'; MAX_LINE * 2]);
        assert!(writer.pending.len() <= MAX_LINE);
    }
}
