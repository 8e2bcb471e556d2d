//! The web dashboard and JSON API, served on the worker port by the worker's HTTP server.
//!
//! The node thread publishes a [`PoolStatus`] once a second on a [`StatusBoard`]; peers and
//! miners are read from their own handles through [`PeerSource`] and [`MinerSource`] at each
//! request. [`Web::handle`] turns a request line into a [`Reply`]: the dashboard at `/`, a
//! page per payout address at `/miner/ADDRESS`, JSON under `/api/` and at the
//! p2pool-compatible paths, `/health`, and Prometheus text at `/metrics`. Only GET and HEAD are answered (405 otherwise); unknown paths get 404.
//! doc/api.md describes every endpoint.

pub mod api;
pub mod metrics;
pub mod miner;
pub mod page;
pub mod sources;
pub mod status;

use std::sync::{Arc, RwLock};

use serde_json::Value;

pub use status::{
    BitcoindState, BlockCounts, Bucket, FoundBlock, LocalShares, MinerSource, MinerView, PaidBlock,
    Payout, PeerSource, PeerView, PoolStatus, RecentShare, StatusBoard, unix_now,
};

use crate::bitcoin::chain::ChainParams;
use crate::worker::{HttpReply, WebRoutes};
use api::View;
pub use sources::{miner_views, peer_source};

/// Content type of the JSON answers.
pub const JSON: &str = "application/json";
/// Content type of the dashboard.
pub const HTML: &str = "text/html; charset=utf-8";
/// Content type of `/metrics` (Prometheus text format 0.0.4).
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of plain error messages.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// Shares listed by `/api/shares` unless `limit` says otherwise (and at most this many).
const SHARES_LIMIT: usize = 100;

