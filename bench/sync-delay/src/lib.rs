//! A disk whose durable flush costs more than this machine's, for `cargo xtask bench ledger
//! --sync-delay-us N`: preloaded into a process (`LD_PRELOAD`), this library makes every
//! `fsync` and `fdatasync` wait `LOYALTY_SYNC_DELAY_US` microseconds after the real call
//! returns, as a flush to stable storage that takes that long would.
//!
//! The ratio compares purchases with the bare durable-commit rate of the disk the
//! benchmark runs on. Where a flush costs 0.05 ms (a virtual disk whose host acknowledges it
//! from a cache), a bare commit costs little more than its CPU, and the ratio measures CPU
//! against CPU; with this library the same machine shows what group commit does on a disk
//! whose flush costs what the issue assumes (a bare SQLite commit ≈ 0.6 ms). Both sides of
//! the ratio wait alike: the bare commits and the server's commits call the same functions.
//!
//! Linux only (it finds the real functions with `dlsym(RTLD_NEXT, …)`); elsewhere it is empty.

#[cfg(target_os = "linux")]
mod interpose {
    use std::ffi::CStr;
    use std::sync::OnceLock;
    use std::time::Duration;

    /// The wait when `LOYALTY_SYNC_DELAY_US` is unset or unreadable.
    const DELAY_US_DEFAULT: u64 = 500;
    /// The longest wait taken: a typo must not turn every flush into minutes.
    const DELAY_US_MAX: u64 = 100_000;

    type SyncFunction = unsafe extern "C" fn(libc::c_int) -> libc::c_int;

    fn delay() -> Duration {
        static DELAY: OnceLock<Duration> = OnceLock::new();
        *DELAY.get_or_init(|| {
            let micros = std::env::var("LOYALTY_SYNC_DELAY_US")
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(DELAY_US_DEFAULT);
            Duration::from_micros(micros.min(DELAY_US_MAX))
        })
    }

    /// The next definition of `name` after this library's: the C library's.
    fn next(name: &CStr) -> SyncFunction {
        // SAFETY: RTLD_NEXT with a NUL-terminated name only looks the symbol up.
        let address = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
        assert!(!address.is_null(), "the C library defines {name:?}");
        // SAFETY: fsync and fdatasync both take a file descriptor and return an int.
        unsafe { std::mem::transmute::<*mut libc::c_void, SyncFunction>(address) }
    }

    fn synced(result: libc::c_int) -> libc::c_int {
        // The flush happened; now it takes as long as the slower disk's would. Errno is
        // the real call's: sleeping does not touch it.
        std::thread::sleep(delay());
        result
    }

    /// # Safety
    /// As the C library's `fsync`.
    #[no_mangle]
    pub unsafe extern "C" fn fsync(descriptor: libc::c_int) -> libc::c_int {
        static REAL: OnceLock<SyncFunction> = OnceLock::new();
        let real = *REAL.get_or_init(|| next(c"fsync"));
        synced(real(descriptor))
    }

    /// # Safety
    /// As the C library's `fdatasync`.
    #[no_mangle]
    pub unsafe extern "C" fn fdatasync(descriptor: libc::c_int) -> libc::c_int {
        static REAL: OnceLock<SyncFunction> = OnceLock::new();
        let real = *REAL.get_or_init(|| next(c"fdatasync"));
        synced(real(descriptor))
    }
}
