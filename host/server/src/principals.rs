//! A short-lived memory of authenticated API keys, so a busy till does not cost a database
//! read per request. Revoking a key or changing a merchant clears the memory on this host
//! at once; other hosts of the same database see the change within `PRINCIPAL_TTL_MS`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use loyalty_core::merchants::Principal;

/// How long an authenticated key is remembered.
pub const PRINCIPAL_TTL_MS: u64 = 2_000;
/// Most keys remembered at once; the memory is cleared when full.
pub const PRINCIPALS_MAX: usize = 10_000;

#[derive(Default)]
pub struct Principals {
    /// By the key's SHA-256 digest, never by the key itself.
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Principals {
    pub fn get(&self, key_hash: &str) -> Option<Principal> {
        let entries = self
            .entries
            .lock()
            .expect("the key memory is never poisoned");
        entries
            .get(key_hash)
            .filter(|(_, at)| at.elapsed() < Duration::from_millis(PRINCIPAL_TTL_MS))
            .map(|(principal, _)| principal.clone())
    }

    pub fn put(&self, key_hash: String, principal: Principal) {
        let mut entries = self
            .entries
            .lock()
            .expect("the key memory is never poisoned");
        if entries.len() >= PRINCIPALS_MAX {
            entries.clear();
        }
        entries.insert(key_hash, (principal, Instant::now()));
    }

    /// Forgets every key of a merchant (after a revocation or a settings change).
    pub fn forget_merchant(&self, merchant_id: &str) {
        let mut entries = self
            .entries
            .lock()
            .expect("the key memory is never poisoned");
        entries.retain(|_, (principal, _)| principal.merchant.id != merchant_id);
    }
}
