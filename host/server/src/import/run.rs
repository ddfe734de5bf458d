//! Applies a [`Plan`]: stores, plugins and members first, then the purchases and refunds in
//! the data's time order, many at once but one member's strictly in order, each through the
//! API's own path from request body to command to the writer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use loyalty_core::db::from_unix_micros;
use loyalty_core::members::{self, MemberFilter, NewMember};
use loyalty_core::merchants::Merchant;
use loyalty_core::money::format_money;
use loyalty_core::operations::{Command, PurchaseRequest, RefundRequest};
use loyalty_core::plugins::{
    self as registry, Inspected, Manifest, StorePluginEntry, StorePluginsRequest,
};
use loyalty_core::stores::{self, NewStore};
use loyalty_core::tiers::TierSource;
use loyalty_core::writer::{IdempotencyClaim, Submission};
use loyalty_core::{Backend, CoreError};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{
    count, Counts, ImportOptions, ImportSummary, MemberPlan, Op, Plan, PurchaseOp, RefundOp,
};
use crate::api::purchases::{purchase_command, refund_command};
use crate::extract::{parse_json, request_digest};
use crate::{tiers, AppState};

/// Page size when reading the merchant's stores and members.
const PAGE: i64 = 200;
/// Members enrolled in one transaction.
const ENROL_CHUNK: usize = 500;
/// Members enrolled one by one at once on PostgreSQL (SQLite has one writer: one at a time).
const ENROL_CONCURRENCY_POSTGRES: usize = 16;
/// How often an operation that met a transient conflict is submitted again.
const RETRIES_MAX: u32 = 5;
/// Version under which `--plugin` components are registered.
pub const PLUGIN_VERSION: &str = "1.0.0";

