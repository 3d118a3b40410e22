//! A real browser (Debian's chromium driven by playwright-core, `tests/browser`) watching a
//! campaign's page of a running instance, for tests that need to know what an operator saw.
//! Needs node and `npm ci` in `tests/browser` (CI has both): a test that asks for a browser
//! fails without them rather than passing without looking.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A browser on one campaign's page (`tests/browser/watch_campaign.mjs`).
pub struct CampaignWatcher {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

impl CampaignWatcher {
    /// Logs in on `base` as admin and opens campaign `id`'s page; returns once the page is
    /// live (its event stream connected).
    pub async fn open(base: &str, id: i64, password: &str) -> CampaignWatcher {
        let dir = browser_dir();
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "playwright-core is not installed: run `npm ci` in {}",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("watch_campaign.mjs"))
            .args([base, &id.to_string(), password])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting node for the browser: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut w = CampaignWatcher {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        let line = w.line(Duration::from_secs(60)).await;
        assert_eq!(
            line.as_deref(),
            Some("ready"),
            "the browser did not open the page"
        );
        w
    }

    async fn line(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser said nothing within {limit:?}"))
            .expect("reading the browser's output")
    }

    /// Stops watching; what the page showed: `{"snapshots": [{"title", "devices": ["eui:stage:
    /// outcome"], "log": [newest first]}], "loads": reloads, "errors": uncaught page errors}`.
    /// The watcher first waits (up to 10 s) for the page to show the campaign over.
    pub async fn seen(mut self) -> Value {
        drop(self.child.stdin.take());
        let line = self.line(Duration::from_secs(30)).await.unwrap_or_default();
        let json = line
            .strip_prefix("seen ")
            .unwrap_or_else(|| panic!("the browser's last word: {line:?}"));
        let _ = self.child.wait().await;
        serde_json::from_str(json).expect("the browser's JSON")
    }

    /// The browser of an instance that is gone.
    pub async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}
