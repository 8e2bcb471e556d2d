//! Long polling: a request on the long-poll path that already has the current work is
//! parked here, holding no handler thread, and answered with fresh work when the work
//! changes (new block, new best share), when the node becomes ready, or after the
//! deadline. Replies always carry id 0, as R's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select, tick};
use log::{debug, warn};
use serde_json::json;
use tiny_http::{Header, Request};

use super::http::{envelope, getwork_headers, respond};
use super::service::{ClientInfo, Service};
use super::{LOG, Shared, WorkerError};

/// Most long polls parked at once; more are answered at once.
const MAX_PARKED: usize = 20_000;
/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(250);
/// Parked requests answered per helper thread when many wait.
const PER_THREAD: usize = 128;

struct Parked {
    request: Request,
    client: ClientInfo,
    headers: Vec<Header>,
    since: Instant,
}

/// What the HTTP threads use to park requests.
#[derive(Clone)]
pub(crate) struct LongPollHandle {
    service: Arc<Service>,
    parked: Sender<Parked>,
    count: Arc<AtomicUsize>,
}

impl LongPollHandle {
    pub fn service(&self) -> Arc<Service> {
        self.service.clone()
    }

    pub fn park(&self, request: Request, client: ClientInfo) {
        let headers = getwork_headers(&request, self.service.shared.stratum_addr.port());
        let parked = Parked {
            request,
            client,
            headers,
            since: Instant::now(),
        };
        match self.parked.try_send(parked) {
            Ok(()) => {}
            Err(TrySendError::Full(p) | TrySendError::Disconnected(p)) => {
                warn!(target: LOG, "too many long polls: one answered at once");
                answer(&self.service, p);
            }
        }
    }
}

pub(crate) struct LongPoll {
    handle: LongPollHandle,
    wake: Sender<()>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn answer(service: &Service, p: Parked) {
    let result = service.get_work(&p.client);
    let body = envelope(&json!(0), result).unwrap_or_default();
    respond(p.request, 200, body, p.headers);
}

/// Answers every parked request, on a few threads when there are many.
fn answer_all(service: &Service, parked: Vec<Parked>) {
    if parked.len() <= PER_THREAD {
        for p in parked {
            answer(service, p);
        }
        return;
    }
    let mut chunks: Vec<Vec<Parked>> = Vec::new();
    let per = parked.len().div_ceil(4).max(PER_THREAD);
    let mut it = parked.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(per).collect());
    }
    thread::scope(|s| {
        for chunk in chunks {
            let spawned = crate::thread::spawn_scoped(s, "longpoll_answer", move || {
                for p in chunk {
                    answer(service, p);
                }
            });
            if let Err(e) = spawned {
                warn!(target: LOG, "cannot start a long-poll helper: {e}");
            }
        }
    });
}

impl LongPoll {
    pub fn start(shared: Arc<Shared>) -> Result<LongPoll, WorkerError> {
        let service = Arc::new(Service::new(shared.clone()));
        // A parked request keeps its connection's place, so no more than the HTTP
        // connection cap ever wait; the channel's slots are allocated and touched up front
        // (20,000 of them were 6 MB of resident memory on an idle node).
        let (parked_tx, parked_rx) =
            bounded(shared.config.max_http_connections.clamp(1, MAX_PARKED));
        let (wake_tx, wake_rx) = bounded(1);
        let count = Arc::new(AtomicUsize::new(0));
        let handle = LongPollHandle {
            service: service.clone(),
            parked: parked_tx,
            count: count.clone(),
        };
        let stop = shared.shutdown.clone();
        let thread = crate::thread::spawn("longpoll", move || {
            run(&service, &parked_rx, &wake_rx, stop.signal(), &count)
        })
        .map_err(WorkerError::Spawn)?;
        Ok(LongPoll {
            handle,
            wake: wake_tx,
            shared,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> LongPollHandle {
        self.handle.clone()
    }

    /// The work changed (or the node became ready): answer every parked request.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    pub fn parked(&self) -> usize {
        self.handle.count.load(Ordering::Relaxed)
    }

    /// Joins the thread, which ends at the workers' shutdown.
    pub fn stop(mut self) {
        self.shared.shutdown.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    service: &Service,
    parked_rx: &Receiver<Parked>,
    wake_rx: &Receiver<()>,
    stop_rx: &Receiver<()>,
    count: &AtomicUsize,
) {
    let mut parked: Vec<Parked> = Vec::new();
    let deadline = service.shared.config.long_poll_deadline;
    let ticker = tick(TICK);
    loop {
        select! {
            recv(parked_rx) -> p => {
                let Ok(p) = p else { break };
                // The work may have changed between the check and the parking.
                if service.should_park(&p.client) {
                    parked.push(p);
                } else {
                    answer(service, p);
                }
            }
            recv(wake_rx) -> _ => {
                // Requests parked just before the wake are in the channel still.
                parked.extend(parked_rx.try_iter());
                if service.shared.readiness().message().is_none()
                    && service.shared.current().is_some()
                {
                    let all = std::mem::take(&mut parked);
                    debug!(target: LOG, "new work: answering {} long polls", all.len());
                    answer_all(service, all);
                }
            }
            recv(stop_rx) -> _ => break,
            recv(ticker) -> _ => {
                let now = Instant::now();
                let (late, keep): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut parked)
                    .into_iter()
                    .partition(|p| now.duration_since(p.since) >= deadline);
                parked = keep;
                answer_all(service, late);
            }
        }
        count.store(parked.len(), Ordering::Relaxed);
    }
    // Dropped requests get tiny_http's empty 500, and the miners ask again.
}
