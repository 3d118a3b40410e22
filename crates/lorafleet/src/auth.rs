//! Users (argon2id password hashes), API tokens and browser sessions, and the slowing down of
//! repeated failed logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::storage::{fmt_time, Db};

pub const SESSION_COOKIE: &str = "lorafleet_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// 256 random bits as lower-case hex.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A password a person can type: 20 characters from an unambiguous alphabet (~115 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect()
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Creates the `admin` user when there is no user at all. Returns the generated password when
/// one had to be made up (it has then also been written to `<data_dir>/initial-admin-password`).
pub async fn ensure_admin(
    db: &Db,
    configured: &str,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db)
        .await?;
    if users > 0 {
        return Ok(None);
    }
    let (password, generated) = if configured.is_empty() {
        (random_password(), true)
    } else {
        (configured.to_string(), false)
    };
    create_user(db, "admin", &password).await?;
    if generated {
        let path = data_dir.join("initial-admin-password");
        write_secret_file(&path, &format!("{password}\n"))?;
        Ok(Some(password))
    } else {
        Ok(None)
    }
}

/// Writes a file only its owner can read.
pub fn write_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

pub async fn create_user(db: &Db, username: &str, password: &str) -> anyhow::Result<i64> {
    let hash = hash_password(password)?;
    let id = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)
         ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash RETURNING id",
    )
    .bind(username)
    .bind(hash)
    .bind(crate::storage::now())
    .fetch_one(db)
    .await?;
    Ok(id)
}

/// Checks a username and password; returns the user id.
pub async fn check_password(
    db: &Db,
    username: &str,
    password: &str,
) -> anyhow::Result<Option<i64>> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, password_hash FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(db)
            .await?;
    let password = password.to_string();
    // argon2 is deliberately slow: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || match row {
        Some((id, hash)) if verify_password(&password, &hash) => Some(id),
        Some(_) => None,
        None => {
            // Spend the same time for an unknown user, so timing does not reveal user names.
            let _ = verify_password(&password, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$hV2eYZ6P7tpJVlJmm4Fq1Sm8Hzd8YAbwhFgTqBl+Rko");
            None
        }
    })
    .await?;
    Ok(result)
}

/// Creates an API token for a user; the token is returned once and stored only as a hash.
pub async fn create_api_token(db: &Db, username: &str, name: &str) -> anyhow::Result<String> {
    let user_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE username = ?")
        .bind(username)
        .fetch_optional(db)
        .await?
        .with_context(|| format!("no user {username:?}"))?;
    let token = format!("lft_{}", random_secret());
    sqlx::query(
        "INSERT INTO api_tokens (name, token_sha256, user_id, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(name)
    .bind(sha256_hex(&token))
    .bind(user_id)
    .bind(crate::storage::now())
    .execute(db)
    .await?;
    Ok(token)
}

/// Returns the user name an API token belongs to.
pub async fn check_api_token(db: &Db, token: &str) -> anyhow::Result<Option<String>> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT t.id, u.username FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_sha256 = ?",
    )
    .bind(sha256_hex(token))
    .fetch_optional(db)
    .await?;
    if let Some((id, _)) = &row {
        // Minute resolution is enough to see which tokens are in use, and spares a write per call.
        let now = Utc::now();
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")
            .bind(fmt_time(now))
            .bind(id)
            .bind(fmt_time(now - chrono::Duration::seconds(60)))
            .execute(db)
            .await?;
    }
    Ok(row.map(|(_, u)| u))
}

/// An API token as listed (the secret itself is never shown again).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ApiTokenInfo {
    pub id: i64,
    pub name: String,
    pub username: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

pub async fn list_api_tokens(db: &Db) -> anyhow::Result<Vec<ApiTokenInfo>> {
    let rows: Vec<(i64, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT t.id, t.name, u.username, t.created_at, t.last_used_at FROM api_tokens t
         JOIN users u ON u.id = t.user_id ORDER BY t.id",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, name, username, created_at, last_used_at)| ApiTokenInfo {
                id,
                name,
                username,
                created_at,
                last_used_at,
            },
        )
        .collect())
}

