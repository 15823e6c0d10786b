//! Console sessions: a signed cookie, its CSRF token and sign-out.
//!
//! A session is stateless so it works on every instance of a fleet: the cookie holds its
//! expiry and a random id, MACed (HMAC-SHA256) with the console key that signed in. A
//! cookie verifies only while that key is still in `[console] keys`: removing a key ends
//! its sessions, and a cookie made with any other key is refused. The CSRF token is a MAC
//! of the session id, so a form's token is valid for its own session only.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The cookie's name.
pub const COOKIE: &str = "omnigate_console";

/// What a MAC is over: the purpose first, so a session MAC is never a valid CSRF token.
const SESSION_PURPOSE: &[u8] = b"omnigate-console-session";
const CSRF_PURPOSE: &[u8] = b"omnigate-console-csrf";

/// The console's keys, session lifetime and signed-out sessions.
pub struct Sessions {
    keys: Vec<Secret>,
    ttl: Duration,
    /// Sessions signed out before their expiry (id → expiry, Unix seconds), on this
    /// instance; the browser's cookie is cleared as well.
    revoked: Mutex<HashMap<String, i64>>,
    /// Set when the gateway shuts down: live streams end, so draining connections does
    /// not wait on a browser tab left open.
    closing: tokio::sync::watch::Sender<bool>,
    /// Sign-in attempts per client address.
    limiter: super::limit::SignInLimiter,
}

/// A verified session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Random id (URL-safe base64 of 16 bytes).
    pub id: String,
    /// Expiry, Unix seconds.
    pub expires: i64,
    /// The token every action of this session must carry.
    pub csrf: String,
}

impl Sessions {
    /// Sessions for `keys`, lasting `ttl`, with the default sign-in limit.
    pub fn new(keys: Vec<Secret>, ttl: Duration) -> Self {
        let defaults = crate::ops::config::ConsoleSettings::default();
        Self::with_limit(
            keys,
            ttl,
            defaults.sign_in_attempts,
            defaults.sign_in_window,
        )
    }

    /// Sessions for `keys`, lasting `ttl`; each client address may try `attempts` keys
    /// per `window`.
    pub fn with_limit(keys: Vec<Secret>, ttl: Duration, attempts: u32, window: Duration) -> Self {
        Self {
            keys,
            ttl,
            revoked: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::Sender::new(false),
            limiter: super::limit::SignInLimiter::new(attempts, window),
        }
    }

    /// Take one sign-in attempt of `address`'s allowance; `Err(wait)` when none is left.
    pub fn admit_sign_in(&self, address: std::net::IpAddr) -> Result<(), Duration> {
        self.limiter.admit(address)
    }

    /// End every live stream (the gateway is shutting down).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once the gateway shuts down.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key `presented` matches, compared in constant time against every key.
    fn key_of(&self, presented: &str) -> Option<&Secret> {
        // An empty key never signs in, whatever is configured.
        if presented.is_empty() {
            return None;
        }
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.expose().as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(key);
            }
        }
        found
    }

    /// Sign in with `presented`: the new session's cookie value and the session, or
    /// `None` for a key that is not a console key.
    pub fn sign_in(&self, presented: &str, now: i64) -> Option<(String, Session)> {
        let key = self.key_of(presented)?;
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let expires = now.saturating_add(ttl);
        let payload = format!("{expires}.{id}");
        let signature = URL_SAFE_NO_PAD.encode(mac(key, SESSION_PURPOSE, payload.as_bytes()));
        let session = Session {
            csrf: URL_SAFE_NO_PAD.encode(mac(key, CSRF_PURPOSE, id.as_bytes())),
            id,
            expires,
        };
        Some((format!("{payload}.{signature}"), session))
    }

    /// The session of cookie value `cookie` at `now`, if it is well formed, unexpired,
    /// not signed out and MACed by one of the configured keys.
    pub fn verify(&self, cookie: &str, now: i64) -> Option<Session> {
        let (payload, presented) = cookie.rsplit_once('.')?;
        let (expires, id) = payload.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        if expires <= now || self.revoked.lock().contains_key(id) {
            return None;
        }
        let presented = URL_SAFE_NO_PAD.decode(presented).ok()?;
        let key = self.keys.iter().find(|key| {
            bool::from(
                mac(key, SESSION_PURPOSE, payload.as_bytes())
                    .as_slice()
                    .ct_eq(&presented),
            )
        })?;
        Some(Session {
            csrf: URL_SAFE_NO_PAD.encode(mac(key, CSRF_PURPOSE, id.as_bytes())),
            id: id.to_owned(),
            expires,
        })
    }

    /// End `session` on this instance (its cookie is cleared by the caller).
    pub fn sign_out(&self, session: &Session, now: i64) {
        let mut revoked = self.revoked.lock();
        // Forget what has expired anyway, so the list stays as small as the live sessions.
        revoked.retain(|_, expires| *expires > now);
        revoked.insert(session.id.clone(), session.expires);
    }
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        !presented.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

fn mac(key: &Secret, purpose: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(purpose);
    mac.update(b"\0");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(key: &str) -> Sessions {
        Sessions::new(vec![Secret::new(key.to_owned())], Duration::from_secs(60))
    }

    #[test]
    fn a_session_verifies_with_its_key_until_it_expires_or_signs_out() {
        let console = sessions("console-key-0123456789");
        assert!(console.sign_in("wrong-key-0123456789", 0).is_none());
        assert!(console.sign_in("", 0).is_none());
        let (cookie, session) = console.sign_in("console-key-0123456789", 1000).expect("in");
        let verified = console.verify(&cookie, 1010).expect("valid");
        assert_eq!(verified.csrf, session.csrf);
        assert!(verified.csrf_matches(&session.csrf));
        assert!(!verified.csrf_matches(""));
        assert!(console.verify(&cookie, 1060).is_none(), "expired");
        let other = sessions("another-key-0123456789");
        assert!(
            other.verify(&cookie, 1010).is_none(),
            "another key's cookie"
        );
        let tampered = cookie.replacen("1060", "9999", 1);
        assert!(console.verify(&tampered, 1010).is_none(), "tampered expiry");
        console.sign_out(&verified, 1020);
        assert!(console.verify(&cookie, 1030).is_none(), "signed out");
    }
}
