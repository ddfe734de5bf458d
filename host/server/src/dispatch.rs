//! The outbox dispatcher: applies the effects of undispatched events (campaign triggers,
//! webhook deliveries, purchases queued for the item statistics), counts the queued purchases
//! into the item statistics in large windows, and sends due deliveries, signed, with retries
//! and exponential backoff. Delivery is at least once: a
//! receiver deduplicates by the event id (`Loyalty-Event-Id`).
//!
//! Signature: `Loyalty-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A receiver recomputes it over the raw body and rejects old timestamps (replays).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hmac::{Hmac, Mac};
use loyalty_core::db::Backend;
use loyalty_core::events::EventEffect;
use loyalty_core::events::{self, Event, DISPATCH_BATCH_MAX};
use loyalty_core::items;
use loyalty_core::merchants::{get_merchant, Merchant};
use loyalty_core::operations::Command;
use loyalty_core::webhooks::{self, Attempt, DueDelivery, Webhook};
use loyalty_core::writer::Submission;
use loyalty_core::CoreError;
use sha2::Sha256;

use crate::AppState;

/// Deliveries one pass claims at most.
pub const DELIVERIES_PER_PASS_MAX: i64 = 64;
/// Deliveries in flight at once.
pub const DELIVERIES_CONCURRENT_MAX: usize = 16;
/// Bytes of a receiver's answer kept in the log when it fails.
pub const RESPONSE_EXCERPT_BYTES_MAX: usize = 200;

pub const SIGNATURE_HEADER: &str = "Loyalty-Signature";
pub const EVENT_ID_HEADER: &str = "Loyalty-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "Loyalty-Event-Type";
pub const DELIVERY_ID_HEADER: &str = "Loyalty-Delivery-Id";

/// How deliveries are sent and retried.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The wait before the first retry; each further retry waits twice as long …
    pub retry_base_ms: u64,
    /// … up to this.
    pub retry_max_ms: u64,
    /// Attempts in all before a delivery is given up (`failed`).
    pub attempts_max: i64,
    /// One attempt's time limit (connect, send, answer).
    pub timeout_ms: u64,
    /// The pause after a pass that did not fill (a backlog is worked off without pauses).
    pub idle_poll_ms: u64,
    /// How often queued purchases are counted into the item statistics (at once again while a
    /// count fills its window): purchases gather meanwhile, and a count of many merges the
    /// pairs they share into one upsert each.
    pub item_stats_interval_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            retry_base_ms: 10_000,
            retry_max_ms: 3_600_000,
            attempts_max: 10,
            timeout_ms: 10_000,
            idle_poll_ms: 500,
            item_stats_interval_ms: 2_000,
        }
    }
}

impl DeliverySettings {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff_ms(&self, attempt: i64) -> u64 {
        let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 32)).expect("clamped");
        self.retry_base_ms
            .saturating_mul(1_u64 << doublings)
            .min(self.retry_max_ms)
    }
}

