//! Users (argon2id password hashes), API tokens with scopes, browser sessions, and what keeps
//! login from being used to wear the server down: input limits, a bounded hashing pool and
//! bounded per-client back-off (counted in the database, so instances on one database agree).
//! The SQL lives in `storage::{users, sessions, tokens, login_failures}`.

use std::collections::{HashMap, HashSet};

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::storage::{self, Db};

pub const SESSION_COOKIE: &str = "lorafleet_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Longest accepted user name, in bytes.
pub const MAX_USERNAME_BYTES: usize = 64;
/// Longest accepted password, in bytes: far above any passphrase, far below what would make
/// hashing or parsing costly.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Verified for unknown user names, so they cost what a known one costs. Same parameters as
/// `Argon2::default()` (a unit test holds them together).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$hV2eYZ6P7tpJVlJmm4Fq1Sm8Hzd8YAbwhFgTqBl+Rko";

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

/// Which credential field is out of bounds, and why; checked before anything is hashed.
pub fn check_lengths(username: &str, password: &str) -> Result<(), (&'static str, String)> {
    if username.is_empty() {
        return Err(("username", "user name is required".into()));
    }
    if username.len() > MAX_USERNAME_BYTES {
        return Err((
            "username",
            format!("user name is longer than {MAX_USERNAME_BYTES} bytes"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err((
            "password",
            format!("password is longer than {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A user name as it may appear in a log line: control characters escaped (a newline in a name
/// must not forge a line) and cut to the length a real name can have.
pub fn log_name(name: &str) -> String {
    let cut: String = name.chars().take(MAX_USERNAME_BYTES).collect();
    let mut out: String = cut.escape_debug().collect();
    if cut.len() < name.len() {
        out.push_str(&format!("...({} bytes)", name.len()));
    }
    out
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
    if storage::users::count(db).await? > 0 {
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

/// Creates a user or sets a user's password. Setting it ends the user's sessions, and Basic
/// credentials cached under the old hash stop matching (see [`BasicCache`]).
pub async fn create_user(db: &Db, username: &str, password: &str) -> anyhow::Result<i64> {
    if let Err((field, msg)) = check_lengths(username, password) {
        anyhow::bail!("{field}: {msg}");
    }
    let hash = hash_password(password)?;
    storage::users::upsert(db, username, &hash).await
}

/// Checks a username and password; returns the user id. Unbounded: for the command line and
/// tests. Requests go through [`HashPool`].
pub async fn check_password(
    db: &Db,
    username: &str,
    password: &str,
) -> anyhow::Result<Option<i64>> {
    let row = storage::users::credentials(db, username).await?;
    let password = password.to_string();
    let result = tokio::task::spawn_blocking(move || match row {
        Some((id, hash)) => verify_password(&password, &hash).then_some(id),
        None => {
            let _ = verify_password(&password, DUMMY_HASH);
            None
        }
    })
    .await?;
    Ok(result)
}

/// What an API token may do. Ordered: each scope includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET only.
    Read,
    /// Also status requests, downlinks, firmware and campaigns.
    Operate,
    /// Also users, tokens and settings.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// The scope of a user's role (`viewer`, `operator`, `admin`); an unknown role (which the
    /// table's CHECK does not allow) reads as the least.
    pub fn of_role(role: &str) -> Scope {
        match role {
            "admin" => Scope::Admin,
            "operator" => Scope::Operate,
            _ => Scope::Read,
        }
    }

    /// The role whose scope this is.
    pub fn role_name(self) -> &'static str {
        match self {
            Scope::Read => "viewer",
            Scope::Operate => "operator",
            Scope::Admin => "admin",
        }
    }

    pub fn parse_role(role: &str) -> Option<Scope> {
        ["viewer", "operator", "admin"]
            .contains(&role)
            .then(|| Scope::of_role(role))
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "operate" => Some(Scope::Operate),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Creates an API token for a user; the token is returned once and stored only as a hash.
pub async fn create_api_token(
    db: &Db,
    username: &str,
    name: &str,
    scope: Scope,
) -> anyhow::Result<String> {
    let user_id = storage::users::id_of(db, username)
        .await?
        .with_context(|| format!("no user {username:?}"))?;
    let token = format!("lft_{}", random_secret());
    storage::tokens::insert(db, user_id, name, &sha256_hex(&token), scope.as_str()).await?;
    Ok(token)
}

/// The user name an API token belongs to and what it may do: its scope, never more than its
/// user's role now. Looked up on every request, so a revoked token, a disabled user or a
/// lowered role takes effect at once.
pub async fn check_api_token(db: &Db, token: &str) -> anyhow::Result<Option<(String, Scope)>> {
    let Some(owner) = storage::tokens::find_and_touch(db, &sha256_hex(token)).await? else {
        return Ok(None);
    };
    // A scope the table's CHECK does not allow cannot be there; read-only is the safe reading.
    let scope = Scope::parse(&owner.scope).unwrap_or(Scope::Read);
    Ok(Some((
        owner.username,
        scope.min(Scope::of_role(&owner.role)),
    )))
}

pub use storage::tokens::ApiTokenInfo;

pub async fn list_api_tokens(db: &Db) -> anyhow::Result<Vec<ApiTokenInfo>> {
    storage::tokens::list(db).await
}

pub async fn delete_api_token(db: &Db, id: i64) -> anyhow::Result<bool> {
    storage::tokens::delete(db, id).await
}

/// The token ChirpStack's integration sends: as configured, or generated and kept as a hash
/// (which an admin can rotate while the server runs, hence the lock).
#[derive(Debug)]
pub enum IntegrationToken {
    Configured(String),
    Sha256(std::sync::RwLock<String>),
}

impl IntegrationToken {
    pub fn matches(&self, given: &str) -> bool {
        match self {
            IntegrationToken::Configured(t) => constant_time_eq(given.as_bytes(), t.as_bytes()),
            IntegrationToken::Sha256(h) => {
                let h = h.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                constant_time_eq(sha256_hex(given).as_bytes(), h.as_bytes())
            }
        }
    }

    /// `configured` (integration.token: only the configuration can change it) or `generated`.
    pub fn source(&self) -> &'static str {
        match self {
            IntegrationToken::Configured(_) => "configured",
            IntegrationToken::Sha256(_) => "generated",
        }
    }

    /// Reads a generated token's hash again: another instance on the database rotated it.
    pub async fn reload(&self, db: &Db) -> anyhow::Result<()> {
        let IntegrationToken::Sha256(current) = self else {
            return Ok(());
        };
        if let Some(h) = storage::tokens::integration_sha256(db, sha256_hex).await? {
            *current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = h;
        }
        Ok(())
    }

    /// Replaces a generated token by a new one, stored before the old one stops working, and
    /// returns it (the one time it is shown). `None` for a configured token.
    pub async fn rotate(&self, db: &Db) -> anyhow::Result<Option<String>> {
        let IntegrationToken::Sha256(current) = self else {
            return Ok(None);
        };
        let t = random_secret();
        let h = sha256_hex(&t);
        storage::tokens::set_integration_sha256(db, &h).await?;
        *current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = h;
        Ok(Some(t))
    }
}

/// The integration token to check against, and the token itself when it was generated just
/// now (the only moment it can be shown).
pub async fn integration_token(
    db: &Db,
    configured: &str,
) -> anyhow::Result<(IntegrationToken, Option<String>)> {
    if !configured.is_empty() {
        return Ok((IntegrationToken::Configured(configured.to_string()), None));
    }
    if let Some(h) = storage::tokens::integration_sha256(db, sha256_hex).await? {
        return Ok((IntegrationToken::Sha256(h.into()), None));
    }
    let t = random_secret();
    let h = sha256_hex(&t);
    storage::tokens::set_integration_sha256(db, &h).await?;
    Ok((IntegrationToken::Sha256(h.into()), Some(t)))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct Session {
    pub username: String,
    pub csrf_token: String,
    /// What the user's role allows.
    pub scope: Scope,
}

/// Opens a browser session; returns the cookie value and the CSRF token.
pub async fn create_session(db: &Db, user_id: i64, hours: u64) -> anyhow::Result<(String, String)> {
    let id = random_secret();
    let csrf = random_secret();
    let expires = Utc::now() + chrono::Duration::hours(hours as i64);
    storage::sessions::insert(db, &sha256_hex(&id), user_id, &csrf, expires).await?;
    Ok((id, csrf))
}

pub async fn find_session(db: &Db, cookie: &str) -> anyhow::Result<Option<Session>> {
    let row = storage::sessions::find(db, &sha256_hex(cookie)).await?;
    Ok(row.map(|r| Session {
        username: r.username,
        csrf_token: r.csrf_token,
        scope: Scope::of_role(&r.role),
    }))
}

pub async fn delete_session(db: &Db, cookie: &str) -> anyhow::Result<()> {
    storage::sessions::delete(db, &sha256_hex(cookie)).await
}

/// A failure record forgets itself after the longest back-off.
const FAILURE_MEMORY: Duration = Duration::from_secs(900);
/// Records kept per table: a flood of made-up names or addresses evicts the oldest records
/// instead of growing memory.
const FAILURE_CAPACITY: usize = 4096;

/// The address a client is counted by: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber usually holds a whole /64, so single IPv6 addresses would be free to vary).
pub fn address_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    match ip? {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => Some(IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into())),
        },
        v4 => Some(v4),
    }
}

/// How long to wait after `count` failures when `allowed` are free, the last one `elapsed`
/// ago: doubling, up to 15 min.
fn backoff(count: i64, allowed: u32, elapsed: Duration) -> Option<Duration> {
    let allowed = i64::from(allowed);
    if count < allowed {
        return None;
    }
    let exp = (count - allowed).min(10);
    let delay = Duration::from_secs((1u64 << exp).min(FAILURE_MEMORY.as_secs()));
    delay.checked_sub(elapsed).filter(|d| !d.is_zero())
}

/// Slows down guessing, per client address: after `max_failures` failed logins for one user
/// name from one address, or four times as many over all names from one address, each further
/// attempt from that address must wait twice as long as the previous one (up to 15 minutes).
/// Another address is not slowed down, so a flood cannot lock the real admin out. The counts
/// live in the database (`storage::login_failures`), so every instance on it agrees.
pub struct LoginThrottle {
    max_failures: u32,
    capacity: i64,
}

impl LoginThrottle {
    pub fn new(max_failures: u32) -> Self {
        Self::with_capacity(max_failures, FAILURE_CAPACITY)
    }

    fn with_capacity(max_failures: u32, capacity: usize) -> Self {
        Self {
            max_failures: max_failures.max(1),
            capacity: i64::try_from(capacity.max(1)).unwrap_or(i64::MAX),
        }
    }

    fn name_key(username: &str, ip: Option<IpAddr>) -> String {
        let cut: String = username.chars().take(MAX_USERNAME_BYTES).collect();
        format!("{}|{}", cut.to_lowercase(), Self::address(ip))
    }

    fn address(ip: Option<IpAddr>) -> String {
        address_key(ip).map_or_else(|| "-".to_string(), |a| a.to_string())
    }

    fn since() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() - chrono::Duration::seconds(FAILURE_MEMORY.as_secs() as i64)
    }

    /// How long the client must still wait before trying this user name again.
    pub async fn wait(
        &self,
        db: &Db,
        username: &str,
        ip: Option<IpAddr>,
    ) -> storage::Result<Option<Duration>> {
        use storage::login_failures::{get, Kind};
        let elapsed = |last: &str| {
            storage::parse_time(last)
                .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
                .unwrap_or_default()
        };
        let by_name = get(db, Kind::Name, &Self::name_key(username, ip), Self::since())
            .await?
            .and_then(|(c, last)| backoff(c, self.max_failures, elapsed(&last)));
        let by_address = get(db, Kind::Address, &Self::address(ip), Self::since())
            .await?
            .and_then(|(c, last)| backoff(c, self.max_failures.saturating_mul(4), elapsed(&last)));
        Ok(by_name.max(by_address))
    }

    pub async fn failed(&self, db: &Db, username: &str, ip: Option<IpAddr>) -> storage::Result<()> {
        use storage::login_failures::{fail, Kind};
        let now = chrono::Utc::now();
        let name = Self::name_key(username, ip);
        fail(db, Kind::Name, &name, now, Self::since(), self.capacity).await?;
        fail(
            db,
            Kind::Address,
            &Self::address(ip),
            now,
            Self::since(),
            self.capacity,
        )
        .await
    }

    /// Clears the name's record. The address's record stays: one account an attacker owns
    /// must not reset the back-off of its guesses at others.
    pub async fn succeeded(
        &self,
        db: &Db,
        username: &str,
        ip: Option<IpAddr>,
    ) -> storage::Result<()> {
        let key = Self::name_key(username, ip);
        storage::login_failures::clear(db, storage::login_failures::Kind::Name, &key).await
    }

    /// Records held (names, addresses): bounded by the capacity whatever the traffic.
    pub async fn records(&self, db: &Db) -> storage::Result<(usize, usize)> {
        use storage::login_failures::{count, Kind};
        let n = count(db, Kind::Name).await?;
        let a = count(db, Kind::Address).await?;
        Ok((n as usize, a as usize))
    }
}

/// Why the hashing pool refused to check a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolBusy {
    /// Every worker and queue place is taken.
    Full,
    /// This address already has a password being checked.
    SameClient,
}

/// Runs argon2 for requests on a few workers: each check costs ~19 MiB and tens of ms, so
/// unbounded checks let a flood take all memory and CPU. Requests beyond the queue are refused
/// at once, and one address has at most one check in progress, so a flood from one address
/// leaves a worker for everyone else.
pub struct HashPool {
    workers: Arc<Semaphore>,
    admitted: Semaphore,
    in_flight: Mutex<HashSet<Option<IpAddr>>>,
}

/// Removes the address from the in-progress set when the check ends or is abandoned.
struct InFlight<'a> {
    pool: &'a HashPool,
    ip: Option<IpAddr>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.pool.in_flight.lock() {
            set.remove(&self.ip);
        }
    }
}

impl HashPool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers: Arc::new(Semaphore::new(workers)),
            admitted: Semaphore::new(workers + queue),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    fn enter(&self, ip: Option<IpAddr>) -> Result<InFlight<'_>, PoolBusy> {
        let ip = address_key(ip);
        let mut set = self.in_flight.lock().map_err(|_| PoolBusy::Full)?;
        if !set.insert(ip) {
            return Err(PoolBusy::SameClient);
        }
        Ok(InFlight { pool: self, ip })
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) a dummy hash is checked
    /// the same way, so both cost the same, and the answer is false.
    pub async fn verify(
        &self,
        ip: Option<IpAddr>,
        password: &str,
        hash: Option<String>,
    ) -> Result<bool, PoolBusy> {
        // The address first: a one-address flood is turned away without taking queue places.
        let _in_flight = self.enter(ip)?;
        let _admitted = self.admitted.try_acquire().map_err(|_| PoolBusy::Full)?;
        let worker = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolBusy::Full)?;
        let password = password.to_string();
        // The worker permit moves into the blocking task: a client that goes away does not free
        // a worker that is still hashing.
        let checked = tokio::task::spawn_blocking(move || {
            let _worker = worker;
            let known = hash.is_some();
            let ok = verify_password(&password, hash.as_deref().unwrap_or(DUMMY_HASH));
            known && ok
        })
        .await;
        checked.map_err(|_| PoolBusy::Full)
    }
}

