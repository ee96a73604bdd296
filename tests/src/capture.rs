//! A buffer the functions' JSON log layer (`tollgate::telemetry::json_layer`) or EMF sink
//! writes to, read back as parsed lines: every line the functions write is one JSON document.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

/// A second dispatcher, registered for the whole test process. Call this before installing a
/// scoped capture subscriber.
///
/// tracing caches each callsite's interest process-wide, computed when the callsite is first
/// reached. While exactly one dispatcher is registered, it computes that interest against the
/// *reaching thread's* default: a sibling test with no subscriber that reaches a log line first
/// caches "never" for it, and a scoped capture on another thread then sees nothing
/// (tokio-rs/tracing#3611; seen here as an empty capture about one run in four). With a second
/// dispatcher registered, interest is the union over all registered dispatchers, the capture
/// included.
pub fn pin_interest() {
    static PINNED: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    PINNED.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
}

impl Captured {
    /// Every line written so far, parsed. Panics on a line that is not JSON.
    pub fn lines(&self) -> Vec<Value> {
        parse(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The lines written since the last call (or ever), parsed; the buffer is emptied.
    pub fn take(&self) -> Vec<Value> {
        parse(&std::mem::take(
            &mut *self.0.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

fn parse(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