/// `t=<seconds>,v1=<hex>` for `body` sent at `timestamp_seconds`.
pub fn signature(secret: &str, timestamp_seconds: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Takes up to one batch of undispatched events and dispatches it ([`dispatch_batch`]).
/// Returns how many it took.
pub async fn dispatch_events(state: &AppState) -> Result<usize, CoreError> {
    let batch = events::undispatched(&state.database.pool, DISPATCH_BATCH_MAX).await?;
    dispatch_batch(state, &batch).await?;
    Ok(batch.len())
}

/// Applies the effects of events read as undispatched: campaign triggers, then per merchant
/// writer commands of at most [`events::EFFECTS_PER_COMMAND_MAX`] events, each claiming those
/// of its events that are still undispatched (another host may have read the same batch) and
/// applying them: a delivery per subscribed webhook, purchases queued for the item statistics.
pub async fn dispatch_batch(state: &AppState, batch: &[Event]) -> Result<(), CoreError> {
    let database = &state.database;
    if batch.is_empty() {
        return Ok(());
    }
    let mut hooks: HashMap<String, Vec<Webhook>> = HashMap::new();
    for event in batch {
        if !hooks.contains_key(&event.merchant_id) {
            let active = webhooks::list_webhooks(&database.pool, &event.merchant_id)
                .await?
                .into_iter()
                .filter(|webhook| webhook.active)
                .collect();
            hooks.insert(event.merchant_id.clone(), active);
        }
    }
    let now = state.clock.now();
    // Campaign triggers first, outside the batch's transaction (they write through the
    // writer); each (campaign, event, member) applies once, so a batch retried after a
    // failure below does nothing twice.
    let mut campaigns: HashMap<String, (Merchant, crate::campaigns::Running)> = HashMap::new();
    for event in batch {
        let Some(member_id) = &event.member_id else {
            continue;
        };
        if !campaigns.contains_key(&event.merchant_id) {
            let merchant = get_merchant(&database.pool, &event.merchant_id).await?;
            let running =
                crate::campaigns::running_campaigns(state, &event.merchant_id, now).await?;
            campaigns.insert(event.merchant_id.clone(), (merchant, running));
        }
        let (merchant, running) = &campaigns[&event.merchant_id];
        let reached: crate::campaigns::Running = running
            .iter()
            .filter(|(campaign, _)| {
                campaign.starts_at <= event.created_at && event.created_at < campaign.ends_at
            })
            .cloned()
            .collect();
        if reached.is_empty() {
            continue;
        }
        let triggered = async {
            let Some(trigger) = crate::campaigns::trigger_event(state, event).await? else {
                return Ok(());
            };
            crate::campaigns::run(
                state,
                merchant,
                &reached,
                member_id,
                event.store_id.as_deref(),
                &trigger,
                &event.id,
                now,
            )
            .await
            .map(|_| ())
        };
        match triggered.await {
            Ok(()) => {}
            // The database is away: the batch is tried again on the next pass.
            Err(error @ (CoreError::Unavailable(_) | CoreError::Database(_))) => return Err(error),
            Err(error) => {
                tracing::error!(%error, event = %event.id, "campaign triggers failed for an event")
            }
        }
    }
    // The rest goes through the writer, in commands of one merchant's events: on SQLite a
    // transaction of the dispatcher's own would compete with the writer's purchases for the
    // one write lock (and SQLite's busy wait sleeps in steps of up to 100 ms).
    let effects = group_by_merchant(batch.iter().map(|event| {
        let subscribed: Vec<String> = hooks[&event.merchant_id]
            .iter()
            .filter(|webhook| webhook.subscribes(&event.kind))
            .map(|webhook| webhook.id.clone())
            .collect();
        let effect = EventEffect {
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            webhook_ids: subscribed,
            purchase_id: purchase_of(event),
        };
        (event.merchant_id.clone(), effect)
    }));
    for (merchant_id, list) in effects {
        let merchant = match campaigns.get(&merchant_id) {
            Some((merchant, _)) => merchant.clone(),
            None => get_merchant(&database.pool, &merchant_id).await?,
        };
        let mut list = list.into_iter().peekable();
        while list.peek().is_some() {
            let chunk = list
                .by_ref()
                .take(events::EFFECTS_PER_COMMAND_MAX)
                .collect();
            state
                .writer
                .submit(Submission {
                    merchant: merchant.clone(),
                    claim: None,
                    command: Command::ApplyEvents(chunk),
                    now,
                })
                .await?;
        }
    }
    Ok(())
}

/// Counts up to `window_max` (at most [`items::COUNT_PURCHASES_MAX`]) of the longest-queued
/// purchases into the item statistics ([`count_queued`]). Returns how many purchases it took.
pub async fn count_items(state: &AppState, window_max: usize) -> Result<usize, CoreError> {
    let queued = items::queued_purchases(&state.database.pool, window_max).await?;
    count_queued(state, &queued).await?;
    Ok(queued.len())
}

/// Counts purchases read from the queue, in one transaction per merchant: through the writer
/// on SQLite, in a pooled transaction on PostgreSQL. Their lines never change once written (a
/// refund only counts returned quantities), so they are read from the pool first and the
/// transaction spends its time on writes. A purchase counts only if it is still queued when
/// its transaction claims it (another host may have read the same queue). Returns how many
/// this call counted.
pub async fn count_queued(
    state: &AppState,
    queued: &[items::QueuedPurchase],
) -> Result<usize, CoreError> {
    let pool = &state.database.pool;
    let by_merchant = group_by_merchant(
        queued
            .iter()
            .map(|purchase| (purchase.merchant_id.clone(), purchase)),
    );
    let now = state.clock.now();
    let mut counted = 0;
    for (merchant_id, list) in by_merchant {
        let merchant_id = merchant_id.as_str();
        let purchase_ids: Vec<String> = list
            .iter()
            .map(|purchase| purchase.purchase_id.clone())
            .collect();
        let mut baskets = items::purchase_baskets(pool, merchant_id, &purchase_ids).await?;
        // A purchase without lines still leaves the queue (as counted, adding nothing).
        let window: Vec<(String, items::Basket)> = list
            .into_iter()
            .map(|purchase| {
                let basket = baskets.remove(&purchase.purchase_id).unwrap_or_default();
                (purchase.event_id.clone(), basket)
            })
            .collect();
        if state.database.backend == Backend::Postgres {
            let purchases: Vec<(&str, &items::Basket)> = window
                .iter()
                .map(|(event_id, basket)| (event_id.as_str(), basket))
                .collect();
            counted += items::count_purchases_in_transaction(pool, merchant_id, &purchases).await?;
            continue;
        }
        let merchant = get_merchant(pool, merchant_id).await?;
        let outcome = state
            .writer
            .submit(Submission {
                merchant,
                claim: None,
                command: Command::CountItems(window),
                now,
            })
            .await?;
        let answer: serde_json::Value = serde_json::from_str(&outcome.body)
            .map_err(|error| CoreError::Internal(format!("a count's answer: {error}")))?;
        counted += answer["purchases"]
            .as_u64()
            .and_then(|purchases| usize::try_from(purchases).ok())
            .ok_or_else(|| CoreError::Internal("a count's answer has no purchases".into()))?;
    }
    Ok(counted)
}

/// Sends the due deliveries. Returns how many it attempted.
pub async fn deliver_due(state: &AppState, client: &reqwest::Client) -> Result<usize, CoreError> {
    let settings = &state.delivery;
    let now = state.clock.now();
    // The lease outlasts an attempt, so no other pass takes a delivery while it is in flight.
    let lease_micros = i64::try_from(settings.timeout_ms.saturating_mul(2_000)).unwrap_or(i64::MAX);
    // Read here, claimed and recorded through the writer (on SQLite the only writer).
    let candidates =
        webhooks::due_deliveries(&state.database.pool, now, DELIVERIES_PER_PASS_MAX).await?;
    let by_merchant = group_by_merchant(
        candidates
            .into_iter()
            .map(|(delivery, due_at)| (delivery.merchant_id.clone(), (delivery, due_at))),
    );
    let mut due = Vec::new();
    for (merchant_id, list) in by_merchant {
        let merchant = get_merchant(&state.database.pool, &merchant_id).await?;
        let outcome = state
            .writer
            .submit(Submission {
                merchant: merchant.clone(),
                claim: None,
                command: Command::ClaimDeliveries {
                    deliveries: list
                        .iter()
                        .map(|(delivery, due_at)| (delivery.id.clone(), *due_at))
                        .collect(),
                    lease_until: now.saturating_add(lease_micros),
                },
                now,
            })
            .await?;
        let claimed: Vec<String> = serde_json::from_str(&outcome.body)
            .map_err(|error| CoreError::Internal(format!("a claim's answer: {error}")))?;
        due.extend(
            list.into_iter()
                .map(|(delivery, _)| delivery)
                .filter(|delivery| claimed.contains(&delivery.id))
                .map(|delivery| (merchant.clone(), delivery)),
        );
    }
    let attempted = due.len();
    let results: Vec<Result<(), CoreError>> = futures::stream::iter(due)
        .map(
            |(merchant, delivery)| async move { deliver(state, client, merchant, &delivery).await },
        )
        .buffer_unordered(DELIVERIES_CONCURRENT_MAX)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(attempted)
}

async fn deliver(
    state: &AppState,
    client: &reqwest::Client,
    merchant: Merchant,
    delivery: &DueDelivery,
) -> Result<(), CoreError> {
    let event: Event = events::get_event(
        &state.database.pool,
        &delivery.merchant_id,
        &delivery.event_id,
    )
    .await?;
    let body = serde_json::to_vec(&event).expect("events serialize");
    let timestamp_seconds = state.clock.now() / 1_000_000;
    let sent = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(&delivery.secret, timestamp_seconds, &body),
        )
        .header(EVENT_ID_HEADER, &event.id)
        .header(EVENT_TYPE_HEADER, &event.kind)
        .header(DELIVERY_ID_HEADER, &delivery.id)
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => {
            let status = response.status();
            let excerpt: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(RESPONSE_EXCERPT_BYTES_MAX)
                .collect();
            (
                Some(status.as_u16()),
                Some(format!("the receiver answered {status}: {excerpt}")),
            )
        }
        Err(error) => (None, Some(describe_send_error(&error))),
    };
    let attempt_number = delivery.attempts + 1;
    let now = state.clock.now();
    let settings = &state.delivery;
    let retry_at = (error.is_some() && attempt_number < settings.attempts_max).then(|| {
        now + i64::try_from(settings.backoff_ms(attempt_number).saturating_mul(1_000))
            .unwrap_or(i64::MAX / 2)
    });
    if let Some(error) = &error {
        tracing::warn!(delivery = %delivery.id, webhook = %delivery.webhook_id, attempt = attempt_number, %error, "webhook delivery failed");
    }
    state
        .writer
        .submit(Submission {
            merchant,
            claim: None,
            command: Command::RecordDelivery {
                delivery_id: delivery.id.clone(),
                attempt: Attempt {
                    status,
                    error,
                    retry_at,
                },
            },
            now,
        })
        .await
        .map(|_| ())
}

