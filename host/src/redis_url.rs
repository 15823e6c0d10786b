//! Redis connection settings shared by the context store, the plugin registry and the
//! delivery outbox: the URL forms (`redis://`, `rediss://`, `redis+cluster://`,
//! comma-separated seeds), the seed list, passwords hidden for logs, and the certificate
//! authorities `rediss://` trusts. A leaf: it connects to nothing itself.

use std::path::Path;
use std::sync::Arc;

use redis::TlsCertificates;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a Redis URL or TLS setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    /// The URL names no usable server.
    #[error("invalid store URL: {0}")]
    InvalidUrl(String),
    /// `[store] tls_ca_file` cannot be used.
    #[error("[store] tls_ca_file: {0}")]
    InvalidTls(String),
}

/// The certificate authorities `rediss://` connections trust: the webpki roots by
/// default, or only the CAs of a PEM file (`[store] tls_ca_file`). Cheap to clone.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// The PEM text of the trusted CA certificates; `None`: the webpki roots.
    ca_pem: Option<Arc<Vec<u8>>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roots = if self.ca_pem.is_some() {
            "private CA"
        } else {
            "webpki roots"
        };
        f.debug_struct("RedisTls").field("roots", &roots).finish()
    }
}

impl RedisTls {
    /// Trust only the CA certificates in the PEM file at `path`.
    pub fn from_ca_file(path: &Path) -> Result<Self, RedisUrlError> {
        let pem = std::fs::read(path).map_err(|error| {
            RedisUrlError::InvalidTls(format!("cannot read {}: {error}", path.display()))
        })?;
        Self::from_ca_pem(pem)
            .map_err(|error| RedisUrlError::InvalidTls(format!("{}: {error}", path.display())))
    }

    /// Trust only the CA certificates in `pem` (checked here, so a bad file is refused
    /// at start-up rather than on the first connection).
    pub fn from_ca_pem(pem: Vec<u8>) -> Result<Self, RedisUrlError> {
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| RedisUrlError::InvalidTls(format!("not PEM certificates: {error}")))?;
        if certificates.is_empty() {
            return Err(RedisUrlError::InvalidTls(
                "no CERTIFICATE block in the CA file".into(),
            ));
        }
        Ok(Self {
            ca_pem: Some(Arc::new(pem)),
        })
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        })
    }

    /// A client for one server URL; `rediss://` trusts these CAs.
    pub fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match self.certificates() {
            Some(certificates) if url.starts_with("rediss://") => {
                redis::Client::build_with_tls(url, certificates)
            }
            _ => redis::Client::open(url),
        }
    }

    /// A cluster client builder for seed URLs; `rediss://` seeds trust these CAs.
    pub fn cluster_builder<'a>(
        &self,
        seeds: impl IntoIterator<Item = &'a str>,
    ) -> ClusterClientBuilder {
        let seeds: Vec<&str> = seeds.into_iter().collect();
        let tls = seeds.iter().any(|seed| seed.starts_with("rediss://"));
        let builder = ClusterClient::builder(seeds);
        match self.certificates() {
            Some(certificates) if tls => builder.certs(certificates),
            _ => builder,
        }
    }
}

/// Whether `url` names a Redis store (single or cluster).
pub fn is_redis_url(url: &str) -> bool {
    [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
}

/// The URL of each server `url` names (one, or a cluster's seed nodes).
pub fn seeds(url: &str) -> Result<Vec<String>, RedisUrlError> {
    seed_urls(url)
}

/// The seed URLs: `redis+cluster://[auth@]h1:p1,h2:p2[/…]` becomes one `redis://` URL per
/// host (sharing the credentials); comma-separated URLs are taken as they are.
fn seed_urls(url: &str) -> Result<Vec<String>, RedisUrlError> {
    let cluster = [
        ("redis+cluster://", "redis://"),
        ("rediss+cluster://", "rediss://"),
    ]
    .iter()
    .find_map(|(scheme, plain)| url.strip_prefix(scheme).map(|rest| (*plain, rest)));
    let seeds: Vec<String> = match cluster {
        Some((plain, rest)) => {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let (hosts, tail) = match hosts.split_once('/') {
                Some((hosts, tail)) => (hosts, format!("/{tail}")),
                None => (hosts, String::new()),
            };
            hosts
                .split(',')
                .map(str::trim)
                .filter(|host| !host.is_empty())
                .map(|host| format!("{plain}{auth}{host}{tail}"))
                .collect()
        }
        None => url
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if seeds.is_empty() {
        return Err(RedisUrlError::InvalidUrl(format!(
            "`{}` names no Redis host",
            redact(url)
        )));
    }
    if let Some(bad) = seeds.iter().find(|seed| !is_redis_url(seed)) {
        return Err(RedisUrlError::InvalidUrl(format!(
            "`{}` is not a redis:// or rediss:// URL",
            redact(bad)
        )));
    }
    Ok(seeds)
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_scheme_expands_to_one_url_per_host_with_credentials() {
        let seeds = seed_urls("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001").expect("ok");
        assert_eq!(
            seeds,
            vec![
                "redis://:s3cret@10.0.0.1:7000",
                "redis://:s3cret@10.0.0.2:7001"
            ]
        );
        let tls = seed_urls("rediss+cluster://a:1,b:2").expect("ok");
        assert_eq!(tls, vec!["rediss://a:1", "rediss://b:2"]);
    }

    #[test]
    fn comma_separated_urls_are_seeds_and_bad_ones_are_refused() {
        let seeds = seed_urls("redis://a:1, redis://b:2").expect("ok");
        assert_eq!(seeds, vec!["redis://a:1", "redis://b:2"]);
        assert!(seed_urls("redis://a:1,http://b").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:pw@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("rediss://:pw@host"), "rediss://:***@host");
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