/// Applies `plan` to `merchant`, adding to `summary`.
pub async fn run(
    state: &AppState,
    merchant: &Merchant,
    plan: Plan,
    options: &ImportOptions,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let setup_started = Instant::now();
    let progress = if options.progress {
        let bar =
            ProgressBar::with_draw_target(Some(plan.lines_read), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:40}] {human_pos}/{human_len} lines, eta {eta}: {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    progress.set_message("stores and members");
    progress.inc(plan.lines_skipped());

    let stores = ensure_stores(state, merchant, &plan, summary).await?;
    if !options.plugins.is_empty() {
        summary.plugins = enable_plugins(state, merchant, options, &stores).await?;
    }
    let members = ensure_members(state, merchant, &plan, summary).await?;
    summary.setup_elapsed = setup_started.elapsed();

    // What earlier runs applied: the ledger keeps every transaction's key for good.
    let applied: HashMap<String, Option<String>> = loyalty_core::ledger::keyed_transactions(
        &state.database.pool,
        &merchant.id,
        &plan.key_prefix,
    )
    .await?
    .into_iter()
    .collect();
    let skip_cancellations = cancellations_matched_otherwise(&plan, &applied);
    if !skip_cancellations.is_empty() {
        count(
            &mut summary.notes,
            "cancellations an earlier run refunded against other purchases (not refunded again)",
            skip_cancellations.len() as u64,
        );
    }

    progress.set_message("purchases and refunds");
    let context = Arc::new(Context {
        state: state.clone(),
        merchant: merchant.clone(),
        stores,
        members,
        progress: progress.clone(),
    });
    // A long import on PostgreSQL grows tables from nothing: keep the planner's statistics
    // up with them, as `loyalty serve` does.
    let statistics = tokio::spawn(crate::jobs::refresh_statistics_forever(state.clone()));
    let tally = dispatch(
        context,
        plan.members,
        &applied,
        &skip_cancellations,
        options.concurrency.max(1),
    )
    .await;
    statistics.abort();
    let tally = tally?;
    progress.finish_and_clear();

    summary.purchases_imported += tally.purchases_imported;
    summary.purchases_present += tally.purchases_present;
    summary.purchases_refused += tally.purchases_refused;
    summary.refunds_imported += tally.refunds_imported;
    summary.refunds_present += tally.refunds_present;
    summary.refunds_refused += tally.refunds_refused;
    summary.points_issued += tally.points_issued;
    summary.points_reversed += tally.points_reversed;
    summary.lines_imported += tally.lines_imported;
    summary.lines_present += tally.lines_present;
    for (reason, lines) in tally.skipped {
        count(&mut summary.skipped, reason, lines);
    }
    Ok(())
}

/// Cancellations whose refunds an earlier run applied under keys this plan does not make
/// (the file changed, so the match did): refunding them again would refund twice.
fn cancellations_matched_otherwise(
    plan: &Plan,
    applied: &HashMap<String, Option<String>>,
) -> HashSet<String> {
    let mut applied_cancellations: HashSet<&str> = HashSet::new();
    for key in applied.keys() {
        if let Some((cancellation, _)) = key[plan.key_prefix.len().min(key.len())..].split_once(':')
        {
            applied_cancellations.insert(cancellation);
        }
    }
    let mut resumable: HashSet<&str> = HashSet::new();
    for op in plan.ops() {
        if let Op::Refund(refund) = op {
            if applied.contains_key(&refund.key) {
                resumable.insert(&refund.cancellation);
            }
        }
    }
    applied_cancellations
        .difference(&resumable)
        .map(|cancellation| cancellation.to_string())
        .collect()
}

/// The plan's stores by code → id: existing ones reused, the others created.
async fn ensure_stores(
    state: &AppState,
    merchant: &Merchant,
    plan: &Plan,
    summary: &mut ImportSummary,
) -> anyhow::Result<HashMap<String, String>> {
    let pool = &state.database.pool;
    let mut existing = existing_stores(state, merchant).await?;
    let mut ids = HashMap::new();
    for store in &plan.stores {
        if let Some(id) = existing.get(&store.code) {
            summary.stores_reused += 1;
            ids.insert(store.code.clone(), id.clone());
            continue;
        }
        let input = NewStore {
            code: store.code.clone(),
            name: store.name.clone(),
        };
        match stores::create_store(pool, &merchant.id, &input, store.first_at).await {
            Ok(created) => {
                summary.stores_created += 1;
                ids.insert(store.code.clone(), created.id);
            }
            Err(CoreError::Conflict(_)) => {
                // created meanwhile by someone else
                existing = existing_stores(state, merchant).await?;
                let id = existing
                    .get(&store.code)
                    .with_context(|| format!("store {} vanished", store.code))?;
                summary.stores_reused += 1;
                ids.insert(store.code.clone(), id.clone());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("creating store {}", store.code))
            }
        }
    }
    Ok(ids)
}

async fn existing_stores(
    state: &AppState,
    merchant: &Merchant,
) -> anyhow::Result<HashMap<String, String>> {
    let mut existing = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = stores::list_stores(&state.database.pool, &merchant.id, cursor.as_deref(), PAGE)
            .await?;
        let full = page.len() as i64 == PAGE;
        cursor = page.last().map(|store| store.id.clone());
        existing.extend(page.into_iter().map(|store| (store.code, store.id)));
        if !full {
            return Ok(existing);
        }
    }
}