fn describe_send_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "the receiver did not answer in time".into()
    } else if error.is_connect() {
        "could not connect to the receiver".into()
    } else {
        format!("sending failed: {error}")
    }
}

/// The HTTP client deliveries use: the attempt's time limit, no redirects (a signed body is
/// for the URL the merchant registered).
pub fn client(settings: &DeliverySettings) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("loyalty-host/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid")
}

/// `(merchant id, item)` pairs as one list per merchant, merchants and items in the order
/// they came: each merchant's work goes to the writer as commands of its own.
fn group_by_merchant<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut groups: Vec<(String, Vec<T>)> = Vec::new();
    for (merchant_id, item) in items {
        match groups.iter_mut().find(|(seen, _)| *seen == merchant_id) {
            Some((_, list)) => list.push(item),
            None => groups.push((merchant_id, vec![item])),
        }
    }
    groups
}

/// The purchase a `purchase.recorded` event counts into the item statistics.
fn purchase_of(event: &Event) -> Option<String> {
    (event.kind == events::PURCHASE_RECORDED)
        .then(|| event.data["purchase_id"].as_str().map(str::to_string))
        .flatten()
}

/// Dispatches, counts items and delivers forever; idles `idle_poll_ms` after a pass that
/// found no backlog.
pub async fn run_forever(state: AppState) {
    let client = client(&state.delivery);
    let item_stats_interval = Duration::from_millis(state.delivery.item_stats_interval_ms);
    let mut items_counted_at = Instant::now();
    let mut items_backlog = false;
    loop {
        let dispatched = dispatch_events(&state).await.unwrap_or_else(|error| {
            tracing::error!(%error, "dispatching events failed");
            0
        });
        if items_backlog || items_counted_at.elapsed() >= item_stats_interval {
            items_counted_at = Instant::now();
            let window_max = items::COUNT_PURCHASES_MAX;
            let counted = count_items(&state, window_max)
                .await
                .unwrap_or_else(|error| {
                    tracing::error!(%error, "counting item statistics failed");
                    0
                });
            items_backlog = counted >= window_max;
        }
        let delivered = deliver_due(&state, &client).await.unwrap_or_else(|error| {
            tracing::error!(%error, "delivering webhooks failed");
            0
        });
        let backlog = dispatched >= usize::try_from(DISPATCH_BATCH_MAX).expect("small");
        if !backlog && !items_backlog && delivered == 0 {
            tokio::time::sleep(Duration::from_millis(state.delivery.idle_poll_ms)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = DeliverySettings {
            retry_base_ms: 1_000,
            retry_max_ms: 5_000,
            ..Default::default()
        };
        let waits: Vec<u64> = (1..=5)
            .map(|attempt| settings.backoff_ms(attempt))
            .collect();
        assert_eq!(waits, vec![1_000, 2_000, 4_000, 5_000, 5_000]);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
