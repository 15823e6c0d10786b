//! The `omnigate` binary as a child process: started from a config file, killed with
//! SIGKILL or stopped with SIGTERM, for the tests of what survives a crash or a restart.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::toml_path;

/// Bound of every wait for the process.
const WAIT: Duration = Duration::from_secs(30);

/// How long a started process may take to answer `/healthz`.
const START_WAIT: Duration = Duration::from_secs(60);

/// A running `omnigate serve`.
pub struct Process {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Process {
    /// Serve `config` (TOML, without `[server]` and `[plugins] cache_dir`, which this adds)
    /// on `port`, with the config file in `dir`.
    pub fn start(config: &str, dir: &Path, port: u16) -> Process {
        Self::start_with_env(config, dir, port, &[])
    }

    /// [`Process::start`] with extra environment variables (e.g. `OMNIGATE_FAULT`).
    pub fn start_with_env(config: &str, dir: &Path, port: u16, env: &[(&str, &str)]) -> Process {
        Self::spawn(config, dir, port, env, None)
    }

    /// [`Process::start`] logging at `level` (a `RUST_LOG` filter) to `dir/omnigate.log`,
    /// for tests of what reaches the log.
    pub fn start_logged(config: &str, dir: &Path, port: u16, level: &str) -> Process {
        Self::spawn(
            config,
            dir,
            port,
            &[("RUST_LOG", level)],
            Some(&Self::log(dir)),
        )
    }

    /// The log file of a process started with [`Process::start_logged`] in `dir`.
    pub fn log(dir: &Path) -> std::path::PathBuf {
        dir.join("omnigate.log")
    }

    fn spawn(
        config: &str,
        dir: &Path,
        port: u16,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Process {
        let path = dir.join("omnigate.toml");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"1s\"\n{config}",
            // The tests' shared compile cache (as for in-process gateways): a started
            // process does not compile again what other tests compiled.
            config = with_cache_dir(
                config,
                &crate::root().join("target").join("test-plugin-cache")
            ),
        );
        std::fs::write(&path, text).expect("config file");
        let output = || match log {
            Some(log) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("log file"),
            ),
            None => Stdio::null(),
        };
        let child = Command::new(crate::omnigate_bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "omnigate=info")
            .envs(env.iter().copied())
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("omnigate starts");
        Process {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Wait until `/healthz` answers 200.
    pub async fn wait_ready(&self) {
        // A liveness bound, not a speed check: a debug gateway restarted on Redis while
        // the other tests of its binary load both cores can take more than `WAIT`.
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if crate::get(&format!("{}/healthz", self.base), &[])
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("omnigate did not become healthy");
    }

    /// Wait for the process to exit by itself (a fault point aborted it); its status.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "omnigate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.wait_exit(WAIT).await
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) {
        // `Child::kill` is SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `config` with `cache_dir = cache` in its `[plugins]` table (a table of its own when
/// it has none: TOML defines a table once).
fn with_cache_dir(config: &str, cache: &Path) -> String {
    let line = format!("cache_dir = {}", toml_path(cache));
    let mut lines: Vec<&str> = config.lines().collect();
    match lines.iter().position(|l| l.trim() == "[plugins]") {
        Some(at) => {
            lines.insert(at + 1, &line);
            lines.join("\n")
        }
        None => format!("[plugins]\n{line}\n{config}"),
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_9();
    }
}
