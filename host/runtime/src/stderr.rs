//! The guest's stderr: its first bytes are kept (a Rust panic's message lands here), the rest
//! is discarded without the guest noticing, so a chatty guest is never failed for writing.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of a guest's stderr kept per call.
pub(crate) const STDERR_BYTES_MAX: usize = 4 << 10;

/// A shared, bounded stderr buffer; clones write to the same buffer.
#[derive(Clone, Default)]
pub(crate) struct StderrHead(Arc<Mutex<Vec<u8>>>);

impl StderrHead {
    fn keep(&self, bytes: &[u8]) {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = STDERR_BYTES_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// What the guest wrote (up to [`STDERR_BYTES_MAX`]), trimmed, lossily decoded.
    pub(crate) fn text(&self) -> String {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&kept).trim().to_owned()
    }
}

impl IsTerminal for StderrHead {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrHead {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrHead {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrHead {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_BYTES_MAX)
    }
}

impl tokio::io::AsyncWrite for StderrHead {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