/// Registers each component (as the upload endpoint does: inspected and compiled by the
/// runtime, recorded by sha256) under its file name and [`PLUGIN_VERSION`], and makes the
/// components of each world the set every store of the import runs for that world, in the
/// order given, with the configuration `options.plugin_configs` names (default `{}`).
/// Returns name@version of each.
async fn enable_plugins(
    state: &AppState,
    merchant: &Merchant,
    options: &ImportOptions,
    stores: &HashMap<String, String>,
) -> anyhow::Result<Vec<String>> {
    let paths = &options.plugins;
    let pool = &state.database.pool;
    let now = state.clock.now();
    let mut by_world: Vec<(&'static str, Vec<StorePluginEntry>)> = Vec::new();
    let mut names = Vec::new();
    for path in paths {
        let name = plugin_name(path)?;
        let (plugin, world) = register(state, merchant, path).await?;
        names.push(format!("{}@{} ({world})", plugin.name, plugin.version));
        let entry = StorePluginEntry {
            plugin_id: plugin.id,
            config: options
                .plugin_configs
                .get(&name)
                .cloned()
                .unwrap_or_else(|| json!({})),
            priority: 0,
        };
        if world == "campaign-trigger" {
            // Registered only: a trigger runs as a campaign, not as a store's set.
            continue;
        }
        match by_world.iter_mut().find(|(known, _)| *known == world) {
            Some((_, entries)) => entries.push(entry),
            None => by_world.push((world, vec![entry])),
        }
    }
    for store_id in stores.values() {
        for (world, entries) in &by_world {
            let request = StorePluginsRequest {
                plugins: entries
                    .iter()
                    .enumerate()
                    .map(|(priority, entry)| StorePluginEntry {
                        priority: priority as i64,
                        ..entry.clone()
                    })
                    .collect(),
            };
            registry::set_store_plugins(pool, &merchant.id, store_id, world, &request, now)
                .await
                .map_err(|error| anyhow::anyhow!("enabling plugins: {}", describe(&error)))?;
            state.plugins.forget_set(&merchant.id, store_id, world);
        }
    }
    Ok(names)
}

/// Registers the component at `path` for the merchant as the upload endpoint does (inspected
/// and compiled by the runtime, recorded by sha256) under its file name and
/// [`PLUGIN_VERSION`]; the same bytes again find the same plugin.
async fn register(
    state: &AppState,
    merchant: &Merchant,
    path: &Path,
) -> anyhow::Result<(registry::Plugin, &'static str)> {
    let name = plugin_name(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (compiled, bytes) = state
        .plugins
        .inspect(bytes)
        .await
        .map_err(|error| anyhow::anyhow!("{}: {}", path.display(), describe(&error)))?;
    let world = registry::world_by_name(compiled.world().as_str())?;
    let manifest = Manifest {
        name: name.clone(),
        version: PLUGIN_VERSION.to_string(),
        world: world.to_string(),
        description: format!("registered by loyalty import from {}", path.display()),
        config_schema: None,
        limits: Default::default(),
    };
    let inspected = Inspected {
        world: compiled.world().as_str(),
        wit_version: compiled.wit_version(),
        sha256: compiled.sha256(),
        bytes: &bytes,
    };
    let (plugin, _created) = registry::create_plugin(
        &state.database.pool,
        &merchant.id,
        &manifest,
        inspected,
        state.clock.now(),
    )
    .await
    .map_err(|error| match error {
        CoreError::Conflict(_) => anyhow::anyhow!(
            "{name} {PLUGIN_VERSION} is already registered for this merchant with other \
             bytes; upload this build over the API under a new version and enable it there"
        ),
        other => anyhow::anyhow!("registering {name}: {}", describe(&other)),
    })?;
    Ok((plugin, world))
}

/// Registers a component for the merchant without enabling it anywhere (a campaign's
/// plugin); returns the plugin's id.
pub async fn register_component(
    state: &AppState,
    merchant: &Merchant,
    path: &Path,
) -> anyhow::Result<String> {
    Ok(register(state, merchant, path).await?.0.id)
}

/// `earn_base_rate.wasm` → `earn-base-rate`.
fn plugin_name(path: &Path) -> anyhow::Result<String> {
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?;
    let name: String = stem
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        bail!("cannot name a plugin after {}", path.display());
    }
    Ok(name)
}

/// The plan's members by external id → member id: existing ones reused, the others enrolled
/// as `POST /v1/members` enrols them (joined at their first line), many per transaction.
async fn ensure_members(
    state: &AppState,
    merchant: &Merchant,
    plan: &Plan,
    summary: &mut ImportSummary,
) -> anyhow::Result<HashMap<String, String>> {
    let pool = &state.database.pool;
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut cursor: Option<String> = None;
    let no_filter = MemberFilter {
        phone: None,
        email: None,
        external_id: None,
    };
    loop {
        let page =
            members::list_members(pool, merchant, &no_filter, cursor.as_deref(), PAGE).await?;
        let full = page.len() as i64 == PAGE;
        cursor = page.last().map(|member| member.id.clone());
        for member in page {
            if let Some(external_id) = member.external_id {
                ids.insert(external_id, member.id);
            }
        }
        if !full {
            break;
        }
    }
    let missing: Vec<&MemberPlan> = plan
        .members
        .iter()
        .filter(|member| !ids.contains_key(&member.external_id))
        .collect();
    summary.members_reused += (plan.members.len() - missing.len()) as u64;
    // in chunks, one transaction each; a chunk that meets a member enrolled meanwhile is
    // enrolled one by one instead
    for chunk in missing.chunks(ENROL_CHUNK) {
        let inputs: Vec<(NewMember, i64)> = chunk
            .iter()
            .map(|member| (new_member(member), member.first_at))
            .collect();
        match members::create_members(pool, merchant, &inputs).await {
            Ok(created) => {
                summary.members_created += created.len() as u64;
                for (member, id) in chunk.iter().zip(created) {
                    ids.insert(member.external_id.clone(), id);
                }
            }
            Err(CoreError::Conflict(_)) => {
                let concurrency = match state.database.backend {
                    Backend::Sqlite => 1,
                    Backend::Postgres => ENROL_CONCURRENCY_POSTGRES,
                };
                let mut enrolled = futures::stream::iter(chunk)
                    .map(|member| enrol(state, merchant, member))
                    .buffer_unordered(concurrency);
                while let Some(result) = enrolled.next().await {
                    let (external_id, id, created) = result?;
                    if created {
                        summary.members_created += 1;
                    } else {
                        summary.members_reused += 1;
                    }
                    ids.insert(external_id, id);
                }
            }
            Err(error) => return Err(anyhow::anyhow!("enrolling members: {}", describe(&error))),
        }
    }
    Ok(ids)
}

fn new_member(member: &MemberPlan) -> NewMember {
    NewMember {
        phone: None,
        email: None,
        name: None,
        birthday: None,
        external_id: Some(member.external_id.clone()),
        attributes: None,
    }
}

/// Enrols one member as `POST /v1/members` does; one enrolled meanwhile is found instead.
async fn enrol(
    state: &AppState,
    merchant: &Merchant,
    member: &MemberPlan,
) -> anyhow::Result<(String, String, bool)> {
    let pool = &state.database.pool;
    match members::create_member(pool, merchant, &new_member(member), member.first_at).await {
        Ok(created) => Ok((member.external_id.clone(), created.id, true)),
        Err(CoreError::Conflict(_)) => {
            let filter = MemberFilter {
                phone: None,
                email: None,
                external_id: Some(member.external_id.clone()),
            };
            let found = members::list_members(pool, merchant, &filter, None, 1)
                .await?
                .pop()
                .with_context(|| format!("member {} vanished", member.external_id))?;
            Ok((member.external_id.clone(), found.id, false))
        }
        Err(error) => Err(anyhow::anyhow!(
            "enrolling customer {}: {}",
            member.external_id,
            describe(&error)
        )),
    }
}

struct Context {
    state: AppState,
    merchant: Merchant,
    /// store code → id
    stores: HashMap<String, String>,
    /// external id → member id
    members: HashMap<String, String>,
    progress: ProgressBar,
}

#[derive(Default)]
struct Tally {
    purchases_imported: u64,
    purchases_present: u64,
    purchases_refused: u64,
    refunds_imported: u64,
    refunds_present: u64,
    refunds_refused: u64,
    points_issued: i64,
    points_reversed: i64,
    lines_imported: u64,
    lines_present: u64,
    skipped: Counts,
}

/// What the writer made of an operation.
enum Applied {
    /// Applied (now, or by an earlier run under the same key: `replayed`); the response body.
    Done { receipt: Value, replayed: bool },
    /// Refused by validation or a business rule; why.
    Refused(String),
    /// The purchase's external_id exists already (recorded without this import's key).
    Duplicate,
    /// Not run (already counted).
    Skipped,
}

impl Applied {
    /// Whether the operation's command ran now (not answered from its key's record), as the
    /// API's `applied_now`: only then does the tier policy follow.
    fn applied_now(&self) -> bool {
        matches!(
            self,
            Applied::Done {
                replayed: false,
                ..
            }
        )
    }
}

/// Runs the operations of all members in the data's time order, up to `concurrency` at
/// once, never two of one member at once: an operation whose member is busy waits (with the
/// member's later ones) until the member's previous one is committed. Time order keeps
/// what runs together close in the ledger's time-keyed indexes, and lets the busiest
/// members' long histories advance with everyone else's.
async fn dispatch(
    context: Arc<Context>,
    members: Vec<MemberPlan>,
    applied: &HashMap<String, Option<String>>,
    skip_cancellations: &HashSet<String>,
    concurrency: usize,
) -> anyhow::Result<Tally> {
    let mut member_ids = Vec::with_capacity(members.len());
    let mut timeline: Vec<(i64, usize, usize, Op)> = Vec::new();
    for (member, plan) in members.into_iter().enumerate() {
        let id = context
            .members
            .get(&plan.external_id)
            .with_context(|| format!("no member for customer {}", plan.external_id))?
            .clone();
        member_ids.push(id);
        for (index, op) in plan.ops.into_iter().enumerate() {
            let at = match &op {
                Op::Purchase(purchase) => purchase.at,
                Op::Refund(refund) => refund.at,
            };
            timeline.push((at, member, index, op));
        }
    }
    // a member's operations are in its own order already; ties keep it
    timeline.sort_by_key(|(at, member, index, _)| (*at, *member, *index));

    let mut tally = Tally::default();
    // purchase key → purchase id (None: recorded, id unknown)
    let mut purchases: HashMap<String, Option<String>> = HashMap::new();
    let mut waiting: Vec<VecDeque<Op>> = vec![VecDeque::new(); member_ids.len()];
    let mut busy = vec![false; member_ids.len()];
    let mut running: JoinSet<anyhow::Result<(usize, Op, Applied)>> = JoinSet::new();
    let mut timeline = timeline.into_iter();
    let skips = Skips {
        applied,
        skip_cancellations,
    };
    loop {
        while running.len() < concurrency {
            let Some((_, member, _, op)) = timeline.next() else {
                break;
            };
            if busy[member] {
                waiting[member].push_back(op);
                continue;
            }
            if let Some(op) = skips.settle(op, &mut purchases, &mut tally, &context) {
                start(
                    &mut running,
                    &context,
                    &member_ids,
                    &purchases,
                    member,
                    op,
                    &mut tally,
                );
                busy[member] = true;
            }
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (member, op, outcome) = done.context("an import task failed")??;
        record(op, outcome, &mut purchases, &mut tally, &context);
        busy[member] = false;
        while let Some(op) = waiting[member].pop_front() {
            if let Some(op) = skips.settle(op, &mut purchases, &mut tally, &context) {
                start(
                    &mut running,
                    &context,
                    &member_ids,
                    &purchases,
                    member,
                    op,
                    &mut tally,
                );
                busy[member] = true;
                break;
            }
        }
    }
    Ok(tally)
}

/// What earlier runs applied.
struct Skips<'a> {
    /// Idempotency-Keys already applied → the transaction's reference (a purchase's id)
    applied: &'a HashMap<String, Option<String>>,
    skip_cancellations: &'a HashSet<String>,
}

impl Skips<'_> {
    /// Counts an operation an earlier run already applied and returns None; otherwise
    /// returns it, to be run.
    fn settle(
        &self,
        op: Op,
        purchases: &mut HashMap<String, Option<String>>,
        tally: &mut Tally,
        context: &Context,
    ) -> Option<Op> {
        let lines = op.lines();
        match &op {
            Op::Purchase(purchase) => match self.applied.get(&purchase.key) {
                Some(reference) => {
                    purchases.insert(purchase.key.clone(), reference.clone());
                    tally.purchases_present += 1;
                }
                None => return Some(op),
            },
            Op::Refund(refund) => {
                if !self.applied.contains_key(&refund.key)
                    && !self.skip_cancellations.contains(&refund.cancellation)
                {
                    return Some(op);
                }
                tally.refunds_present += 1;
            }
        }
        tally.lines_present += lines;
        context.progress.inc(lines);
        None
    }
}

