//! Where the context rules run: the figures behind the choice written in docs/store.md.
//! Run by `cargo xtask bench`.
//!
//! 1. **The rules in Rust** (`omnigate::store::rules`): one inbound message in an open
//!    conversation decided (`threading`, then `apply_inbound` on a copy of the cached
//!    conversation, as a backend deciding from a cached state does), in ns per message,
//!    beside encoding the message's history entry as JSON (which every path does once per
//!    message anyway) in the same run.
//! 2. **redis-server CPU per call, by where the decisions are made**: the ingest script
//!    as the gateway ran it before the rules moved to Rust (`store_rules/arrive.lua` +
//!    `store_rules/ingest.lua`: handle lookup, dedupe, the rules and the writes, all in
//!    Lua) against a guarded applier
//!    (`store_rules/apply.lua`: the same lookup and dedupe, a version check, then the
//!    writes it is given, decided by the caller). Both write the same things for the same
//!    workload: 1 000 known senders, 20 messages each, interleaved (each in an open
//!    conversation; the first message of each is not counted), the ~1 KiB owed record
//!    kept, pipelined. `usec_per_call` of `EVALSHA` from `INFO commandstats`, median of
//!    alternated rounds.
//! 3. **The store as shipped**, alternated with those on the same server: `RedisStore::ingest`
//!    (the rules in Rust, `store/redis/apply.lua` guarding and writing) for the same
//!    workload, 64 ingests in flight.

use std::hint::black_box;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jiff::Timestamp;
use omnigate::event::{Direction, Handle, HandleKind, HistoryEntry};
use omnigate::store::rules::{self, Threading, Windows};
use omnigate::store::{ContextStore as _, Ingest, IngestPolicy, Person, RedisStore};
use omnigate_tests::bench::{median, rounds_arg, size};
use omnigate_tests::redis::RedisServer;

const OWED: usize = 1_000;

fn main() {
    let rounds = rounds_arg();
    println!("\n## The context rules in Rust (ns per message, median of {rounds} rounds)\n");
    rust_rules(rounds);
    println!(
        "\n## redis-server CPU per message by where the rules run (µs per EVALSHA, median of {rounds} alternated rounds)\n"
    );
    redis_scripts(rounds);
}

fn message(visitor: usize, n: usize, at: Timestamp) -> Ingest {
    let channel = "webchat".to_owned();
    Ingest {
        channel: channel.clone(),
        external_id: format!("msg-{visitor}-{n}"),
        at,
        person: Person {
            user: Handle {
                kind: HandleKind::ChannelUser,
                value: format!("webchat:visitor-{visitor}"),
                verified: false,
            },
            name: Some(format!("Visitor {visitor}")),
            handles: Vec::new(),
        },
        message: Some(HistoryEntry {
            event_id: format!("ev_{visitor:08}{n:06}ABCDEFGHJK"),
            at,
            channel,
            direction: Direction::Inbound,
            external_id: Some(format!("msg-{visitor}-{n}")),
            text: Some(format!(
                "hello number {n} from visitor {visitor}, is the blue one in stock?"
            )),
            parts: Vec::new(),
        }),
        referral: None,
        reply_window: None,
        owed: None,
        merged_owed: None,
    }
}

/// The decision per message, against the JSON encoding of its history entry.
fn rust_rules(rounds: usize) {
    let messages = size(200_000, 2_000);
    let start = Timestamp::now();
    let ingest = message(1, 1, start);
    let (latest, _) = rules::opened("cv_1".into(), "ct_1", "webchat", start);
    let windows = Windows::new();
    let inactivity = Duration::from_secs(24 * 3600);
    let mut decide = Vec::new();
    let mut encode = Vec::new();
    for _ in 0..rounds {
        let began = Instant::now();
        for _ in 0..messages {
            let ingest = black_box(&ingest);
            let threading = rules::threading(Some(&latest), ingest.at, inactivity);
            assert_eq!(threading, Threading::Continue);
            let mut conversation = latest.clone();
            let mut windows = windows.clone();
            black_box(rules::apply_inbound(
                &mut conversation,
                &mut windows,
                ingest,
            ));
            black_box(conversation);
        }
        decide.push(began.elapsed().as_nanos() as f64 / messages as f64);
        let began = Instant::now();
        for _ in 0..messages {
            let entry = black_box(&ingest).message.as_ref();
            black_box(serde_json::to_string(&entry).expect("json"));
        }
        encode.push(began.elapsed().as_nanos() as f64 / messages as f64);
    }
    let (decide, encode) = (median(&decide), median(&encode));
    println!(
        "| decision (threading + apply_inbound on a copy) | history entry to JSON | ratio |\n|---|---|---|"
    );
    println!(
        "| {decide:.0} ns | {encode:.0} ns | {:.2} |",
        decide / encode
    );
}

