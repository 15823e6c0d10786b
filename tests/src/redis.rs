//! Real `redis-server` processes started by the tests themselves on free loopback ports,
//! so fault tests can kill and restart them. Nothing is persisted to disk.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` on `127.0.0.1:<port>`, killed on drop.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
    tls: Option<TlsFiles>,
}

/// The PEM files of a TLS server: a private CA made at start, and the server's
/// certificate (for `127.0.0.1` and `localhost`) and key, signed by it.
pub struct TlsFiles {
    /// The CA certificate clients must trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Make a CA and a server certificate signed by it in `dir`.
    fn make(dir: &Path) -> Result<Self> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "omnigate test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let server_key = rcgen::KeyPair::generate()?;
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "omnigate test redis");
        server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params.signed_by(&server_key, &ca)?;
        let files = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&files.ca, ca.pem())?;
        std::fs::write(&files.cert, server.pem())?;
        std::fs::write(&files.key, server_key.serialize_pem())?;
        Ok(files)
    }
}

impl RedisServer {
    /// Start a standalone server on a free port.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Start a server with extra `redis-server` arguments (e.g. `["--cluster-enabled", "yes"]`).
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        let mut server = Self {
            port: free_port()?,
            dir: tempfile::tempdir()?,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            child: None,
            tls: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Start a server that speaks only TLS on its port (no plaintext port), with a
    /// certificate from a private CA made now ([`RedisServer::tls_files`]), clients not
    /// asked for certificates, and extra arguments (e.g. `["--requirepass", "…"]`).
    pub fn start_tls(extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let tls = TlsFiles::make(dir.path())?;
        let mut server = Self {
            port: free_port()?,
            dir,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            child: None,
            tls: Some(tls),
        };
        server.spawn()?;
        Ok(server)
    }

    /// The CA and server certificate files of a TLS server.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The port it listens on (kept across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL): clients see connection errors until [`RedisServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port: empty, unless it was started with persistence
    /// (`--appendonly yes`), which reloads from its directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Run `redis-cli` against this server and return its output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            command.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        let output = command.args(args).output().context("running redis-cli")?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn spawn(&mut self) -> Result<()> {
        let mut command = Command::new(redis_server_bin());
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (install it: apt install redis-server)")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            // A server started with `--requirepass` answers NOAUTH: it is up.
            if self
                .cli(&["PING"])
                .is_ok_and(|answer| answer == "PONG" || answer.starts_with("NOAUTH"))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server on port {} did not answer PING", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters (no replicas), each its own `redis-server`.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start three cluster-enabled servers and join them, all slots assigned.
    pub fn start() -> Result<Self> {
        let nodes = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running redis-cli --cluster create")?;
        if !status.success() {
            bail!("redis-cli --cluster create failed ({status})");
        }
        let cluster = Self { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// Seed URLs for a cluster client, comma separated:
    /// `redis://127.0.0.1:a,redis://127.0.0.1:b,redis://127.0.0.1:c`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    fn wait_ok(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let all_ok = self.nodes.iter().all(|node| {
                node.cli(&["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if all_ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the Redis Cluster did not reach cluster_state:ok")
    }
}

/// `redis-server` from `OMNIGATE_REDIS_SERVER` or `PATH`.
fn redis_server_bin() -> PathBuf {
    std::env::var_os("OMNIGATE_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