/// Starts an operation of `member`. A refund whose purchase is not there is counted at
/// once (and finishes at once, so the member's order holds).
fn start(
    running: &mut JoinSet<anyhow::Result<(usize, Op, Applied)>>,
    context: &Arc<Context>,
    member_ids: &[String],
    purchases: &HashMap<String, Option<String>>,
    member: usize,
    op: Op,
    tally: &mut Tally,
) {
    let context = context.clone();
    let member_id = member_ids[member].clone();
    match op {
        Op::Purchase(purchase_op) => {
            running.spawn(async move {
                let outcome = purchase(&context, &member_id, &purchase_op).await?;
                Ok((member, Op::Purchase(purchase_op), outcome))
            });
        }
        Op::Refund(refund_op) => match purchases.get(&refund_op.purchase_key) {
            Some(Some(purchase_id)) => {
                let purchase_id = purchase_id.clone();
                running.spawn(async move {
                    let outcome = refund(&context, &purchase_id, &refund_op).await?;
                    Ok((member, Op::Refund(refund_op), outcome))
                });
            }
            known => {
                let reason = if known.is_some() {
                    "refund of a purchase recorded outside this import"
                } else {
                    "refund of a purchase that was refused"
                };
                count(&mut tally.skipped, reason, refund_op.lines);
                context.progress.inc(refund_op.lines);
                running.spawn(async move { Ok((member, Op::Refund(refund_op), Applied::Skipped)) });
            }
        },
    }
}

