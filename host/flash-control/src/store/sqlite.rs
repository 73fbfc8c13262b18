//! The embedded [`Store`]: one SQLite file in WAL mode.
//!
//! A single connection behind a mutex serialises writers, which makes every trait method
//! one atomic transaction without retry loops (SQLite allows one writer at a time anyway).
//! WAL mode with `synchronous=NORMAL` survives a killed process: a job is durable once
//! `enqueue_job` returned, which is before `/run` answers.
//!
//! **The schema is versioned** with SQLite's `PRAGMA user_version`: [`SCHEMA_VERSION`] is
//! the layout this flash writes, and `MIGRATIONS` takes a database from each earlier
//! version to the next, in one transaction with the new version's stamp. Version 0 is a
//! fresh file, or one written before versions existed: the first migration creates what is
//! missing (the schema that flash had is the current one) after checking that the tables
//! it finds have every column this flash uses. A database stamped with a newer version
//! than this flash knows is refused, never opened: an older flash could corrupt what it
//! does not understand.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use serde_json::value::RawValue;

use super::*;
use crate::util::{new_id, now_ms};

/// The schema version this flash reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 2;

/// `MIGRATIONS[n]` takes a database from version `n` to `n + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [SCHEMA_V1, SCHEMA_V2];

/// Version 1: the schema as it was when versions were introduced. Every statement is
/// `IF NOT EXISTS`, so that it also completes an unversioned database of that time.
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS apps (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS environments (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name TEXT NOT NULL, active_build_id TEXT, created_at INTEGER NOT NULL,
    UNIQUE (app_id, name));
CREATE TABLE IF NOT EXISTS environment_leases (
    environment_id TEXT PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    token TEXT NOT NULL, holder TEXT NOT NULL, acquired_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    object_key TEXT PRIMARY KEY, app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    declared_size INTEGER NOT NULL, sha256 TEXT, size INTEGER, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    object_key TEXT NOT NULL, manifest TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS templates (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, endpoint_id TEXT NOT NULL, request TEXT NOT NULL, webhook TEXT,
    status TEXT NOT NULL, worker_id TEXT, output TEXT, error TEXT,
    retries INTEGER NOT NULL DEFAULT 0, timeout_ms INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, started_at INTEGER, completed_at INTEGER,
    lease_expires_at INTEGER, stream_cursor INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (endpoint_id, status, seq);
CREATE INDEX IF NOT EXISTS jobs_worker ON jobs (worker_id, status);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS stream_chunks (
    job_id TEXT NOT NULL, n INTEGER NOT NULL, chunk TEXT NOT NULL, PRIMARY KEY (job_id, n));
"#;

/// Version 2: a job's request and output move out of its row into `job_bodies`.
///
/// SQLite rewrites a whole row on every `UPDATE`, and reaches a column stored after a large
/// one by walking that one's overflow pages. With the bodies inline, every status change of
/// a 10 MiB job (claim, finish, lease) re-read and re-wrote its 10 MiB request, and every
/// status read walked it: two thirds of the gateway's CPU for large jobs. Now a job's row is
/// small, a body is written once, and read only by what returns it.
const SCHEMA_V2: &str = r#"
CREATE TABLE job_bodies (
    job_id TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('request', 'output')),
    body TEXT NOT NULL, PRIMARY KEY (job_id, kind));
INSERT INTO job_bodies (job_id, kind, body) SELECT id, 'request', request FROM jobs;
INSERT INTO job_bodies (job_id, kind, body)
    SELECT id, 'output', output FROM jobs WHERE output IS NOT NULL;
ALTER TABLE jobs DROP COLUMN request;
ALTER TABLE jobs DROP COLUMN output;
"#;

/// A job's columns, in [`job_row`]'s order; its request and output come from `job_bodies`.
const JOB_COLUMNS: &str = "id, endpoint_id,
    (SELECT body FROM job_bodies WHERE job_id = jobs.id AND kind = 'request'),
    webhook, status, worker_id,
    (SELECT body FROM job_bodies WHERE job_id = jobs.id AND kind = 'output'),
    error, retries, timeout_ms, created_at, started_at, completed_at, lease_expires_at";

/// [`JOB_COLUMNS`] without either body: what a caller that has them at hand reads.
const JOB_COLUMNS_WITHOUT_BODIES: &str = "id, endpoint_id, NULL, webhook, status, worker_id, NULL,
    error, retries, timeout_ms, created_at, started_at, completed_at, lease_expires_at";

/// [`JOB_COLUMNS`] with the request left out (`NULL`, read as `null`).
const JOB_COLUMNS_WITHOUT_REQUEST: &str = "id, endpoint_id, NULL, webhook, status, worker_id,
    (SELECT body FROM job_bodies WHERE job_id = jobs.id AND kind = 'output'),
    error, retries, timeout_ms, created_at, started_at, completed_at, lease_expires_at";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Endpoints read or written so far, by id: every gateway request looks its endpoint
    /// up, and parsing its JSON each time cost more than the job's own SQL. Changed only
    /// while `conn` is held, together with the table, so it never disagrees with it.
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// Copies the WAL into the database file, off the request path (see [`Checkpointer`]).
    _checkpointer: Checkpointer,
}

/// The WAL size past which a commit checkpoints it itself, in pages: only a safety net, in
/// case the [`Checkpointer`] cannot keep up (SQLite's default is 1,000 pages).
const WAL_AUTOCHECKPOINT_PAGES: i32 = 20_000;

/// The size, in bytes, a WAL file is truncated to when it starts over (SQLite keeps it at
/// its largest otherwise: 10 MiB payloads grow it by 20 MiB a job).
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// How often the [`Checkpointer`] copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Checkpoints the WAL from a connection and thread of its own.
///
/// SQLite checkpoints in the commit that fills the WAL past `wal_autocheckpoint` pages:
/// that commit copies the WAL into the database file and syncs it, while it holds the
/// store's one connection, so every request waiting for the store waits for the copy. At
/// a few thousand jobs/s that was several checkpoints a second, each a stall of every
/// request in flight. A `PASSIVE` checkpoint from another connection runs beside readers
/// and the writer and never waits for them; the next commit after a complete one starts
/// the WAL over. Durability is the WAL's, as before.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening {} to checkpoint it", path.display()))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flash-store-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "checkpointing the store's WAL failed");
                    }
                }
            })
            .context("starting the store's checkpoint thread")?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(anyhow::Error::new(e))
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn parse_json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn app_row(r: &Row) -> rusqlite::Result<App> {
    Ok(App {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
    })
}

