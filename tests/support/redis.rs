//! A private `redis-server` on a free loopback port, for one test: no
//! persistence, killed when the fixture is dropped, and able to stop and
//! start again on the same port (to test a Redis outage).
//!
//! The binary is `redis-server` on `PATH`, or `$REDIS_SERVER`. A missing
//! binary is a test failure with a message saying how to install it, never
//! a skip (`.ci/run` installs Debian's `redis-server`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it accepts
    /// connections.
    pub fn start() -> RedisServer {
        for _ in 0..3 {
            let port = {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap().port()
            };
            match spawn(port) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                    };
                }
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server found no free port in 3 tries");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (as a crash would: no shutdown, no save).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        match spawn(self.port) {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!("redis-server did not restart on port {}:\n{log}", self.port),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Runs redis-server on `port` and waits for its "Ready to accept
/// connections" line; the output so far on failure.
fn spawn(port: u16) -> Result<Child, String> {
    let binary = binary();
    let mut child = Command::new(&binary)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--protected-mode", "yes"])
        .args(["--logfile", ""])
        .args(["--dir", env!("CARGO_TARGET_TMPDIR")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "could not run `{binary}` ({e}): the Redis tests need a redis-server binary. \
                 Install it (Debian: `apt-get install -y redis-server`) or set REDIS_SERVER \
                 to its path"
            )
        });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Reads the log until the server is ready, then keeps draining it so
    // the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut log = String::new();
        let mut ready = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            log.push_str(&line);
            log.push('\n');
            if line.contains("Ready to accept connections")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(Ok(()));
            }
        }
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(log));
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(())) => Ok(child),
        Ok(Err(log)) => {
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            Err(format!("{log}{stderr}"))
        }
        Err(_) => {
            let _ = child.kill();
            Err(format!(
                "no \"Ready to accept connections\" within {START_TIMEOUT:?}"
            ))
        }
    }
}
