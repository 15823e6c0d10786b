//! A loopback load generator for the benchmarks: keep-alive HTTP/1.1 connections sending
//! pre-built, distinct requests, closed loop (maximum rate) or open loop (fixed rate,
//! latency measured from each request's scheduled time, so queueing counts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// 2xx answers.
    pub ok: usize,
    /// Other answers and transport errors.
    pub failed: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of each answered request, in seconds.
    pub latencies: Vec<f64>,
}

impl LoadReport {
    /// Answered requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Send every request as fast as `connections` connections allow.
pub async fn closed_loop(
    addr: SocketAddr,
    requests: Vec<Prepared>,
    connections: usize,
) -> LoadReport {
    run(addr, requests, connections, None).await
}

/// Send request `i` at `i / rate` seconds after the start.
pub async fn open_loop(
    addr: SocketAddr,
    requests: Vec<Prepared>,
    connections: usize,
    rate: f64,
) -> LoadReport {
    run(addr, requests, connections, Some(rate)).await
}

async fn run(
    addr: SocketAddr,
    requests: Vec<Prepared>,
    connections: usize,
    rate: Option<f64>,
) -> LoadReport {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(addr, requests.clone(), next.clone(), started, rate)))
        .collect();
    let mut report = LoadReport::default();
    for worker in workers {
        if let Ok(part) = worker.await {
            report.ok += part.ok;
            report.failed += part.failed;
            report.latencies.extend(part.latencies);
        }
    }
    report.elapsed = started.elapsed();
    report
}

async fn worker(
    addr: SocketAddr,
    requests: Arc<Vec<Prepared>>,
    next: Arc<AtomicUsize>,
    started: Instant,
    rate: Option<f64>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return report;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return report;
    };
    tokio::spawn(connection);
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(prepared) = requests.get(index) else {
            break;
        };
        let scheduled = match rate {
            Some(rate) => {
                let at = started + Duration::from_secs_f64(index as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let mut request =
            hyper::Request::post(prepared.path.as_str()).header("host", addr.to_string());
        for (name, value) in &prepared.headers {
            request = request.header(name, value);
        }
        let Ok(request) = request.body(Full::new(prepared.body.clone())) else {
            report.failed += 1;
            continue;
        };
        if sender.ready().await.is_err() {
            report.failed += 1;
            break;
        }
        match sender.send_request(request).await {
            Ok(response) => {
                let success = response.status().is_success();
                let _ = response.into_body().collect().await;
                if success {
                    report.ok += 1;
                    report.latencies.push(scheduled.elapsed().as_secs_f64());
                } else {
                    report.failed += 1;
                }
            }
            Err(_) => {
                report.failed += 1;
                break;
            }
        }
    }
    report
}
