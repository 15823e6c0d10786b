//! The web chat plugin's own code linked natively into an in-process gateway, for the
//! throughput benchmark's "cost of the sandbox" figure and the test that keeps it honest.
//!
//! [`NativeWebChat`] implements the host's [`NativeChannel`] by running
//! `omnigate_plugin_webchat::WebChat::handle_webhook` (the same code the component is
//! built from) inside the SDK's [`Harness`], which plays the host imports: the channel's
//! config, its secrets for the signature check, and the clock. [`link_webchat_natively`]
//! swaps a running gateway's channel to it; ingress, limits, metrics, pipeline and store
//! stay the gateway's own.
//!
//! The adapter is kept cheap so the comparison is fair: one harness per thread and
//! channel, built on first use and reused (its clock is moved to the real time before
//! each call), and a field-by-field conversion between the host's and the SDK's
//! bindings of the same WIT types (the sandbox copies the same data in and out).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use omnigate::runtime::types as host;
use omnigate::runtime::{ChannelEnv, NativeChannel, WebhookRequest};
use omnigate::server::App;
use omnigate_plugin_webchat::WebChat;
use omnigate_sdk as sdk;
use omnigate_sdk::Channel as _;
use omnigate_sdk::testing::Harness;

/// The web chat plugin's `handle-webhook`, natively, with one channel's config and
/// secrets. Holds secret values: it has no `Debug`.
pub struct NativeWebChat {
    /// Tells this channel's harnesses from other instances' on the same thread.
    key: u64,
    config: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
    fixed_now_ms: Option<i64>,
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Harnesses by adapter key: `Harness` is `Rc`-based, so each server thread has its
    /// own. A dropped adapter's harness stays until the thread ends (tests and benches
    /// make a handful).
    static HARNESSES: RefCell<Vec<(u64, Harness)>> = const { RefCell::new(Vec::new()) };
}

impl NativeWebChat {
    /// The plugin as the channel described by `env` would run it: its `config`, its
    /// resolved `secrets` and its clock (`fixed_now_ms`, else the real time per call).
    /// `oauth2` secrets are not carried over: the web chat plugin has none.
    pub fn for_channel(env: &ChannelEnv) -> Self {
        Self {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            config: env
                .config
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            secrets: env
                .secrets
                .iter()
                .map(|(name, secret)| (name.clone(), secret.expose().to_owned()))
                .collect(),
            fixed_now_ms: env.fixed_now_ms,
        }
    }

    fn harness(&self) -> Harness {
        let harness = self
            .config
            .iter()
            .fold(Harness::new(), |harness, (key, value)| {
                harness.config(key, value)
            });
        self.secrets.iter().fold(harness, |harness, (name, value)| {
            harness.secret(name, value)
        })
    }
}

impl NativeChannel for NativeWebChat {
    fn handle_webhook(
        &self,
        request: &WebhookRequest<'_>,
    ) -> Result<host::WebhookOutcome, host::WebhookError> {
        let request = sdk_request_lent(request);
        let now_ms = self
            .fixed_now_ms
            .unwrap_or_else(|| jiff::Timestamp::now().as_millisecond());
        let outcome = HARNESSES.with(|harnesses| {
            let mut harnesses = harnesses.borrow_mut();
            let at = match harnesses.iter().position(|(key, _)| *key == self.key) {
                Some(at) => at,
                None => {
                    harnesses.push((self.key, self.harness()));
                    harnesses.len() - 1
                }
            };
            let harness = &harnesses[at].1;
            harness.set_now(now_ms);
            harness.run(|| WebChat::handle_webhook(request))
        });
        outcome.convert()
    }
}

/// Serve `channel_id` of a running gateway with the web chat plugin linked natively
/// (the plugin stays for `describe` and `send`). Returns the adapter installed.
pub fn link_webchat_natively(app: &App, channel_id: &str) -> Result<Arc<NativeWebChat>> {
    let channel = app
        .registry
        .get(channel_id)
        .with_context(|| format!("no channel `{channel_id}`"))?;
    let native = Arc::new(NativeWebChat::for_channel(&channel.env));
    app.registry.install(
        channel_id,
        Arc::new(channel.linked_natively(native.clone())),
    );
    Ok(native)
}

/// `request` in the SDK's bindings, as plugin code natively called takes it (a copy, as
/// the sandbox lowers one into the guest's memory).
pub fn sdk_request(request: &host::HttpRequest) -> sdk::HttpRequest {
    request.clone().convert()
}

