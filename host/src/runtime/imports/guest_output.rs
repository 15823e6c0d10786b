//! A plugin's stdout and stderr, turned into log lines tagged with the plugin and channel.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest chunk logged from one write.
const MAX_CHUNK: usize = 4 * 1024;

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
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Rust's std line-buffers stdout, so a write is usually one line.
        let text = String::from_utf8_lossy(&buf[..buf.len().min(MAX_CHUNK)]);
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            tracing::info!(target: "plugin", plugin = &*self.plugin, channel = &*self.channel, "{line}");
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