/// Counts what the writer made of an operation.
fn record(
    op: Op,
    outcome: Applied,
    purchases: &mut HashMap<String, Option<String>>,
    tally: &mut Tally,
    context: &Context,
) {
    let lines = op.lines();
    match (op, outcome) {
        (_, Applied::Skipped) => return,
        (Op::Purchase(op), Applied::Done { receipt, .. }) => {
            tally.purchases_imported += 1;
            tally.lines_imported += lines;
            tally.points_issued += receipt["points_awarded"].as_i64().unwrap_or(0);
            purchases.insert(op.key, receipt["id"].as_str().map(str::to_string));
        }
        (Op::Purchase(op), Applied::Duplicate) => {
            tally.purchases_present += 1;
            tally.lines_present += lines;
            purchases.insert(op.key, None);
        }
        (Op::Purchase(_), Applied::Refused(reason)) => {
            tally.purchases_refused += 1;
            count(
                &mut tally.skipped,
                format!("purchase refused: {reason}"),
                lines,
            );
        }
        (Op::Refund(_), Applied::Done { receipt, .. }) => {
            tally.refunds_imported += 1;
            tally.lines_imported += lines;
            tally.points_reversed += receipt["points_reversed"].as_i64().unwrap_or(0);
        }
        (Op::Refund(_), Applied::Refused(reason)) => {
            tally.refunds_refused += 1;
            count(
                &mut tally.skipped,
                format!("refund refused: {reason}"),
                lines,
            );
        }
        (Op::Refund(_), Applied::Duplicate) => {
            tally.refunds_refused += 1;
            count(&mut tally.skipped, "refund refused: a conflict", lines);
        }
    }
    context.progress.inc(lines);
}

