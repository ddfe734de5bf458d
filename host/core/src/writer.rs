//! The writer: every value-moving command goes through it. Commands are routed to a lane by
//! member, and a lane runs whatever is queued as one database transaction, so many commands
//! share one durable commit (group commit) while each still applies or fails alone: the batch
//! runs first without savepoints, and only if one of its commands fails is it rolled back and
//! run again with a savepoint per command. Replies go out only after the commit, so an
//! acknowledged command survives a crash. The Idempotency-Key row is written with its command.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::db::{Backend, Database, Script};
use crate::error::CoreError;
use crate::ledger::RememberedBalances;
use crate::merchants::Merchant;
use crate::operations::{map_script_error, Command, Outcome};
use crate::session::{self, Session};

/// Most commands one transaction carries.
pub const BATCH_COMMANDS_MAX: usize = 128;
/// Commands waiting per lane before submitters wait too (backpressure).
pub const LANE_QUEUE_DEPTH_MAX: usize = 4_096;
/// How often a command that hit a deadlock or serialization failure is tried again.
pub const TRANSIENT_RETRIES_MAX: u32 = 5;
/// Fewest lanes PostgreSQL gets by default: one lane's commit (its fsync) overlaps the
/// other's statements.
pub const POSTGRES_LANES_DEFAULT_MIN: usize = 2;
/// Most lanes PostgreSQL gets by default, on however many cores.
pub const POSTGRES_LANES_DEFAULT_MAX: usize = 16;
/// Most lanes on PostgreSQL, whatever is asked: each is a thread and a connection of its own.
pub const POSTGRES_LANES_MAX: usize = 64;

#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    /// SHA-256 of the request (method, path, body): the same key with another request is a 409.
    pub digest: String,
}

pub struct Submission {
    pub merchant: Merchant,
    pub claim: Option<IdempotencyClaim>,
    pub command: Command,
    pub now: i64,
}

struct Envelope {
    submission: Submission,
    reply: oneshot::Sender<Result<Outcome, CoreError>>,
    attempts: u32,
}

#[derive(Clone)]
pub struct Writer {
    lanes: std::sync::Arc<Vec<mpsc::Sender<Envelope>>>,
    database: Database,
    /// Stores already seen to exist. Stores are never deleted, so a hit needs no query.
    known_stores: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

/// Most remembered stores before the memory is cleared (it refills on use).
pub const KNOWN_STORES_MAX: usize = 100_000;

impl Writer {
    /// Starts the lanes on the current Tokio runtime. `lanes` 0 picks the backend's default.
    pub fn start(database: Database, lanes: usize) -> Writer {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let lanes = lane_count(database.backend, lanes, cores);
        let senders = (0..lanes)
            .map(|_| {
                let (sender, receiver) = mpsc::channel(LANE_QUEUE_DEPTH_MAX);
                // A lane is the critical path of its members' writes: on a thread of its own
                // it is woken the moment its connection answers, instead of queueing behind
                // request handlers and plugin calls on the shared workers (measured: the
                // import's writer sat idle half the time).
                spawn_lane_thread(database.clone(), receiver);
                sender
            })
            .collect();
        Writer {
            lanes: std::sync::Arc::new(senders),
            database,
            known_stores: Default::default(),
        }
    }

