//! The real `lorafleet` process: started with the test's configuration as a TOML file, bound to
//! port 0 and found at the address it reports, its stdout and stderr kept in a file per start in
//! the test's temporary directory and printed when the test fails.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use lorafleet::config::Config;

use super::TestConfig;

/// What lorafleet prints once it is bound; the rest of the line is the base URL.
const LISTENING: &str = "listening on ";
/// A bound for a wedged start, not a speed target: a loaded 2-core machine once took over 30 s
/// to start twenty simulated devices.
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct TestBinary {
    /// `http://127.0.0.1:PORT` as the running process reported it (a restart changes it).
    pub base: String,
    pub http: reqwest::Client,
    pub child: tokio::process::Child,
    config: TestConfig,
    starts: u32,
}

/// Starts `lorafleet serve` and waits until it reports its address; panics with its output if
/// it exits first or says nothing within `START_TIMEOUT`.
pub async fn spawn_binary(config: TestConfig) -> TestBinary {
    match try_spawn_binary(config).await {
        Ok(binary) => binary,
        Err(why) => panic!("{why}"),
    }
}

/// `spawn_binary` for tests of start-up failures: the error holds the exit status and output.
pub async fn try_spawn_binary(config: TestConfig) -> Result<TestBinary, String> {
    let (child, address) = launch(&config, 1);
    let mut binary = TestBinary {
        base: String::new(),
        http: reqwest::Client::new(),
        child,
        config,
        starts: 1,
    };
    match reported(address).await {
        Ok(base) => {
            binary.base = base;
            Ok(binary)
        }
        Err(why) => {
            let _ = binary.child.start_kill();
            let status = binary.child.wait().await;
            Err(format!(
                "lorafleet {why} ({status:?}); its output:\n{}",
                binary.output()
            ))
        }
    }
}

/// Starts `lorafleet serve` for a start that must fail and waits up to `limit` for it to exit:
/// its exit status and output. Panics if it reports an address instead, or outlives `limit`.
pub async fn run_binary_to_exit(config: &TestConfig, limit: Duration) -> (ExitStatus, String) {
    let (mut child, address) = launch(config, 1);
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("lorafleet still ran after {limit:?}"))
        .unwrap();
    // The output is complete once the copy of its stdout ends (the sender is dropped then).
    let reported = address.await;
    let output = std::fs::read_to_string(log_path(config, 1)).unwrap_or_default();
    assert!(
        reported.is_err(),
        "lorafleet started instead of failing; its output:\n{output}"
    );
    (status, output)
}

/// Runs a `lorafleet` command (`user`, `token`, ...) to its end, as an operator would next to
/// the server of `config`: on its configuration (written to a file beside its data dir, so
/// nothing comes from the caller's shell), with `stdin` as its input.
pub fn cli(config: &Config, args: &[&str], stdin: &str) -> Output {
    let root = config
        .server
        .data_dir
        .parent()
        .expect("the test's data dir is in its temporary directory");
    let config_file = root.join("lorafleet-cli.toml");
    std::fs::write(&config_file, toml::to_string(config).unwrap()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lorafleet"));
    command
        .arg("--config")
        .arg(&config_file)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("LORAFLEET")) {
        command.env_remove(name);
    }
    let mut child = command.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

impl TestBinary {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `127.0.0.1:PORT`, for tests that speak TCP themselves.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Sends a signal (`-TERM`, `-INT`) to the process, as an operator's `kill` would.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {signal} {}", self.pid());
    }

    /// Waits for the process to exit; panics (its output printed) if it outlives `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("lorafleet did not exit within {limit:?}"))
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("lorafleet is running")
    }

    pub fn config(&self) -> &TestConfig {
        &self.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.server.data_dir
    }

    /// SIGKILL, as a crash: nothing of lorafleet's shutdown runs.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Starts the process again on the same configuration and data (after `kill` or a stop).
    pub async fn restart(&mut self) {
        self.starts += 1;
        let (child, address) = launch(&self.config, self.starts);
        self.child = child;
        match reported(address).await {
            Ok(base) => self.base = base,
            Err(why) => panic!("lorafleet {why} after restart {}", self.starts - 1),
        }
    }

    /// stdout and stderr of the latest start.
    pub fn output(&self) -> String {
        std::fs::read_to_string(log_path(&self.config, self.starts)).unwrap_or_default()
    }
}

impl Drop for TestBinary {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for start in 1..=self.starts {
            let path = log_path(&self.config, start);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!(
                "---- lorafleet start {start}: stdout and stderr ({}) ----\n{text}",
                path.display()
            );
        }
    }
}

fn log_path(config: &TestConfig, start: u32) -> PathBuf {
    config.root().join(format!("lorafleet-{start}.log"))
}

/// Spawns the process; the receiver gets the base URL from its stdout, or closes if it exits.
fn launch(
    config: &TestConfig,
    start: u32,
) -> (
    tokio::process::Child,
    tokio::sync::oneshot::Receiver<String>,
) {
    let config_file = config.root().join("lorafleet.toml");
    std::fs::write(&config_file, toml::to_string(&config.config).unwrap()).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(config, start))
        .unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lorafleet"));
    command
        .arg("--config")
        .arg(&config_file)
        .arg("serve")
        .current_dir(config.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone().unwrap())
        .kill_on_drop(true);
    // The test's configuration is the whole configuration: nothing from the caller's shell.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("LORAFLEET")) {
        command.env_remove(name);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap().into_owned_fd().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || copy_stdout(std::fs::File::from(stdout), log, tx));
    (child, rx)
}

/// Copies stdout into the log line by line (so nothing is lost if the test fails) and hands
/// over the address from the "listening on" line.
fn copy_stdout(
    stdout: std::fs::File,
    mut log: std::fs::File,
    tx: tokio::sync::oneshot::Sender<String>,
) {
    let mut tx = Some(tx);
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let _ = log.write_all(&line);
        let text = String::from_utf8_lossy(&line);
        if let Some(base) = text.trim_end().strip_prefix(LISTENING) {
            if let Some(tx) = tx.take() {
                let _ = tx.send(base.to_string());
            }
        }
        line.clear();
    }
}

async fn reported(address: tokio::sync::oneshot::Receiver<String>) -> Result<String, String> {
    match tokio::time::timeout(START_TIMEOUT, address).await {
        Ok(Ok(base)) => Ok(base),
        Ok(Err(_)) => Err("exited before it reported its address".into()),
        Err(_) => Err(format!(
            "did not report its address within {} s",
            START_TIMEOUT.as_secs()
        )),
    }
}