async fn purchase(context: &Context, member_id: &str, op: &PurchaseOp) -> anyhow::Result<Applied> {
    let exponent = context.merchant.currency_exponent;
    let store_id = context
        .stores
        .get(&op.store_code)
        .with_context(|| format!("no store {}", op.store_code))?;
    let total = op
        .items
        .iter()
        .map(|item| i128::from(item.quantity) * i128::from(item.unit_price))
        .sum::<i128>();
    let Ok(total) = i64::try_from(total) else {
        return Ok(Applied::Refused("the total is too large".into()));
    };
    let occurred_at = from_unix_micros(op.at)
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting a timestamp")?;
    let items: Vec<Value> = op
        .items
        .iter()
        .map(|item| {
            let mut line = json!({
                "sku": item.sku,
                "quantity": item.quantity,
                "unit_price": format_money(item.unit_price, exponent),
            });
            if let Some(name) = &item.name {
                line["name"] = json!(name);
            }
            line
        })
        .collect();
    let body = serde_json::to_vec(&json!({
        "member_id": member_id,
        "store_id": store_id,
        "external_id": op.external_id,
        "occurred_at": occurred_at,
        "items": items,
        "payments": [{"method": "card", "amount": format_money(total, exponent)}],
    }))
    .expect("JSON serializes");
    let request: PurchaseRequest = match parse_json(&body) {
        Ok(request) => request,
        Err(error) => return Ok(Applied::Refused(format!("{error:?}"))),
    };
    let state = &context.state;
    let command = match purchase_command(state, &context.merchant, &request, op.at).await {
        Ok(command) => command,
        Err(error) => return refusal(error),
    };
    let claim = IdempotencyClaim {
        key: op.key.clone(),
        digest: request_digest("POST", "/v1/purchases", &body),
    };
    let applied = submit(context, claim, command, op.at).await?;
    if applied.applied_now() {
        // As the API does after a purchase (not after a replay): the store's tier policy, at
        // the data's time.
        tiers::after_change(
            state,
            &context.merchant,
            member_id,
            store_id,
            TierSource::Purchase,
            op.at,
        )
        .await;
    }
    Ok(applied)
}