    /// How many lanes run (one transaction each at a time).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    pub async fn submit(&self, submission: Submission) -> Result<Outcome, CoreError> {
        let store = submission
            .command
            .store_id()
            .map(|store_id| (submission.merchant.id.clone(), store_id.to_string()));
        let known = store.as_ref().is_none_or(|store| {
            self.known_stores
                .lock()
                .expect("the store memory is never poisoned")
                .contains(store)
        });
        if !known {
            submission
                .command
                .check_references(&self.database.pool, &submission.merchant.id)
                .await?;
            let mut known_stores = self
                .known_stores
                .lock()
                .expect("the store memory is never poisoned");
            if known_stores.len() >= KNOWN_STORES_MAX {
                known_stores.clear();
            }
            known_stores.extend(store);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        submission.merchant.id.hash(&mut hasher);
        submission.command.route_key().hash(&mut hasher);
        let lane = usize::try_from(hasher.finish() % self.lanes.len() as u64)
            .expect("lane index fits usize");
        let (reply, answer) = oneshot::channel();
        self.lanes[lane]
            .send(Envelope {
                submission,
                reply,
                attempts: 0,
            })
            .await
            .map_err(|_| CoreError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| CoreError::Unavailable("the writer dropped the command".into()))?
    }
}

/// Lanes for `asked` lanes (0: the default) on a machine of `cores`. SQLite has one writer.
/// On PostgreSQL the default is one lane per core of this machine, within
/// [`POSTGRES_LANES_DEFAULT_MIN`, `POSTGRES_LANES_DEFAULT_MAX`]. A lane keeps one database
/// backend busy (its statements run one after another), so the database's cores bound what
/// lanes can use; the host cannot see the database's machine and takes its own as the measure
/// (the same machine, or one like it). More lanes than cores split the same purchases into
/// more, smaller transactions that compete for the cores: on this project's 2-core machine
/// (PostgreSQL beside the host, ledger benchmark, spread scenario) 2 lanes gave 1,409–1,567
/// purchases/s, 4 gave 1,151–1,491 and 16 gave 943–1,096, and PostgreSQL's CPU per purchase
/// fell from 1.15–1.31 ms to 0.73–0.81 ms; 1 lane gave 1,214–1,439 (one backend, waiting
/// for its own commits). A database far away (each statement a network round
/// trip) or bigger than the host wants `--writer-lanes` raised.
fn lane_count(backend: Backend, asked: usize, cores: usize) -> usize {
    match (backend, asked) {
        (Backend::Sqlite, _) => 1,
        (Backend::Postgres, 0) => {
            cores.clamp(POSTGRES_LANES_DEFAULT_MIN, POSTGRES_LANES_DEFAULT_MAX)
        }
        (Backend::Postgres, asked) => asked.min(POSTGRES_LANES_MAX),
    }
}

/// Runs a lane on a thread of its own with a single-threaded runtime; the thread ends when
/// every sender is gone. The lane's connection is opened there too (SQLite's file, or a
/// PostgreSQL socket watched by this runtime), so nothing of a lane's round trip waits for
/// the shared workers: on PostgreSQL, alternating 10 s runs with 2,000 members gave one
/// member 561–677 against 406–617 purchases/s and spread 897–1,084 against 971–990, against
/// lanes as tasks on the shared runtime with pooled connections.
fn spawn_lane_thread(database: Database, receiver: mpsc::Receiver<Envelope>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime needs only a thread and an epoll instance");
    std::thread::Builder::new()
        .name("loyalty-writer".into())
        .spawn(move || runtime.block_on(run_lane(database, receiver)))
        .expect("the writer thread starts");
}

async fn run_lane(database: Database, mut receiver: mpsc::Receiver<Envelope>) {
    let mut carried: VecDeque<Envelope> = VecDeque::new();
    // The lane keeps one connection of its own, so SQLite's page cache and the prepared
    // statements stay warm; it is replaced only after a failure.
    let mut connection: Option<LaneConnection> = None;
    loop {
        let mut batch: Vec<Envelope> = carried.drain(..).collect();
        if batch.is_empty() {
            match receiver.recv().await {
                Some(envelope) => batch.push(envelope),
                None => return,
            }
        }
        while batch.len() < BATCH_COMMANDS_MAX {
            match receiver.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
        carried.extend(run_batch(&database, &mut connection, batch).await);
    }
}

/// A lane's own connection, opened on the lane's thread: SQLite's file through rusqlite, or a
/// sqlx connection with the pool's options (PostgreSQL).
enum LaneConnection {
    Sqlx(AnyConnection),
    Direct(rusqlite::Connection),
}

impl LaneConnection {
    fn session(&mut self) -> Session<'_> {
        match self {
            LaneConnection::Sqlx(connection) => Session::Pooled(connection),
            LaneConnection::Direct(connection) => Session::Direct(connection),
        }
    }
}

async fn connect_lane(database: &Database) -> Result<LaneConnection, CoreError> {
    if let Some(path) = &database.sqlite_path {
        // On the lane's own thread: opening the file blocks only this lane.
        return Ok(LaneConnection::Direct(session::open_direct(
            path,
            &crate::db::sqlite_pragmas(crate::db::SQLITE_WRITER_CACHE_KIB),
        )?));
    }
    // Opened on the lane's thread, so its socket is watched by the lane's own runtime.
    let options = database.pool.connect_options();
    let mut connection = sqlx::ConnectOptions::connect(options.as_ref()).await?;
    if database.backend == Backend::Postgres {
        // The lane runs the same few keyed statements thousands of times: cached
        // generic plans save the planning (measured: a quarter of PostgreSQL's CPU
        // under the ledger benchmark), and with sequential scans ruled out a plan
        // cached while the tables were nearly empty still uses the keys.
        let set_up = sqlx::Executor::execute(
            &mut connection,
            "SET plan_cache_mode = auto; SET enable_seqscan = off",
        )
        .await;
        if let Err(error) = set_up {
            tracing::warn!(%error, "writer keeps per-execution plans");
        }
    }
    Ok(LaneConnection::Sqlx(connection))
}

/// How a batch's commands are kept apart inside its transaction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Guard {
    /// No savepoints: the first command that fails undoes the whole attempt, and the batch
    /// runs again with [`Guard::Savepoints`]. Commands that succeed cost no savepoint, no
    /// release and (on SQLite) no sub-journal copy of every page they touch.
    Optimistic,
    /// A savepoint per command: a command that fails rolls back alone.
    Savepoints,
}

