//! Heap allocations per inbound message on the gateway's threads, memory and Redis store:
//! the hot path's allocation diet as a figure. Run by `cargo xtask bench`.
//!
//! The gateway runs in this process on its own tokio runtime whose threads are marked;
//! a counting wrapper around the binary's allocator counts only marked threads, so the
//! load generator (another runtime) is not counted. Every request is a distinct, signed
//! web chat message (landing URL with UTM parameters and a click id), sent after a
//! warm-up that opens a conversation for each of 5 000 visitors, in two cases: one more
//! message from each of them (a message in an open conversation, the common case) and a
//! first message from 5 000 new visitors (a contact and a conversation made, its outcome
//! counters written). Allocation counts do not depend on the machine's speed, so unlike
//! the throughput figures they are comparable between runs and builds.
//!
//! To see *where* they come from, run it under heaptrack with the system allocator
//! (heaptrack sees malloc, not mimalloc):
//! `OMNIGATE_BENCH_SYSTEM_ALLOCATOR=1 heaptrack target/release/deps/allocations-… --bench`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::{CStr, c_char};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use omnigate_tests::bench::{SECRET, prepared_webchat, prepared_webchat_from, size};
use omnigate_tests::load;
use omnigate_tests::redis::RedisServer;
use omnigate_tests::{Gateway, plugin_path, toml_path};

/// The binary's allocator, counted on the gateway's threads.
struct Counting;

thread_local! {
    /// Whether this thread is one of the gateway's (set when the thread starts).
    static GATEWAY_THREAD: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Which allocator serves this process: 0 not chosen yet, 1 mimalloc, 2 malloc. Chosen at
/// the first allocation, before `main`, and never changed: a block is always freed by the
/// allocator that made it.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// The environment variable that picks malloc instead of mimalloc (for heaptrack).
const SYSTEM_ALLOCATOR: &CStr = c"OMNIGATE_BENCH_SYSTEM_ALLOCATOR";

/// The allocator serving this process (see [`CHOSEN`]).
fn backend() -> &'static dyn GlobalAlloc {
    let system = match CHOSEN.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // `std::env` would allocate; libc's `getenv` does not.
            unsafe extern "C" {
                fn getenv(name: *const c_char) -> *const c_char;
            }
            // SAFETY: a NUL-terminated name; nothing in this process sets variables.
            let system = !unsafe { getenv(SYSTEM_ALLOCATOR.as_ptr()) }.is_null();
            CHOSEN.store(if system { 2 } else { 1 }, Ordering::Relaxed);
            system
        }
    };
    if system { &System } else { &mimalloc::MiMalloc }
}

fn count(bytes: usize) {
    // `try_with`: a thread being torn down has no thread-locals left; it is not counted.
    if GATEWAY_THREAD.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the one allocator chosen for the process;
// counting touches only atomics and a const-initialized thread-local without a
// destructor, and choosing reads the environment without allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { backend().alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { backend().alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { backend().dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growing Vec or String: one more allocation as far as the allocator's work goes.
        count(new_size);
        // SAFETY: as above.
        unsafe { backend().realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONNECTIONS: usize = 4;

fn main() {
    let _telemetry =
        omnigate::ops::telemetry::init(omnigate::ops::telemetry::LogFormat::Text, false)
            .expect("telemetry");
    // Messages per case: one from each visitor (5 000 visitors when measuring).
    let visitors = size(5_000, 50);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| GATEWAY_THREAD.with(|marked| marked.set(true)))
        .enable_all()
        .build()
        .expect("tokio");
    let generator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let redis = RedisServer::start().expect("redis-server");
    println!(
        "\n## Heap allocations per inbound message on the gateway's threads ({visitors} distinct signed web chat messages per case, after a warm-up, {CONNECTIONS} connections)\n"
    );
    println!(
        "| store | message | allocations per message | bytes allocated per message |\n|---|---|---|---|"
    );
    for (name, store) in [
        ("memory", String::new()),
        ("Redis", format!("[store]\nurl = \"{}\"\n", redis.url())),
    ] {
        let config = format!(
            "{store}[[channels]]\nid = \"web\"\nplugin = {}\nconfig = {{ callback_url = \"http://127.0.0.1:9/x\" }}\nsecrets = {{ signing_secret = \"{SECRET}\" }}\n",
            toml_path(&plugin_path("webchat"))
        );
        let gateway = servers.block_on(Gateway::start(&config)).expect("gateway");
        let addr = gateway.addr;
        // Warm-up: instance pool, connections, and every visitor's conversation open.
        let warm = generator.block_on(load::closed_loop(
            addr,
            prepared_webchat(&format!("warm-{name}"), visitors),
            CONNECTIONS,
        ));
        assert_eq!(warm.failed, 0, "warm-up requests failed on {name}");
        for (case, tag, prefix) in [
            ("message in an open conversation", "open", "v-"),
            ("first message of a new visitor", "new", "new-"),
        ] {
            let requests = prepared_webchat_from(&format!("{tag}-{name}"), visitors, prefix);
            let (allocations, bytes) = (
                ALLOCATIONS.load(Ordering::Relaxed),
                BYTES.load(Ordering::Relaxed),
            );
            let report = generator.block_on(load::closed_loop(addr, requests, CONNECTIONS));
            let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
            let bytes = BYTES.load(Ordering::Relaxed) - bytes;
            assert_eq!(report.failed, 0, "requests failed on {name}");
            assert_eq!(report.ok, visitors, "every message answered on {name}");
            println!(
                "| {name} | {case} | {:.0} | {:.0} |",
                allocations as f64 / visitors as f64,
                bytes as f64 / visitors as f64
            );
        }
        servers.block_on(gateway.stop());
    }
}
