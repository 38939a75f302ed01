//! The HTTP API (JSON, under `/v1`; documented in `docs/api.md`). Reads go straight to the store;
//! submissions go to the event loop and wait, bounded, for their certificate.

use std::convert::Infallible;
use std::time::Duration;

use hallmark_protocol::checkpoint::{AnchoredProof, ProofBundle, ProvenEvent};
use hallmark_protocol::{
    CertifiedEvent, Event, EventError, EventHash, Federation, ItemId, ManufacturerId, OfferId,
    Subject,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::engine::{Input, Submitted};
use crate::metrics;
use crate::store::Store;

/// Largest request body.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Default and largest wait for a certificate.
pub const DEFAULT_WAIT_MS: u64 = 5_000;
pub const MAX_WAIT_MS: u64 = 30_000;
/// Media type of the binary (postcard, `hallmark_protocol::encode`) form of a submission and of
/// its certified reply.
pub const BINARY: &str = "application/octet-stream";
/// Route prefixes used as metric labels (anything else is "other": bounded cardinality).
const ROUTES: [&str; 9] = [
    "/scan",
    "/v1/events",
    "/v1/items",
    "/v1/manufacturers",
    "/v1/offers",
    "/v1/log",
    "/v1/info",
    "/v1/health",
    "/v1/checkpoints",
];
/// Most log entries per request.
pub const MAX_LOG_LIMIT: usize = 1_000;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// The store (read-only here).
    pub store: Store,
    /// The event loop.
    pub inputs: mpsc::Sender<Input>,
    /// The federation.
    pub federation: Federation,
    /// Static facts for `/v1/info`.
    pub info: serde_json::Value,
}

/// An error response: `{"error": {"code", "message"}}`.
pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    warp::reply::with_status(
        warp::reply::json(&json!({"error": {"code": code, "message": message.to_string()}})),
        status,
    )
    .into_response()
}

fn ok<T: Serialize>(v: &T) -> Response {
    warp::reply::json(v).into_response()
}

fn event_error_code(e: &EventError) -> &'static str {
    match e {
        EventError::WrongFederation { .. } => "wrong_federation",
        EventError::BadSignature | EventError::WrongSigningKey => "bad_signature",
        EventError::GenesisNotAtZero { .. } | EventError::NotGenesis { .. } => "bad_height",
        EventError::BadField { .. } | EventError::ZeroPrice => "bad_field",
        EventError::NotAnOffer => "not_an_offer",
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    wait_ms: Option<u64>,
}

/// How a submission and its certified reply are encoded: JSON, or postcard when the request
/// says `Content-Type` / `Accept: application/octet-stream`.
struct Encodings {
    binary_body: bool,
    binary_reply: bool,
}

impl Encodings {
    fn of(content_type: Option<&str>, accept: Option<&str>) -> Self {
        // One of the listed media types, whatever its parameters and case.
        let is_binary = |h: Option<&str>| {
            h.is_some_and(|v| {
                v.split(',').any(|t| {
                    t.split(';')
                        .next()
                        .is_some_and(|m| m.trim().eq_ignore_ascii_case(BINARY))
                })
            })
        };
        Self {
            binary_body: is_binary(content_type),
            binary_reply: is_binary(accept),
        }
    }
}

#[derive(Deserialize)]
struct LogQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

/// Item history as served to scanners.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct History {
    /// The manufacturer's certified registration.
    pub manufacturer: CertifiedEvent,
    /// The item's certified events from its mint.
    pub events: Vec<CertifiedEvent>,
}

