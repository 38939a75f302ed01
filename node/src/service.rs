//! Starts an operator: store, p2p, the gossip verifier, the event loop, the HTTP and metrics
//! servers; stops them all on cancellation.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use hallmark_p2p::{Command, P2pConfig, P2pEvent};
use hallmark_protocol::OperatorId;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::anchoring;
use crate::api::{self, Api};
use crate::config::{Loaded, PaymentMode};
use crate::engine::{self, CheckpointConfig, Engine, EngineConfig, Input};
use crate::metrics;
use crate::payments::{BitcoindPayments, MockPayments, PaymentAdapter};
use crate::store::Store;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Addresses an operator ended up listening on.
#[derive(Debug, Clone)]
pub struct Bound {
    /// HTTP API.
    pub http: SocketAddr,
    /// Metrics.
    pub metrics: SocketAddr,
}

/// Runs an operator until `cancel` fires.
pub async fn run(loaded: Loaded, cancel: CancellationToken) -> Result<()> {
    let (bound, done) = start(loaded, cancel.clone()).await?;
    info!(http = %bound.http, metrics = %bound.metrics, "operator running");
    cancel.cancelled().await;
    info!("shutting down");
    done.await;
    Ok(())
}

/// Starts an operator; the returned future completes once everything has stopped.
pub async fn start(
    loaded: Loaded,
    cancel: CancellationToken,
) -> Result<(Bound, impl std::future::Future<Output = ()>)> {
    metrics::register();
    let Loaded {
        config,
        federation,
        peers,
        key,
        me,
    } = loaded;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening store in {}", config.data_dir.display()))?;
    metrics::LOG_LEN.set(store.log_len() as i64);
    let (p2p, mut p2p_events, p2p_task) = hallmark_p2p::spawn(
        P2pConfig {
            secret: key.secret_bytes(),
            listen: config.listen.parse().context("listen address")?,
            members: peers
                .iter()
                .filter(|p| p.index != me)
                .map(|p| (p.peer_id, p.address.clone()))
                .collect(),
            topic: format!("hallmark/{}/v1", federation.id()),
            gossip_limit: hallmark_p2p::MAX_GOSSIP_BYTES,
        },
        cancel.clone(),
    )
    .await?;

    let (inputs, inputs_rx) = mpsc::channel(engine::INPUT_QUEUE);
    let payments: Option<std::sync::Arc<dyn PaymentAdapter>> = match config.payments {
        PaymentMode::None => None,
        PaymentMode::Mock => Some(std::sync::Arc::new(MockPayments)),
        PaymentMode::Bitcoind => {
            let b = config
                .bitcoin
                .as_ref()
                .context("payments = \"bitcoind\" needs a [bitcoin] section")?;
            Some(std::sync::Arc::new(BitcoindPayments::new(
                b.rpc()?.client()?,
                config.payment_confirmations,
            )))
        }
    };
    let anchor = match &config.bitcoin {
        Some(b) => Some(anchoring::spawn(
            anchoring::WorkerConfig {
                rpc: b.rpc()?,
                network: b.network()?,
                fee_floor_sat_vb: b.fee_floor_sat_vb,
                bump_after: Duration::from_secs(b.bump_after_secs),
                secret: key.secret_bytes(),
                store: store.clone(),
            },
            inputs.clone(),
            cancel.clone(),
        )),
        None => {
            info!("no [bitcoin] section: checkpoints are agreed but not anchored");
            None
        }
    };
    let engine = Engine::new(
        EngineConfig {
            federation: federation.clone(),
            me,
            key: key.clone(),
            store: store.clone(),
            p2p: p2p.clone(),
            peer_ids: peers
                .iter()
                .filter(|p| p.index != me)
                .map(|p| p.peer_id)
                .collect(),
            payments,
            timestamp_window_ms: config.timestamp_window_secs * 1000,
            round_timeout: Duration::from_millis(config.round_timeout_ms),
            vote_journal_compaction: config.vote_journal_compaction,
            clock: now_ms,
            checkpoints: CheckpointConfig {
                every_events: config.checkpoint_every_events.max(1),
                every: Duration::from_secs(config.checkpoint_every_secs),
                anchor_timeout: Duration::from_secs(config.anchor_timeout_secs),
                proposer_timeout: Duration::from_millis(config.round_timeout_ms * 4),
            },
            anchor,
        },
        inputs.clone(),
    );
    // The event loop runs on a thread of its own: its fsyncs and its bursts of work never hold
    // up the network, the gossip verifier or the HTTP API, and it is never moved between threads.
    let engine_task = {
        let (started_tx, started_rx) = oneshot::channel::<std::io::Result<()>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let run = engine.run(inputs_rx, cancel.clone());
        std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
                // (Built and dropped on this thread: a runtime may not be dropped in async code.)
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = started_tx.send(Ok(()));
                        rt.block_on(run);
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
                let _ = done_tx.send(());
            })
            .context("starting the event loop's thread")?;
        started_rx
            .await
            .context("the event loop's thread stopped at once")?
            .context("starting the event loop's runtime")?;
        done_rx
    };

    // The gossip verifier: decodes and checks signatures before anything reaches the event loop
    // or is forwarded to other operators.
    let ingress = {
        let (federation, store, inputs, p2p) = (
            federation.clone(),
            store.clone(),
            inputs.clone(),
            p2p.clone(),
        );
        tokio::spawn(async move {
            while let Some(ev) = p2p_events.recv().await {
                match ev {
                    P2pEvent::Gossip { source, data } => {
                        match engine::verify_gossip(&federation, &store, &data) {
                            Ok(v) => {
                                if inputs.send(Input::Gossip(v)).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                warn!(%source, "rejected gossip: {e}");
                                let _ = p2p.send(Command::Rejected(source)).await;
                            }
                        }
                    }
                    P2pEvent::Request { data, reply, .. } => {
                        let (store, federation) = (store.clone(), federation.clone());
                        tokio::task::spawn_blocking(move || {
                            let _ = reply.send(engine::serve_rpc(&store, &federation, &data));
                        });
                    }
                    P2pEvent::PeerConnected(p) => {
                        let _ = inputs.send(Input::Peer(p, true)).await;
                    }
                    P2pEvent::PeerDisconnected(p) => {
                        let _ = inputs.send(Input::Peer(p, false)).await;
                    }
                    P2pEvent::Listening(_) => {}
                }
            }
        })
    };

    let info = json!({
        "operator_index": me,
        "operator_id": OperatorId::of(&key.public_key()),
        "operator_key": key.public_key(),
        "peer_id": p2p.local_peer_id().to_string(),
        "federation_id": federation.id(),
        "federation": federation.params(),
        // Where every member's API is: the scan page asks several of them at once.
        "members": peers.iter().map(|p| json!({
            "index": p.index,
            "key": federation.operator(p.index).map(|o| o.key),
            "operator_id": federation.operator_ids().get(p.index),
            "http": p.http,
        })).collect::<Vec<_>>(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let api = Api {
        store,
        inputs,
        federation,
        info,
    };
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding HTTP {}", config.http_listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding metrics {}", config.metrics_listen))?;
    let bound = Bound {
        http: http_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
    };
    let http = {
        let c = cancel.clone();
        tokio::spawn(crate::http::serve(
            api::routes(api),
            http_listener,
            crate::http::Limits {
                rate_per_sec: config.http_rate_per_sec,
                burst: config.http_burst,
                max_connections: config.http_max_connections,
                header_timeout: Duration::from_secs(config.http_header_timeout_secs.max(1)),
                request_timeout: Duration::from_millis(api::MAX_WAIT_MS) + Duration::from_secs(5),
            },
            c,
        ))
    };
    let metrics_srv = {
        let c = cancel.clone();
        tokio::spawn(
            warp::serve(api::metrics_routes())
                .incoming(metrics_listener)
                .graceful(async move { c.cancelled().await })
                .run(),
        )
    };
    let done = async move {
        let _ = http.await;
        let _ = metrics_srv.await;
        let _ = engine_task.await;
        let _ = p2p_task.await;
        ingress.abort();
    };
    Ok((bound, done))
}