/// Remembers recently verified Basic credentials for a minute, so a script polling the API does
/// not pay argon2 on every request. Keyed by a hash of the credentials; the password itself is
/// never kept. Each entry holds the password hash it was verified against: the caller compares
/// it with the stored one, so a changed password (by the API or the command line, in another
/// process) ends the entry at once.
#[derive(Default)]
pub struct BasicCache {
    entries: Mutex<HashMap<String, CachedBasic>>,
}

#[derive(Clone)]
pub struct CachedBasic {
    pub username: String,
    pub password_hash: String,
    at: Instant,
}

impl BasicCache {
    const TTL: Duration = Duration::from_secs(60);
    const CAPACITY: usize = 1024;

    pub fn get(&self, key: &str) -> Option<CachedBasic> {
        let map = self.entries.lock().ok()?;
        let e = map.get(key)?;
        (e.at.elapsed() < Self::TTL).then(|| e.clone())
    }

    pub fn put(&self, key: String, username: String, password_hash: String) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= Self::CAPACITY {
                map.retain(|_, e| e.at.elapsed() < Self::TTL);
            }
            if map.len() >= Self::CAPACITY {
                map.clear();
            }
            map.insert(
                key,
                CachedBasic {
                    username,
                    password_hash,
                    at: Instant::now(),
                },
            );
        }
    }

    pub fn remove(&self, key: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(key);
        }
    }

    /// Forgets every entry (credentials changed on another instance).
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }
}

