//! The double-entry ledger: accounts, transactions of postings that sum to zero per asset,
//! point lots, and member balances.
//!
//! Signs: a posting adds its amount to the account's balance. Member accounts hold value, so
//! their balances are positive; merchant-side accounts are the other side of every movement
//! (`points_issued` goes negative as points are issued). Only member accounts keep a cached
//! balance; a merchant-side account's balance is the sum of its postings, so no merchant row
//! is ever locked on the write path.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::db::{
    from_unix_micros, new_id, numbered_list, values_rows, Backend, Script, SqlValue,
    EXPIRY_HOUR_MICROS,
};
use crate::error::CoreError;
use crate::money::format_money;
use crate::session::{self, Session};

pub const POINTS: &str = "POINTS";
pub const USES: &str = "USES";

/// Most postings one transaction may carry.
pub const POSTINGS_PER_TRANSACTION_MAX: usize = 64;
/// Most lots one spend may touch before the host refuses (a guard on the FIFO loop).
pub const LOTS_PER_SPEND_MAX: usize = 10_000;

/// The asset of a merchant-side account: fixed, or the merchant's currency.
#[derive(Debug, Clone, Copy)]
pub enum AssetOf {
    Points,
    Currency,
    Uses,
}

impl AssetOf {
    pub fn resolve(self, currency: &str) -> &str {
        match self {
            AssetOf::Points => POINTS,
            AssetOf::Currency => currency,
            AssetOf::Uses => USES,
        }
    }
}

/// Merchant-side accounts, created with the merchant.
pub const MERCHANT_ACCOUNTS: &[(&str, AssetOf)] = &[
    ("points_issued", AssetOf::Points),
    ("points_redeemed", AssetOf::Points),
    ("points_breakage", AssetOf::Points),
    ("points_adjusted", AssetOf::Points),
    ("stored_value_paid_in", AssetOf::Currency),
    ("stored_value_bonus_issued", AssetOf::Currency),
    ("stored_value_redeemed", AssetOf::Currency),
    ("stored_value_bonus_redeemed", AssetOf::Currency),
    ("count_card_uses_issued", AssetOf::Uses),
    ("count_card_uses_consumed", AssetOf::Uses),
];

/// Member accounts, created with the member (count cards get one each when sold).
pub const MEMBER_ACCOUNTS: &[(&str, AssetOf)] = &[
    ("points", AssetOf::Points),
    ("points_pending", AssetOf::Points),
    ("stored_value_principal", AssetOf::Currency),
    ("stored_value_bonus", AssetOf::Currency),
];

pub fn merchant_account_id(kind: &str) -> String {
    format!("merchant:{kind}")
}

pub fn member_account_id(member_id: &str, kind: &str) -> String {
    format!("{member_id}:{kind}")
}

pub fn count_card_account_id(card_id: &str) -> String {
    format!("{card_id}:uses")
}

#[derive(Debug, Clone)]
pub struct Posting {
    pub account_id: String,
    pub asset: String,
    pub amount: i64,
    /// Member accounts keep a cached balance that must move with the posting.
    pub member_account: bool,
}

