//! loyalty-core: the domain and its data. Merchants, stores, members, the double-entry
//! ledger (accounts, transactions, postings, point lots, idempotency) with persistence on
//! SQLite and PostgreSQL, and the plugin registry. Knows nothing of HTTP or WebAssembly.

pub mod campaigns;
pub mod coupons;
pub mod db;
pub mod earn;
pub mod error;
pub mod events;
pub mod gifts;
pub mod items;
pub mod ledger;
pub mod members;
pub mod merchants;
pub mod money;
pub mod operations;
pub mod plugins;
pub mod points;
pub mod session;
pub mod settings;
pub mod stores;
pub mod ticks;
pub mod tiers;
pub mod verify;
pub mod webhooks;
pub mod writer;

pub use db::{Backend, Database};
pub use error::{CoreError, FieldError};
