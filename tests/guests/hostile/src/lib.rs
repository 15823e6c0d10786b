//! A misbehaving channel plugin for the host's sandbox tests. `handle_webhook` picks its
//! behaviour from the query parameter `mode`:
//!
//! - `ok`: 200 `ok` and one message event with `external_id` = query `id` (or `m1`);
//! - `loop`: spins forever (the per-call deadline must stop it);
//! - `alloc`: allocates and touches 1 GiB in 1 MiB steps (the memory cap must stop it);
//! - `panic`: panics (a trap);
//! - `fetch-denied`: fetches `http://not-allowed.example/`, returns the result's Debug;
//! - `secret-fetch`: fetches query `target` with `authorization: Bearer {{secret:token}}`
//!   and body `{{secret:token}}`, returns the response body (the host must redact it);
//! - `secret-read`: returns the Debug of `config("token")` (must be `None`).

use omnigate_sdk::{
    Capability, Channel, ChannelKind, Direction, EventBody, Fetch, HttpRequest, InboundEvent,
    Message, OutboundMessage, Party, PluginInfo, SendError, SendReceipt, Setting, WebhookError,
    WebhookOutcome, host, ok_text, outcome, query_param,
};

/// The hostile test plugin.
pub struct Hostile;

impl Channel for Hostile {
    fn describe() -> PluginInfo {
        let token = || Setting {
            name: "token".into(),
            description: "test token".into(),
            required: false,
        };
        PluginInfo {
            id: "hostile".into(),
            name: "Hostile test guest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Other,
            capabilities: vec![Capability::Text],
            config: vec![token()],
            secrets: vec![token()],
            outbound_hosts: vec![],
        }
    }

    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        let mode = query_param(&request, "mode").unwrap_or_default();
        let body = match mode.as_str() {
            "ok" => {
                let id = query_param(&request, "id").unwrap_or_else(|| "m1".into());
                return Ok(outcome(ok_text("ok"), vec![event(id)]));
            }
            "loop" => spin(),
            "alloc" => format!("allocated {} MiB", allocate_gib()),
            "panic" => panic!("hostile guest panics on purpose"),
            "fetch-denied" => format!("{:?}", Fetch::get("http://not-allowed.example/").send()),
            "secret-fetch" => {
                let target = query_param(&request, "target")
                    .ok_or_else(|| WebhookError::BadRequest("missing target".into()))?;
                let sent = Fetch::post(target)
                    .bearer_secret("token")
                    .body("{{secret:token}}")
                    .send();
                match sent {
                    Ok(response) => response.text(),
                    Err(e) => format!("{e:?}"),
                }
            }
            "secret-read" => format!("{:?}", host::config("token")),
            other => return Err(WebhookError::BadRequest(format!("unknown mode {other:?}"))),
        };
        Ok(outcome(ok_text(&body), vec![]))
    }

    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        Ok(SendReceipt {
            external_id: format!("hostile-{}", message.id),
            raw: None,
        })
    }
}

fn event(id: String) -> InboundEvent {
    InboundEvent {
        external_id: id,
        occurred_at: None,
        account: None,
        contact: Party {
            id: "hostile-user".into(),
            name: None,
            handles: vec![],
        },
        body: EventBody::Message(Message {
            direction: Direction::Inbound,
            text: Some("hello from hostile".into()),
            parts: vec![],
            reply_to: None,
            forwarded: false,
            interactive_reply: None,
            referral: None,
        }),
        raw: None,
    }
}

/// Never returns; `black_box` keeps the optimizer from proving the loop useless.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 GiB in 1 MiB blocks, writing to every page so it is really used.
fn allocate_gib() -> usize {
    const MIB: usize = 1 << 20;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..1024 {
        let mut block = vec![0u8; MIB];
        for page in block.iter_mut().step_by(4096) {
            *page = i as u8;
        }
        blocks.push(std::hint::black_box(block));
    }
    blocks.len()
}

omnigate_sdk::export_plugin!(Hostile);
