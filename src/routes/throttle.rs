//! At most one log line per store failure kind per window: an outage or a full Redis fails
//! every request, and one ERROR line per request would bury the cause and cost CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::session::store::StoreErrorKind;

/// One line per kind per this window; the next line says how many were held back.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Rate limit for failure log lines, one slot per [`StoreErrorKind`].
pub struct LogThrottle {
    window: Duration,
    epoch: Instant,
    slots: [Slot; StoreErrorKind::ALL.len()],
}

#[derive(Default)]
struct Slot {
    /// Milliseconds after `epoch` before which no line is written.
    quiet_until: AtomicU64,
    /// Lines held back since the last one written.
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// A throttle letting one line per kind through every `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            epoch: Instant::now(),
            slots: Default::default(),
        }
    }

    /// `Some(held back)` when a line for `kind` may be written at `now`, with the number of
    /// lines suppressed since the last one; `None` when this one is to be suppressed.
    pub fn admit(&self, kind: StoreErrorKind, now: Instant) -> Option<u64> {
        let slot = &self.slots[kind.index()];
        let at = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let quiet_until = slot.quiet_until.load(Ordering::Relaxed);
        let next = at + self.window.as_millis() as u64;
        // Of concurrent callers past the window, exactly one wins the exchange and logs.
        if at >= quiet_until
            && slot
                .quiet_until
                .compare_exchange(quiet_until, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(slot.suppressed.swap(0, Ordering::Relaxed))
        } else {
            slot.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_once_and_the_next_line_counts_what_was_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let t0 = throttle.epoch;
        let oom = StoreErrorKind::OutOfMemory;
        assert_eq!(throttle.admit(oom, t0), Some(0), "the first line goes out");
        for ms in 1..=99 {
            assert_eq!(throttle.admit(oom, t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(
            throttle.admit(oom, t0 + Duration::from_secs(10)),
            Some(99),
            "after the window, one line reports the 99 held back"
        );
        assert_eq!(throttle.admit(oom, t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn each_kind_has_its_own_window() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let t0 = throttle.epoch;
        assert_eq!(throttle.admit(StoreErrorKind::OutOfMemory, t0), Some(0));
        assert_eq!(throttle.admit(StoreErrorKind::Auth, t0), Some(0));
        assert_eq!(throttle.admit(StoreErrorKind::OutOfMemory, t0), None);
    }

    #[test]
    fn concurrent_callers_let_exactly_one_line_through() {
        let throttle = LogThrottle::new(Duration::from_secs(60));
        let now = Instant::now();
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..1000)
                            .filter(|_| throttle.admit(StoreErrorKind::Timeout, now).is_some())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 1);
    }
}
