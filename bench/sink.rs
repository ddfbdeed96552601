//! The bench's receiver: one listener per endpoint on 127.0.0.1 (the relay keys
//! inline URLs by host:port, so each endpoint gets its own port), each with a
//! profile. A 2xx answer is a delivery; the sink keeps the first one per event
//! id with its end-to-end latency (receive time - scheduled produce time).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_native_tls::TlsAcceptor;

/// How an endpoint answers.
#[derive(Debug, Clone, Copy)]
pub enum Profile {
    /// 200 after a fixed delay (zero = at once).
    Delay(Duration),
    /// 500 for this fraction of requests (1.0 = always), 200 otherwise.
    Fail(f64),
    /// Nothing listens on the port: connections are refused.
    Refused,
    /// Accepts, reads the request and never answers.
    Blackhole,
}

/// One endpoint of a scenario: its class (for the report) and its profile.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub class: &'static str,
    pub profile: Profile,
}

/// What the payload carries for the sink: the event number and its scheduled produce time.
#[derive(Deserialize)]
struct Tag {
    i: u64,
    t: u64,
}

/// Deliveries of one endpoint class.
#[derive(Debug, Default, Clone)]
pub struct ClassStats {
    pub name: &'static str,
    /// End-to-end latency of each first delivery, in microseconds.
    pub latencies_us: Vec<u64>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Earliest and latest scheduled produce time (µs since the epoch) of the events delivered.
    pub scheduled_us: Option<(u64, u64)>,
}

impl ClassStats {
    pub fn delivered(&self) -> usize {
        self.latencies_us.len()
    }

    /// Deliveries per second between the first and the last delivery of the class.
    pub fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some(first), Some(last)) if last > first => self.delivered() as f64 / (last - first).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// The rate at which the delivered events were scheduled to be produced: what
    /// was offered to the class in a fixed-load run (its delivered count over the
    /// span of their scheduled times).
    pub fn offered_rate(&self) -> f64 {
        match self.scheduled_us {
            Some((first, last)) if last > first => self.delivered() as f64 / ((last - first) as f64 / 1e6),
            _ => 0.0,
        }
    }
}

/// Everything the sink saw since the last [`Sink::take`].
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub ids: HashSet<u64>,
    pub duplicates: u64,
    pub requests: u64,
    pub classes: Vec<ClassStats>,
}