async fn refund(context: &Context, purchase_id: &str, op: &RefundOp) -> anyhow::Result<Applied> {
    let items: Vec<Value> = op
        .items
        .iter()
        .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
        .collect();
    let body = serde_json::to_vec(&json!({ "items": items })).expect("JSON serializes");
    let request: RefundRequest = match parse_json(&body) {
        Ok(request) => request,
        Err(error) => return Ok(Applied::Refused(format!("{error:?}"))),
    };
    let (command, store_id) = match refund_command(
        &context.state,
        &context.merchant,
        purchase_id.to_string(),
        &request,
    )
    .await
    {
        Ok(routed) => routed,
        Err(error) => return refusal(error),
    };
    let member_id = command.route_key().to_string();
    let claim = IdempotencyClaim {
        key: op.key.clone(),
        digest: request_digest(
            "POST",
            &format!("/v1/purchases/{purchase_id}/refunds"),
            &body,
        ),
    };
    let applied = submit(context, claim, command, op.at).await?;
    if applied.applied_now() {
        tiers::after_change(
            &context.state,
            &context.merchant,
            &member_id,
            &store_id,
            TierSource::Refund,
            op.at,
        )
        .await;
    }
    Ok(applied)
}

/// Through the writer under the operation's key, at the data's time; a transient conflict
/// is tried again.
async fn submit(
    context: &Context,
    claim: IdempotencyClaim,
    command: Command,
    now: i64,
) -> anyhow::Result<Applied> {
    let mut attempt = 0;
    loop {
        let submitted = context
            .state
            .writer
            .submit(Submission {
                merchant: context.merchant.clone(),
                claim: Some(claim.clone()),
                command: command.clone(),
                now,
            })
            .await;
        match submitted {
            Ok(outcome) => {
                let body: Value = serde_json::from_str(&outcome.body)
                    .context("the writer answered something that is not JSON")?;
                return Ok(Applied::Done {
                    receipt: body,
                    replayed: outcome.replayed,
                });
            }
            Err(CoreError::Retry) if attempt < RETRIES_MAX => attempt += 1,
            Err(CoreError::Conflict(message)) if message.contains("external_id") => {
                return Ok(Applied::Duplicate)
            }
            Err(error) => return refusal(error),
        }
    }
}

/// A refusal to count, or an error that stops the import (the database is gone).
fn refusal(error: CoreError) -> anyhow::Result<Applied> {
    match error {
        CoreError::Unavailable(_)
        | CoreError::Database(_)
        | CoreError::Internal(_)
        | CoreError::Config(_)
        | CoreError::Retry => Err(anyhow::anyhow!("the import stopped: {error}")),
        error => Ok(Applied::Refused(describe(&error))),
    }
}

/// An error as one line, with numbers replaced by `N` so that refusals group by kind.
fn describe(error: &CoreError) -> String {
    let text = match error {
        CoreError::Validation(fields) => fields
            .iter()
            .map(|field| format!("{}: {}", field.field, field.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    let mut generalized = String::with_capacity(text.len());
    let mut in_number = false;
    for character in text.chars() {
        if character.is_ascii_digit() {
            if !in_number {
                generalized.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            generalized.push(character);
        }
    }
    generalized
}
