//! The `lorafleet` command.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lorafleet::config::Config;
use lorafleet::App;

#[derive(Parser)]
#[command(
    name = "lorafleet",
    version,
    about = "LoRaWAN fleet console and FUOTA server for ChirpStack"
)]
struct Cli {
    /// TOML configuration file (see `lorafleet configfile`); environment variables
    /// LORAFLEET__SECTION__KEY override it.
    #[arg(long, short, global = true, env = "LORAFLEET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the default configuration, commented.
    Configfile,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user and print it (it is shown only once).
    Create {
        /// What the token is for.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "admin")]
        user: String,
        /// `read` (GET only), `operate` (also requests, downlinks, campaigns) or `admin`.
        #[arg(long, default_value = "admin")]
        scope: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user or set a user's password; the password is read from standard input.
    SetPassword { username: String },
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.with_timer(SecondsUtc).init();
    }
}

/// Text logs are read by people: RFC 3339 UTC to the second, not to the microsecond.
struct SecondsUtc;

impl tracing_subscriber::fmt::time::FormatTime for SecondsUtc {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        write!(w, "{now}")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Configfile) = cli.command {
        print!("{}", lorafleet::config::DEFAULT_TOML);
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        None | Some(Command::Serve) => serve(config).await,
        Some(Command::Configfile) => Ok(()),
        Some(Command::Token {
            command: TokenCommand::Create { name, user, scope },
        }) => {
            let scope = lorafleet::auth::Scope::parse(&scope).with_context(|| {
                format!("--scope must be read, operate or admin, got {scope:?}")
            })?;
            let (app, _) = App::build_with_network(
                config,
                std::sync::Arc::new(lorafleet::network::disabled::Disabled),
            )
            .await?;
            let token = lorafleet::auth::create_api_token(&app.db, &user, &name, scope).await?;
            println!("{token}");
            Ok(())
        }
        Some(Command::User {
            command: UserCommand::SetPassword { username },
        }) => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(
                password.len() >= 8,
                "the password must have at least 8 characters"
            );
            let (app, _) = App::build_with_network(
                config,
                std::sync::Arc::new(lorafleet::network::disabled::Disabled),
            )
            .await?;
            lorafleet::auth::create_user(&app.db, &username, password).await?;
            println!("password set for {username}; its sessions have ended");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let bind = config.server.bind.clone();
    // Before anything opens the database or the simulation starts producing events.
    let _lock = lorafleet::server::data_dir::lock(&config.server.data_dir)?;
    let fd_limit = lorafleet::server::raise_fd_limit();
    let limits = lorafleet::server::Limits::new(&config.server, fd_limit);
    let (app, first) = App::build(config).await?;
    if let Some(password) = &first.admin_password {
        println!("\n  First start: created user \"admin\" with password  {password}");
        println!(
            "  (also written to {}; change it with `lorafleet user set-password admin`)\n",
            app.config
                .server
                .data_dir
                .join("initial-admin-password")
                .display()
        );
    }
    if first.integration_token_generated {
        println!("  Generated the integration token. In ChirpStack, add an HTTP integration:");
        println!(
            "    Event endpoint URL:  http://<this host>:{}/api/integrations/chirpstack",
            port_of(&bind)
        );
        println!(
            "    Headers:             Authorization = Bearer {}",
            first.integration_token.as_deref().unwrap_or_default()
        );
        println!("  (ChirpStack v3: same URL and header in the application's HTTP integration.)\n");
    }
    if app.network.kind() == lorafleet::config::NetworkKind::Simulated {
        println!(
            "  Network: SIMULATED, {} virtual devices (time x{}). Set network.kind to \"chirpstack-v4\" or \"chirpstack-v3\" for a real network.\n",
            app.config.network.simulated.devices, app.config.network.simulated.time_scale
        );
    }
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("listening on {bind} (server.bind)"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, network = app.network.kind().as_str(), "lorafleet listening");
    // With `server.bind` on port 0 (tests, scripts) the port is only known now: say it on
    // stdout and in the data dir, for whoever started lorafleet. The file first: whoever reads
    // the line may look for the file at once.
    let _address_file = AddressFile::write(&app.config.server.data_dir, address)?;
    println!("listening on http://{address}");

    // Only the server holding the data dir's lock may do this: a CLI command running beside it
    // would delete the uploads it is receiving.
    let stale = lorafleet::firmware::library::remove_stale_uploads(&app.config).await;
    if stale > 0 {
        tracing::info!(
            files = stale,
            "removed uploads a previous run left unfinished"
        );
    }
    app.spawn_background();
    let sync_app = app.clone();
    tokio::spawn(async move {
        // Every 10 minutes; after a failure sooner (30 s, doubling), since ChirpStack is often
        // still starting when lorafleet is.
        let mut retry = Duration::from_secs(30);
        loop {
            let wait = match sync_app.sync_network_devices().await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(devices = n, "listed devices from the network server");
                    }
                    retry = Duration::from_secs(30);
                    Duration::from_secs(600)
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = retry.as_secs(), "could not list devices from the network server");
                    let wait = retry;
                    retry = (retry * 2).min(Duration::from_secs(600));
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    });

    tracing::info!(
        max_connections = limits.max_connections,
        open_files_limit = fd_limit,
        "connection limits"
    );
    lorafleet::server::serve(app.clone(), listener, limits, shutdown_signal()).await?;
    // Another instance on the database takes this one's campaigns over at once.
    lorafleet::campaigns::runner::release(&app).await;
    tracing::info!("stopped");
    app.db.close().await;
    Ok(())
}

/// `<data_dir>/listen-address`: the bound address while lorafleet serves, gone once it stopped.
struct AddressFile(PathBuf);

impl AddressFile {
    fn write(data_dir: &std::path::Path, address: std::net::SocketAddr) -> anyhow::Result<Self> {
        let path = data_dir.join("listen-address");
        // Written whole under another name and renamed, so a reader never sees half an address.
        let partial = data_dir.join("listen-address.partial");
        std::fs::write(&partial, format!("{address}\n"))
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for AddressFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn port_of(bind: &str) -> &str {
    bind.rsplit(':').next().unwrap_or("8091")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