fn redis_scripts(rounds: usize) {
    let contacts = size(1_000, 50);
    let per_contact = size(20, 4);
    let redis = RedisServer::start().expect("redis-server");
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client.get_connection().expect("redis connection");
    let current = concat!(
        include_str!("store_rules/common.lua"),
        include_str!("store_rules/arrive.lua"),
        include_str!("store_rules/ingest.lua")
    );
    let apply = include_str!("store_rules/apply.lua");
    let load = |conn: &mut redis::Connection, text: &str| -> String {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(text)
            .query(conn)
            .expect("script load")
    };
    let current = load(&mut conn, current);
    let apply = load(&mut conn, apply);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let mut figures = (Vec::new(), Vec::new());
    let mut shipped = Vec::new();
    for _ in 0..rounds {
        shipped.push(shipped_run(
            &runtime,
            &mut conn,
            &redis,
            contacts,
            per_contact,
        ));
        figures.0.push(run(
            &mut conn,
            &redis,
            contacts,
            per_contact,
            |c, m, ms, pipe| current_call(pipe, &current, c, m, ms),
        ));
        let mut heads = vec![None; contacts];
        figures.1.push(run(
            &mut conn,
            &redis,
            contacts,
            per_contact,
            |c, m, ms, pipe| apply_call(pipe, &apply, &mut heads[c], c, m, ms),
        ));
    }
    let (current, apply) = (median(&figures.0), median(&figures.1));
    let shipped = median(&shipped);
    println!(
        "| rules in Lua (the ingest script before the move) | rules in Rust, guarded applier (prototype) | ratio | the store as shipped (`apply.lua`) | ratio to the Lua rules |\n|---|---|---|---|---|"
    );
    println!(
        "| {current:.1} µs | {apply:.1} µs | {:.2} | {shipped:.1} µs | {:.2} |",
        apply / current,
        shipped / current
    );
}

/// The workload through `RedisStore::ingest`; µs per `EVALSHA` of the counted messages.
fn shipped_run(
    runtime: &tokio::runtime::Runtime,
    conn: &mut redis::Connection,
    redis: &RedisServer,
    contacts: usize,
    per_contact: usize,
) -> f64 {
    // Opened inside the runtime: its connection manager spawns a task.
    let store = {
        let _entered = runtime.enter();
        RedisStore::open(&redis.url()).expect("store")
    };
    let policy = IngestPolicy {
        dedupe_ttl: Duration::from_secs(3 * 86_400),
        inactivity: Duration::from_secs(86_400),
        history_cap: 50,
        timeline_cap: 10_000,
        history_depth: 10,
    };
    let start = Timestamp::now();
    let (store, policy) = (&store, &policy);
    measure(conn, redis, contacts, per_contact, |_, calls| {
        runtime.block_on(futures::stream::iter(calls.to_vec()).for_each_concurrent(
            64,
            |(c, m)| async move {
                let at = start
                    .checked_add(Duration::from_millis(m as u64))
                    .expect("time");
                let mut ingest = message(c, m, at);
                ingest.owed = Some("x".repeat(OWED));
                store.ingest(ingest, policy).await.expect("ingest");
            },
        ));
    })
}

/// One workload of script calls made by `call`, pipelined; µs per counted call.
fn run(
    conn: &mut redis::Connection,
    redis: &RedisServer,
    contacts: usize,
    per_contact: usize,
    mut call: impl FnMut(usize, usize, i64, &mut redis::Pipeline),
) -> f64 {
    let start = Timestamp::now().as_millisecond();
    measure(conn, redis, contacts, per_contact, |conn, calls| {
        for chunk in calls.chunks(200) {
            let mut pipe = redis::pipe();
            for &(c, m) in chunk {
                call(c, m, start + m as i64, &mut pipe);
            }
            let _: () = pipe.query(conn).expect("scripts");
        }
    })
}

/// The workload on an empty server, sent by `send`: each contact's first message, then
/// the rest interleaved (each in an open conversation), which are counted. µs per
/// `EVALSHA` of the rest, one call per message.
fn measure(
    conn: &mut redis::Connection,
    redis: &RedisServer,
    contacts: usize,
    per_contact: usize,
    mut send: impl FnMut(&mut redis::Connection, &[(usize, usize)]),
) -> f64 {
    let _: () = redis::cmd("FLUSHALL").query(conn).expect("flush");
    let first: Vec<(usize, usize)> = (0..contacts).map(|c| (c, 0)).collect();
    send(conn, &first);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(conn)
        .expect("resetstat");
    let rest: Vec<(usize, usize)> = (1..per_contact)
        .flat_map(|m| (0..contacts).map(move |c| (c, m)))
        .collect();
    send(conn, &rest);
    let stats = redis.cli(&["INFO", "commandstats"]).expect("commandstats");
    let line = stats
        .lines()
        .find(|line| line.starts_with("cmdstat_evalsha:"))
        .expect("evalsha stats");
    let calls: f64 = field(line, "calls");
    assert_eq!(calls as usize, rest.len(), "one script per counted message");
    field(line, "usec_per_call")
}

fn field(line: &str, name: &str) -> f64 {
    line.split([':', ','])
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
        .expect("commandstats field")
}