fn env_row(r: &Row) -> rusqlite::Result<Environment> {
    Ok(Environment {
        id: r.get(0)?,
        app_id: r.get(1)?,
        name: r.get(2)?,
        active_build_id: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const LEASE_COLUMNS: &str = "environment_id, token, holder, acquired_at, expires_at";

fn lease_row(r: &Row) -> rusqlite::Result<EnvironmentLease> {
    Ok(EnvironmentLease {
        environment_id: r.get(0)?,
        token: r.get(1)?,
        holder: r.get(2)?,
        acquired_at: r.get(3)?,
        expires_at: r.get(4)?,
    })
}

fn lease_of(conn: &Connection, env_id: &str) -> StoreResult<Option<EnvironmentLease>> {
    conn.query_row(
        &format!("SELECT {LEASE_COLUMNS} FROM environment_leases WHERE environment_id = ?1"),
        [env_id],
        lease_row,
    )
    .optional()
    .map_err(backend)
}

/// One job by id, with a cached statement (every status poll and result asks); `columns`
/// is one of the `JOB_COLUMNS` lists.
fn job_by_id(conn: &Connection, columns: &str, id: &str) -> StoreResult<Option<Job>> {
    conn.prepare_cached(&format!("SELECT {columns} FROM jobs WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], job_row).optional())
        .map_err(backend)
}

fn build_row(r: &Row) -> rusqlite::Result<Build> {
    let manifest: String = r.get(3)?;
    Ok(Build {
        id: r.get(0)?,
        app_id: r.get(1)?,
        object_key: r.get(2)?,
        manifest: serde_json::from_str(&manifest).unwrap_or(Value::Null),
        created_at: r.get(4)?,
    })
}

fn artifact_row(r: &Row) -> rusqlite::Result<Artifact> {
    Ok(Artifact {
        object_key: r.get(0)?,
        app_id: r.get(1)?,
        declared_size: r.get(2)?,
        sha256: r.get(3)?,
        size: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn job_row(r: &Row) -> rusqlite::Result<Job> {
    let request: Option<String> = r.get(2)?;
    let status: String = r.get(4)?;
    Ok(Job {
        id: r.get(0)?,
        endpoint_id: r.get(1)?,
        // Checked (not parsed into a value) once more: the text is what `enqueue_job` wrote.
        request: request
            .and_then(|r| RawValue::from_string(r).ok())
            .unwrap_or_else(|| RawValue::NULL.to_owned()),
        webhook: r.get(3)?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
        worker_id: r.get(5)?,
        output: parse_json(r.get(6)?),
        error: r.get(7)?,
        retries: r.get(8)?,
        timeout_ms: r.get(9)?,
        created_at: r.get(10)?,
        started_at: r.get(11)?,
        completed_at: r.get(12)?,
        lease_expires_at: r.get(13)?,
    })
}

/// Why a database's schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "{path} was written by a newer flash (schema version {found}; this flash knows up to \
         {SCHEMA_VERSION}): upgrade flash, or start this one with another --data-dir"
    )]
    Newer { path: String, found: i32 },
    #[error(
        "{path} has no version and is not a flash server database this flash can read (table \
         `{table}` lacks column `{column}`): start with another --data-dir, or move the file \
         away to start afresh"
    )]
    Unrecognised {
        path: String,
        table: String,
        column: String,
    },
}

/// The column names of every table of `conn`'s main database.
fn columns(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tables
        .into_iter()
        .map(|table| {
            let names = conn
                .prepare("SELECT name FROM pragma_table_info(?1)")?
                .query_map([&table], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok((table, names))
        })
        .collect()
}

/// An unversioned database must hold, in each table it has, every column version 1 has
/// (tables it lacks are created by the migration).
fn check_unversioned(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    let reference = Connection::open_in_memory()?;
    reference.execute_batch(SCHEMA_V1)?;
    let found = columns(conn)?;
    for (table, wanted) in columns(&reference)? {
        let Some((_, have)) = found.iter().find(|(t, _)| *t == table) else {
            continue;
        };
        if let Some(column) = wanted.iter().find(|c| !have.contains(c)) {
            return Err(SchemaError::Unrecognised {
                path: path.display().to_string(),
                table,
                column: column.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// The database's schema version, unless it is newer than this flash knows.
fn schema_version(conn: &Connection, path: &Path) -> anyhow::Result<i32> {
    let found: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .with_context(|| format!("reading the schema version of {}", path.display()))?;
    if found > SCHEMA_VERSION {
        return Err(SchemaError::Newer {
            path: path.display().to_string(),
            found,
        }
        .into());
    }
    Ok(found)
}

/// Brings the database from version `found` to [`SCHEMA_VERSION`]. See the module docs.
fn migrate(conn: &mut Connection, path: &Path, found: i32) -> anyhow::Result<()> {
    if found == 0 {
        check_unversioned(conn, path)?;
    }
    for version in found..SCHEMA_VERSION {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])
            .with_context(|| {
                format!(
                    "migrating {} to schema version {}",
                    path.display(),
                    version + 1
                )
            })?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema to
    /// [`SCHEMA_VERSION`]; a database of a newer flash is refused ([`SchemaError`]).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening the SQLite store {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // A newer flash's database is refused before anything is written to it.
        let version = schema_version(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .context("switching the store to WAL mode")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn, path, version)?;
        // Room for every statement the job paths cache (the default holds 16).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        // A WAL that large jobs grew is cut back to this size when it starts over.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
        let checkpointer = Checkpointer::start(path)?;
        Ok(Self {
            conn: Mutex::new(conn),
            endpoints: Mutex::default(),
            _checkpointer: checkpointer,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn endpoint_cache(&self) -> MutexGuard<'_, HashMap<String, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn requeue_where(
        conn: &mut Connection,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
        now: i64,
        max_retries: i32,
    ) -> StoreResult<Requeued> {
        let tx = conn.transaction().map_err(backend)?;
        let ids: Vec<(String, i32, Option<String>)> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT id, retries, worker_id FROM jobs WHERE status = 'IN_PROGRESS' AND {filter}"
                ))
                .map_err(backend)?;
            stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?
        };
        let mut out = Requeued::default();
        for (id, retries, worker) in ids {
            if let Some(worker) = worker {
                out.lost.push((worker, id.clone()));
            }
            if retries >= max_retries {
                tx.execute(
                    "UPDATE jobs SET status = 'FAILED', completed_at = ?2, lease_expires_at = NULL,
                     error = ?3 WHERE id = ?1",
                    params![
                        id,
                        now,
                        format!(
                            "job lost its worker {} times (retry limit {max_retries}); see the worker logs",
                            retries + 1
                        )
                    ],
                )
                .map_err(backend)?;
                let job = tx
                    .query_row(
                        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                        [&id],
                        job_row,
                    )
                    .map_err(backend)?;
                out.failed.push(job);
            } else {
                tx.execute(
                    "UPDATE jobs SET status = 'IN_QUEUE', worker_id = NULL, started_at = NULL,
                     lease_expires_at = NULL, retries = retries + 1 WHERE id = ?1",
                    [&id],
                )
                .map_err(backend)?;
                tx.execute(
                    "DELETE FROM job_bodies WHERE job_id = ?1 AND kind = 'output'",
                    [&id],
                )
                .map_err(backend)?;
                out.requeued.push(id);
            }
        }
        tx.commit().map_err(backend)?;
        Ok(out)
    }
}

impl DeployStore for SqliteStore {
    fn create_app(&self, name: &str) -> StoreResult<App> {
        let app = App {
            id: new_id("app-"),
            name: name.to_string(),
            created_at: now_ms(),
        };
        let conn = self.conn();
        match conn.execute(
            "INSERT INTO apps (id, name, created_at) VALUES (?1, ?2, ?3)",
            params![app.id, app.name, app.created_at],
        ) {
            Ok(_) => Ok(app),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("app `{name}`")))
            }
            Err(e) => Err(backend(e)),
        }
    }

    fn get_app(&self, id: &str) -> StoreResult<Option<App>> {
        self.conn()
            .query_row(
                "SELECT id, name, created_at FROM apps WHERE id = ?1",
                [id],
                app_row,
            )
            .optional()
            .map_err(backend)
    }

    fn get_app_by_name(&self, name: &str) -> StoreResult<Option<App>> {
        self.conn()
            .query_row(
                "SELECT id, name, created_at FROM apps WHERE name = ?1",
                [name],
                app_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_apps(&self) -> StoreResult<Vec<App>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, name, created_at FROM apps ORDER BY created_at, id")
            .map_err(backend)?;
        stmt.query_map([], app_row)
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    fn delete_app(&self, id: &str) -> StoreResult<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM apps WHERE id = ?1", [id])
            .map_err(backend)?;
        Ok(n > 0)
    }

    fn create_environment(&self, app_id: &str, name: &str) -> StoreResult<Environment> {
        let env = Environment {
            id: new_id("env-"),
            app_id: app_id.to_string(),
            name: name.to_string(),
            active_build_id: None,
            created_at: now_ms(),
        };
        let conn = self.conn();
        let exists: Option<String> = conn
            .query_row("SELECT id FROM apps WHERE id = ?1", [app_id], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("app `{app_id}`")));
        }
        match conn.execute(
            "INSERT INTO environments (id, app_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![env.id, env.app_id, env.name, env.created_at],
        ) {
            Ok(_) => Ok(env),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("environment `{name}`")))
            }
            Err(e) => Err(backend(e)),
        }
    }

    fn get_environment(&self, id: &str) -> StoreResult<Option<Environment>> {
        self.conn()
            .query_row(
                "SELECT id, app_id, name, active_build_id, created_at FROM environments WHERE id = ?1",
                [id],
                env_row,
            )
            .optional()
            .map_err(backend)
    }

    fn get_environment_by_name(
        &self,
        app_id: &str,
        name: &str,
    ) -> StoreResult<Option<Environment>> {
        self.conn()
            .query_row(
                "SELECT id, app_id, name, active_build_id, created_at FROM environments
                 WHERE app_id = ?1 AND name = ?2",
                [app_id, name],
                env_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_environments(&self, app_id: &str) -> StoreResult<Vec<Environment>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, app_id, name, active_build_id, created_at FROM environments
                 WHERE app_id = ?1 ORDER BY created_at, id",
            )
            .map_err(backend)?;
        stmt.query_map([app_id], env_row)
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    fn delete_environment(&self, id: &str) -> StoreResult<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM environments WHERE id = ?1", [id])
            .map_err(backend)?;
        Ok(n > 0)
    }

    fn set_active_build(&self, env_id: &str, build_id: &str) -> StoreResult<Environment> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let env = tx
            .query_row(
                "SELECT id, app_id, name, active_build_id, created_at FROM environments WHERE id = ?1",
                [env_id],
                env_row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("environment `{env_id}`")))?;
        let build_app: Option<String> = tx
            .query_row("SELECT app_id FROM builds WHERE id = ?1", [build_id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?;
        match build_app {
            None => return Err(StoreError::NotFound(format!("build `{build_id}`"))),
            Some(app) if app != env.app_id => {
                return Err(StoreError::Invalid(format!(
                    "build `{build_id}` belongs to another app than environment `{env_id}`"
                )));
            }
            Some(_) => {}
        }
        tx.execute(
            "UPDATE environments SET active_build_id = ?2 WHERE id = ?1",
            [env_id, build_id],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Environment {
            active_build_id: Some(build_id.to_string()),
            ..env
        })
    }

    fn acquire_lease(
        &self,
        env_id: &str,
        token: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<(bool, EnvironmentLease)> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM environments WHERE id = ?1", [env_id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("environment `{env_id}`")));
        }
        if let Some(current) = lease_of(&tx, env_id)?
            && current.token != token
            && current.expires_at > now
        {
            return Ok((false, current));
        }
        let lease = EnvironmentLease {
            environment_id: env_id.to_string(),
            token: token.to_string(),
            holder: holder.to_string(),
            acquired_at: now,
            expires_at,
        };
        tx.execute(
            "INSERT INTO environment_leases (environment_id, token, holder, acquired_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (environment_id) DO UPDATE SET token = excluded.token,
                 holder = excluded.holder, expires_at = excluded.expires_at,
                 acquired_at = CASE WHEN environment_leases.token = excluded.token
                     THEN environment_leases.acquired_at ELSE excluded.acquired_at END",
            params![lease.environment_id, lease.token, lease.holder, now, expires_at],
        )
        .map_err(backend)?;
        let lease = lease_of(&tx, env_id)?.unwrap_or(lease);
        tx.commit().map_err(backend)?;
        Ok((true, lease))
    }

    fn renew_lease(
        &self,
        env_id: &str,
        token: &str,
        expires_at: i64,
    ) -> StoreResult<(bool, Option<EnvironmentLease>)> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let n = tx
            .execute(
                "UPDATE environment_leases SET expires_at = ?3
                 WHERE environment_id = ?1 AND token = ?2",
                params![env_id, token, expires_at],
            )
            .map_err(backend)?;
        let lease = lease_of(&tx, env_id)?;
        tx.commit().map_err(backend)?;
        Ok((n > 0, lease))
    }

    fn release_lease(&self, env_id: &str, token: &str) -> StoreResult<bool> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM environment_leases WHERE environment_id = ?1 AND token = ?2",
                [env_id, token],
            )
            .map_err(backend)?;
        Ok(n > 0)
    }

    fn active_lease(&self, env_id: &str, now: i64) -> StoreResult<Option<EnvironmentLease>> {
        Ok(lease_of(&self.conn(), env_id)?.filter(|l| l.expires_at > now))
    }

    fn create_artifact(&self, a: &Artifact) -> StoreResult<()> {
        self.conn()
            .execute(
                "INSERT INTO artifacts (object_key, app_id, declared_size, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![a.object_key, a.app_id, a.declared_size, a.created_at],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn get_artifact(&self, object_key: &str) -> StoreResult<Option<Artifact>> {
        self.conn()
            .query_row(
                "SELECT object_key, app_id, declared_size, sha256, size, created_at FROM artifacts
                 WHERE object_key = ?1",
                [object_key],
                artifact_row,
            )
            .optional()
            .map_err(backend)
    }

    fn record_upload(&self, object_key: &str, sha256: &str, size: i64) -> StoreResult<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE artifacts SET sha256 = ?2, size = ?3 WHERE object_key = ?1 AND sha256 IS NULL",
                params![object_key, sha256, size],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "upload of artifact `{object_key}`"
            )));
        }
        Ok(())
    }

    fn create_build(&self, app_id: &str, object_key: &str, manifest: &Value) -> StoreResult<Build> {
        let build = Build {
            id: new_id("build-"),
            app_id: app_id.to_string(),
            object_key: object_key.to_string(),
            manifest: manifest.clone(),
            created_at: now_ms(),
        };
        self.conn()
            .execute(
                "INSERT INTO builds (id, app_id, object_key, manifest, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![build.id, build.app_id, build.object_key, json_text(manifest), build.created_at],
            )
            .map_err(backend)?;
        Ok(build)
    }

    fn get_build(&self, id: &str) -> StoreResult<Option<Build>> {
        self.conn()
            .query_row(
                "SELECT id, app_id, object_key, manifest, created_at FROM builds WHERE id = ?1",
                [id],
                build_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_builds(&self, app_id: &str) -> StoreResult<Vec<Build>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, app_id, object_key, manifest, created_at FROM builds WHERE app_id = ?1
                 ORDER BY created_at, id",
            )
            .map_err(backend)?;
        stmt.query_map([app_id], build_row)
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    fn update_manifest(
        &self,
        build_id: &str,
        update: &mut dyn FnMut(&Value) -> StoreResult<Value>,
    ) -> StoreResult<Build> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let build = tx
            .query_row(
                "SELECT id, app_id, object_key, manifest, created_at FROM builds WHERE id = ?1",
                [build_id],
                build_row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("build `{build_id}`")))?;
        let manifest = update(&build.manifest)?;
        tx.execute(
            "UPDATE builds SET manifest = ?2 WHERE id = ?1",
            params![build_id, json_text(&manifest)],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Build { manifest, ..build })
    }

    fn save_template(&self, template: &Template) -> StoreResult<()> {
        let data = serde_json::to_string(template).map_err(|e| StoreError::Backend(e.into()))?;
        self.conn()
            .execute(
                "INSERT INTO templates (id, data) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                params![template.id, data],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn get_template(&self, id: &str) -> StoreResult<Option<Template>> {
        let data: Option<String> = self
            .conn()
            .query_row("SELECT data FROM templates WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?;
        data.map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Backend(e.into())))
            .transpose()
    }

    fn save_endpoint(&self, endpoint: &Endpoint) -> StoreResult<()> {
        let data = serde_json::to_string(endpoint).map_err(|e| StoreError::Backend(e.into()))?;
        let conn = self.conn();
        let saved = conn.execute(
            "INSERT INTO endpoints (id, data, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            params![endpoint.id, data, now_ms()],
        );
        let mut cache = self.endpoint_cache();
        match saved {
            Ok(_) => cache.insert(endpoint.id.clone(), endpoint.clone()),
            // Unknown whether it was written: read it again next time.
            Err(_) => cache.remove(&endpoint.id),
        };
        saved.map_err(backend)?;
        Ok(())
    }

    fn get_endpoint(&self, id: &str) -> StoreResult<Option<Endpoint>> {
        if let Some(ep) = self.endpoint_cache().get(id) {
            return Ok(Some(ep.clone()));
        }
        let conn = self.conn();
        let data: Option<String> = conn
            .prepare_cached("SELECT data FROM endpoints WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
            .map_err(backend)?;
        let endpoint: Option<Endpoint> = data
            .map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Backend(e.into())))
            .transpose()?;
        if let Some(ep) = &endpoint {
            self.endpoint_cache().insert(ep.id.clone(), ep.clone());
        }
        Ok(endpoint)
    }

    fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT data FROM endpoints ORDER BY created_at, id")
            .map_err(backend)?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        rows.iter()
            .map(|d| serde_json::from_str(d).map_err(|e| StoreError::Backend(e.into())))
            .collect()
    }

    fn delete_endpoint(&self, id: &str) -> StoreResult<bool> {
        let conn = self.conn();
        let deleted = conn.execute("DELETE FROM endpoints WHERE id = ?1", [id]);
        self.endpoint_cache().remove(id);
        Ok(deleted.map_err(backend)? > 0)
    }
}

