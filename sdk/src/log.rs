//! The plugin's log, through the host's `log` import.
//!
//! On the host the lines go to the plugin's log (beyond the host's per-call cap they are
//! dropped and counted). On a non-wasm target, where there is no host, they are kept in a
//! thread-local buffer that tests read with [`crate::testing::take_logs`].

use crate::LogLevel;

/// Writes `message` at `level`.
pub fn write(level: LogLevel, message: &str) {
    imp::write(level, message);
}

/// Writes a debugging detail.
pub fn debug(message: &str) {
    write(LogLevel::Debug, message);
}

/// Writes a line about normal operation.
pub fn info(message: &str) {
    write(LogLevel::Info, message);
}

/// Writes something the merchant should look at.
pub fn warn(message: &str) {
    write(LogLevel::Warn, message);
}

/// Writes that the plugin could not do its work.
pub fn error(message: &str) {
    write(LogLevel::Error, message);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::LogLevel;

    pub(super) fn write(level: LogLevel, message: &str) {
        crate::wit::shared::loyalty::plugin::host::log(level, message);
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use crate::LogLevel;
    use std::cell::RefCell;

    thread_local! {
        // The generated import panics off wasm, so native builds (tests) log here instead.
        pub(crate) static CAPTURED: RefCell<Vec<(LogLevel, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn write(level: LogLevel, message: &str) {
        CAPTURED.with(|lines| lines.borrow_mut().push((level, message.to_owned())));
    }
}