impl Posting {
    pub fn merchant(kind: &str, asset: &str, amount: i64) -> Posting {
        Posting {
            account_id: merchant_account_id(kind),
            asset: asset.to_string(),
            amount,
            member_account: false,
        }
    }
    pub fn member(account_id: String, asset: &str, amount: i64) -> Posting {
        Posting {
            account_id,
            asset: asset.to_string(),
            amount,
            member_account: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewTransaction {
    pub kind: &'static str,
    pub member_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub provenance: Option<String>,
    pub postings: Vec<Posting>,
    /// Member accounts whose balance may end below zero (points debt, when the merchant allows it).
    pub negative_allowed: Vec<String>,
}

/// Writes one balanced transaction: its row, its postings, and the cached balances of the
/// member accounts it touches (one statement for all of them). Checks balance before the
/// write (every asset sums to zero) and after it (no member balance below zero unless allowed).
/// Returns the transaction id and the new balances of the member accounts.
pub async fn record(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    now: i64,
    transaction: NewTransaction,
) -> Result<(String, BTreeMap<String, i64>), CoreError> {
    let (transaction_id, touched, _) =
        record_inner(connection, script, merchant_id, now, transaction, None).await?;
    Ok((transaction_id, touched))
}

/// [`record`], then the member's balances right after the update, for
/// [`balances_from_snapshot`]: read in the same round trip on SQLite, or the balances the
/// batch remembers for the member moved by the update (see [`RememberedBalances`]).
pub async fn record_and_read(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    now: i64,
    transaction: NewTransaction,
    member_id: &str,
) -> Result<(String, BTreeMap<String, i64>, BalanceSnapshot), CoreError> {
    let (transaction_id, touched, snapshot) = record_inner(
        connection,
        script,
        merchant_id,
        now,
        transaction,
        Some(member_id),
    )
    .await?;
    let snapshot = snapshot.expect("a member's balances are read when asked for");
    Ok((transaction_id, touched, snapshot))
}

async fn record_inner(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    now: i64,
    transaction: NewTransaction,
    read_member: Option<&str>,
) -> Result<(String, BTreeMap<String, i64>, Option<BalanceSnapshot>), CoreError> {
    let postings: Vec<&Posting> = transaction
        .postings
        .iter()
        .filter(|posting| posting.amount != 0)
        .collect();
    assert!(
        postings.len() <= POSTINGS_PER_TRANSACTION_MAX,
        "a transaction carries too many postings"
    );
    let mut per_asset: BTreeMap<&str, i64> = BTreeMap::new();
    for posting in &postings {
        *per_asset.entry(posting.asset.as_str()).or_default() += posting.amount;
    }
    if let Some((asset, sum)) = per_asset.iter().find(|(_, sum)| **sum != 0) {
        return Err(CoreError::Internal(format!(
            "unbalanced {} transaction: {asset} sums to {sum}",
            transaction.kind
        )));
    }
    let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
    for posting in postings.iter().filter(|posting| posting.member_account) {
        *deltas.entry(posting.account_id.as_str()).or_default() += posting.amount;
    }
    // Accounts whose postings net to zero stay in: callers read every posted account's
    // balance after the write (a purchase that pays and earns the same points).
    let (balances, snapshot) =
        update_and_read(connection, script, merchant_id, &deltas, read_member, now).await?;
    for (account_id, balance) in &balances {
        // Only a debit can take an account below zero; a credit to an account already in
        // debt (points given back to a member who owes points) just reduces the debt.
        let debited = deltas
            .get(account_id.as_str())
            .is_some_and(|delta| *delta < 0);
        if *balance < 0 && debited && !transaction.negative_allowed.contains(account_id) {
            return Err(CoreError::Internal(format!(
                "{} would leave {account_id} at {balance}",
                transaction.kind
            )));
        }
    }
    // The rows nobody reads back go with the command's other inserts in one round trip.
    let transaction_id = new_id("txn");
    script.push(
        "INSERT INTO transactions (merchant_id, id, kind, member_id, idempotency_key, reference, \
         reason, provenance, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            merchant_id.into(),
            (&transaction_id).into(),
            transaction.kind.into(),
            (&transaction.member_id).into(),
            (&transaction.idempotency_key).into(),
            (&transaction.reference).into(),
            (&transaction.reason).into(),
            (&transaction.provenance).into(),
            now.into(),
        ],
    );
    if !postings.is_empty() {
        let sql = format!(
            "INSERT INTO postings (merchant_id, transaction_id, seq, account_id, asset, amount) \
             VALUES {}",
            values_rows(2, 4, postings.len(), "")
        );
        let mut values: Vec<SqlValue> = vec![merchant_id.into(), (&transaction_id).into()];
        for (seq, posting) in postings.iter().enumerate() {
            values.push(i64::try_from(seq).expect("few postings").into());
            values.push((&posting.account_id).into());
            values.push((&posting.asset).into());
            values.push(posting.amount.into());
        }
        script.push(&sql, values);
    }
    Ok((transaction_id, balances, snapshot))
}

/// Moves the cached balances of the member accounts in one statement (balance + CASE id WHEN
/// … THEN delta END) and, if asked, gives the member's balances after it: read on SQLite in
/// the same call, after whatever the script has queued; or, where this batch has read the
/// member already and nothing since moved what the update does not return, the remembered
/// balances with the update's new figures (no read at all).
async fn update_and_read(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    deltas: &BTreeMap<&str, i64>,
    read_member: Option<&str>,
    now: i64,
) -> Result<(BTreeMap<String, i64>, Option<BalanceSnapshot>), CoreError> {
    let mut sql = String::new();
    let mut values: Vec<SqlValue> = vec![merchant_id.into()];
    if !deltas.is_empty() {
        let mut case = String::from("CASE id");
        let mut ids = String::new();
        for index in 0..deltas.len() {
            let id_param = 2 + index * 2;
            case.push_str(&format!(" WHEN ${} THEN ${}", id_param, id_param + 1));
            if index > 0 {
                ids.push_str(", ");
            }
            ids.push_str(&format!("${id_param}"));
        }
        case.push_str(" ELSE 0 END");
        sql = format!(
            "UPDATE accounts SET balance = balance + {case}, version = version + 1 \
             WHERE merchant_id = $1 AND id IN ({ids}) \
             RETURNING 'touched' AS row_kind, id, balance AS amount"
        );
        for (account_id, delta) in deltas {
            values.push((*account_id).into());
            values.push((*delta).into());
        }
    }
    let remembered = read_member.is_some_and(|member_id| {
        script
            .remembered()
            .holds(merchant_id, member_id, deltas.keys().copied(), now)
    });
    let read_values = |member_id: &str| -> Vec<SqlValue> {
        vec![
            member_id.into(),
            now.into(),
            EXPIRY_WINDOW_MICROS.into(),
            EXPIRING_LOTS_SUMMED_MAX.into(),
        ]
    };
    let rows = match read_member {
        Some(member_id) if !remembered => match script.backend() {
            Backend::Sqlite => {
                let read = balances_sql(1, values.len() + 1);
                let sql = if sql.is_empty() {
                    read
                } else {
                    format!("{sql};\n{read}")
                };
                values.extend(read_values(member_id));
                script.fetch_after(connection, &sql, values).await?
            }
            Backend::Postgres => {
                let mut rows = if deltas.is_empty() {
                    script.flush(connection).await?;
                    Vec::new()
                } else {
                    script.fetch_after(connection, &sql, values).await?
                };
                let mut read_all: Vec<SqlValue> = vec![merchant_id.into()];
                read_all.extend(read_values(member_id));
                rows.extend(
                    script
                        .fetch_after(connection, &balances_sql(1, 2), read_all)
                        .await?,
                );
                rows
            }
        },
        _ if deltas.is_empty() => Vec::new(),
        _ => script.fetch_after(connection, &sql, values).await?,
    };
    let mut touched = BTreeMap::new();
    let mut balance_rows = Vec::new();
    let mut lots_summed = 0;
    for row in rows {
        match row.try_get::<String, _>("row_kind")?.as_str() {
            "touched" => {
                touched.insert(row.try_get("id")?, row.try_get("amount")?);
            }
            "expiring" => {
                lots_summed =
                    lots_summed.max(row.try_get::<Option<i64>, _>("lots_summed")?.unwrap_or(0));
                balance_rows.push(row);
            }
            _ => balance_rows.push(row),
        }
    }
    if touched.len() != deltas.len() {
        return Err(CoreError::Internal(format!(
            "posting to {} missing member accounts",
            deltas.len() - touched.len()
        )));
    }
    let Some(member_id) = read_member else {
        script.remembered().move_accounts(merchant_id, &touched);
        return Ok((touched, None));
    };
    let snapshot = if remembered {
        let snapshot = script.remembered().moved(merchant_id, member_id, &touched);
        #[cfg(debug_assertions)]
        {
            // Every test run checks the remembered figures against a real read.
            let read = read_balances(connection, script, merchant_id, member_id, now).await?;
            assert_eq!(
                snapshot, read,
                "remembered balances of {member_id} differ from the database's"
            );
        }
        snapshot
    } else {
        if lots_summed >= crate::points::EXPIRY_HOURS_LOTS_MIN {
            // This read summed many lots; the member's next reads will not.
            crate::points::keep_expiry_hours(connection, script, merchant_id, member_id).await?;
        }
        let snapshot = BalanceSnapshot::from_rows(balance_rows)?;
        script
            .remembered()
            .remember(merchant_id, member_id, snapshot.clone());
        snapshot
    };
    Ok((touched, Some(snapshot)))
}

/// The cached balances of all the member's accounts, by account id.
pub async fn member_account_balances(
    connection: &mut Session<'_>,
    merchant_id: &str,
    member_id: &str,
) -> Result<BTreeMap<String, i64>, CoreError> {
    let rows = session::query(
        "SELECT id, balance FROM accounts WHERE merchant_id = $1 AND member_id = $2",
    )
    .bind(merchant_id)
    .bind(member_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut balances = BTreeMap::new();
    for row in rows {
        balances.insert(row.try_get("id")?, row.try_get("balance")?);
    }
    Ok(balances)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Balances {
    pub points: PointsBalance,
    pub stored_value: StoredValueBalance,
    pub count_cards: Vec<CountCardBalance>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PointsBalance {
    /// Spendable now. Negative only when the merchant allows refunds to leave a debt.
    pub available: i64,
    /// Earned, still inside the return window.
    pub pending: i64,
    /// The next expiry: the earliest time points expire, and how many expire within a day of it.
    pub expiring_next: Option<Expiring>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Expiring {
    pub points: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: time::OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredValueBalance {
    pub principal: String,
    pub bonus: String,
    pub total: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CountCardBalance {
    pub id: String,
    pub package_id: String,
    pub name: String,
    pub remaining: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: time::OffsetDateTime,
}

/// Lots the next-expiry sum reads at most: a bound on the work of every balance read (a
/// member with more lots in the window sees the first this many counted). A member with many
/// keeps `point_expiry_hours`, and then only the lots of the window's last hour are read.
pub const EXPIRING_LOTS_SUMMED_MAX: i64 = 1_000;
/// The next expiry counts the points expiring within this window after the earliest one.
pub const EXPIRY_WINDOW_MICROS: i64 = 86_400_000_000;

/// The earliest expiry and the points expiring within the window after it, from the stored
/// lots' figure and the lots the command has queued but not yet written.
async fn next_expiry(
    connection: &mut Session<'_>,
    merchant_id: &str,
    member_id: &str,
    stored: Option<(i64, i64)>,
    queued_lots: &[(i64, Option<i64>)],
) -> Result<Option<(i64, i64)>, CoreError> {
    let queued: Vec<(i64, i64)> = queued_lots
        .iter()
        .filter(|(remaining, _)| *remaining > 0)
        .filter_map(|(remaining, expires_at)| expires_at.map(|at| (at, *remaining)))
        .collect();
    let queued_first = queued.iter().map(|(at, _)| *at).min();
    let queued_within = |first: i64| -> i64 {
        queued
            .iter()
            .filter(|(at, _)| *at < first + EXPIRY_WINDOW_MICROS)
            .map(|(_, points)| points)
            .sum()
    };
    Ok(match (stored, queued_first) {
        (None, None) => None,
        (Some(stored), None) => Some(stored),
        (None, Some(first)) => Some((first, queued_within(first))),
        (Some((stored_first, stored_points)), Some(first)) if first >= stored_first => {
            Some((stored_first, stored_points + queued_within(stored_first)))
        }
        (Some(_), Some(first)) => {
            // A queued lot expires before every stored one (rare): count the stored lots
            // inside its window exactly.
            let stored_points: i64 = session::query_scalar(
                "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM point_lots \
                 WHERE merchant_id = $1 AND member_id = $2 AND state = 'active' \
                 AND remaining > 0 AND expires_at IS NOT NULL AND expires_at < $3",
            )
            .bind(merchant_id)
            .bind(member_id)
            .bind(first + EXPIRY_WINDOW_MICROS)
            .fetch_one(&mut *connection)
            .await?;
            Some((first, stored_points + queued_within(first)))
        }
    })
}

/// A member's balances as the API shows them, in one query. Count cards are listed while
/// they have uses left and have not expired. `queued_lots` are lots (remaining, expires_at)
/// the command has queued in its script but not yet written. The next expiry is the
/// earliest, with the points that expire within a day of it.
pub async fn balances(
    connection: &mut Session<'_>,
    merchant_id: &str,
    member_id: &str,
    exponent: u32,
    now: i64,
    queued_lots: &[(i64, Option<i64>)],
) -> Result<Balances, CoreError> {
    let rows = session::query(&balances_sql(1, 2))
        .bind(merchant_id)
        .bind(member_id)
        .bind(now)
        .bind(EXPIRY_WINDOW_MICROS)
        .bind(EXPIRING_LOTS_SUMMED_MAX)
        .fetch_all(&mut *connection)
        .await?;
    balances_from_snapshot(
        connection,
        BalanceSnapshot::from_rows(rows)?,
        merchant_id,
        member_id,
        exponent,
        queued_lots,
    )
    .await
}

/// The member's balances, read after whatever the script has queued, and remembered for
/// the rest of the batch.
pub async fn read_balances(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    member_id: &str,
    now: i64,
) -> Result<BalanceSnapshot, CoreError> {
    let values: Vec<SqlValue> = vec![
        merchant_id.into(),
        member_id.into(),
        now.into(),
        EXPIRY_WINDOW_MICROS.into(),
        EXPIRING_LOTS_SUMMED_MAX.into(),
    ];
    let rows = script
        .fetch_after(connection, &balances_sql(1, 2), values)
        .await?;
    let snapshot = BalanceSnapshot::from_rows(rows)?;
    script
        .remembered()
        .remember(merchant_id, member_id, snapshot.clone());
    Ok(snapshot)
}

/// The balances query with the merchant at `$merchant` and the member, now, the expiry
/// window and the lot limit at `$first`, `$first+1`, … (so it can follow another statement).
///
/// The earliest expiry is the first of the member's lots in expiry order (`LIMIT 1`), not
/// `MIN(expires_at)`: with the lot filters beside it, PostgreSQL's cached plan for the minimum
/// aggregated over every active lot of the member, with a heap fetch each (seen with
/// `auto_explain`: 1,327 lots for one minimum in the one-member benchmark). Measured in
/// alternating 8 s runs on PostgreSQL: 484 and 481 purchases/s against 354 and 378 one member,
/// the spread scenario unchanged; SQLite plans both forms alike (one index seek).
///
/// The points expiring within the window after it: for a member who keeps
/// `point_expiry_hours` rows (`members.expiry_hours_kept`), the whole hours from the earliest
/// expiry's hour up to the window's last hour (at most 25 rows) and the lots of that last hour
/// before the window ends (at most `$limit`); for any other member, the lots of the window (at
/// most `$limit`), with their count in `lots_summed`, so a write can switch a member with many
/// over ([`crate::points::EXPIRY_HOURS_LOTS_MIN`]). Exactly one of the two branches reads:
/// the lots' branch ends its range at NULL for a member with rows, which both databases
/// answer without a step (a `NOT EXISTS` beside the range instead, SQLite checked lot by lot,
/// walking all 18,000 lots of the benchmark's one member at every purchase).
fn balances_sql(merchant: usize, first: usize) -> String {
    let (member, now, window, limit) = (first, first + 1, first + 2, first + 3);
    let hour = EXPIRY_HOUR_MICROS;
    let member_lots = format!(
        "FROM point_lots WHERE merchant_id = ${merchant} AND member_id = ${member} \
         AND state = 'active' AND remaining > 0 AND expires_at IS NOT NULL"
    );
    let hours_kept = format!(
        "EXISTS (SELECT 1 FROM members WHERE merchant_id = ${merchant} AND id = ${member} \
         AND expiry_hours_kept = 1)"
    );
    format!(
        "SELECT 'account' AS row_kind, id, balance AS amount, CAST(NULL AS BIGINT) AS at, \
                CAST(NULL AS TEXT) AS package_id, CAST(NULL AS TEXT) AS name, \
                CAST(NULL AS BIGINT) AS lots_summed \
         FROM accounts WHERE merchant_id = ${merchant} AND member_id = ${member} AND kind <> 'count_card' \
         UNION ALL \
         SELECT 'expiring', '', CAST( \
             COALESCE((SELECT SUM(points) FROM point_expiry_hours \
                 WHERE merchant_id = ${merchant} AND member_id = ${member} \
                 AND expiry_hour >= earliest.at / {hour} \
                 AND expiry_hour < (earliest.at + ${window}) / {hour}), 0) \
             + COALESCE((SELECT SUM(remaining) FROM (SELECT remaining {member_lots} \
                 AND expires_at >= (earliest.at + ${window}) / {hour} * {hour} \
                 AND expires_at < earliest.at + ${window} \
                 ORDER BY expires_at LIMIT ${limit}) AS last_hour), 0) AS BIGINT), \
             earliest.at, NULL, NULL, NULL \
         FROM (SELECT expires_at AS at {member_lots} ORDER BY expires_at LIMIT 1) AS earliest \
         WHERE {hours_kept} \
         UNION ALL \
         SELECT 'expiring', '', CAST(COALESCE(SUM(remaining), 0) AS BIGINT), MIN(expires_at), NULL, NULL, \
             COUNT(*) \
         FROM (SELECT remaining, expires_at {member_lots} AND expires_at < CASE WHEN {hours_kept} \
                 THEN NULL ELSE (SELECT expires_at {member_lots} ORDER BY expires_at LIMIT 1) \
                 + ${window} END \
             ORDER BY expires_at LIMIT ${limit}) AS expiring \
         UNION ALL \
         SELECT 'card', c.id, a.balance, c.expires_at, c.package_id, c.name, NULL FROM count_cards c \
         JOIN accounts a ON a.merchant_id = c.merchant_id AND a.id = c.account_id \
         WHERE c.merchant_id = ${merchant} AND c.member_id = ${member} AND a.balance > 0 \
         AND c.expires_at > ${now}"
    )
}

/// A member's balances as the balances query ([`balances_sql`]) found them, parsed: what
/// [`balances_from_snapshot`] turns into the API's [`Balances`], and what a batch remembers.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceSnapshot {
    /// The member's accounts other than count cards, by id.
    accounts: BTreeMap<String, i64>,
    /// The stored lots' next expiry: the earliest, and the points expiring within the window
    /// after it.
    stored_expiry: Option<(i64, i64)>,
    /// Count cards with uses left that had not expired, by expiry then id, with their expiry
    /// in microseconds.
    count_cards: Vec<(CountCardBalance, i64)>,
}

impl BalanceSnapshot {
    /// Parses the rows of [`balances_sql`] (without the update's `touched` rows).
    pub fn from_rows(rows: Vec<session::Row>) -> Result<BalanceSnapshot, CoreError> {
        let mut accounts: BTreeMap<String, i64> = BTreeMap::new();
        let mut stored_expiry: Option<(i64, i64)> = None;
        let mut count_cards = Vec::new();
        for row in rows {
            let kind: String = row.try_get("row_kind")?;
            let amount: i64 = row.try_get("amount")?;
            match kind.as_str() {
                "account" => {
                    accounts.insert(row.try_get("id")?, amount);
                }
                "expiring" => {
                    // Of the two branches of the next expiry, the one that did not read
                    // answers no row or an empty one.
                    if let Some(first) = row.try_get::<Option<i64>, _>("at")? {
                        stored_expiry = Some((first, amount));
                    }
                }
                _ => {
                    let expires_at = row.try_get::<Option<i64>, _>("at")?.unwrap_or(0);
                    count_cards.push((
                        CountCardBalance {
                            id: row.try_get("id")?,
                            package_id: row
                                .try_get::<Option<String>, _>("package_id")?
                                .unwrap_or_default(),
                            name: row
                                .try_get::<Option<String>, _>("name")?
                                .unwrap_or_default(),
                            remaining: amount,
                            expires_at: from_unix_micros(expires_at),
                        },
                        expires_at,
                    ))
                }
            }
        }
        if accounts.is_empty() {
            return Err(CoreError::NotFound("member"));
        }
        count_cards.sort_by(|(a, _), (b, _)| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
        Ok(BalanceSnapshot {
            accounts,
            stored_expiry,
            count_cards,
        })
    }

    /// The balances of the member's accounts other than count cards, by id.
    pub fn accounts(&self) -> &BTreeMap<String, i64> {
        &self.accounts
    }

    /// Takes the new balances an account update returned.
    fn move_accounts(&mut self, touched: &BTreeMap<String, i64>) {
        for (account_id, balance) in touched {
            let known = self.accounts.insert(account_id.clone(), *balance);
            assert!(known.is_some(), "only a member's known accounts move");
        }
    }

    /// Whether these figures still hold at `now` for an update of `accounts`: every account
    /// is one of them (a count card's is not), and no listed count card has expired since.
    fn holds_for<'a>(&self, mut accounts: impl Iterator<Item = &'a str>, now: i64) -> bool {
        accounts.all(|account_id| self.accounts.contains_key(account_id))
            && self
                .count_cards
                .iter()
                .all(|(_, expires_at)| *expires_at > now)
    }

    /// Counts `points` (negative: taken) of a lot expiring at `expires_at` into the next
    /// expiry; false where the change may move the earliest expiry, which only a read knows.
    fn add_expiring(&mut self, expires_at: i64, points: i64) -> bool {
        match self.stored_expiry {
            _ if points == 0 => true,
            None if points > 0 => {
                self.stored_expiry = Some((expires_at, points));
                true
            }
            Some((first, sum)) if points > 0 && expires_at >= first => {
                if expires_at < first + EXPIRY_WINDOW_MICROS {
                    self.stored_expiry = Some((first, sum + points));
                }
                true
            }
            _ => false,
        }
    }
}

/// Most members whose balances a batch remembers; a batch carries at most
/// [`crate::writer::BATCH_COMMANDS_MAX`] commands, so this bounds nothing in practice.
pub const REMEMBERED_MEMBERS_MAX: usize = 1_024;

/// The balances of the members a writer's batch has read, kept for the rest of the batch, so
/// that a member's later commands in it need no balances query: for a member with many
/// purchases at once (a busy store's shared card, a campaign's burst) the read was the
/// costliest statement of the purchase after its inserts. Every change of what the read
/// covers moves the figures (account updates return their new balances; new and spent lots
/// with an expiry move the next expiry), or forgets the member where only a read can tell.
/// The members are locked by the batch's transaction, so nothing else moves them meanwhile;
/// the memory ends with the attempt (a failed command's rollback drops it). Debug builds
/// check every remembered answer against a read.
#[derive(Debug, Default)]
pub struct RememberedBalances {
    members: BTreeMap<(String, String), BalanceSnapshot>,
}

impl RememberedBalances {
    /// Whether the member is remembered with balances that hold for an update of `accounts`
    /// at `now`.
    fn holds<'a>(
        &self,
        merchant_id: &str,
        member_id: &str,
        accounts: impl Iterator<Item = &'a str>,
        now: i64,
    ) -> bool {
        self.members
            .get(&(merchant_id.to_string(), member_id.to_string()))
            .is_some_and(|snapshot| snapshot.holds_for(accounts, now))
    }

    /// Moves the remembered member's accounts to the balances an update returned, and gives
    /// their balances as they now stand. The member is remembered ([`Self::holds`]).
    fn moved(
        &mut self,
        merchant_id: &str,
        member_id: &str,
        touched: &BTreeMap<String, i64>,
    ) -> BalanceSnapshot {
        let snapshot = self
            .members
            .get_mut(&(merchant_id.to_string(), member_id.to_string()))
            .expect("a member whose remembered balances hold is remembered");
        snapshot.move_accounts(touched);
        snapshot.clone()
    }

    /// The member's remembered account balances, if any.
    pub fn accounts(&self, merchant_id: &str, member_id: &str) -> Option<&BTreeMap<String, i64>> {
        self.members
            .get(&(merchant_id.to_string(), member_id.to_string()))
            .map(BalanceSnapshot::accounts)
    }

    fn remember(&mut self, merchant_id: &str, member_id: &str, snapshot: BalanceSnapshot) {
        if self.members.len() >= REMEMBERED_MEMBERS_MAX {
            self.members.clear();
        }
        self.members
            .insert((merchant_id.to_string(), member_id.to_string()), snapshot);
    }

    /// Forgets the member: something moved that only a read can tell.
    pub fn forget(&mut self, merchant_id: &str, member_id: &str) {
        self.members
            .remove(&(merchant_id.to_string(), member_id.to_string()));
    }

    /// Takes new account balances from an update that named no member: each account moves in
    /// the member that holds it; an account no remembered member holds forgets them all.
    fn move_accounts(&mut self, merchant_id: &str, touched: &BTreeMap<String, i64>) {
        for (account_id, balance) in touched {
            let holder = self.members.iter_mut().find(|((merchant, _), snapshot)| {
                merchant == merchant_id && snapshot.accounts.contains_key(account_id)
            });
            match holder {
                Some((_, snapshot)) => {
                    snapshot.accounts.insert(account_id.clone(), *balance);
                }
                None => {
                    self.members.clear();
                    return;
                }
            }
        }
    }

    /// A lot of the member expiring at `expires_at` gained `points` (negative: lost them).
    pub fn add_expiring(
        &mut self,
        merchant_id: &str,
        member_id: &str,
        expires_at: i64,
        points: i64,
    ) {
        let key = (merchant_id.to_string(), member_id.to_string());
        if let Some(snapshot) = self.members.get_mut(&key) {
            if !snapshot.add_expiring(expires_at, points) {
                self.members.remove(&key);
            }
        }
    }
}

/// The API's balances from a [`BalanceSnapshot`] and the lots (remaining, expires_at) the
/// command has queued but not yet written.
pub async fn balances_from_snapshot(
    connection: &mut Session<'_>,
    snapshot: BalanceSnapshot,
    merchant_id: &str,
    member_id: &str,
    exponent: u32,
    queued_lots: &[(i64, Option<i64>)],
) -> Result<Balances, CoreError> {
    let BalanceSnapshot {
        accounts,
        stored_expiry,
        count_cards,
    } = snapshot;
    let expiring_next = next_expiry(
        connection,
        merchant_id,
        member_id,
        stored_expiry,
        queued_lots,
    )
    .await?
    .map(|(first, points)| Expiring {
        points,
        at: from_unix_micros(first),
    });
    let balance_of = |kind: &str| {
        accounts
            .get(&member_account_id(member_id, kind))
            .copied()
            .unwrap_or(0)
    };
    let principal = balance_of("stored_value_principal");
    let bonus = balance_of("stored_value_bonus");
    Ok(Balances {
        points: PointsBalance {
            available: balance_of("points"),
            pending: balance_of("points_pending"),
            expiring_next,
        },
        stored_value: StoredValueBalance {
            principal: format_money(principal, exponent),
            bonus: format_money(bonus, exponent),
            total: format_money(principal + bonus, exponent),
        },
        count_cards: count_cards.into_iter().map(|(card, _)| card).collect(),
    })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    pub kind: String,
    pub reference: Option<String>,
    pub reason: Option<String>,
    /// How the transaction came about (the earn policy that awarded points, …).
    pub provenance: Option<serde_json::Value>,
    pub postings: Vec<PostingView>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PostingView {
    pub account: String,
    pub asset: String,
    /// Points and uses are whole numbers; money is a decimal string in the asset's currency.
    #[schema(value_type = Object)]
    pub amount: serde_json::Value,
}

/// The member's transactions, newest first, each with all its postings.
pub async fn member_ledger(
    connection: &mut Session<'_>,
    merchant_id: &str,
    member_id: &str,
    currency: &str,
    exponent: u32,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<LedgerEntry>, CoreError> {
    let rows = session::query(
        "SELECT id, kind, reference, reason, provenance, created_at FROM transactions \
         WHERE merchant_id = $1 AND member_id = $2 AND ($3 = '' OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(merchant_id)
    .bind(member_id)
    .bind(before.unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    let ids = rows
        .iter()
        .map(|row| row.try_get::<String, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut postings_by_transaction =
        postings_of(connection, merchant_id, &ids, currency, exponent).await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("id")?;
        let provenance: Option<String> = row.try_get("provenance")?;
        entries.push(LedgerEntry {
            postings: postings_by_transaction.remove(&id).unwrap_or_default(),
            id,
            kind: row.try_get("kind")?,
            reference: row.try_get("reference")?,
            reason: row.try_get("reason")?,
            provenance: provenance
                .and_then(|text| serde_json::from_str(&text).ok())
                .map(without_inputs),
            created_at: from_unix_micros(row.try_get("created_at")?),
        });
    }
    Ok(entries)
}

/// A provenance without the recorded plugin inputs (compressed blobs: lists show the
/// digests; `GET /v1/transactions/{id}/explain` shows the inputs decoded).
pub fn without_inputs(mut provenance: serde_json::Value) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value, depth: usize) {
        if depth > 4 {
            return;
        }
        match value {
            serde_json::Value::Object(object) => {
                if object
                    .get("input")
                    .is_some_and(serde_json::Value::is_string)
                {
                    object.remove("input");
                }
                for child in object.values_mut() {
                    strip(child, depth + 1);
                }
            }
            serde_json::Value::Array(items) => {
                for child in items {
                    strip(child, depth + 1);
                }
            }
            _ => {}
        }
    }
    strip(&mut provenance, 0);
    provenance
}

/// The postings of transactions `ids`, in one query, grouped by transaction.
async fn postings_of(
    connection: &mut Session<'_>,
    merchant_id: &str,
    ids: &[String],
    currency: &str,
    exponent: u32,
) -> Result<BTreeMap<String, Vec<PostingView>>, CoreError> {
    let mut postings_by_transaction: BTreeMap<String, Vec<PostingView>> = BTreeMap::new();
    if ids.is_empty() {
        return Ok(postings_by_transaction);
    }
    let sql = format!(
        "SELECT transaction_id, account_id, asset, amount FROM postings \
         WHERE merchant_id = $1 AND transaction_id IN ({}) ORDER BY transaction_id, seq",
        numbered_list(2, ids.len())
    );
    let mut query = session::query(&sql).bind(merchant_id);
    for id in ids {
        query = query.bind(id);
    }
    for posting in query.fetch_all(&mut *connection).await? {
        let asset: String = posting.try_get("asset")?;
        let amount: i64 = posting.try_get("amount")?;
        let amount = if asset == currency {
            serde_json::Value::String(format_money(amount, exponent))
        } else {
            serde_json::Value::from(amount)
        };
        postings_by_transaction
            .entry(posting.try_get("transaction_id")?)
            .or_default()
            .push(PostingView {
                account: posting.try_get("account_id")?,
                asset,
                amount,
            });
    }
    Ok(postings_by_transaction)
}

/// One of the merchant's transactions with its postings, and the member it concerns.
pub async fn get_transaction(
    connection: &mut Session<'_>,
    merchant_id: &str,
    id: &str,
    currency: &str,
    exponent: u32,
) -> Result<(LedgerEntry, Option<String>), CoreError> {
    let row = session::query(
        "SELECT id, kind, member_id, reference, reason, provenance, created_at FROM transactions \
         WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?
    .ok_or(CoreError::NotFound("transaction"))?;
    let mut postings = postings_of(
        connection,
        merchant_id,
        &[id.to_string()],
        currency,
        exponent,
    )
    .await?;
    let provenance: Option<String> = row.try_get("provenance")?;
    Ok((
        LedgerEntry {
            postings: postings.remove(id).unwrap_or_default(),
            id: id.to_string(),
            kind: row.try_get("kind")?,
            reference: row.try_get("reference")?,
            reason: row.try_get("reason")?,
            provenance: provenance.and_then(|text| serde_json::from_str(&text).ok()),
            created_at: from_unix_micros(row.try_get("created_at")?),
        },
        row.try_get("member_id")?,
    ))
}

/// The merchant of transaction `id`, looked up without knowing it (an operator's tool: this
/// reads the whole table, as the key starts with the merchant).
pub async fn transaction_merchant(pool: &sqlx::AnyPool, id: &str) -> Result<String, CoreError> {
    sqlx::query_scalar("SELECT merchant_id FROM transactions WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(CoreError::NotFound("transaction"))
}

/// The merchant's ledger transactions whose Idempotency-Key starts with `prefix`, as
/// (key, reference). The ledger keeps a transaction's key for good while the idempotency
/// records are pruned after days, so a bulk import (`loyalty import`) finds here what it
/// already applied. Reads all of the merchant's transactions once; `prefix` must not hold
/// the LIKE wildcards `%` and `_`.
pub async fn keyed_transactions(
    pool: &sqlx::AnyPool,
    merchant_id: &str,
    prefix: &str,
) -> Result<Vec<(String, Option<String>)>, CoreError> {
    if prefix.contains(['%', '_', '\\']) {
        return Err(CoreError::Internal(format!(
            "key prefix {prefix:?} holds a LIKE wildcard"
        )));
    }
    let rows = sqlx::query(
        "SELECT idempotency_key, reference FROM transactions \
         WHERE merchant_id = $1 AND idempotency_key LIKE $2",
    )
    .bind(merchant_id)
    .bind(format!("{prefix}%"))
    .fetch_all(pool)
    .await?;
    let mut keyed = Vec::with_capacity(rows.len());
    for row in &rows {
        let key: String = row.try_get("idempotency_key")?;
        // LIKE ignores ASCII case on SQLite
        if key.starts_with(prefix) {
            keyed.push((key, row.try_get("reference")?));
        }
    }
    Ok(keyed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = EXPIRY_HOUR_MICROS;

    fn snapshot(accounts: &[(&str, i64)], stored_expiry: Option<(i64, i64)>) -> BalanceSnapshot {
        BalanceSnapshot {
            accounts: accounts
                .iter()
                .map(|(id, balance)| (id.to_string(), *balance))
                .collect(),
            stored_expiry,
            count_cards: Vec::new(),
        }
    }

    #[test]
    fn new_lots_move_the_next_expiry_only_where_it_is_known() {
        let mut figures = snapshot(&[("m:points", 0)], None);
        // The member's first expiring lot is the next expiry.
        assert!(figures.add_expiring(100 * HOUR, 5));
        assert_eq!(figures.stored_expiry, Some((100 * HOUR, 5)));
        // A later lot inside the window adds to it; one beyond the window leaves it.
        assert!(figures.add_expiring(110 * HOUR, 7));
        assert_eq!(figures.stored_expiry, Some((100 * HOUR, 12)));
        assert!(figures.add_expiring(100 * HOUR + EXPIRY_WINDOW_MICROS, 9));
        assert_eq!(figures.stored_expiry, Some((100 * HOUR, 12)));
        assert!(figures.add_expiring(120 * HOUR, 0));
        // An earlier lot, or points taken, may move the earliest expiry: only a read knows.
        assert!(!figures.clone().add_expiring(99 * HOUR, 1));
        assert!(!figures.clone().add_expiring(110 * HOUR, -1));
    }

    #[test]
    fn remembered_members_follow_updates_or_are_forgotten() {
        let mut remembered = RememberedBalances::default();
        remembered.remember("mer", "a", snapshot(&[("a:points", 10), ("a:sv", 5)], None));
        remembered.remember("mer", "b", snapshot(&[("b:points", 1)], None));
        // Usable for an update of the member's own accounts only.
        assert!(remembered.holds("mer", "a", ["a:points"].into_iter(), 0));
        assert!(!remembered.holds("mer", "a", ["card:uses"].into_iter(), 0));
        assert!(!remembered.holds("other", "a", ["a:points"].into_iter(), 0));
        // An update that named no member moves the holder's figure.
        remembered.move_accounts("mer", &BTreeMap::from([("a:sv".to_string(), 3)]));
        assert_eq!(remembered.accounts("mer", "a").unwrap()["a:sv"], 3);
        // Points taken from a lot forget the member; the others stay.
        remembered.add_expiring("mer", "a", 10 * HOUR, -2);
        assert!(remembered.accounts("mer", "a").is_none());
        assert!(remembered.accounts("mer", "b").is_some());
        // An account nobody is remembered with forgets everyone.
        remembered.move_accounts("mer", &BTreeMap::from([("card:uses".to_string(), 4)]));
        assert!(remembered.accounts("mer", "b").is_none());
    }

    #[test]
    fn a_count_card_expiring_ends_the_figures() {
        let mut figures = snapshot(&[("m:points", 0)], None);
        figures.count_cards.push((
            CountCardBalance {
                id: "card".into(),
                package_id: "pkg".into(),
                name: "Wash".into(),
                remaining: 3,
                expires_at: from_unix_micros(50),
            },
            50,
        ));
        assert!(figures.holds_for(["m:points"].into_iter(), 49));
        assert!(!figures.holds_for(["m:points"].into_iter(), 50));
    }
}