pub async fn delete_api_token(db: &Db, id: i64) -> anyhow::Result<bool> {
    let r = sqlx::query("DELETE FROM api_tokens WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub struct Session {
    pub username: String,
    pub csrf_token: String,
}

/// Opens a browser session; returns the cookie value and the CSRF token.
pub async fn create_session(db: &Db, user_id: i64, hours: u64) -> anyhow::Result<(String, String)> {
    let id = random_secret();
    let csrf = random_secret();
    let now = Utc::now();
    sqlx::query("INSERT INTO sessions (id_sha256, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(sha256_hex(&id))
        .bind(user_id)
        .bind(&csrf)
        .bind(fmt_time(now))
        .bind(fmt_time(now + chrono::Duration::hours(hours as i64)))
        .execute(db)
        .await?;
    Ok((id, csrf))
}

pub async fn find_session(db: &Db, cookie: &str) -> anyhow::Result<Option<Session>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT u.username, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id_sha256 = ? AND s.expires_at > ?",
    )
    .bind(sha256_hex(cookie))
    .bind(crate::storage::now())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(username, csrf_token)| Session {
        username,
        csrf_token,
    }))
}

pub async fn delete_session(db: &Db, cookie: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_sha256 = ? OR expires_at < ?")
        .bind(sha256_hex(cookie))
        .bind(crate::storage::now())
        .execute(db)
        .await?;
    Ok(())
}

/// Failed logins per (user name, client): how many, and when the last one was.
type FailureMap = HashMap<(String, Option<IpAddr>), (u32, Instant)>;

/// Slows down guessing: after `max_failures` failed logins for one user name from one client,
/// each further attempt must wait twice as long as the previous one (up to 15 minutes).
pub struct LoginThrottle {
    max_failures: u32,
    failures: Mutex<FailureMap>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32) -> Self {
        Self {
            max_failures: max_failures.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long the client must still wait before trying this user name again.
    pub fn wait(&self, username: &str, ip: Option<IpAddr>) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        let (count, last) = map.get(&(username.to_ascii_lowercase(), ip))?;
        if *count < self.max_failures {
            return None;
        }
        let exp = (*count - self.max_failures).min(10);
        let delay = Duration::from_secs((1u64 << exp).min(900));
        let elapsed = last.elapsed();
        (elapsed < delay).then(|| delay - elapsed)
    }

    pub fn failed(&self, username: &str, ip: Option<IpAddr>) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                map.retain(|_, (_, last)| last.elapsed() < Duration::from_secs(900));
            }
            let e = map
                .entry((username.to_ascii_lowercase(), ip))
                .or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, username: &str, ip: Option<IpAddr>) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&(username.to_ascii_lowercase(), ip));
        }
    }
}

/// Remembers recently verified Basic credentials for a minute, so a script polling the API does
/// not pay argon2 on every request. Keyed by a hash; the password itself is never kept.
#[derive(Default)]
pub struct BasicCache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl BasicCache {
    const TTL: Duration = Duration::from_secs(60);

    pub fn get(&self, key: &str) -> Option<String> {
        let map = self.entries.lock().ok()?;
        let (user, at) = map.get(key)?;
        (at.elapsed() < Self::TTL).then(|| user.clone())
    }

    pub fn put(&self, key: String, user: String) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() > 10_000 {
                map.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            }
            map.insert(key, (user, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn throttle_slows_after_max_failures() {
        let t = LoginThrottle::new(2);
        assert!(t.wait("admin", None).is_none());
        t.failed("admin", None);
        assert!(t.wait("admin", None).is_none());
        t.failed("Admin", None);
        assert!(t.wait("admin", None).is_some());
        assert!(t.wait("other", None).is_none());
        t.succeeded("admin", None);
        assert!(t.wait("admin", None).is_none());
    }
}