/// What one attempt at a batch came to.
enum Attempt {
    /// An optimistic attempt met a failing command and was rolled back: nothing was written.
    CommandFailed,
    /// The transaction could not begin, or broke: every command is told to retry.
    Unavailable,
    /// The transaction ended; one verdict per command, in the batch's order.
    Ended {
        committed: bool,
        verdicts: Vec<Verdict>,
    },
}

enum Verdict {
    Answer(Result<Outcome, CoreError>),
    /// A transient failure (deadlock, serialization): run again in the next batch.
    Again,
    /// The transaction broke at or before this command.
    Broken,
}

/// Runs a batch in one transaction. Returns the commands to run again (transient failures).
async fn run_batch(
    database: &Database,
    lane_connection: &mut Option<LaneConnection>,
    batch: Vec<Envelope>,
) -> Vec<Envelope> {
    if lane_connection.is_none() {
        match connect_lane(database).await {
            Ok(connection) => {
                *lane_connection = Some(connection);
            }
            Err(error) => {
                tracing::error!(%error, "writer cannot get a connection");
                reply_unavailable(batch, "the database is unavailable");
                return Vec::new();
            }
        }
    }
    let connection = lane_connection.as_mut().expect("connected above");
    let mut attempt = run_attempt(database, connection, &batch, Guard::Optimistic).await;
    if matches!(attempt, Attempt::CommandFailed) {
        attempt = run_attempt(database, connection, &batch, Guard::Savepoints).await;
    }
    let (committed, verdicts) = match attempt {
        Attempt::Ended {
            committed,
            verdicts,
        } => (committed, verdicts),
        Attempt::CommandFailed => unreachable!("a guarded attempt does not stop at a command"),
        Attempt::Unavailable => {
            *lane_connection = None;
            reply_unavailable(batch, "the database is unavailable");
            return Vec::new();
        }
    };
    assert_eq!(verdicts.len(), batch.len(), "one verdict per command");
    if !committed {
        // A connection that failed mid-batch is not trusted again.
        *lane_connection = None;
    }
    let mut again = Vec::new();
    for (mut envelope, verdict) in batch.into_iter().zip(verdicts) {
        let result = match verdict {
            Verdict::Again if committed => {
                envelope.attempts += 1;
                again.push(envelope);
                continue;
            }
            Verdict::Again | Verdict::Broken => {
                Err(CoreError::Unavailable("the batch failed".into()))
            }
            Verdict::Answer(Ok(_)) if !committed => Err(CoreError::Unavailable(
                "the database did not commit; retry with the same Idempotency-Key".into(),
            )),
            Verdict::Answer(result) => result,
        };
        let _ = envelope.reply.send(result);
    }
    again
}

fn reply_unavailable(batch: Vec<Envelope>, detail: &str) {
    for envelope in batch {
        let _ = envelope
            .reply
            .send(Err(CoreError::Unavailable(detail.to_string())));
    }
}

