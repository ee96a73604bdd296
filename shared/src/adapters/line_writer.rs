//! A line writer that never makes the request path wait on I/O: lines go over a channel to a
//! thread that owns the output (stdout for EMF, stderr for logs) and writes them in order.
//!
//! A request only serializes its line and sends it. The channel holds up to
//! [`PENDING_LINES`] lines; only when that many are waiting (the output stalled for that long)
//! does a sender wait for room, so memory stays bounded and no line is dropped. The thread
//! writes a line as soon as it arrives, microseconds after it is sent, so a Lambda frozen after
//! its response almost never holds an unwritten line, and one that does writes it when it
//! thaws; [`LineWriter::drain`] waits until everything sent so far is written.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Lines that may wait for the output before a sender has to wait too.
pub const PENDING_LINES: usize = 65_536;

enum Message {
    Line(Vec<u8>),
    /// Answered once every earlier line is written.
    Drained(SyncSender<()>),
}

/// A handle on a writer thread; clones share the thread. `Write` on it sends each buffer as
/// one line (callers write whole lines) and never waits for the output.
#[derive(Clone)]
pub struct LineWriter {
    tx: SyncSender<Message>,
}

impl LineWriter {
    /// Starts a thread that writes every line sent to `out`, in order.
    pub fn spawn(name: &str, out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(PENDING_LINES);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(rx, out))?;
        Ok(Self { tx })
    }

    /// Sends one line (or several whole lines); returns without waiting for the output.
    pub fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            // The output has stalled for PENDING_LINES lines: wait for room rather than drop.
            Err(TrySendError::Full(message)) => {
                let _ = self.tx.send(message);
            }
        }
    }

    /// Waits until every line sent before this call is written and flushed.
    pub fn drain(&self) {
        let (ack, done) = sync_channel(1);
        if self.tx.send(Message::Drained(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

fn run(rx: Receiver<Message>, mut out: Box<dyn Write + Send>) {
    while let Ok(message) = rx.recv() {
        match message {
            // A line that cannot be written must never fail or stop anything.
            Message::Line(line) => {
                let _ = out.write_all(&line);
                let _ = out.flush();
            }
            Message::Drained(ack) => {
                let _ = out.flush();
                let _ = ack.send(());
            }
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.send(buf.to_vec());
        Ok(buf.len())
    }

    /// Returns at once: the thread flushes after every line.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
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

    #[test]
    fn lines_from_many_threads_are_all_written_whole_and_in_each_senders_order() {
        let out = Shared::default();
        let writer = LineWriter::spawn("test-lines", Box::new(out.clone())).unwrap();
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        w.send(format!("{t}:{i}\n").into_bytes());
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        writer.drain();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4_000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t}:")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..1_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_stalled_output_makes_senders_wait_instead_of_dropping_lines() {
        // An output that blocks until released: the channel fills, then senders wait.
        #[derive(Clone)]
        struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, Shared);
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Gate(Default::default(), Shared::default());
        let writer = LineWriter::spawn("test-gate", Box::new(gate.clone())).unwrap();
        let total = PENDING_LINES + 10;
        let sender = {
            let w = writer.clone();
            std::thread::spawn(move || {
                for _ in 0..total {
                    w.send(b"x\n".to_vec());
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !sender.is_finished(),
            "a full channel must make the sender wait"
        );
        *gate.0.0.lock().unwrap() = true;
        gate.0.1.notify_all();
        sender.join().unwrap();
        writer.drain();
        assert_eq!(gate.1.0.lock().unwrap().len(), total * 2, "no line dropped");
    }
}
