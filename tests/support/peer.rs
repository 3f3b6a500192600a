//! The real authorization server of the crate's own harness,
//! `tests/peers/oidc-provider` (panva's oidc-provider on Node.js), started on
//! a free loopback port for one test and killed when the fixture is dropped.
//!
//! The harness is `$CARGO_MANIFEST_DIR/tests/peers/oidc-provider`;
//! `OIDC_PEER_DIR` may point elsewhere, to try another copy. Missing `node`
//! or a missing harness is a test failure with a message saying so, never a
//! skip. Its npm packages are installed once into
//! `$CARGO_TARGET_TMPDIR/peer-oidc-provider` (the first start runs `npm ci`,
//! hence the generous start timeout); the repository itself is only read.
//! The keys registered with it are in `tests/data`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long a start may take: the first one installs npm packages.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts are serialised, so that two tests never run the first `npm ci`
/// into the same folder at once.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Peer {
    /// `http://127.0.0.1:PORT`, the issuer.
    pub base: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Peer {
    /// Starts the peer with the given environment knobs (`AT_TTL`,
    /// `RT_TTL`, `ROTATE_RT`, `AT_FORMAT`) and waits for its `READY` line.
    pub async fn start(env: &[(&str, &str)]) -> Peer {
        let dir = peer_dir();
        let script = dir.join("start.sh");
        assert!(
            script.is_file(),
            "the oidc-provider harness is missing: no {} (it is \
             tests/peers/oidc-provider in the repository; OIDC_PEER_DIR overrides it)",
            script.display()
        );
        let node = std::process::Command::new("node").arg("--version").output();
        assert!(
            node.is_ok_and(|o| o.status.success()),
            "`node` is needed to run the oidc-provider peer and was not found on PATH"
        );

        let _starting = STARTING.lock().await;
        // A port taken between our probe and the peer's bind: try again.
        for _ in 0..3 {
            match Self::try_start(&script, env).await {
                Ok(peer) => return peer,
                Err(log) if log.contains("EADDRINUSE") => continue,
                Err(log) => panic!("the oidc-provider peer did not start:\n{log}"),
            }
        }
        panic!("the oidc-provider peer found no free port in 3 tries");
    }

    async fn try_start(script: &std::path::Path, env: &[(&str, &str)]) -> Result<Peer, String> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let workdir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peer-oidc-provider");
        // The keys the harness registers are the ones `test_key` reads.
        let test_data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut command = Command::new("bash");
        command
            .arg(script)
            .arg(port.to_string())
            .env("PEER_WORKDIR", &workdir)
            .env("PEER_TEST_DATA", &test_data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;

        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(drain(stderr, log.clone(), None));
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(drain(stdout, log.clone(), Some(ready_tx)));

        match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => Ok(Peer {
                base: format!("http://127.0.0.1:{port}"),
                child,
                log,
            }),
            Ok(Err(_)) => {
                // Output ended without READY: the process is gone or going.
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                Err(log.lock().unwrap().clone())
            }
            Err(_) => Err(format!(
                "no READY line within {START_TIMEOUT:?}; output so far:\n{}",
                log.lock().unwrap()
            )),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        self.url("/token")
    }

    /// Everything the peer printed so far (one line per token or API
    /// request, with the server-side reason of each error).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Lines of the log that contain `needle`, once there are at least
    /// `expected` of them or 5 s of wall time have passed: the peer writes
    /// its log line after its answer, so the last one can arrive after the
    /// client has its response.
    pub async fn log_lines_at_least(&self, needle: &str, expected: usize) -> usize {
        let wall = std::time::Instant::now();
        loop {
            let seen = self.log_lines(needle);
            if seen >= expected || wall.elapsed() > Duration::from_secs(5) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Copies a pipe into the log line by line, so the peer never blocks on a
/// full pipe; signals `ready` at the `READY` line.
async fn drain(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<String>>,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let is_ready = line.starts_with("READY ");
        {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
        if is_ready && let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
    }
}

/// A file of `tests/data`: keys registered with the peer (`peer-pkjwt.*`),
/// for tests only.
pub fn test_key(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn peer_dir() -> PathBuf {
    match std::env::var_os("OIDC_PEER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc-provider"),
    }
}
