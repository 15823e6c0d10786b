//! Shared pieces of the benchmarks (`tests/benches/`): realistic signed traffic and
//! statistics.

use omnigate::runtime::types::{Header, HttpRequest};
use serde_json::json;

/// The web chat signing secret used by the benchmarks.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Whether this is a real benchmark run (`cargo bench` passes `--bench`). Under
/// `cargo test` the benchmarks run as a quick smoke test with tiny counts instead.
pub fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// `full` when measuring, `smoke` under `cargo test`.
pub fn size(full: usize, smoke: usize) -> usize {
    if measuring() { full } else { smoke }
}

/// Rounds from `--rounds N` (default 5; 1 in a smoke test).
pub fn rounds_arg() -> usize {
    if !measuring() {
        return 1;
    }
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == "--rounds")
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(5)
}

/// The web chat component the benchmarks load: `target/plugins/webchat.wasm`, or the
/// file `OMNIGATE_BENCH_WEBCHAT_WASM` names, to compare two builds of the plugin (another
/// SDK, other codegen flags) with the same benchmark binary.
pub fn webchat_wasm() -> std::path::PathBuf {
    std::env::var_os("OMNIGATE_BENCH_WEBCHAT_WASM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::plugin_path("webchat"))
}

/// Median of `values`.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `p`-quantile (0..=1) of `values`.
pub fn quantile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index]
}

/// The JSON body of web chat message `i` of batch `tag`: ~1 KiB, one of 5 000 visitors,
/// with a landing URL carrying UTM parameters and a click id, dated now (an old date would
/// make the outcome rules find every conversation unanswered and ended on arrival).
pub fn webchat_body(tag: &str, i: usize) -> Vec<u8> {
    webchat_body_from(tag, i, "v-")
}

/// [`webchat_body`] from visitor `<visitors><i % 5 000>`: batches with their own
/// `visitors` prefix come from new visitors.
pub fn webchat_body_from(tag: &str, i: usize, visitors: &str) -> Vec<u8> {
    let visitor = i % 5_000;
    json!({
        "type": "message",
        "id": format!("{tag}-{i}"),
        "visitor": {"id": format!("{visitors}{visitor}"), "name": format!("Visitor {visitor}"), "email": format!("visitor{visitor}@example.com")},
        "text": format!("Hola, ¿tenéis la talla M del modelo {i}? Lo vi en Instagram y me gustaría saber si llega antes del viernes."),
        "page": {
            "url": format!("https://shop.example/p/{}?utm_source=instagram&utm_medium=paid_social&utm_campaign=bf25&fbclid=IwAR{i:08}", i % 97),
            "referrer": "https://l.instagram.com/"
        },
        "sent_at": jiff::Timestamp::now().to_string()
    })
    .to_string()
    .into_bytes()
}

/// `count` distinct web chat messages of batch `tag`, each signed now (Standard Webhooks).
pub fn signed_webchat_messages(count: usize, tag: &str) -> Vec<HttpRequest> {
    signed_webchat_messages_from(count, tag, "v-")
}

/// [`signed_webchat_messages`] from visitors `<visitors><n>` (see [`webchat_body_from`]).
pub fn signed_webchat_messages_from(count: usize, tag: &str, visitors: &str) -> Vec<HttpRequest> {
    (0..count)
        .map(|i| {
            let body = webchat_body_from(tag, i, visitors);
            let headers = crate::standard_webhooks_headers(SECRET, &format!("wh_{tag}_{i}"), &body)
                .unwrap_or_default()
                .into_iter()
                .chain([("content-type".to_owned(), "application/json".to_owned())])
                .map(|(name, value)| Header { name, value })
                .collect();
            HttpRequest {
                method: "POST".into(),
                path: "/webhooks/web".into(),
                query: String::new(),
                headers,
                body,
            }
        })
        .collect()
}

/// [`signed_webchat_messages`] ready for [`crate::load`]: path, headers and body.
pub fn prepared_webchat(tag: &str, count: usize) -> Vec<crate::load::Prepared> {
    prepared_webchat_from(tag, count, "v-")
}

/// [`prepared_webchat`] from visitors `<visitors><n>` (see [`webchat_body_from`]).
pub fn prepared_webchat_from(
    tag: &str,
    count: usize,
    visitors: &str,
) -> Vec<crate::load::Prepared> {
    signed_webchat_messages_from(count, tag, visitors)
        .into_iter()
        .map(|request| crate::load::Prepared {
            path: request.path,
            headers: request
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: request.body.into(),
        })
        .collect()
}