/// An address or a CIDR block, for `server.trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer's, or when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left are
/// whatever the client chose to send).
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_for.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
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
    fn dummy_hash_costs_what_a_real_one_costs() {
        let real = hash_password("x").unwrap();
        let params = |h: &str| {
            let p = PasswordHash::new(h).unwrap();
            (
                p.algorithm.to_string(),
                p.params.to_string(),
                p.hash.map(|o| o.len()),
            )
        };
        assert_eq!(params(DUMMY_HASH), params(&real));
    }

    /// A database of the test's own (SQLite in a temporary directory).
    async fn test_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = storage::connect(&url).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn throttle_slows_after_max_failures() {
        let (_dir, db) = test_db().await;
        let t = LoginThrottle::new(2);
        let wait = |name: &'static str| {
            let (t, db) = (&t, &db);
            async move { t.wait(db, name, None).await.unwrap() }
        };
        assert!(wait("admin").await.is_none());
        t.failed(&db, "admin", None).await.unwrap();
        assert!(wait("admin").await.is_none());
        t.failed(&db, "Admin", None).await.unwrap();
        assert!(wait("admin").await.is_some());
        assert!(wait("other").await.is_none());
        t.succeeded(&db, "admin", None).await.unwrap();
        assert!(wait("admin").await.is_none());
    }

    #[tokio::test]
    async fn made_up_names_slow_down_their_address_only() {
        let (_dir, db) = test_db().await;
        let t = LoginThrottle::new(2);
        let attacker: Option<IpAddr> = "192.0.2.1".parse().ok();
        let admin: Option<IpAddr> = "192.0.2.2".parse().ok();
        for i in 0..8 {
            let name = format!("u{i}");
            assert!(
                t.wait(&db, &name, attacker).await.unwrap().is_none(),
                "attempt {i}"
            );
            t.failed(&db, &name, attacker).await.unwrap();
        }
        assert!(t
            .wait(&db, "never-tried", attacker)
            .await
            .unwrap()
            .is_some());
        assert!(t.wait(&db, "admin", admin).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn ipv6_clients_are_counted_by_their_slash_64() {
        let (_dir, db) = test_db().await;
        let t = LoginThrottle::new(1);
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        for i in 0..4 {
            t.failed(&db, &format!("u{i}"), ip(&format!("2001:db8:1:2::{i}")))
                .await
                .unwrap();
        }
        assert!(t
            .wait(&db, "admin", ip("2001:db8:1:2:ffff::1"))
            .await
            .unwrap()
            .is_some());
        assert!(t
            .wait(&db, "admin", ip("2001:db8:1:3::1"))
            .await
            .unwrap()
            .is_none());
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[tokio::test]
    async fn failure_records_stay_bounded() {
        let (_dir, db) = test_db().await;
        let t = LoginThrottle::with_capacity(3, 16);
        let ip: Option<IpAddr> = "192.0.2.1".parse().ok();
        for i in 0..100 {
            t.failed(&db, &format!("name-{i}"), ip).await.unwrap();
        }
        assert_eq!(t.records(&db).await.unwrap(), (16, 1));
        for i in 0..100u32 {
            t.failed(&db, "x", Some(IpAddr::from(i.to_be_bytes())))
                .await
                .unwrap();
        }
        assert_eq!(t.records(&db).await.unwrap(), (16, 16));
    }

    #[test]
    fn backoff_doubles_and_runs_out() {
        assert_eq!(backoff(1, 2, Duration::ZERO), None);
        assert_eq!(backoff(2, 2, Duration::ZERO), Some(Duration::from_secs(1)));
        assert_eq!(
            backoff(4, 2, Duration::from_secs(1)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(backoff(4, 2, Duration::from_secs(4)), None);
        assert_eq!(backoff(99, 2, Duration::ZERO), Some(FAILURE_MEMORY));
    }

    #[test]
    fn log_names_are_escaped_and_cut() {
        assert_eq!(log_name("admin"), "admin");
        assert_eq!(log_name("a\nINFO forged"), "a\\nINFO forged");
        let long = "x".repeat(1_000_000);
        let logged = log_name(&long);
        assert!(logged.len() < 100, "{}", logged.len());
        assert!(logged.ends_with("...(1000000 bytes)"));
    }

    #[test]
    fn lengths_are_checked_per_field() {
        assert!(check_lengths("admin", "pw").is_ok());
        assert_eq!(check_lengths("", "pw").unwrap_err().0, "username");
        assert_eq!(
            check_lengths(&"u".repeat(65), "pw").unwrap_err().0,
            "username"
        );
        assert!(check_lengths(&"u".repeat(64), &"p".repeat(1024)).is_ok());
        assert_eq!(
            check_lengths("admin", &"p".repeat(1025)).unwrap_err().0,
            "password"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [
            IpNet::parse("10.0.0.0/8").unwrap(),
            IpNet::parse("::1").unwrap(),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_address(ip("192.0.2.9"), &["1.2.3.4"], &trusted),
            ip("192.0.2.9")
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), &["1.2.3.4"], &trusted),
            ip("1.2.3.4")
        );
        // A client-sent entry left of the real one is ignored; trusted hops are skipped.
        assert_eq!(
            client_address(ip("10.1.2.3"), &["6.6.6.6, 1.2.3.4", "10.9.9.9"], &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), &[], &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), &["junk"], &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), &["1.2.3.4"], &trusted),
            ip("1.2.3.4")
        );
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[tokio::test]
    async fn hash_pool_refuses_beyond_its_queue_and_a_second_check_per_address() {
        let pool = Arc::new(HashPool::new(1, 1));
        let a: Option<IpAddr> = "192.0.2.1".parse().ok();
        let b: Option<IpAddr> = "192.0.2.2".parse().ok();
        let c: Option<IpAddr> = "192.0.2.3".parse().ok();
        let p1 = pool.clone();
        let first = tokio::spawn(async move { p1.verify(a, "x", None).await });
        // Wait until the first check holds its place (bounded: it is admitted at once).
        for _ in 0..1000 {
            if pool.admitted.available_permits() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.verify(a, "x", None).await, Err(PoolBusy::SameClient));
        let p2 = pool.clone();
        let second = tokio::spawn(async move { p2.verify(b, "x", None).await });
        for _ in 0..1000 {
            if pool.admitted.available_permits() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.verify(c, "x", None).await, Err(PoolBusy::Full));
        assert_eq!(first.await.unwrap(), Ok(false));
        assert_eq!(second.await.unwrap(), Ok(false));
        let h = hash_password("right").unwrap();
        assert_eq!(pool.verify(c, "right", Some(h)).await, Ok(true));
    }
}
