//! TLS set-up shared by every outbound HTTP client (provider APIs, downstream tools).

/// Install the process-wide rustls crypto provider (ring) unless one is installed.
/// Idempotent; called before any HTTP client is built, so library users need no set-up.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
