//! The host's clock. Production reads the system time; tests move it forward to see pending
//! points activate and lots expire without waiting days.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Clock {
    offset_micros: Arc<AtomicI64>,
}

impl Clock {
    /// Now, as unix microseconds.
    pub fn now(&self) -> i64 {
        loyalty_core::db::unix_micros(time::OffsetDateTime::now_utc())
            + self.offset_micros.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every copy of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        let micros = i64::try_from(by.as_micros()).expect("a sane duration");
        self.offset_micros.fetch_add(micros, Ordering::Relaxed);
    }
}
