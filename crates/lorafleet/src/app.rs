//! The running application: configuration, database, network and the channels that connect
//! them, built once at start and shared by every request.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;

use crate::auth::{BasicCache, HashPool, IntegrationToken, IpNet, LoginThrottle};
use crate::campaigns::drivers::{self, DriverRegistry};
use crate::config::{Config, NetworkKind};
use crate::devices::record::Retention;
use crate::ingest::writer::{Change, CommittedUplink, Writer};
use crate::network::chirpstack_v3::ChirpstackV3;
use crate::network::chirpstack_v4::{ChirpstackV4, Client as ChirpstackV4Client};
use crate::network::disabled::Disabled;
use crate::network::simulated::Simulated;
use crate::network::Network;
use crate::storage::{self, Db};

pub type AppState = Arc<App>;

/// Password checks running at once (each ~19 MiB and one core for tens of ms).
const HASH_WORKERS: usize = 2;
/// Password checks waiting for a worker; more are refused with 503 at once.
const HASH_QUEUE: usize = 8;

pub struct App {
    pub config: Config,
    pub db: Db,
    /// Where campaigns get their image bytes (the database, by default).
    pub images: Arc<dyn crate::firmware::store::ImageStore>,
    pub network: Arc<dyn Network>,
    pub writer: Writer,
    pub changes: broadcast::Sender<Change>,
    pub uplinks: broadcast::Sender<CommittedUplink>,
    pub integration_token: IntegrationToken,
    pub throttle: LoginThrottle,
    pub basic_cache: BasicCache,
    /// Where request passwords are checked (bounded; see [`HashPool`]).
    pub hash_pool: HashPool,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<IpNet>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub started_at: Instant,
    /// FUOTA campaign drivers and the runner's coordination.
    pub campaigns: Arc<crate::campaigns::runner::Campaigns>,
    /// Turns true when the server is stopping; long-lived responses (event streams) end then,
    /// so graceful shutdown does not wait for browsers to go away.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The MQTT ingest connection's state (`disabled` unless `integration.mqtt.enabled`).
    pub mqtt: Arc<crate::ingest::mqtt::MqttStatus>,
    /// The packages of the devices of running engine campaigns (the TS003 responder and the
    /// engine's wake-ups read it).
    pub running_packages: Arc<crate::engine::packages::RunningPackages>,
    /// The other instances on the same PostgreSQL database, if any (`cluster`).
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// What the first start generated and the operator must be told once.
#[derive(Debug, Default)]
pub struct FirstStart {
    pub admin_password: Option<String>,
    pub integration_token_generated: bool,
    /// The generated integration token; only its hash is stored, so this is the one chance
    /// to show it.
    pub integration_token: Option<String>,
}

impl App {
    /// Opens the database, creates the first user and the integration token if needed, and
    /// connects the network backend.
    pub async fn build(config: Config) -> anyhow::Result<(AppState, FirstStart)> {
        let v4 = v4_client(&config);
        let network: Arc<dyn Network> = match config.network.kind {
            NetworkKind::None => Arc::new(Disabled),
            NetworkKind::ChirpstackV4 => Arc::new(
                ChirpstackV4::with_client(
                    v4.clone().map_err(anyhow::Error::msg)?,
                    &config.network.chirpstack_v4,
                )
                .with_region(&config.network.region)?,
            ),
            NetworkKind::ChirpstackV3 => Arc::new(ChirpstackV3::new(
                &config.network.chirpstack_v3,
                crate::network::request_timeout(&config),
            )?),
            NetworkKind::Simulated => {
                let sim = Arc::new(Simulated::new(&config)?);
                return Self::build_with_simulation(config, sim).await;
            }
        };
        Self::assemble(config, network, v4, |_| {}).await
    }

    /// [`App::build`] with a network backend made elsewhere (tests, examples).
    pub async fn build_with_network(
        config: Config,
        network: Arc<dyn Network>,
    ) -> anyhow::Result<(AppState, FirstStart)> {
        let v4 = v4_client(&config);
        Self::assemble(config, network, v4, |_| {}).await
    }

    /// With the simulated network, started with the ingest writer once that exists; the caller
    /// may keep a handle on it (tests look inside the devices).
    pub async fn build_with_simulation(
        config: Config,
        sim: Arc<Simulated>,
    ) -> anyhow::Result<(AppState, FirstStart)> {
        let v4 = v4_client(&config);
        let network = sim.clone();
        Self::assemble(config, network, v4, move |writer| sim.start(writer.clone())).await
    }