/// One transaction over the batch's commands, kept apart as `guard` says.
async fn run_attempt(
    database: &Database,
    lane_connection: &mut LaneConnection,
    batch: &[Envelope],
    guard: Guard,
) -> Attempt {
    let mut lane_session = lane_connection.session();
    let connection = &mut lane_session;
    let begun = session::query(database.begin_statement())
        .execute(&mut *connection)
        .await;
    if let Err(error) = begun {
        tracing::error!(%error, "writer cannot begin a transaction");
        return Attempt::Unavailable;
    }
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut broken = false;
    // Members' balances read by the attempt's earlier commands (see `RememberedBalances`).
    let mut remembered = RememberedBalances::default();
    for envelope in batch {
        if broken {
            verdicts.push(Verdict::Broken);
            continue;
        }
        // A retry of an applied key is answered here, before its command runs: the lookup
        // writes nothing, so even a 409 leaves the batch as it is.
        match answered_before(connection, database.backend, &envelope.submission).await {
            Ok(Some(answer)) => {
                verdicts.push(Verdict::Answer(answer));
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "writer lost its transaction");
                broken = true;
                verdicts.push(Verdict::Broken);
                continue;
            }
        }
        let ran = run_command(
            connection,
            database.backend,
            &envelope.submission,
            guard,
            &mut remembered,
        )
        .await;
        match ran {
            Ok(Err(_)) if guard == Guard::Optimistic => {
                if let Err(error) = session::query("ROLLBACK").execute(&mut *connection).await {
                    tracing::error!(%error, "writer cannot roll back");
                    return Attempt::Unavailable;
                }
                return Attempt::CommandFailed;
            }
            Ok(Err(error)) if error.is_transient() && envelope.attempts < TRANSIENT_RETRIES_MAX => {
                verdicts.push(Verdict::Again);
            }
            Ok(result) => verdicts.push(Verdict::Answer(result)),
            Err(error) => {
                tracing::error!(%error, "writer lost its transaction");
                broken = true;
                verdicts.push(Verdict::Broken);
            }
        }
    }
    let committed = if broken {
        let _ = session::query("ROLLBACK").execute(&mut *connection).await;
        false
    } else {
        match session::query("COMMIT").execute(&mut *connection).await {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(%error, "writer commit failed");
                let _ = session::query("ROLLBACK").execute(&mut *connection).await;
                false
            }
        }
    };
    Attempt::Ended {
        committed,
        verdicts,
    }
}

/// The stored answer of the submission's Idempotency-Key, if it was applied already (by an
/// earlier batch, or by its twin earlier in this one), where the lane checks keys itself
/// ([`Backend::checks_keys_in_lane`]); `None` where the request handler checked it.
async fn answered_before(
    connection: &mut Session<'_>,
    backend: Backend,
    submission: &Submission,
) -> Result<Option<Result<Outcome, CoreError>>, CoreError> {
    let Some(claim) = &submission.claim else {
        return Ok(None);
    };
    if !backend.checks_keys_in_lane() {
        return Ok(None);
    }
    let stored = lookup(connection, &submission.merchant.id, &claim.key).await?;
    Ok(stored.map(|stored| stored.answer(&claim.digest)))
}