impl Seen {
    fn new(classes: &[&'static str]) -> Seen {
        Seen {
            classes: classes.iter().map(|&name| ClassStats { name, ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    pub fn class(&self, name: &str) -> Option<&ClassStats> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// First to last delivery over all classes.
    pub fn window(&self) -> Option<Duration> {
        let first = self.classes.iter().filter_map(|c| c.first).min()?;
        let last = self.classes.iter().filter_map(|c| c.last).max()?;
        Some(last - first)
    }
}

struct Ctx {
    class: usize,
    /// A delivery's id is `event * legs + leg`: one per event, or per leg of a fan-out (S9).
    legs: u64,
    leg: u64,
    floor_us: Arc<AtomicU64>,
    profile: Profile,
    seen: Arc<Mutex<Seen>>,
}

pub struct Sink {
    seen: Arc<Mutex<Seen>>,
    /// Latency counts from here at the earliest (µs since the epoch; 0 = from the scheduled time).
    floor_us: Arc<AtomicU64>,
    class_names: Vec<&'static str>,
    /// One URL per endpoint, in the order given.
    pub urls: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
    /// The ports of refused endpoints, bound and never listened on: connections are
    /// refused, and no listener of this run can be given the same port.
    _refusing: Vec<tokio::net::TcpSocket>,
}

impl Sink {
    /// Starts one listener per endpoint (HTTPS when `tls` is given). With `fanout`
    /// every event goes to every endpoint, and each leg counts as a delivery of its own.
    pub async fn start(endpoints: &[Endpoint], tls: Option<TlsAcceptor>, fanout: bool) -> anyhow::Result<Sink> {
        let mut class_names: Vec<&'static str> = Vec::new();
        for e in endpoints {
            if !class_names.contains(&e.class) {
                class_names.push(e.class);
            }
        }
        let seen = Arc::new(Mutex::new(Seen::new(&class_names)));
        let floor_us = Arc::new(AtomicU64::new(0));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls = tls.map(Arc::new);
        let mut urls = Vec::new();
        let mut tasks = Vec::new();
        let mut refusing = Vec::new();
        let legs = if fanout { endpoints.len() as u64 } else { 1 };
        for (index, e) in endpoints.iter().enumerate() {
            let leg = if fanout { index as u64 } else { 0 };
            if let Profile::Refused = e.profile {
                // Bound, not listening: a port freed again at once was given to the next
                // endpoint's listener in one run, which then answered the refused one's events.
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind("127.0.0.1:0".parse()?)?;
                urls.push(format!("{scheme}://127.0.0.1:{}/hook", socket.local_addr()?.port()));
                refusing.push(socket);
                continue;
            }
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            urls.push(format!("{scheme}://{}/hook", listener.local_addr()?));
            let class = class_names.iter().position(|c| *c == e.class).expect("class listed");
            let ctx =
                Arc::new(Ctx { class, legs, leg, floor_us: floor_us.clone(), profile: e.profile, seen: seen.clone() });
            tasks.push(tokio::spawn(serve(listener, ctx, tls.clone())));
        }
        Ok(Sink { seen, floor_us, class_names, urls, tasks, _refusing: refusing })
    }

    /// From now on, latency counts from now for events scheduled earlier: a
    /// backlog's latency is its catch-up time, not the time it waited for the run to start.
    pub fn start_clock(&self) {
        self.floor_us.store(crate::now_us(), Ordering::Relaxed);
    }

    /// Unique ids delivered so far.
    pub fn unique(&self) -> usize {
        self.seen.lock().unwrap().ids.len()
    }

    /// Whether this id was delivered.
    pub fn delivered(&self, id: u64) -> bool {
        self.seen.lock().unwrap().ids.contains(&id)
    }

    /// Returns what was seen and starts afresh (for the next phase on the same endpoints).
    pub fn take(&self) -> Seen {
        std::mem::replace(&mut *self.seen.lock().unwrap(), Seen::new(&self.class_names))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, ctx: Arc<Ctx>, tls: Option<Arc<TlsAcceptor>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(ctx.clone(), req));
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let received = Instant::now();
    let received_us = crate::now_us();
    let status = match ctx.profile {
        Profile::Delay(d) => {
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            StatusCode::OK
        }
        Profile::Fail(fraction) if rand::random::<f64>() < fraction => StatusCode::INTERNAL_SERVER_ERROR,
        Profile::Fail(_) => StatusCode::OK,
        Profile::Blackhole => std::future::pending().await,
        Profile::Refused => unreachable!("nothing listens for a refused endpoint"),
    };
    let mut seen = ctx.seen.lock().unwrap();
    seen.requests += 1;
    if status == StatusCode::OK {
        if let Ok(tag) = serde_json::from_slice::<Tag>(&body) {
            if seen.ids.insert(tag.i * ctx.legs + ctx.leg) {
                let class = &mut seen.classes[ctx.class];
                let from = tag.t.max(ctx.floor_us.load(Ordering::Relaxed));
                class.latencies_us.push(received_us.saturating_sub(from));
                class.first.get_or_insert(received);
                let (lo, hi) = class.scheduled_us.get_or_insert((tag.t, tag.t));
                (*lo, *hi) = ((*lo).min(tag.t), (*hi).max(tag.t));
                class.last = Some(received);
            } else {
                seen.duplicates += 1;
            }
        }
    }
    drop(seen);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_that_falls_behind_is_delivered_slower_than_it_was_offered() {
        let t0 = Instant::now();
        let class = ClassStats {
            name: "fast",
            latencies_us: vec![1, 2, 3, 4],
            first: Some(t0),
            last: Some(t0 + Duration::from_secs(2)),
            scheduled_us: Some((5_000_000, 6_000_000)),
        };
        assert_eq!(class.rate(), 2.0);
        assert_eq!(class.offered_rate(), 4.0);
        assert_eq!(ClassStats { scheduled_us: None, ..class }.offered_rate(), 0.0);
    }
}
