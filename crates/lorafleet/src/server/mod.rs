//! Serving HTTP so that slow, idle or hostile clients cannot wear the server down: a deadline
//! for request headers, a deadline for connections that move no bytes, a cap on connections
//! below the file-descriptor limit, and a shutdown that ends within a bounded time.

pub mod data_dir;
mod io;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::AppState;

/// File descriptors kept free of client connections: the database and its WAL, firmware files
/// being hashed or sent, the network clients, the listener itself.
const RESERVED_FDS: u64 = 128;

/// The connection limits in force.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The configured limits, the connection cap lowered to fit `fd_limit`.
    pub fn new(config: &ServerConfig, fd_limit: u64) -> Limits {
        let by_fds =
            usize::try_from(fd_limit.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
        Limits {
            header_timeout: Duration::from_secs(config.header_timeout_s.max(1)),
            idle_timeout: Duration::from_secs(config.idle_timeout_s.max(1)),
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_s),
            max_connections: config.max_connections.clamp(1, by_fds),
        }
    }
}

/// Raises the soft limit on open files to the hard limit where the OS allows it, and returns
/// the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit");
            rlimit::Resource::NOFILE
                .get()
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// One open connection, as the cap sees it.
struct Conn {
    /// Milliseconds since `Registry::epoch` at the last byte read or written.
    last_io_ms: AtomicU64,
    evict: Notify,
}

/// The open connections; at the cap, admitting one closes the one idle the longest, so a flood
/// of idle sockets cannot keep a monitoring probe or the integration out.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn new() -> Self {
        Registry {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn admit(self: &Arc<Self>, cap: usize) -> Admitted {
        let conn = Arc::new(Conn {
            last_io_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        while conns.len() >= cap {
            let oldest = conns
                .iter()
                // Ties (sockets accepted in the same millisecond) go to the older one.
                .min_by_key(|(id, c)| (c.last_io_ms.load(Ordering::Relaxed), **id))
                .map(|(id, _)| *id);
            let Some(oldest) = oldest.and_then(|id| conns.remove(&id)) else {
                break;
            };
            ::metrics::counter!("lorafleet_connections_evicted_total").increment(1);
            oldest.evict.notify_one();
        }
        conns.insert(id, conn.clone());
        Admitted {
            id,
            conn,
            registry: self.clone(),
        }
    }

    fn open(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A connection's place in the registry, given back when its task ends (or is aborted).
struct Admitted {
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Admitted {
    fn touch(&self) {
        self.conn
            .last_io_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.conn.last_io_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.registry.now_ms().saturating_sub(last))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut conns = self
            .registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        conns.remove(&self.id);
    }
}

/// Serves the app on `listener` until `stop` completes, then stops accepting, lets requests in
/// flight finish, commits what the writer holds, and returns within `limits.shutdown_timeout`.
pub async fn serve(
    app: AppState,
    listener: TcpListener,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let router = crate::web::router(app.clone());
    let registry = Arc::new(Registry::new());
    let (draining_tx, draining) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let admitted = registry.admit(limits.max_connections);
                    ::metrics::gauge!("lorafleet_connections_open").set(registry.open() as f64);
                    let router = router.clone();
                    let draining = draining.clone();
                    tasks.spawn(connection(stream, addr, router, limits, admitted, draining));
                }
                Err(e) => {
                    // Out of descriptors or similar: connections end soon, accept again then.
                    tracing::warn!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let deadline = Instant::now() + limits.shutdown_timeout;
    drop(listener);
    tracing::info!(
        connections = tasks.len(),
        "stopped accepting; finishing requests in flight"
    );
    let _ = app.shutdown.send(true);
    let _ = draining_tx.send(true);
    let drained = tokio::time::timeout_at(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "closing connections still open at server.shutdown_timeout_s"
        );
        tasks.abort_all();
    }
    if tokio::time::timeout_at(deadline, app.writer.flush())
        .await
        .is_err()
    {
        tracing::warn!("the database writer did not finish within server.shutdown_timeout_s");
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    router: axum::Router,
    limits: Limits,
    admitted: Admitted,
    mut draining: watch::Receiver<bool>,
) {
    let admitted = Arc::new(admitted);
    let watched = io::Watched::new(stream, {
        let admitted = admitted.clone();
        move || admitted.touch()
    });
    let service = tower::ServiceExt::map_request(
        router,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(addr));
            req
        },
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(watched), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut shutting = false;
    loop {
        if !shutting && *draining.borrow() {
            shutting = true;
            conn.as_mut().graceful_shutdown();
        }
        let idle_left = limits.idle_timeout.saturating_sub(admitted.idle_for());
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = draining.changed(), if !shutting => {}
            _ = admitted.conn.evict.notified() => return,
            _ = tokio::time::sleep(idle_left) => {
                if admitted.idle_for() >= limits.idle_timeout {
                    return;
                }
            }
        }
    }
}