/// Runs one command: its direct statements, then one flush of its queued inserts together
/// with its Idempotency-Key row; inside a savepoint when `guard` asks for one. The outer error
/// means the connection or transaction is unusable; the inner result is the command's own
/// (unguarded, a failed command may have written part of itself: the caller rolls back).
/// `remembered` comes from the batch's earlier commands and is handed on only if this one
/// wrote all it meant to: whatever a failed command changed is rolled back, and its figures
/// with it.
async fn run_command(
    connection: &mut Session<'_>,
    backend: Backend,
    submission: &Submission,
    guard: Guard,
    remembered: &mut RememberedBalances,
) -> Result<Result<Outcome, CoreError>, CoreError> {
    let merchant_id = &submission.merchant.id;
    let mut script = Script::carrying(backend, std::mem::take(remembered));
    let guarded = guard == Guard::Savepoints;
    if guarded {
        script.open_savepoint(connection, "command").await?;
    }
    let mut result = submission
        .command
        .execute(
            connection,
            &mut script,
            &submission.merchant,
            submission.claim.as_ref().map(|claim| claim.key.as_str()),
            submission.now,
        )
        .await;
    if let Ok(outcome) = &result {
        if let Some(claim) = &submission.claim {
            // No ON CONFLICT: if the key was applied first (a concurrent twin, or another
            // host), the unique violation undoes this command and the stored answer is sent.
            script.push(
                "INSERT INTO idempotency_keys (merchant_id, key, request_digest, status, response, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    merchant_id.into(),
                    (&claim.key).into(),
                    (&claim.digest).into(),
                    i64::from(outcome.status).into(),
                    (&outcome.body).into(),
                    submission.now.into(),
                ],
            );
        }
        // On SQLite the savepoint's release rides at the end of the script: it runs only if
        // every statement before it succeeded.
        let release_queued = guarded && backend == Backend::Sqlite;
        if release_queued {
            script.push_raw("RELEASE SAVEPOINT command");
        }
        match script.flush(connection).await {
            Ok(()) => *remembered = script.take_remembered(),
            Err(error) => result = Err(error),
        }
        if release_queued && result.is_ok() {
            return Ok(result);
        }
    }
    if !guarded {
        // Unguarded, a failure is the caller's to undo (it rolls back the whole attempt).
        return Ok(result);
    }
    match result {
        Ok(outcome) => {
            session::query("RELEASE SAVEPOINT command")
                .execute(&mut *connection)
                .await?;
            Ok(Ok(outcome))
        }
        Err(error) => {
            // A savepoint still only queued means nothing of the command reached the database.
            if !script.savepoint_queued() {
                session::query("ROLLBACK TO SAVEPOINT command")
                    .execute(&mut *connection)
                    .await?;
                session::query("RELEASE SAVEPOINT command")
                    .execute(&mut *connection)
                    .await?;
            }
            // A duplicate may fail on the state its twin left (a refund of the rest finds
            // nothing left) or on the key's row itself: either way it answers as the twin did.
            if let Some(claim) = &submission.claim {
                if !error.is_transient() {
                    if let Some(stored) = lookup(&mut *connection, merchant_id, &claim.key).await? {
                        return Ok(stored.answer(&claim.digest));
                    }
                    if is_idempotency_conflict(&error) {
                        return Ok(Err(CoreError::Retry));
                    }
                }
            }
            Ok(Err(map_script_error(error)))
        }
    }
}

fn is_idempotency_conflict(error: &CoreError) -> bool {
    error
        .unique_violation()
        .is_some_and(|name| name.contains("idempotency_keys"))
}

/// A stored response of an applied Idempotency-Key.
pub struct StoredResponse {
    pub digest: String,
    pub outcome: Outcome,
}

impl StoredResponse {
    /// The first response for the same request; a 409 for a different one.
    pub fn answer(self, digest: &str) -> Result<Outcome, CoreError> {
        if self.digest == digest {
            Ok(self.outcome)
        } else {
            Err(CoreError::IdempotencyMismatch)
        }
    }
}

pub async fn lookup(
    connection: &mut Session<'_>,
    merchant_id: &str,
    key: &str,
) -> Result<Option<StoredResponse>, CoreError> {
    let row = session::query(
        "SELECT request_digest, status, response FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
    )
    .bind(merchant_id)
    .bind(key)
    .fetch_optional(connection)
    .await?;
    match row {
        Some(row) => Ok(Some(StoredResponse {
            digest: row.try_get("request_digest")?,
            outcome: Outcome {
                status: u16::try_from(row.try_get::<i64, _>("status")?)
                    .map_err(|_| CoreError::Internal("stored status out of range".into()))?,
                body: row.try_get("response")?,
                replayed: true,
            },
        })),
        None => Ok(None),
    }
}

/// Deletes idempotency records older than `before` (they are kept at least 24 hours).
pub async fn prune_idempotency_keys(pool: &sqlx::AnyPool, before: i64) -> Result<u64, CoreError> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_follow_the_cores_on_postgres_only() {
        // SQLite has one writer whatever is asked.
        assert_eq!(lane_count(Backend::Sqlite, 0, 8), 1);
        assert_eq!(lane_count(Backend::Sqlite, 12, 8), 1);
        // PostgreSQL's default: one lane per core, at least two, at most sixteen.
        assert_eq!(lane_count(Backend::Postgres, 0, 1), 2);
        assert_eq!(lane_count(Backend::Postgres, 0, 2), 2);
        assert_eq!(lane_count(Backend::Postgres, 0, 6), 6);
        assert_eq!(lane_count(Backend::Postgres, 0, 96), 16);
        // Asked for: taken as asked, up to the hard bound.
        assert_eq!(lane_count(Backend::Postgres, 3, 2), 3);
        assert_eq!(lane_count(Backend::Postgres, 40, 2), 40);
        assert_eq!(lane_count(Backend::Postgres, 500, 2), POSTGRES_LANES_MAX);
    }
}
