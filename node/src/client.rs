//! HTTP client of an operator's API, and helpers to build signed events. The scanning verifier
//! (issue 4) builds on this.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use hallmark_protocol::{
    CertifiedEvent, Event, EventBody, EventHash, EventKind, FederationId, ItemId, ItemState,
    SigningKey,
};
use serde::Deserialize;
use serde_json::Value;

use crate::api::History;
use crate::service::now_ms;

/// What a submission returned.
#[derive(Debug, Clone)]
pub enum SubmitOutcome {
    /// Certified, with its certificate.
    Certified(Box<CertifiedEvent>),
    /// Accepted, still being voted on.
    Pending(EventHash),
    /// Refused: HTTP status, machine code, message.
    Rejected {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
}

impl SubmitOutcome {
    /// The certified event, or an error saying what happened instead.
    pub fn certified(self) -> Result<CertifiedEvent> {
        match self {
            Self::Certified(ce) => Ok(*ce),
            Self::Pending(h) => bail!("event {h} not certified yet"),
            Self::Rejected {
                status,
                code,
                message,
            } => bail!("rejected ({status} {code}): {message}"),
        }
    }

    /// The error code of a rejection.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Rejected { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A submission's reply: a certified event (binary or JSON), a pending hash, or an error body.
fn submit_outcome(status: u16, binary_reply: bool, body: &[u8]) -> Result<SubmitOutcome> {
    // Straight into the expected shape (not through a `Value`): a certified event's JSON is
    // a few kB, and load generators parse one per submission.
    match status {
        200 if binary_reply => {
            let ce: CertifiedEvent =
                hallmark_protocol::decode(body).context("bad certified event")?;
            Ok(SubmitOutcome::Certified(Box::new(ce)))
        }
        200 => {
            let b: CertifiedBody = serde_json::from_slice(body).context("bad certified event")?;
            Ok(SubmitOutcome::Certified(Box::new(b.certified)))
        }
        202 => {
            let b: PendingBody = serde_json::from_slice(body).context("bad hash")?;
            Ok(SubmitOutcome::Pending(b.hash))
        }
        _ => {
            let e: ErrorBody = serde_json::from_slice(body).with_context(|| {
                format!(
                    "HTTP {status} without an error body: {}",
                    String::from_utf8_lossy(body)
                )
            })?;
            Ok(SubmitOutcome::Rejected {
                status,
                code: e.error.code,
                message: e.error.message,
            })
        }
    }
}

/// One HTTP/1.1 connection to an operator, for load generators: binary submissions only, with
/// the connection driven by the task that submits. [`Client`] (reqwest) builds a URL, looks up
/// its pool and hands every request to a connection task of its own: `hallmark bench` at the
/// max rate took 16 % of a core with it and 11 % with this (its events also encoded before the
/// run), on the two cores it shares with the operators.
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    conn: std::pin::Pin<
        Box<
            hyper::client::conn::http1::Connection<
                hyper_util::rt::TokioIo<tokio::net::TcpStream>,
                http_body_util::Full<bytes::Bytes>,
            >,
        >,
    >,
    /// `/v1/events?wait_ms=...`
    path: hyper::Uri,
    host: hyper::header::HeaderValue,
    base: String,
    wait: Duration,
    /// The connection ended or failed: the next submission connects again.
    broken: bool,
}

impl Conn {
    /// Connects to the operator at `base` (`http://host:port`); each submission waits up to
    /// `wait` for its certificate.
    pub async fn connect(base: &str, wait: Duration) -> Result<Self> {
        let uri: hyper::Uri = base.parse().with_context(|| format!("bad URL {base}"))?;
        let authority = uri
            .authority()
            .with_context(|| format!("no host in {base}"))?
            .clone();
        if uri.scheme_str() != Some("http") {
            bail!("{base}: only http:// is supported");
        }
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .with_context(|| format!("connecting to {base}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .with_context(|| format!("HTTP handshake with {base}"))?;
        Ok(Self {
            send,
            conn: Box::pin(conn),
            path: format!("/v1/events?wait_ms={}", wait.as_millis())
                .parse()
                .expect("a valid path"),
            host: hyper::header::HeaderValue::from_str(authority.as_str())?,
            base: base.to_string(),
            wait,
            broken: false,
        })
    }

    /// Submits an event in its binary form (`encoded`: [`hallmark_protocol::encode`] of it) and
    /// waits for its certificate, as [`Client::submit`] does; reconnects first if the
    /// connection was closed (by the operator, or after an error).
    pub async fn submit(&mut self, encoded: bytes::Bytes) -> Result<SubmitOutcome> {
        use http_body_util::BodyExt;
        use hyper::header;
        if self.broken || self.send.is_closed() {
            *self = Self::connect(&self.base, self.wait).await?;
        }
        let req = hyper::Request::post(self.path.clone())
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, crate::api::BINARY)
            .header(header::ACCEPT, crate::api::BINARY)
            .body(http_body_util::Full::new(encoded))?;
        let Self {
            send, conn, broken, ..
        } = self;
        let exchange = async {
            let resp = send.send_request(req).await?;
            let status = resp.status().as_u16();
            let binary_reply = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes() == crate::api::BINARY.as_bytes());
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, binary_reply, body))
        };
        // The connection makes progress only while it is polled: here, with the exchange.
        let exchanged = tokio::select! {
            biased;
            r = exchange => r.context("submitting"),
            r = conn.as_mut() => match r {
                Ok(()) => Err(anyhow::anyhow!("the operator closed the connection")),
                Err(e) => Err(anyhow::Error::new(e).context("the connection failed")),
            },
        };
        let (status, binary_reply, body) = exchanged.inspect_err(|_| *broken = true)?;
        submit_outcome(status, binary_reply, &body)
    }
}

