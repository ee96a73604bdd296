//! A buffer the functions' JSON log layer (`tollgate::telemetry::json_layer`) or EMF sink
//! writes to, read back as parsed lines: every line the functions write is one JSON document.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

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