/// Builds the web's answers (the worker's [`HttpReply`]: the server adds Content-Length and
/// leaves the body out for HEAD).
fn reply(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpReply {
    HttpReply {
        status,
        content_type: content_type.to_owned(),
        headers: vec![("Cache-Control".into(), "no-store".into())],
        body: body.into(),
    }
}

/// A JSON answer; readable from other origins, as R's were. A negative zero anywhere in
/// it is written as 0.
pub fn json_reply(status: u16, value: &Value) -> HttpReply {
    let mut value = value.clone();
    no_negative_zero(&mut value);
    let mut r = reply(status, JSON, value.to_string());
    r.headers
        .push(("Access-Control-Allow-Origin".into(), "*".into()));
    r
}

/// Replaces every `-0.0` in `value` with `0.0` (a sum of nothing, or a product with a
/// negative factor, reads oddly as `-0.0`).
pub fn no_negative_zero(value: &mut Value) {
    match value {
        Value::Number(n) if n.as_f64() == Some(0.0) && n.is_f64() => {
            *value = Value::from(0.0);
        }
        Value::Array(items) => items.iter_mut().for_each(no_negative_zero),
        Value::Object(map) => map.values_mut().for_each(no_negative_zero),
        _ => {}
    }
}

/// A plain-text answer.
pub fn text_reply(status: u16, text: &str) -> HttpReply {
    reply(status, TEXT, format!("{text}\n"))
}

/// The web routes; cheap to clone (all handles are shared, so a source set on one clone
/// is seen by all).
#[derive(Clone)]
pub struct Web {
    board: StatusBoard,
    sources: Arc<RwLock<Sources>>,
}

struct Sources {
    peers: PeerSource,
    miners: MinerSource,
    /// The network's Bitcoin parameters, to check the addresses of `/miner/` pages.
    chain: Option<ChainParams>,
}

impl Web {
    /// Routes reading `board`, with no peers or miners until [`Web::set_peers`] and
    /// [`Web::set_miners`] wire their sources.
    pub fn new(board: StatusBoard) -> Web {
        Web {
            board,
            sources: Arc::new(RwLock::new(Sources {
                peers: Arc::new(Vec::new),
                miners: Arc::new(Vec::new),
                chain: None,
            })),
        }
    }

    /// Reads connected peers from `source` at each request (may be set after the server
    /// started, e.g. once the p2p side runs).
    pub fn set_peers(&self, source: PeerSource) {
        self.sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .peers = source;
    }

    /// Reads this node's miners from `source` at each request (may be set after the
    /// worker server that serves this web started).
    pub fn set_miners(&self, source: MinerSource) {
        self.sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .miners = source;
    }

    /// Checks the addresses of `/miner/` pages against `chain` (without it, any address
    /// shaped like one is taken).
    pub fn set_chain(&self, chain: ChainParams) {
        self.sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .chain = Some(chain);
    }

    /// The board this web reads.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    fn peers_and_miners(&self) -> (Vec<PeerView>, Vec<MinerView>) {
        let (peers, miners) = {
            let sources = self.sources.read().unwrap_or_else(|e| e.into_inner());
            (sources.peers.clone(), sources.miners.clone())
        };
        (peers(), miners())
    }

    /// Answers one request. `path` is without the query string; `query` is what follows `?`
    /// (possibly empty). HEAD gets the GET answer (the server drops the body).
    pub fn handle(&self, method: &str, path: &str, query: &str) -> HttpReply {
        if !method.eq_ignore_ascii_case("GET") && !method.eq_ignore_ascii_case("HEAD") {
            let mut r = text_reply(405, "method not allowed: only GET and HEAD");
            r.headers.push(("Allow".into(), "GET, HEAD".into()));
            return r;
        }
        if let Some(html) = page::page(path) {
            return reply(200, HTML, html);
        }
        if path == "/api/chart" {
            let (range, step) = range_and_step(query);
            let chart = self.board.chart(range, step);
            return json_reply(200, &serde_json::json!(chart));
        }
        if let Some(address) = path.strip_prefix("/miner/") {
            return match self.miner_known(address) {
                Ok(()) => reply(200, HTML, page::MINER.as_str()),
                Err((status, why)) => reply(status, HTML, page::error_page(status, &why)),
            };
        }
        if let Some(address) = path.strip_prefix("/api/miner/") {
            if let Err((status, why)) = self.miner_known(address) {
                return json_reply(
                    status,
                    &serde_json::json!({"error": why, "address": printable(address)}),
                );
            }
            let (range, step) = range_and_step(query);
            let history = self.board.miner_chart(address, range, step);
            return self.with_view(|view| json_reply(200, &miner::miner(view, address, history)));
        }
        self.with_view(|view| self.answer(view, path, query))
    }

    /// `f` on a view of the latest status, peers and miners.
    fn with_view<R>(&self, f: impl FnOnce(&View<'_>) -> R) -> R {
        let status = self.board.snapshot();
        let (peers, miners) = self.peers_and_miners();
        f(&View {
            status: &status,
            peers: &peers,
            miners: &miners,
            now: unix_now(),
        })
    }

    /// The answer to a status route, from `view`.
    fn answer(&self, view: &View<'_>, path: &str, query: &str) -> HttpReply {
        let value = match path {
            "/health" => {
                let (ready, body) = api::health(view);
                return json_reply(if ready { 200 } else { 503 }, &body);
            }
            "/metrics" => return reply(200, PROMETHEUS, metrics::render(view)),
            "/api/stats" => api::stats(view),
            "/api/miners" => api::miners(view),
            "/api/peers" => api::peers(view),
            "/api/blocks" => api::blocks(view),
            "/api/payments" => api::payments(view),
            "/api/shares" => {
                let limit = query_u64(query, "limit").map_or(SHARES_LIMIT, |n| n as usize);
                api::shares(view, limit.min(SHARES_LIMIT))
            }
            "/rate" => api::rate(view),
            "/difficulty" => api::difficulty(view),
            "/users" => api::users(view),
            "/fee" => api::fee(view),
            "/current_payouts" => api::current_payouts(view),
            "/recent_blocks" => api::recent_blocks(view),
            "/global_stats" => api::global_stats(view),
            "/local_stats" => api::local_stats(view),
            "/uptime" => serde_json::json!(view.uptime()),
            _ => return text_reply(404, &format!("not found: {}", printable(path))),
        };
        json_reply(200, &value)
    }
}

impl Web {
    /// Whether `/miner/ADDRESS` has a page: 400 with the reason for a malformed address,
    /// 404 for one the node knows nothing of.
    fn miner_known(&self, address: &str) -> Result<(), (u16, String)> {
        let chain = self
            .sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .chain
            .clone();
        miner::check_address(address, chain.as_ref()).map_err(|why| (400, why))?;
        let status = self.board.snapshot();
        let (peers, miners) = self.peers_and_miners();
        let view = View {
            status: &status,
            peers: &peers,
            miners: &miners,
            now: unix_now(),
        };
        if miner::known(&view, address, self.board.knows_miner(address)) {
            Ok(())
        } else {
            Err((
                404,
                "this node knows nothing of this address yet: no miner of this node mines to \
                 it, no current payout, share, found or paid block names it, and no history is \
                 kept for it"
                    .into(),
            ))
        }
    }
}

impl WebRoutes for Web {
    /// Every request that is not getwork's reaches the web, which always answers (404
    /// itself for unknown paths, 405 for methods other than GET and HEAD).
    fn handle(&self, method: &str, path: &str, query: &str) -> Option<HttpReply> {
        Some(Web::handle(self, method, path, query))
    }
}

/// A chart's `range` and `step` from the query string: 6 h and a 72nd of the range unless
/// given (the history clamps both).
fn range_and_step(query: &str) -> (u64, u64) {
    let range = query_u64(query, "range").unwrap_or(6 * 3600);
    let step = query_u64(query, "step").unwrap_or(range / 72);
    (range, step)
}

/// A number from the query string (`a=1&b=2`), if present and valid.
fn query_u64(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// A path safe to echo in an error: printable ASCII, at most 100 characters.
fn printable(path: &str) -> String {
    path.chars()
        .take(100)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_numbers_are_read_by_key() {
        assert_eq!(query_u64("range=3600&step=60", "step"), Some(60));
        assert_eq!(query_u64("range=x", "range"), None);
        assert_eq!(query_u64("", "range"), None);
    }

    #[test]
    fn echoed_paths_are_printable_and_short() {
        assert_eq!(printable("/a\nb"), "/a?b");
        assert_eq!(printable(&"x".repeat(500)).len(), 100);
    }

    #[test]
    fn other_methods_are_refused_with_allow() {
        let web = Web::new(StatusBoard::new());
        let reply = web.handle("POST", "/api/stats", "");
        assert_eq!(reply.status, 405);
        assert!(
            reply
                .headers
                .iter()
                .any(|(k, v)| *k == "Allow" && v == "GET, HEAD")
        );
    }
}
