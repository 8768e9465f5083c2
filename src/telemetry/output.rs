//! Where log lines go: stdout, batched per HTTP worker thread.
//!
//! A worker thread appends each line to a buffer of its own and writes the buffer out with
//! one `write(2)` once it holds [`BATCH_BYTES`], and at least every [`FLUSH_EVERY`] from a
//! timer on the worker. Handing each line to a logging thread instead (tracing-appender)
//! cost a channel send, a futex wake of the other thread and a `write(2)` per line, a fifth
//! of the service's CPU per request (README, Performance). Other threads (start-up, the
//! metrics listener, shutdown) write their lines straight through, so a failure to start or
//! a last error is never held back.
//!
//! A line waits at most [`FLUSH_EVERY`] before it is written; at exit [`flush_all`] writes
//! what is left, and a worker thread that ends writes its own. Only a SIGKILL loses lines:
//! at most the last [`FLUSH_EVERY`] of them, as an in-process queue would.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// A worker writes its buffer out once it holds this much.
pub const BATCH_BYTES: usize = 32 * 1024;

/// The longest a line waits in a worker's buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// One worker thread's lines not yet written.
#[derive(Default)]
struct Batch {
    lines: Mutex<Vec<u8>>,
}

impl Batch {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves whole lines behind: still worth writing.
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) -> io::Result<()> {
        let mut lines = self.lock();
        lines.extend_from_slice(line);
        if lines.len() >= BATCH_BYTES {
            write_out(&mut lines)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut lines = self.lock();
        if lines.is_empty() {
            return Ok(());
        }
        write_out(&mut lines)
    }
}

/// Writes and empties a buffer; it is emptied even when the write fails, so a broken
/// stdout cannot make the buffer grow without bound.
fn write_out(lines: &mut Vec<u8>) -> io::Result<()> {
    let result = io::stdout().lock().write_all(lines);
    lines.clear();
    // A buffer that once took a burst keeps its memory; give back what is well past a batch.
    if lines.capacity() > 4 * BATCH_BYTES {
        lines.shrink_to(BATCH_BYTES);
    }
    result
}

/// Every batching thread's buffer, so [`flush_all`] can reach them at exit.
static BATCHES: Mutex<Vec<Weak<Batch>>> = Mutex::new(Vec::new());

/// This thread's buffer, if it batches; it writes what is left when the thread ends.
struct Local(Arc<Batch>);

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Makes this thread's log lines batched, with a timer task on its runtime that writes them
/// out every [`FLUSH_EVERY`]; for HTTP worker threads. Without a current-thread Tokio
/// runtime to run the timer, lines keep going straight through.
pub fn batch_this_thread() {
    if LOCAL.with(|l| l.borrow().is_some()) || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let batch = Arc::new(Batch::default());
    {
        let mut all = BATCHES.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|b| b.strong_count() > 0);
        all.push(Arc::downgrade(&batch));
    }
    let timer = Arc::downgrade(&batch);
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(batch) = timer.upgrade() else { return };
            let _ = batch.flush();
        }
    });
    LOCAL.with(|l| *l.borrow_mut() = Some(Local(batch)));
}

/// Writes out every thread's buffered lines; at exit, and before reading logs in tests.
pub fn flush_all() {
    let batches: Vec<Arc<Batch>> = BATCHES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for batch in batches {
        let _ = batch.flush();
    }
}

/// The `MakeWriter` for the log subscriber: stdout, batched on threads that asked for it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stdout;

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter
    }
}

/// Takes one formatted log line (the subscriber writes each with one `write_all`).
#[derive(Debug)]
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        LOCAL.with(|l| match l.borrow().as_ref() {
            Some(local) => local.0.push(buf),
            None => io::stdout().lock().write_all(buf),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_lines_in_order_until_flushed_and_then_is_empty() {
        let batch = Batch::default();
        batch.push(b"one\n").unwrap();
        batch.push(b"two\n").unwrap();
        assert_eq!(&*batch.lock(), b"one\ntwo\n");
        batch.flush().unwrap();
        assert!(batch.lock().is_empty());
    }

    #[test]
    fn a_full_batch_is_written_out_at_once() {
        let batch = Batch::default();
        let line = vec![b'x'; 1000];
        for _ in 0..(BATCH_BYTES / line.len()) {
            batch.push(&line).unwrap();
        }
        assert!(!batch.lock().is_empty(), "just under the limit: still held");
        batch.push(&line).unwrap();
        assert!(batch.lock().is_empty(), "over the limit: written out");
    }

    #[test]
    fn a_thread_without_a_runtime_writes_straight_through() {
        std::thread::spawn(|| {
            batch_this_thread();
            assert!(LOCAL.with(|l| l.borrow().is_none()));
        })
        .join()
        .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batching_thread_is_flushed_by_its_timer_and_reachable_at_exit() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                batch_this_thread();
                let batch = LOCAL.with(|l| l.borrow().as_ref().unwrap().0.clone());
                batch.lock().extend_from_slice(b"held\n");
                assert!(
                    BATCHES
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|b| b.upgrade().is_some_and(|b| Arc::ptr_eq(&b, &batch))),
                    "registered for flush_all"
                );
                tokio::time::sleep(FLUSH_EVERY * 3).await;
                assert!(batch.lock().is_empty(), "the timer wrote the line out");
            })
            .await;
    }
}