    async fn assemble(
        config: Config,
        network: Arc<dyn Network>,
        v4: Result<ChirpstackV4Client, String>,
        with_writer: impl FnOnce(&Writer),
    ) -> anyhow::Result<(AppState, FirstStart)> {
        crate::server::data_dir::create(&config.server.data_dir)?;
        let db = storage::connect(&config.database_url())
            .await
            .map_err(|e| {
                let path = if config.server.database_url.is_empty() {
                    config.server.data_dir.join("lorafleet.db")
                } else {
                    storage::redact(&config.server.database_url).into()
                };
                anyhow::anyhow!(crate::server::data_dir::explain_database(&path, &e))
            })?;
        let mut first = FirstStart {
            admin_password: crate::auth::ensure_admin(
                &db,
                &config.auth.initial_admin_password,
                &config.server.data_dir,
            )
            .await?,
            ..Default::default()
        };
        let (integration_token, generated) =
            crate::auth::integration_token(&db, &config.integration.token).await?;
        first.integration_token_generated = generated.is_some();
        first.integration_token = generated;
        let (changes, _) = broadcast::channel(1024);
        let (uplinks, _) = broadcast::channel(4096);
        let retention = Retention {
            uplink_history: config.devices.uplink_history,
            event_history: config.devices.event_history,
            status_f_port: config.status_protocol.f_port,
        };
        let writer = Writer::spawn(db.clone(), retention, changes.clone(), uplinks.clone());
        let running_packages = Arc::new(crate::engine::packages::RunningPackages::default());
        let campaigns = Arc::new(crate::campaigns::runner::Campaigns::new(driver_registry(
            &config,
            v4,
            running_packages.clone(),
        )));
        // A network that produces device events itself (the simulation) starts here, now that
        // there is a writer to commit them with.
        with_writer(&writer);
        let is_postgres = db.is_postgres();
        let app = Arc::new(App {
            throttle: LoginThrottle::new(config.auth.max_failed_logins),
            basic_cache: BasicCache::default(),
            hash_pool: HashPool::new(HASH_WORKERS, HASH_QUEUE),
            trusted_proxies: config
                .server
                .trusted_proxies
                .iter()
                .filter_map(|p| IpNet::parse(p))
                .collect(),
            metrics: crate::metrics::handle(),
            config,
            images: Arc::new(crate::firmware::store::DatabaseStore::new(db.clone())),
            db,
            network,
            writer,
            changes,
            uplinks,
            integration_token,
            started_at: Instant::now(),
            campaigns,
            shutdown: tokio::sync::watch::channel(false).0,
            mqtt: Arc::default(),
            running_packages,
            cluster: Arc::new(crate::cluster::Cluster::new(is_postgres)),
        });
        crate::cluster::changes::spawn(&app);
        // After the metrics recorder is installed (above), so its series start at zero.
        crate::ingest::mqtt::spawn(&app.config, app.writer.clone(), app.mqtt.clone())?;
        if app.config.fuota.clock_sync {
            crate::engine::clock_sync::spawn(&app);
        }
        Ok((app, first))
    }

    /// Starts what runs beside the HTTP server: the first index of the firmware library and
    /// the campaign runner (which resumes running campaigns).
    pub fn spawn_background(self: &Arc<Self>) {
        crate::campaigns::runner::spawn(self.clone());
        crate::campaigns::drivers::engine::spawn_wakeups(self);
        let app = self.clone();
        tokio::spawn(async move {
            match crate::firmware::library::rescan(&app.db, &app.config).await {
                Ok(report) => {
                    if let Some(e) = &report.dir_error {
                        tracing::info!(error = %e, "firmware directory not indexed");
                    } else {
                        tracing::info!(
                            dir = %report.dir,
                            added = report.added.len(),
                            missing = report.missing.len(),
                            "firmware library indexed"
                        );
                    }
                    let _ = app.changes.send(Change::Firmware);
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "firmware library scan failed"),
            }
        });
    }

    /// Lists the configured applications' devices through the network server's API, so devices
    /// that have not sent since lorafleet started are there too.
    pub async fn sync_network_devices(&self) -> anyhow::Result<usize> {
        let devices = self.network.list_devices().await?;
        let n = crate::storage::devices::merge_remote(
            &self.db,
            &devices,
            &crate::storage::fmt_time(self.network.now()),
        )
        .await?;
        Ok(n)
    }
}

/// The campaign drivers this build has: ChirpStack v4's FUOTA service, chirpstack-fuota-server
/// v3 and lorafleet's own engine, configured from `config`.
fn driver_registry(
    config: &Config,
    v4: Result<ChirpstackV4Client, String>,
    running_packages: Arc<crate::engine::packages::RunningPackages>,
) -> DriverRegistry {
    let mut r = DriverRegistry::default();
    r.register(Arc::new(drivers::chirpstack_v4::ChirpstackV4Driver::new(
        config, v4,
    )));
    r.register(Arc::new(
        drivers::fuota_server_v3::FuotaServerV3Driver::new(config),
    ));
    r.register(Arc::new(drivers::engine::EngineDriver::new(
        running_packages,
    )));
    r
}

/// The ChirpStack v4 API client, made once: the network backend and the campaign driver share
/// its connection. An unusable setting is an error only where ChirpStack v4 is used.
fn v4_client(config: &Config) -> Result<ChirpstackV4Client, String> {
    ChirpstackV4Client::new(
        &config.network.chirpstack_v4,
        crate::network::request_timeout(config),
    )
}
