//! PostgreSQL advisory locks: a job that must run on one instance at a time (the device-list
//! sync, the firmware rescan) holds one while it runs. The lock belongs to a connection of its
//! own, so an instance that dies releases it with its connection. SQLite has one instance per
//! file: there every lock is granted at once.

use super::{discard, Db, Pooled, Result};

/// The jobs that take a lock; the numbers are the locks' keys, in a range of lorafleet's own
/// (`0x6c66` is "lf"), so other applications on the same database are not in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    DeviceSync,
    FirmwareRescan,
}

impl Job {
    fn key(self) -> i64 {
        const BASE: i64 = 0x6c66_0000;
        BASE + match self {
            Job::DeviceSync => 1,
            Job::FirmwareRescan => 2,
        }
    }
}

/// A held lock; [`Held::release`] gives it back. Dropped without that (a panic, a cancelled
/// task) its connection is closed rather than returned to the pool, which releases it too.
pub struct Held {
    conn: Option<Pooled>,
    key: i64,
}

/// The lock of `job` if no other instance holds it now.
pub async fn try_lock(db: &Db, job: Job) -> Result<Option<Held>> {
    let Db::Postgres(_) = db else {
        return Ok(Some(Held { conn: None, key: 0 }));
    };
    let mut conn = db.acquire().await?;
    let got: bool = match &mut conn {
        Pooled::Postgres(c) => {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(job.key())
                .fetch_one(&mut **c)
                .await?
        }
        Pooled::Sqlite(_) => true,
    };
    Ok(got.then_some(Held {
        conn: Some(conn),
        key: job.key(),
    }))
}

/// The lock of `job`, waiting while another instance holds it.
pub async fn lock(db: &Db, job: Job) -> Result<Held> {
    let Db::Postgres(_) = db else {
        return Ok(Held { conn: None, key: 0 });
    };
    let mut conn = db.acquire().await?;
    if let Pooled::Postgres(c) = &mut conn {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(job.key())
            .execute(&mut **c)
            .await?;
    }
    Ok(Held {
        conn: Some(conn),
        key: job.key(),
    })
}

impl Held {
    /// Gives the lock back and its connection to the pool.
    pub async fn release(mut self) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let unlocked = match &mut conn {
            Pooled::Postgres(c) => sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut **c)
                .await
                .map(|_| ()),
            Pooled::Sqlite(_) => Ok(()),
        };
        if unlocked.is_err() {
            // A connection that may still hold the lock must not serve anyone else.
            discard(conn);
        }
        unlocked
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            discard(conn);
        }
    }
}