fn texts(c: usize, m: usize) -> (String, String, String) {
    let ingest = message(c, m, Timestamp::now());
    let entry = serde_json::to_string(ingest.message.as_ref().expect("message")).expect("json");
    let handles = serde_json::to_string(&[&ingest.person.user]).expect("json");
    (entry, handles, format!("webchat\u{1f}msg-{c}-{m}"))
}

fn handle_key(c: usize) -> String {
    format!("og:hd:{{channel_user:webchat:visitor-{c}}}")
}

/// The gateway's own call (`RedisStore::arrive`'s arguments).
fn current_call(pipe: &mut redis::Pipeline, sha: &str, c: usize, m: usize, now_ms: i64) {
    let (entry, handles, member) = texts(c, m);
    let at_us = now_ms * 1000 + c as i64;
    pipe.cmd("EVALSHA")
        .arg(sha)
        .arg(1)
        .arg(handle_key(c))
        .arg("og:")
        .arg("")
        .arg(member)
        .arg(now_ms)
        .arg(3 * 86_400_000_i64)
        .arg(at_us)
        .arg("webchat")
        .arg(86_400_000_000_i64)
        .arg(50)
        .arg(10)
        .arg(format!("Visitor {c}"))
        .arg(handles)
        .arg(format!("cv_{c:08}{m:06}PROPOSED"))
        .arg(entry)
        .arg("")
        .arg("")
        .arg("")
        .arg(format!("\u{1f}{}", "x".repeat(OWED)))
        .arg(10_000)
        .arg("inbound")
        .arg("")
        .arg("")
        .arg(format!("ct_{c:020}"))
        .arg("")
        .ignore();
}

/// What a caller deciding in Rust keeps of each contact: its version, conversation and
/// message count.
#[derive(Clone)]
struct Head {
    version: u64,
    conversation: String,
    messages: u64,
}

/// The guarded applier's call with the writes the rules decided for this message.
fn apply_call(
    pipe: &mut redis::Pipeline,
    sha: &str,
    head: &mut Option<Head>,
    c: usize,
    m: usize,
    now_ms: i64,
) {
    let (entry, handles, member) = texts(c, m);
    let at_us = now_ms * 1000 + c as i64;
    let at = at_us.to_string();
    let touched = (now_ms * 1000).to_string();
    let timeline = |kind: &str, extra: &str| {
        format!("{{\"type\":\"{kind}\",\"at_us\":{at_us},\"channel\":\"webchat\"{extra}}}")
    };
    let message_entry = timeline("message", &format!(",\"message\":{entry}"));
    let contact = format!("ct_{c:020}");
    let (expected, contact_writes, conversation, conversation_writes, entries, opened) = match head
    {
        None => {
            let conversation = format!("cv_{c:08}FIRST");
            let contact_writes = [
                "id",
                &contact,
                "created_at",
                &at,
                "name",
                &format!("Visitor {c}"),
                "handles",
                &handles,
                "hs",
                &handles,
                "latest",
                &conversation,
            ]
            .join("\u{1f}");
            let conversation_writes = [
                "contact",
                &contact,
                "status",
                "open",
                "started_at",
                &at,
                "last_at",
                &at,
                "channels",
                "[\"webchat\"]",
                "current",
                "webchat",
                "messages",
                "1",
                "touched_at",
                &touched,
                "first_in",
                &at,
                "awaiting",
                &at,
            ]
            .join("\u{1f}");
            let entries = [timeline("conversation.started", ""), message_entry].join("\u{1e}");
            *head = Some(Head {
                version: 1,
                conversation: conversation.clone(),
                messages: 1,
            });
            (
                String::new(),
                contact_writes,
                conversation,
                conversation_writes,
                entries,
                "1",
            )
        }
        Some(known) => {
            let expected = known.version.to_string();
            known.version += 1;
            known.messages += 1;
            let conversation_writes = [
                "messages",
                &known.messages.to_string(),
                "touched_at",
                &touched,
                "last_at",
                &at,
            ]
            .join("\u{1f}");
            (
                expected,
                String::new(),
                known.conversation.clone(),
                conversation_writes,
                message_entry,
                "",
            )
        }
    };
    let owed = format!(
        "{now_ms}000\u{1f}{conversation}\u{1f}{opened}\u{1f}\u{1f}\u{1f}{}",
        "x".repeat(OWED)
    );
    pipe.cmd("EVALSHA")
        .arg(sha)
        .arg(1)
        .arg(handle_key(c))
        .arg("og:")
        .arg(expected)
        .arg(&contact)
        .arg(member)
        .arg(now_ms)
        .arg(3 * 86_400_000_i64)
        .arg(contact_writes)
        .arg(&conversation)
        .arg(conversation_writes)
        .arg("")
        .arg(format!("{at} {entry}"))
        .arg(50)
        .arg(entries)
        .arg(10_000)
        .arg(owed)
        .arg(10)
        .arg(opened)
        .ignore();
}