impl Api {
    async fn submit(
        self: std::sync::Arc<Self>,
        wait: WaitQuery,
        encodings: Encodings,
        body: warp::hyper::body::Bytes,
    ) -> Response {
        let received = std::time::Instant::now();
        let event: Event = if encodings.binary_body {
            match hallmark_protocol::decode(&body) {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_event", e),
            }
        } else {
            match serde_json::from_slice(&body) {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_json", e),
            }
        };
        let hash = match event.check(self.federation.id()) {
            Ok(h) => {
                metrics::SIGNATURES
                    .with_label_values(&["author", "valid"])
                    .inc();
                h
            }
            Err(e) => {
                if e == EventError::BadSignature {
                    metrics::SIGNATURES
                        .with_label_values(&["author", "invalid"])
                        .inc();
                }
                metrics::REJECTED
                    .with_label_values(&[event_error_code(&e)])
                    .inc();
                return error(StatusCode::BAD_REQUEST, event_error_code(&e), e);
            }
        };
        let (reply, rx) = oneshot::channel();
        if self
            .inputs
            .try_send(Input::Submit {
                event,
                hash,
                received,
                reply,
            })
            .is_err()
        {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the operator's queue is full; retry later",
            );
        }
        let submitted = match rx.await {
            Ok(Ok(s)) => s,
            Ok(Err(r)) => {
                let status = match r.code {
                    "internal" => StatusCode::INTERNAL_SERVER_ERROR,
                    "already_certified" | "stale_height" | "future_height" => StatusCode::CONFLICT,
                    "bitcoin_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                return error(status, r.code, r.message);
            }
            Err(_) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the operator is stopping",
                )
            }
        };
        let wait = Duration::from_millis(wait.wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
        // Serialized straight from the certified event (a `json!` value would first copy it
        // into a tree of strings).
        #[derive(Serialize)]
        struct Certified<'a> {
            status: &'static str,
            hash: EventHash,
            certified: &'a CertifiedEvent,
        }
        let certified = |ce: &CertifiedEvent| {
            if encodings.binary_reply {
                let mut r = Response::new(hallmark_protocol::encode(ce).into());
                r.headers_mut().insert(
                    warp::http::header::CONTENT_TYPE,
                    warp::http::HeaderValue::from_static(BINARY),
                );
                return r;
            }
            ok(&Certified {
                status: "certified",
                hash,
                certified: ce,
            })
        };
        match submitted {
            Submitted::Certified(ce) => certified(&ce),
            Submitted::Pending(rx) => match tokio::time::timeout(wait, rx).await {
                Ok(Ok(ce)) => certified(&ce),
                Ok(Err(_)) => error(
                    StatusCode::CONFLICT,
                    "superseded",
                    "another event was certified at this height (conflicting submission)",
                ),
                Err(_) => warp::reply::with_status(
                    warp::reply::json(&json!({"status": "pending", "hash": hash})),
                    StatusCode::ACCEPTED,
                )
                .into_response(),
            },
        }
    }

    fn item(&self, id: &str) -> Response {
        let Ok(id) = id.parse::<ItemId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "item id must be 64 hex digits",
            );
        };
        match self.store.item(&id) {
            Ok(Some(s)) => ok(&s),
            Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no item {id}")),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    fn history(&self, id: &str) -> Response {
        let Ok(id) = id.parse::<ItemId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "item id must be 64 hex digits",
            );
        };
        let result = (|| {
            let Some(state) = self.store.item(&id)? else {
                return Ok(None);
            };
            let Some(reg) = self
                .store
                .chain(&Subject::Manufacturer(state.manufacturer))?
                .into_iter()
                .next()
            else {
                return Ok(None);
            };
            let events = self.store.chain(&Subject::Item(id))?;
            Ok::<_, crate::store::StoreError>(Some(History {
                manufacturer: reg,
                events,
            }))
        })();
        match result {
            Ok(Some(h)) => ok(&h),
            Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no item {id}")),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    fn manufacturer(&self, id: &str) -> Response {
        let Ok(id) = id.parse::<ManufacturerId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "manufacturer id must be 64 hex digits",
            );
        };
        match (
            self.store.manufacturer(&id),
            self.store.chain(&Subject::Manufacturer(id)),
        ) {
            (Ok(Some(r)), Ok(chain)) => ok(&json!({"record": r, "registration": chain.first()})),
            (Ok(None), _) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no manufacturer {id}"),
            ),
            (Err(e), _) | (_, Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    fn offer(&self, id: &str) -> Response {
        let Ok(id) = id.parse::<OfferId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "offer id must be 64 hex digits",
            );
        };
        match (
            self.store.offer(&id),
            self.store.certified(&EventHash(id.0)),
        ) {
            (Ok(Some(r)), Ok(ce)) => ok(&json!({"record": r, "event": ce})),
            (Ok(None), _) => error(StatusCode::NOT_FOUND, "not_found", format!("no offer {id}")),
            (Err(e), _) | (_, Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    fn event(&self, hash: &str) -> Response {
        let Ok(hash) = hash.parse::<EventHash>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "event hash must be 64 hex digits",
            );
        };
        match self.store.certified(&hash) {
            Ok(Some(ce)) => ok(&ce),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no certified event {hash}"),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    fn checkpoints(&self, q: &LogQuery) -> Response {
        let from = q.from.unwrap_or(0);
        let limit = q.limit.unwrap_or(100).min(MAX_LOG_LIMIT) as u64;
        let result = (|| {
            let next = self.store.next_checkpoint()?;
            let mut list = Vec::new();
            for n in from..next.min(from.saturating_add(limit)) {
                if let Some(f) = self.store.checkpoint(n)? {
                    list.push(json!({"number": n, "hash": f.certified.checkpoint.hash(), "final": f, "anchor": self.store.anchor(n)?}));
                }
            }
            Ok::<_, crate::store::StoreError>(json!({"next": next, "checkpoints": list}))
        })();
        match result {
            Ok(v) => ok(&v),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    /// The item's proof bundle: every certified event, and for those in an anchored checkpoint
    /// the inclusion proof, the certified checkpoint and its Bitcoin anchor.
    pub fn proof_bundle(
        store: &Store,
        id: &ItemId,
    ) -> Result<Option<ProofBundle>, crate::store::StoreError> {
        let Some(state) = store.item(id)? else {
            return Ok(None);
        };
        let Some(manufacturer) = store
            .chain(&Subject::Manufacturer(state.manufacturer))?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let mut events = Vec::new();
        for ce in store.chain(&Subject::Item(*id))? {
            let hash = ce.certificate.event;
            let mut anchored = None;
            if let Some(n) = store.checkpoint_of(&hash)? {
                if let (Some(f), Some(a)) = (store.checkpoint(n)?, store.anchor(n)?) {
                    let leaves: Vec<[u8; 32]> = f.events.iter().map(|e| e.0).collect();
                    let index = f.events.binary_search(&hash).ok();
                    let tree = hallmark_protocol::merkle::Tree::new(&leaves).ok();
                    if let (Some(i), Some(t)) = (index, tree) {
                        anchored = t.proof(i as u32).map(|inclusion| AnchoredProof {
                            checkpoint: f.certified.clone(),
                            inclusion,
                            anchor: a.anchor.clone(),
                        });
                    }
                }
            }
            events.push(ProvenEvent {
                event: ce,
                anchored,
            });
        }
        Ok(Some(ProofBundle {
            item: *id,
            manufacturer,
            events,
        }))
    }

    fn proof(&self, id: &str) -> Response {
        let Ok(id) = id.parse::<ItemId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "item id must be 64 hex digits",
            );
        };
        match Self::proof_bundle(&self.store, &id) {
            Ok(Some(b)) => {
                // The bundle, plus each anchor's txid, block and height decoded for clients that
                // do not parse Bitcoin transactions (the scan page); `verify-proof` re-derives
                // them from the raw bytes.
                let mut v = json!(b);
                for (i, e) in b.events.iter().enumerate() {
                    v["events"][i]["anchor_facts"] = match &e.anchored {
                        Some(a) => a
                            .anchor
                            .verify(&a.checkpoint.checkpoint.hash())
                            .map_or(json!(null), |f| json!(f)),
                        None => json!(null),
                    };
                }
                ok(&v)
            }
            Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no item {id}")),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    fn log(&self, q: &LogQuery) -> Response {
        let from = q.from.unwrap_or(0);
        let limit = q.limit.unwrap_or(100).min(MAX_LOG_LIMIT);
        let len = self.store.log_len();
        match self.store.log_range(from, limit) {
            Ok(events) => ok(&json!({"log_len": len, "from": from, "events": events})),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    fn info(&self) -> Response {
        let mut info = self.info.clone();
        info["log_len"] = json!(self.store.log_len());
        info["peers_connected"] = json!(hallmark_p2p::connected_peers());
        info["evidence_records"] = json!(self.store.evidence_count().unwrap_or(0));
        let tip = metrics::CHAIN_TIP.get();
        info["bitcoin_tip"] = if tip > 0 { json!(tip) } else { json!(null) };
        ok(&info)
    }

    fn health(&self) -> Response {
        ok(&json!({
            "status": "ok",
            "log_len": self.store.log_len(),
            "peers_connected": hallmark_p2p::connected_peers(),
        }))
    }
}

async fn recover(err: Rejection) -> Result<Response, Infallible> {
    let r = if err.is_not_found() {
        error(
            StatusCode::NOT_FOUND,
            "no_route",
            "no such route (see docs/api.md)",
        )
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        error(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required",
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if err.find::<warp::reject::InvalidQuery>().is_some() {
        error(StatusCode::BAD_REQUEST, "bad_query", "invalid query string")
    } else if let Some(h) = err.find::<warp::reject::InvalidHeader>() {
        error(StatusCode::BAD_REQUEST, "bad_header", h)
    } else {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{err:?}"),
        )
    };
    Ok(r)
}

/// The `/v1` routes.
pub fn routes(api: Api) -> warp::filters::BoxedFilter<(Response,)> {
    let api = std::sync::Arc::new(api);
    let with = move || {
        let api = api.clone();
        warp::any().map(move || api.clone())
    };
    let submit = warp::path!("v1" / "events")
        .and(warp::post())
        .and(with())
        .and(warp::query::<WaitQuery>())
        .and(
            warp::header::optional::<String>("content-type")
                .and(warp::header::optional::<String>("accept"))
                .map(|c: Option<String>, a: Option<String>| {
                    Encodings::of(c.as_deref(), a.as_deref())
                }),
        )
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .then(|api: std::sync::Arc<Api>, q: WaitQuery, e: Encodings, body| api.submit(q, e, body));
    let item = warp::path!("v1" / "items" / String)
        .and(warp::get())
        .and(with())
        .map(|id: String, api: std::sync::Arc<Api>| api.item(&id));
    let history = warp::path!("v1" / "items" / String / "history")
        .and(warp::get())
        .and(with())
        .map(|id: String, api: std::sync::Arc<Api>| api.history(&id));
    let manufacturer = warp::path!("v1" / "manufacturers" / String)
        .and(warp::get())
        .and(with())
        .map(|id: String, api: std::sync::Arc<Api>| api.manufacturer(&id));
    let offer = warp::path!("v1" / "offers" / String)
        .and(warp::get())
        .and(with())
        .map(|id: String, api: std::sync::Arc<Api>| api.offer(&id));
    let event = warp::path!("v1" / "events" / String)
        .and(warp::get())
        .and(with())
        .map(|h: String, api: std::sync::Arc<Api>| api.event(&h));
    let log = warp::path!("v1" / "log")
        .and(warp::get())
        .and(with())
        .and(warp::query::<LogQuery>())
        .map(|api: std::sync::Arc<Api>, q: LogQuery| api.log(&q));
    let proof = warp::path!("v1" / "items" / String / "proof")
        .and(warp::get())
        .and(with())
        .map(|id: String, api: std::sync::Arc<Api>| api.proof(&id));
    let checkpoints = warp::path!("v1" / "checkpoints")
        .and(warp::get())
        .and(with())
        .and(warp::query::<LogQuery>())
        .map(|api: std::sync::Arc<Api>, q: LogQuery| api.checkpoints(&q));
    let info = warp::path!("v1" / "info")
        .and(warp::get())
        .and(with())
        .map(|api: std::sync::Arc<Api>| api.info());
    let health = warp::path!("v1" / "health")
        .and(warp::get())
        .and(with())
        .map(|api: std::sync::Arc<Api>| api.health());
    let inner = submit
        .or(history)
        .unify()
        .or(proof)
        .unify()
        .or(checkpoints)
        .unify()
        .or(item)
        .unify()
        .or(manufacturer)
        .unify()
        .or(offer)
        .unify()
        .or(event)
        .unify()
        .or(log)
        .unify()
        .or(info)
        .unify()
        .or(health)
        .unify()
        .or(crate::scanpage::routes())
        .unify()
        .recover(recover)
        .unify();
    warp::path::full()
        .and(inner)
        .map(|path: warp::path::FullPath, mut r: Response| {
            // Label by the route's first two segments (never by ids: bounded cardinality).
            let route: String = path
                .as_str()
                .split('/')
                .take(3)
                .collect::<Vec<_>>()
                .join("/");
            let route = ROUTES
                .iter()
                .find(|r| route == **r || route.starts_with(&format!("{r}/")))
                .copied()
                .unwrap_or("other");
            // Everything here is public and read-only for browsers (submissions are signed):
            // the scan page served by one operator reads the APIs of the others.
            r.headers_mut().insert(
                warp::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                warp::http::HeaderValue::from_static("*"),
            );
            metrics::HTTP_REQUESTS
                .with_label_values(&[route, r.status().as_str()])
                .inc();
            r
        })
        .boxed()
}

/// The metrics route.
pub fn metrics_routes() -> warp::filters::BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(metrics::render(), "content-type", prometheus::TEXT_FORMAT)
                .into_response()
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::Encodings;

    #[test]
    fn the_binary_form_is_asked_for_by_media_type_whatever_its_case_and_parameters() {
        let binary = |h: &str| Encodings::of(Some(h), None).binary_body;
        assert!(binary("application/octet-stream"));
        assert!(binary("Application/Octet-Stream; charset=binary"));
        assert!(binary("application/json, application/octet-stream;q=0.5"));
        assert!(!binary("application/json"));
        assert!(!binary("application/octet-streamx"));
        assert!(!Encodings::of(None, None).binary_reply);
        assert!(Encodings::of(None, Some("application/octet-stream")).binary_reply);
    }
}