/// A lent request in the SDK's bindings, as plugin code natively called takes it (a
/// copy, as the sandbox lowers one into the guest's memory).
pub fn sdk_request_lent(request: &WebhookRequest<'_>) -> sdk::HttpRequest {
    sdk::HttpRequest {
        method: request.method.to_owned(),
        path: request.path.to_owned(),
        query: request.query.to_owned(),
        headers: request
            .headers
            .iter()
            .map(|header| sdk::Header {
                name: header.name.to_owned(),
                value: header.value.to_owned(),
            })
            .collect(),
        body: request.body.to_vec(),
    }
}

/// A conversion between the host's (wasmtime) and the SDK's (wit-bindgen) bindings of
/// one WIT type. A trait of our own: `From` between two foreign types is not allowed.
trait Convert<T> {
    fn convert(self) -> T;
}

macro_rules! same {
    ($($ty:ty),*) => {
        $(impl Convert<$ty> for $ty {
            fn convert(self) -> $ty {
                self
            }
        })*
    };
}
same!(String, bool, u8, u16, u32, u64, i64, f64);

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        // In place when the layouts match (bytes, strings): no new allocation.
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B, E: Convert<F>, F> Convert<Result<B, F>> for Result<A, E> {
    fn convert(self) -> Result<B, F> {
        self.map(Convert::convert).map_err(Convert::convert)
    }
}

/// Records: the same fields on both sides, each converted.
macro_rules! records {
    ($($ty:ident { $($field:ident),* })*) => {
        $(
            impl Convert<host::$ty> for sdk::$ty {
                fn convert(self) -> host::$ty {
                    host::$ty { $($field: self.$field.convert()),* }
                }
            }
            impl Convert<sdk::$ty> for host::$ty {
                fn convert(self) -> sdk::$ty {
                    sdk::$ty { $($field: self.$field.convert()),* }
                }
            }
        )*
    };
}

/// Enums (no payload) and variants (one payload each).
macro_rules! enums {
    ($($ty:ident { $($case:ident $(($payload:ident))?),* })*) => {
        $(
            impl Convert<host::$ty> for sdk::$ty {
                fn convert(self) -> host::$ty {
                    match self {
                        $(sdk::$ty::$case $(($payload))? => host::$ty::$case $(($payload.convert()))?),*
                    }
                }
            }
            impl Convert<sdk::$ty> for host::$ty {
                fn convert(self) -> sdk::$ty {
                    match self {
                        $(host::$ty::$case $(($payload))? => sdk::$ty::$case $(($payload.convert()))?),*
                    }
                }
            }
        )*
    };
}

// Every type on the `handle-webhook` path (`wit/0.2.0/types.wit`). A field added to the
// WIT fails to compile here until it is listed.
records! {
    Header { name, value }
    HttpRequest { method, path, query, headers, body }
    HttpResponse { status, headers, body }
    WebhookOutcome { response, events }
    InboundEvent { external_id, occurred_at, account, contact, body, raw }
    Party { id, name, handles }
    Handle { kind, value, verified }
    Message { direction, text, parts, reply_to, forwarded, interactive_reply, referral }
    Media { kind, id, url, mime_type, caption, filename, size, sha256 }
    Location { latitude, longitude, name, address, url }
    ContactCard { name, phones, emails, user_id }
    Unsupported { provider_type, reason }
    InteractiveReply { kind, id, title }
    Pair { name, value }
    Referral {
        source, ad_id, campaign, click_ids, utm, url, referrer, ref_payload, headline, body,
        media_url
    }
    StatusUpdate { message_id, status, error }
    ProviderError { code, title, detail }
    Reaction { message_id, emoji }
    Edit { message_id, text, parts }
}

enums! {
    HandleKind { Phone, Email, ChannelUser }
    MediaKind { Image, Video, Audio, Voice, Document, Sticker }
    InteractiveKind { Button, List, Postback, Callback }
    ReferralSource { Ad, Post, Link, Qr, Other }
    Direction { Inbound, Outbound }
    DeliveryStatus { Sent, Delivered, Read, Failed }
    Part { Media(x), Location(x), Contact(x), Unsupported(x) }
    EventBody { Message(x), Status(x), Reaction(x), Edit(x), Deletion(x), Referral(x) }
    WebhookError { Unauthorized(x), Forbidden(x), BadRequest(x) }
}