impl JobQueue for SqliteStore {
    fn enqueue_job(&self, job: &Job) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        tx.prepare_cached(
            "INSERT INTO jobs (id, endpoint_id, webhook, status, retries, timeout_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                job.id,
                job.endpoint_id,
                job.webhook,
                job.status.as_str(),
                job.timeout_ms,
                job.created_at
            ])
        })
        .map_err(backend)?;
        tx.prepare_cached("INSERT INTO job_bodies (job_id, kind, body) VALUES (?1, 'request', ?2)")
            .and_then(|mut stmt| stmt.execute(params![job.id, job.request.get()]))
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(())
    }

    fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        job_by_id(&self.conn(), JOB_COLUMNS, id)
    }

    fn job_result(&self, id: &str) -> StoreResult<Option<Job>> {
        job_by_id(&self.conn(), JOB_COLUMNS_WITHOUT_REQUEST, id)
    }

    fn job_status(&self, id: &str) -> StoreResult<Option<JobStatus>> {
        let conn = self.conn();
        let status: Option<String> = conn
            .prepare_cached("SELECT status FROM jobs WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
            .map_err(backend)?;
        Ok(status.map(|s| JobStatus::parse(&s).unwrap_or(JobStatus::Failed)))
    }

    fn recent_jobs(&self, endpoint_id: &str, limit: usize) -> StoreResult<Vec<Job>> {
        let conn = self.conn();
        // No `LIMIT ?`: see `claim_jobs`.
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE endpoint_id = ?1 ORDER BY seq DESC"
            ))
            .map_err(backend)?;
        stmt.query_map([endpoint_id], job_row)
            .map_err(backend)?
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    fn claim_jobs(
        &self,
        endpoint_id: &str,
        worker_id: &str,
        max: usize,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Vec<Job>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        // The oldest queued jobs, read by stepping the queue index no further than `max`
        // rows. Not `LIMIT ?`: this SQLite plans with a bound LIMIT's value, so rebinding it
        // expires the statement and every claim compiled it again (half of a claim's cost
        // in the gateway bench's profile). A take that finds nothing ends here, before any
        // write: the transaction never takes the write lock.
        let seqs: Vec<i64> = tx
            .prepare_cached(
                "SELECT seq FROM jobs WHERE endpoint_id = ?1 AND status = 'IN_QUEUE' ORDER BY seq",
            )
            .and_then(|mut stmt| {
                stmt.query_map([endpoint_id], |r| r.get(0))?
                    .take(max)
                    .collect()
            })
            .map_err(backend)?;
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut jobs = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let job = tx
                .prepare_cached(&format!(
                    "UPDATE jobs SET status = 'IN_PROGRESS', worker_id = ?2, started_at = ?3,
                     lease_expires_at = ?4
                     WHERE seq = ?1 AND status = 'IN_QUEUE'
                     RETURNING {JOB_COLUMNS}"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![seq, worker_id, now, lease_until], job_row)
                        .optional()
                })
                .map_err(backend)?;
            jobs.extend(job);
        }
        tx.commit().map_err(backend)?;
        Ok(jobs)
    }

    fn finish_job(
        &self,
        job_id: &str,
        worker_id: &str,
        outcome: &JobOutcome,
        now: i64,
    ) -> StoreResult<Option<Job>> {
        let mut conn = self.conn();
        // The status change and the output commit together.
        let tx = conn.transaction().map_err(backend)?;
        let execute = |sql: &str, args: &[&dyn rusqlite::ToSql]| {
            tx.prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute(args))
                .map_err(backend)
        };
        let (n, output) = match outcome {
            JobOutcome::Progress(p) => (
                tx.prepare_cached(
                    "SELECT COUNT(*) FROM jobs WHERE id = ?1 AND worker_id = ?2 AND status = 'IN_PROGRESS'",
                )
                .and_then(|mut stmt| stmt.query_row(params![job_id, worker_id], |r| r.get(0)))
                .map_err(backend)?,
                Some(p),
            ),
            JobOutcome::Completed(output) => (
                execute(
                    "UPDATE jobs SET status = 'COMPLETED', completed_at = ?3, lease_expires_at = NULL
                     WHERE id = ?1 AND worker_id = ?2 AND status = 'IN_PROGRESS'",
                    params![job_id, worker_id, now],
                )?,
                output.as_ref(),
            ),
            JobOutcome::Failed { error, output } => (
                execute(
                    "UPDATE jobs SET status = 'FAILED', error = ?3, completed_at = ?4,
                     lease_expires_at = NULL
                     WHERE id = ?1 AND worker_id = ?2 AND status = 'IN_PROGRESS'",
                    params![job_id, worker_id, error, now],
                )?,
                output.as_ref(),
            ),
        };
        if n == 0 {
            return Ok(None);
        }
        match output {
            Some(output) => execute(
                "INSERT OR REPLACE INTO job_bodies (job_id, kind, body) VALUES (?1, 'output', ?2)",
                params![job_id, json_text(output)],
            )?,
            None => execute(
                "DELETE FROM job_bodies WHERE job_id = ?1 AND kind = 'output'",
                params![job_id],
            )?,
        };
        // The output is the one just written: not read back (it may be megabytes).
        let job = job_by_id(&tx, JOB_COLUMNS_WITHOUT_BODIES, job_id)?.map(|job| Job {
            output: output.cloned(),
            ..job
        });
        tx.commit().map_err(backend)?;
        Ok(job)
    }

    fn extend_leases(&self, worker_id: &str, job_ids: &[String], until: i64) -> StoreResult<()> {
        let conn = self.conn();
        for id in job_ids {
            conn.execute(
                "UPDATE jobs SET lease_expires_at = MAX(COALESCE(lease_expires_at, 0), ?3)
                 WHERE id = ?1 AND worker_id = ?2 AND status = 'IN_PROGRESS'",
                params![id, worker_id, until],
            )
            .map_err(backend)?;
        }
        Ok(())
    }

    fn requeue_expired(&self, now: i64, max_retries: i32) -> StoreResult<Requeued> {
        Self::requeue_where(
            &mut self.conn(),
            "lease_expires_at < ?1",
            &[&now],
            now,
            max_retries,
        )
    }

    fn requeue_worker(&self, worker_id: &str, now: i64, max_retries: i32) -> StoreResult<Requeued> {
        Self::requeue_where(
            &mut self.conn(),
            "worker_id = ?1",
            &[&worker_id],
            now,
            max_retries,
        )
    }

    fn requeue_all_running(&self, now: i64, max_retries: i32) -> StoreResult<Requeued> {
        Self::requeue_where(&mut self.conn(), "1 = 1", &[], now, max_retries)
    }

    fn time_out_jobs(&self, now: i64) -> StoreResult<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "UPDATE jobs SET status = 'TIMED_OUT', completed_at = ?1, lease_expires_at = NULL,
                 error = 'execution timeout exceeded'
                 WHERE status = 'IN_PROGRESS' AND timeout_ms > 0 AND started_at + timeout_ms < ?1
                 RETURNING {JOB_COLUMNS}"
            ))
            .map_err(backend)?;
        stmt.query_map([now], job_row)
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    fn cancel_job(&self, id: &str, now: i64) -> StoreResult<Option<Job>> {
        let conn = self.conn();
        conn.execute(
            "UPDATE jobs SET status = 'CANCELLED', completed_at = ?2, lease_expires_at = NULL
             WHERE id = ?1 AND status IN ('IN_QUEUE', 'IN_PROGRESS')",
            params![id, now],
        )
        .map_err(backend)?;
        conn.query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            job_row,
        )
        .optional()
        .map_err(backend)
    }

    fn purge_queue(&self, endpoint_id: &str, now: i64) -> StoreResult<usize> {
        self.conn()
            .execute(
                "UPDATE jobs SET status = 'CANCELLED', completed_at = ?2
                 WHERE endpoint_id = ?1 AND status = 'IN_QUEUE'",
                params![endpoint_id, now],
            )
            .map_err(backend)
    }

    fn job_counts(&self, endpoint_id: &str) -> StoreResult<JobCounts> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT
                   COALESCE(SUM(status = 'IN_QUEUE'), 0), COALESCE(SUM(status = 'IN_PROGRESS'), 0),
                   COALESCE(SUM(status = 'COMPLETED'), 0),
                   COALESCE(SUM(status IN ('FAILED', 'TIMED_OUT')), 0),
                   COALESCE(SUM(retries > 0), 0),
                   MIN(CASE WHEN status = 'IN_QUEUE' THEN created_at END)
                 FROM jobs WHERE endpoint_id = ?1",
            )
            .map_err(backend)?;
        stmt.query_row([endpoint_id], |r| {
            Ok(JobCounts {
                in_queue: r.get(0)?,
                in_progress: r.get(1)?,
                completed: r.get(2)?,
                failed: r.get(3)?,
                retried: r.get(4)?,
                oldest_queued_at: r.get(5)?,
            })
        })
        .map_err(backend)
    }

    fn queue_depth(&self, endpoint_id: &str) -> StoreResult<QueueDepth> {
        // Two range scans of the `jobs_queue` index (endpoint, status): finished jobs are
        // never visited.
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT
                   (SELECT COUNT(*) FROM jobs WHERE endpoint_id = ?1 AND status = 'IN_QUEUE'),
                   (SELECT COUNT(*) FROM jobs WHERE endpoint_id = ?1 AND status = 'IN_PROGRESS'),
                   (SELECT MIN(created_at) FROM jobs WHERE endpoint_id = ?1 AND status = 'IN_QUEUE')",
            )
            .map_err(backend)?;
        stmt.query_row([endpoint_id], |r| {
            Ok(QueueDepth {
                in_queue: r.get(0)?,
                in_progress: r.get(1)?,
                oldest_queued_at: r.get(2)?,
            })
        })
        .map_err(backend)
    }

    fn queued_count(&self, endpoint_id: &str) -> StoreResult<i64> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM jobs WHERE endpoint_id = ?1 AND status = 'IN_QUEUE'",
            )
            .map_err(backend)?;
        stmt.query_row([endpoint_id], |r| r.get(0)).map_err(backend)
    }

    fn delete_finished_before(&self, cutoff: i64, limit: usize) -> StoreResult<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let finished = "SELECT id FROM jobs
             WHERE completed_at IS NOT NULL AND completed_at < ?1
               AND status IN ('COMPLETED', 'FAILED', 'TIMED_OUT', 'CANCELLED')
             ORDER BY completed_at LIMIT ?2";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        tx.execute(
            &format!("DELETE FROM stream_chunks WHERE job_id IN ({finished})"),
            params![cutoff, limit],
        )
        .map_err(backend)?;
        tx.execute(
            &format!("DELETE FROM job_bodies WHERE job_id IN ({finished})"),
            params![cutoff, limit],
        )
        .map_err(backend)?;
        let deleted = tx
            .execute(
                &format!("DELETE FROM jobs WHERE id IN ({finished})"),
                params![cutoff, limit],
            )
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(deleted)
    }

    fn worker_jobs(&self, worker_id: &str) -> StoreResult<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id FROM jobs WHERE worker_id = ?1 AND status = 'IN_PROGRESS'")
            .map_err(backend)?;
        stmt.query_map([worker_id], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    fn push_chunk(
        &self,
        job_id: &str,
        worker_id: &str,
        chunk: &Value,
        max_chunks: i64,
    ) -> StoreResult<ChunkPush> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let running: Option<String> = tx
            .query_row(
                "SELECT id FROM jobs WHERE id = ?1 AND worker_id = ?2 AND status = 'IN_PROGRESS'",
                [job_id, worker_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        if running.is_none() {
            return Ok(ChunkPush::NotRunning);
        }
        let held: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(n), 0) FROM stream_chunks WHERE job_id = ?1",
                [job_id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if held >= max_chunks {
            return Ok(ChunkPush::Full);
        }
        tx.execute(
            "INSERT INTO stream_chunks (job_id, n, chunk)
             VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM stream_chunks WHERE job_id = ?1), ?2)",
            params![job_id, json_text(chunk)],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(ChunkPush::Stored)
    }

    fn take_chunks(&self, job_id: &str) -> StoreResult<Option<(Job, Vec<Value>)>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let Some((job, cursor)) = tx
            .query_row(
                &format!("SELECT {JOB_COLUMNS}, stream_cursor FROM jobs WHERE id = ?1"),
                [job_id],
                |r| Ok((job_row(r)?, r.get::<_, i64>(14)?)),
            )
            .optional()
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let chunks: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT n, chunk FROM stream_chunks WHERE job_id = ?1 AND n > ?2 ORDER BY n",
                )
                .map_err(backend)?;
            stmt.query_map(params![job_id, cursor], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?
        };
        if let Some((last, _)) = chunks.last() {
            tx.execute(
                "UPDATE jobs SET stream_cursor = ?2 WHERE id = ?1",
                params![job_id, last],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        let values = chunks
            .into_iter()
            .map(|(_, c)| serde_json::from_str(&c).unwrap_or(Value::Null))
            .collect();
        Ok(Some((job, values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_version(path: &Path) -> i32 {
        Connection::open(path)
            .expect("open")
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("user_version")
    }

    #[test]
    fn a_fresh_database_gets_the_current_schema_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flash.db");
        // The server creates the file empty (0600) before opening it.
        std::fs::write(&path, b"").expect("create");
        let store = SqliteStore::open(&path).expect("open");
        store.create_app("a").expect("usable");
        drop(store);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        // Opening again changes nothing.
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.list_apps().expect("apps").len(), 1);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }

    #[test]
    fn an_unversioned_database_of_todays_schema_is_recognised_and_stamped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flash.db");
        {
            // What flash wrote before versions: the same tables, user_version 0, and one
            // table it made later missing (it is created).
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA_V1).expect("schema");
            conn.execute_batch(
                "DROP TABLE environment_leases;
                 INSERT INTO apps (id, name, created_at) VALUES ('app-1', 'kept', 1);",
            )
            .expect("data");
        }
        assert_eq!(user_version(&path), 0);
        let store = SqliteStore::open(&path).expect("open");
        assert_eq!(
            store.get_app("app-1").expect("get").map(|a| a.name),
            Some("kept".into())
        );
        let env = store.create_environment("app-1", "e").expect("env");
        let (granted, _) = store
            .acquire_lease(&env.id, "t", "me", 0, 10)
            .expect("the missing table was created");
        assert!(granted);
        drop(store);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_database_keeps_its_jobs_bodies_in_version_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flash.db");
        {
            // Version 1 kept a job's request and output in its row.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA_V1).expect("schema");
            conn.execute_batch(
                r#"PRAGMA user_version = 1;
                INSERT INTO jobs (id, endpoint_id, request, status, output, created_at)
                    VALUES ('done', 'ep', '{"input":{"n":1}}', 'COMPLETED', '{"sum":2}', 1);
                INSERT INTO jobs (id, endpoint_id, request, status, created_at)
                    VALUES ('queued', 'ep', '{"input":{"n":2}}', 'IN_QUEUE', 2);"#,
            )
            .expect("data");
        }
        let store = SqliteStore::open(&path).expect("open");
        let done = store.get_job("done").expect("get").expect("done");
        assert_eq!(done.request.get(), r#"{"input":{"n":1}}"#);
        assert_eq!(done.output, Some(json!({ "sum": 2 })));
        let queued = store.get_job("queued").expect("get").expect("queued");
        assert_eq!(queued.request.get(), r#"{"input":{"n":2}}"#);
        assert_eq!(queued.output, None);
        let claimed = store.claim_jobs("ep", "w", 5, 10, 1_000).expect("claim");
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        assert_eq!(claimed[0].request.get(), r#"{"input":{"n":2}}"#);
        drop(store);
        assert_eq!(user_version(&path), 2);
    }

    #[test]
    fn a_database_of_a_newer_flash_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flash.db");
        drop(SqliteStore::open(&path).expect("open"));
        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("stamp");
        let err = SqliteStore::open(&path).err().expect("refused").to_string();
        assert!(err.contains("newer flash"), "{err}");
        assert!(err.contains("upgrade flash"), "{err}");
        assert!(
            err.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
            "{err}"
        );
        assert_eq!(user_version(&path), SCHEMA_VERSION + 1, "left as it was");
    }

    #[test]
    fn an_unversioned_database_of_another_layout_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flash.db");
        Connection::open(&path)
            .expect("open")
            .execute_batch("CREATE TABLE jobs (id TEXT PRIMARY KEY, payload TEXT);")
            .expect("foreign table");
        let err = SqliteStore::open(&path).err().expect("refused").to_string();
        assert!(err.contains("table `jobs` lacks column"), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
        assert_eq!(user_version(&path), 0, "not stamped");
    }

    fn job(id: &str, ep: &str) -> Job {
        Job {
            id: id.into(),
            endpoint_id: ep.into(),
            request: RawValue::from_string(r#"{"input":{}}"#.into()).expect("JSON"),
            webhook: None,
            status: JobStatus::InQueue,
            worker_id: None,
            output: None,
            error: None,
            retries: 0,
            timeout_ms: 0,
            created_at: now_ms(),
            started_at: None,
            completed_at: None,
            lease_expires_at: None,
        }
    }

    #[test]
    fn the_wal_reaches_the_database_file_without_a_commit_waiting_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flash.db");
        let store = SqliteStore::open(&path).expect("open");
        store.enqueue_job(&job("j-1", "ep")).expect("enqueue");
        // One small commit is far below the WAL size at which a commit checkpoints itself:
        // only the checkpoint thread copies it into the database file. Read that file alone
        // (a copy without its WAL) until the job is there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let copy = dir.path().join("alone.db");
        loop {
            std::fs::copy(&path, &copy).expect("copy the database file");
            let found: i64 = Connection::open(&copy)
                .expect("open the copy")
                .query_row("SELECT COUNT(*) FROM jobs WHERE id = 'j-1'", [], |r| {
                    r.get(0)
                })
                .unwrap_or(0);
            if found == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the job never reached {} by a checkpoint",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Dropping the store stops the thread (the test would hang otherwise).
        drop(store);
    }

    #[test]
    fn recent_jobs_are_the_endpoints_newest_first_whatever_their_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        for (id, ep) in [("a", "ep"), ("b", "other"), ("c", "ep"), ("d", "ep")] {
            store.enqueue_job(&job(id, ep)).expect("enqueue");
        }
        let now = now_ms();
        store
            .claim_jobs("ep", "w1", 1, now, now + 1000)
            .expect("claim");
        store
            .finish_job("a", "w1", &JobOutcome::Completed(None), now)
            .expect("finish");
        let ids = |limit| {
            store
                .recent_jobs("ep", limit)
                .expect("recent")
                .into_iter()
                .map(|j| (j.id, j.status))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(10),
            [
                ("d".to_string(), JobStatus::InQueue),
                ("c".to_string(), JobStatus::InQueue),
                ("a".to_string(), JobStatus::Completed)
            ]
        );
        assert_eq!(ids(1).len(), 1);
        assert!(store.recent_jobs("none", 5).expect("recent").is_empty());
    }

    #[test]
    fn jobs_are_claimed_once_in_order_and_requeued_on_lost_leases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        for id in ["a", "b", "c"] {
            store.enqueue_job(&job(id, "ep")).expect("enqueue");
        }
        let now = now_ms();
        let got = store
            .claim_jobs("ep", "w1", 2, now, now + 1000)
            .expect("claim");
        assert_eq!(
            got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let got = store
            .claim_jobs("ep", "w2", 5, now, now + 1000)
            .expect("claim");
        assert_eq!(got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["c"]);
        assert!(
            store
                .claim_jobs("ep", "w3", 5, now, now + 1000)
                .expect("claim")
                .is_empty()
        );

        // w1 heartbeats "a" only; "b" expires and goes back to the queue.
        store
            .extend_leases("w1", &["a".into()], now + 10_000)
            .expect("extend");
        store
            .extend_leases("w2", &["c".into()], now + 10_000)
            .expect("extend");
        // A heartbeat naming another worker's job changes nothing.
        store
            .extend_leases("w2", &["b".into()], now + 10_000)
            .expect("extend");
        let r = store.requeue_expired(now + 2000, 3).expect("requeue");
        assert_eq!(r.requeued, ["b"]);
        let b = store.get_job("b").expect("get").expect("b");
        assert_eq!(
            (b.status, b.retries, b.worker_id),
            (JobStatus::InQueue, 1, None)
        );
        // A late result from the lost worker is ignored.
        let late = store
            .finish_job("b", "w1", &JobOutcome::Completed(None), now)
            .expect("finish");
        assert!(late.is_none());
        // Out of retries: FAILED.
        let r = store.requeue_worker("w2", now, 0).expect("requeue");
        assert_eq!(r.failed.len(), 1);
        assert_eq!(
            store.get_job("c").expect("get").expect("c").status,
            JobStatus::Failed
        );
        // Durable across reopen.
        drop(store);
        let store = SqliteStore::open(&dir.path().join("db")).expect("reopen");
        assert_eq!(store.job_counts("ep").expect("counts").in_queue, 1);
    }

    #[test]
    fn stream_chunks_are_returned_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        store.enqueue_job(&job("s", "ep")).expect("enqueue");
        let now = now_ms();
        store
            .claim_jobs("ep", "w", 1, now, now + 1000)
            .expect("claim");
        let push =
            |worker: &str, chunk: Value| store.push_chunk("s", worker, &chunk, 3).expect("push");
        assert_eq!(push("w", json!(1)), ChunkPush::Stored);
        assert_eq!(push("w", json!(2)), ChunkPush::Stored);
        assert_eq!(
            push("other", json!(3)),
            ChunkPush::NotRunning,
            "not this worker's job"
        );
        assert_eq!(
            store.take_chunks("s").expect("take").expect("job").1,
            [json!(1), json!(2)]
        );
        assert!(
            store
                .take_chunks("s")
                .expect("take")
                .expect("job")
                .1
                .is_empty()
        );
        assert_eq!(push("w", json!(3)), ChunkPush::Stored);
        assert_eq!(
            store.take_chunks("s").expect("take").expect("job").1,
            [json!(3)]
        );
        // The cap counts every chunk the job streamed, read or not.
        assert_eq!(push("w", json!(4)), ChunkPush::Full);
    }

    #[test]
    fn finished_jobs_are_deleted_after_the_retention_window_with_their_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        // Claimed in this order: the first three run, the last stays queued.
        for id in ["done", "late", "running", "queued"] {
            store.enqueue_job(&job(id, "ep")).expect("enqueue");
        }
        store
            .claim_jobs("ep", "w", 3, 1_000, 1_000_000)
            .expect("claim");
        store
            .push_chunk("done", "w", &json!("chunk"), 10)
            .expect("push");
        store
            .finish_job("done", "w", &JobOutcome::Completed(None), 2_000)
            .expect("finish");
        store
            .finish_job("late", "w", &JobOutcome::Completed(None), 9_000)
            .expect("finish");
        assert_eq!(store.queued_count("ep").expect("count"), 1);

        // Only what finished before the cutoff goes; queued and running jobs stay.
        assert_eq!(store.delete_finished_before(5_000, 100).expect("delete"), 1);
        assert!(store.get_job("done").expect("get").is_none());
        assert!(store.take_chunks("done").expect("take").is_none());
        for id in ["late", "queued", "running"] {
            assert!(store.get_job(id).expect("get").is_some(), "{id}");
        }
        let chunks: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM stream_chunks", [], |r| r.get(0))
            .expect("count chunks");
        assert_eq!(chunks, 0);
        // A batch limit bounds one pass.
        assert_eq!(store.delete_finished_before(10_000, 0).expect("delete"), 0);
        assert_eq!(
            store.delete_finished_before(10_000, 100).expect("delete"),
            1
        );
    }

    #[test]
    fn a_lease_is_held_by_one_token_until_it_expires_or_is_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        let app = store.create_app("a").expect("app");
        let env = store.create_environment(&app.id, "dev").expect("env");
        let e = env.id.as_str();
        assert!(matches!(
            store.acquire_lease("env-nope", "t", "h", 0, 10),
            Err(StoreError::NotFound(_))
        ));
        let (granted, lease) = store.acquire_lease(e, "a", "send A", 0, 100).expect("a");
        assert!(granted);
        assert_eq!((lease.holder.as_str(), lease.expires_at), ("send A", 100));
        // Another token waits; the same token extends its own lease.
        let (granted, lease) = store.acquire_lease(e, "b", "send B", 50, 150).expect("b");
        assert!(!granted);
        assert_eq!(lease.holder, "send A", "the refusal names the holder");
        let (granted, lease) = store.acquire_lease(e, "a", "send A", 60, 160).expect("a");
        assert!(granted);
        assert_eq!((lease.acquired_at, lease.expires_at), (0, 160));
        assert_eq!(
            store.active_lease(e, 159).expect("active").map(|l| l.token),
            Some("a".into())
        );
        assert_eq!(store.active_lease(e, 160).expect("expired"), None);
        // Expired: renewable by its token until someone else takes it.
        assert!(store.renew_lease(e, "a", 200).expect("renew").0);
        assert!(
            !store
                .acquire_lease(e, "b", "send B", 170, 270)
                .expect("b")
                .0
        );
        let (granted, lease) = store.acquire_lease(e, "b", "send B", 210, 310).expect("b");
        assert!(granted);
        assert_eq!(lease.acquired_at, 210);
        let (renewed, lease) = store.renew_lease(e, "a", 400).expect("renew");
        assert!(!renewed, "a lost its lease to b");
        assert_eq!(lease.map(|l| l.holder), Some("send B".into()));
        // Only the holder releases it.
        assert!(!store.release_lease(e, "a").expect("release"));
        assert!(store.release_lease(e, "b").expect("release"));
        assert_eq!(store.active_lease(e, 0).expect("none"), None);
        assert!(!store.renew_lease(e, "b", 500).expect("renew").0);
        // Leases go with their environment.
        assert!(store.acquire_lease(e, "c", "c", 0, 1_000).expect("c").0);
        assert!(store.delete_environment(e).expect("delete"));
        assert_eq!(store.active_lease(e, 0).expect("gone"), None);
    }

    #[test]
    fn manifest_updates_are_atomic_and_names_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db")).expect("open");
        let app = store.create_app("a").expect("app");
        assert!(matches!(
            store.create_app("a"),
            Err(StoreError::Conflict(_))
        ));
        let build = store
            .create_build(&app.id, "k", &json!({ "n": 0 }))
            .expect("build");
        let failed =
            store.update_manifest(&build.id, &mut |_| Err(StoreError::Invalid("no".into())));
        assert!(failed.is_err());
        let b = store
            .update_manifest(&build.id, &mut |m| {
                Ok(json!({ "n": m["n"].as_i64().unwrap_or(0) + 1 }))
            })
            .expect("update");
        assert_eq!(b.manifest, json!({ "n": 1 }));
    }
}