/// A client of one operator.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Submissions and their certified replies in postcard instead of JSON.
    binary: bool,
}

#[derive(Deserialize)]
struct CertifiedBody {
    certified: CertifiedEvent,
}

#[derive(Deserialize)]
struct PendingBody {
    hash: EventHash,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
}

impl Client {
    /// A client of the operator at `base` (e.g. `http://127.0.0.1:47200`).
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("a plain HTTP client builds"),
            binary: false,
        }
    }

    /// The same client, submitting events and reading their certificates in the binary form
    /// (`application/octet-stream`: the canonical postcard bytes), which costs both sides less
    /// than JSON with hex strings. Errors and pending replies stay JSON.
    pub fn binary(mut self) -> Self {
        self.binary = true;
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Submits an event and waits up to `wait` for its certificate.
    pub async fn submit(&self, event: &Event, wait: Duration) -> Result<SubmitOutcome> {
        let req = self
            .http
            .post(format!("{}/v1/events", self.base))
            .query(&[("wait_ms", wait.as_millis() as u64)]);
        let req = if self.binary {
            req.header(reqwest::header::CONTENT_TYPE, crate::api::BINARY)
                .header(reqwest::header::ACCEPT, crate::api::BINARY)
                .body(hallmark_protocol::encode(event))
        } else {
            req.json(event)
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("POST {}/v1/events", self.base))?;
        let status = resp.status().as_u16();
        let binary_reply = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == crate::api::BINARY.as_bytes());
        let body = resp.bytes().await.context("reading the response")?;
        submit_outcome(status, binary_reply, &body)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {}{path}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            bail!("GET {}{path}: HTTP {}", self.base, resp.status());
        }
        Ok(Some(resp.json().await.with_context(|| {
            format!("GET {}{path}: bad JSON", self.base)
        })?))
    }

    /// An item's state.
    pub async fn item(&self, id: &ItemId) -> Result<Option<ItemState>> {
        self.get_json(&format!("/v1/items/{id}")).await
    }

    /// An item's certified history with its manufacturer's registration.
    pub async fn history(&self, id: &ItemId) -> Result<Option<History>> {
        self.get_json(&format!("/v1/items/{id}/history")).await
    }

    /// An item's proof bundle.
    pub async fn proof(
        &self,
        id: &ItemId,
    ) -> Result<Option<hallmark_protocol::checkpoint::ProofBundle>> {
        self.get_json(&format!("/v1/items/{id}/proof")).await
    }

    /// Final checkpoints from `from`, with anchors: `{"next", "checkpoints": [{"number", "hash",
    /// "final", "anchor"}]}`.
    pub async fn checkpoints(&self, from: u64) -> Result<Value> {
        self.get_json(&format!("/v1/checkpoints?from={from}&limit=1000"))
            .await?
            .context("no /v1/checkpoints")
    }

    /// A certified event.
    pub async fn event(&self, hash: &EventHash) -> Result<Option<CertifiedEvent>> {
        self.get_json(&format!("/v1/events/{hash}")).await
    }

    /// Operator info.
    pub async fn info(&self) -> Result<Value> {
        self.get_json("/v1/info").await?.context("no /v1/info")
    }

    /// Log entries from `from`.
    pub async fn log(&self, from: u64, limit: usize) -> Result<(u64, Vec<CertifiedEvent>)> {
        #[derive(Deserialize)]
        struct Log {
            log_len: u64,
            events: Vec<CertifiedEvent>,
        }
        let l: Log = self
            .get_json(&format!("/v1/log?from={from}&limit={limit}"))
            .await?
            .context("no /v1/log")?;
        Ok((l.log_len, l.events))
    }

    /// Whether the operator answers its health check.
    pub async fn healthy(&self) -> bool {
        self.get_json::<Value>("/v1/health")
            .await
            .is_ok_and(|v| v.is_some())
    }
}

/// Builds signed events for one author in one federation.
#[derive(Clone, Debug)]
pub struct Author {
    /// Federation.
    pub federation: FederationId,
    /// Key.
    pub key: SigningKey,
}

impl Author {
    /// An author.
    pub fn new(federation: FederationId, key: SigningKey) -> Self {
        Self { federation, key }
    }

    /// A signed event at `height` after `prev`, timestamped now with a random nonce.
    pub fn event(&self, height: u64, prev: EventHash, kind: EventKind) -> Event {
        EventBody {
            federation: self.federation,
            height,
            prev,
            timestamp_ms: now_ms(),
            nonce: rand::random(),
            author: self.key.public_key(),
            kind,
        }
        .sign(&self.key)
        .expect("the author signs its own events")
    }

    /// The next event of an item, after `state`.
    pub fn next(&self, state: &ItemState, kind: EventKind) -> Event {
        self.event(state.height + 1, state.head, kind)
    }
}
