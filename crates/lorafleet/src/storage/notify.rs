//! PostgreSQL `LISTEN/NOTIFY`: how instances on one database tell each other what they
//! committed. SQLite has one instance per file, so there both ends do nothing.
//!
//! The listener has a connection of its own, outside the application's pool: a pool taken up by
//! ingest must not keep it from reconnecting, and it never hands the connection back.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::{Db, Result};

/// The one channel lorafleet's instances speak on.
pub const CHANNEL: &str = "lorafleet_changes";

/// Sends `payload` to every instance listening on [`CHANNEL`] (itself included); PostgreSQL
/// delivers it at once, being its own transaction. Nothing on SQLite.
pub async fn publish(db: &Db, payload: &str) -> Result<()> {
    let Db::Postgres(pool) = db else {
        return Ok(());
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// What the listening connection brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// A notification's payload.
    Payload(String),
    /// The connection was lost and is open again: whatever was sent meanwhile is gone.
    Reconnected,
}

/// A connection listening on [`CHANNEL`].
pub struct Listener(PgListener);

/// Opens a listening connection; `None` on SQLite.
pub async fn listen(db: &Db) -> Result<Option<Listener>> {
    let Db::Postgres(pool) = db else {
        return Ok(None);
    };
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen(CHANNEL).await?;
    Ok(Some(Listener(listener)))
}

impl Listener {
    /// The next notification, or word that the connection was lost (and reopened) meanwhile.
    /// An error means it could not be reopened: the caller waits and calls [`listen`] again.
    pub async fn next(&mut self) -> Result<Heard> {
        Ok(match self.0.try_recv().await? {
            Some(n) => Heard::Payload(n.payload().to_string()),
            None => Heard::Reconnected,
        })
    }
}
