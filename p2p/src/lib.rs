//! Hallmark's peer-to-peer layer. One task owns the libp2p [`Swarm`] (tcp + noise + yamux,
//! gossipsub, request-response, identify, ping, an allow-list of federation members); the rest of
//! the node talks to it through a cloneable [`P2pHandle`] sending [`Command`]s and a bounded
//! receiver of [`P2pEvent`]s. Payloads are opaque bytes: the node encodes and validates them.

mod codec;
mod conduct;
mod metrics;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::gossipsub::{
    self, IdentTopic, MessageAcceptance, MessageAuthenticity, MessageId, ValidationMode,
};
use libp2p::identity::{self, secp256k1};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    allow_block_list, identify, noise, ping, tcp, yamux, StreamProtocol, Swarm, SwarmBuilder,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use libp2p::{Multiaddr, PeerId};

use codec::BytesCodec;
use conduct::Conduct;

/// Commands queued to the swarm task.
pub const COMMAND_QUEUE: usize = 1024;
/// Events queued to the node.
pub const EVENT_QUEUE: usize = 4096;
/// Largest gossip message.
pub const MAX_GOSSIP_BYTES: usize = 4 << 20;
/// Largest request or response.
pub const MAX_RPC_BYTES: u64 = 16 << 20;
/// How often unconnected members are redialled.
const REDIAL_EVERY: Duration = Duration::from_secs(2);

/// The PeerId of the operator holding secp256k1 public key `key` (33 bytes, compressed).
pub fn peer_id_of(key: &hallmark_protocol::PublicKey) -> PeerId {
    let pk = secp256k1::PublicKey::try_from_bytes(&key.to_bytes())
        .expect("a hallmark PublicKey is a valid compressed secp256k1 point");
    identity::PublicKey::from(pk).to_peer_id()
}

/// What the swarm task needs.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// The operator's secret key: its libp2p identity is the same secp256k1 key.
    pub secret: [u8; 32],
    /// Where to listen.
    pub listen: Multiaddr,
    /// Every other federation member and where to reach it. Only these may connect.
    pub members: Vec<(PeerId, Multiaddr)>,
    /// Gossip topic (one per federation).
    pub topic: String,
    /// Largest gossip message sent or accepted: [`MAX_GOSSIP_BYTES`] for an operator (tests of
    /// a misbehaving member raise it so that it can send oversize messages).
    pub gossip_limit: usize,
}

/// Requests to the swarm task.
#[derive(Debug)]
pub enum Command {
    /// Gossip `data` to the federation.
    Publish(Vec<u8>),
    /// The node's verdict on a received gossip message: only accepted ones propagate.
    Validate {
        /// Message.
        id: MessageId,
        /// Who forwarded it.
        source: PeerId,
        /// Accept (forward) or reject (drop, penalise).
        accept: bool,
    },
    /// `peer` answered a request with something that does not verify (counts toward its ban).
    Offence(PeerId),
    /// Send a request to `peer`; the reply comes back on `reply`.
    Request {
        /// Target.
        peer: PeerId,
        /// Request bytes.
        data: Vec<u8>,
        /// Response bytes, or why none came.
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}

/// What the network tells the node.
#[derive(Debug)]
pub enum P2pEvent {
    /// A gossip message to validate; answer with [`Command::Validate`].
    Gossip {
        /// Message id (content hash).
        id: MessageId,
        /// Who forwarded it.
        source: PeerId,
        /// Payload.
        data: Vec<u8>,
    },
    /// A request from a member; answer on `reply` (dropping it sends nothing).
    Request {
        /// Who asks.
        peer: PeerId,
        /// Request bytes.
        data: Vec<u8>,
        /// Response bytes.
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// A member connected.
    PeerConnected(PeerId),
    /// A member's last connection closed.
    PeerDisconnected(PeerId),
    /// Listening on this address.
    Listening(Multiaddr),
}

/// A cloneable handle to the swarm task.
#[derive(Clone, Debug)]
pub struct P2pHandle {
    tx: mpsc::Sender<Command>,
    local: PeerId,
}

impl P2pHandle {
    /// Our PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Queues a command; fails only once the swarm task has stopped.
    pub async fn send(&self, cmd: Command) -> Result<(), P2pError> {
        self.tx.send(cmd).await.map_err(|_| P2pError::Stopped)
    }

    /// Sends a request and waits for the response.
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request { peer, data, reply }).await?;
        rx.await
            .map_err(|_| P2pError::Stopped)?
            .map_err(P2pError::Request)
    }
}

/// Network failures.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// The swarm task has stopped.
    #[error("p2p task stopped")]
    Stopped,
    /// A request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// Could not start.
    #[error("p2p setup: {0}")]
    Setup(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    gossipsub: gossipsub::Behaviour,
    catchup: request_response::Behaviour<BytesCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn gossipsub_config(max_bytes: usize) -> Result<gossipsub::Config, P2pError> {
    // A federation is a full mesh of direct connections (every member dials every other one,
    // and redials), and a message is published to every connected member (flood publish). So no
    // operator relays: with a gossipsub mesh each receiver forwarded every message to the other
    // members, which already had it from the publisher (with 4 operators up to 3 copies of every
    // message reached each one, and the benchmark moved a third more bytes over loopback per
    // event; without relaying, -2 to +21 % certified events/s in seven alternating 20 s pairs
    // and +14 % in a 60 s pair: docs/benchmarks.md).
    // Lazy gossip (IHAVE) is off too: with no mesh it would announce every recent message id to
    // every peer each heartbeat, and a list over the control-size limit makes the receiver drop
    // the stream (seen: the federation stalled). A member that misses messages catches up on the
    // certified log from its peers (every tick, round robin).
    // Anonymous mode: every payload is signed by its author already; message ids are content
    // hashes so the same payload from two peers is one message.
    gossipsub::ConfigBuilder::default()
        .mesh_outbound_min(0)
        .mesh_n_low(0)
        .mesh_n(0)
        .mesh_n_high(8)
        .gossip_lazy(0)
        .gossip_factor(0.0)
        .heartbeat_interval(Duration::from_millis(500))
        .validate_messages()
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(hallmark_protocol::hash::sha256(&m.data).to_vec())
        })
        .max_transmit_size(max_bytes)
        .build()
        .map_err(|e| P2pError::Setup(e.to_string()))
}

/// Starts the swarm task. It stops when `cancel` fires.
pub async fn spawn(
    config: P2pConfig,
    cancel: CancellationToken,
) -> Result<
    (
        P2pHandle,
        mpsc::Receiver<P2pEvent>,
        tokio::task::JoinHandle<()>,
    ),
    P2pError,
> {
    let mut secret = config.secret;
    let sk = secp256k1::SecretKey::try_from_bytes(&mut secret)
        .map_err(|e| P2pError::Setup(e.to_string()))?;
    let keypair: identity::Keypair = secp256k1::Keypair::from(sk).into();
    let local = keypair.public().to_peer_id();
    let gs_config = gossipsub_config(config.gossip_limit)?;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Setup(e.to_string()))?
        .with_behaviour(|key| {
            let gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gs_config)
                .map_err(|e| Box::<dyn std::error::Error + Send + Sync>::from(e.to_string()))?;
            Ok(Behaviour {
                allow: Default::default(),
                gossipsub,
                catchup: request_response::Behaviour::with_codec(
                    BytesCodec { max: MAX_RPC_BYTES },
                    [(
                        StreamProtocol::new("/hallmark/catchup/1"),
                        ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30)),
                ),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/hallmark/1".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
            })
        })
        .map_err(|e| P2pError::Setup(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    for (peer, _) in &config.members {
        swarm.behaviour_mut().allow.allow_peer(*peer);
    }
    let topic = IdentTopic::new(config.topic.clone());
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| P2pError::Setup(e.to_string()))?;
    swarm
        .listen_on(config.listen.clone())
        .map_err(|e| P2pError::Setup(format!("listen on {}: {e}", config.listen)))?;
    metrics::register();

    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let task = SwarmTask {
        swarm,
        topic,
        members: config.members.into_iter().collect(),
        connected: HashSet::new(),
        pending: HashMap::new(),
        replies: FuturesUnordered::new(),
        events: ev_tx,
        conduct: Conduct::default(),
    };
    let handle = tokio::spawn(task.run(cmd_rx, cancel));
    Ok((P2pHandle { tx: cmd_tx, local }, ev_rx, handle))
}

type ReplyFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<(ResponseChannel<Vec<u8>>, Vec<u8>)>> + Send>,
>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    members: HashMap<PeerId, Multiaddr>,
    connected: HashSet<PeerId>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>>,
    replies: FuturesUnordered<ReplyFuture>,
    events: mpsc::Sender<P2pEvent>,
    conduct: Conduct,
}

impl SwarmTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let mut redial = tokio::time::interval(REDIAL_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = redial.tick() => self.redial(),
                Some(cmd) = commands.recv() => self.command(cmd),
                Some(Some((channel, bytes))) = self.replies.next(), if !self.replies.is_empty() => {
                    if self.swarm.behaviour_mut().catchup.send_response(channel, bytes).is_err() {
                        debug!("catch-up response channel closed");
                    }
                }
                event = self.swarm.select_next_some() => {
                    if !self.swarm_event(event).await {
                        break;
                    }
                }
            }
        }
        info!("p2p task stopped");
    }

    /// Records an offence by `peer`; over the limit, disconnects it and refuses it for a while.
    fn offence(&mut self, peer: PeerId) {
        metrics::OFFENCES.inc();
        if self.members.contains_key(&peer) && self.conduct.offence(peer, Instant::now()) {
            warn!(%peer, "member misbehaved (rejected messages or a request flood): disconnected for {:?}", conduct::BAN);
            metrics::BANNED.inc();
            self.swarm.behaviour_mut().allow.disallow_peer(peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn redial(&mut self) {
        for peer in self.conduct.expired(Instant::now()) {
            info!(%peer, "ban over: member allowed again");
            self.swarm.behaviour_mut().allow.allow_peer(peer);
        }
        for (peer, addr) in &self.members {
            if self.conduct.is_banned(peer) {
                continue;
            }
            if !self.connected.contains(peer) && !self.swarm.is_connected(peer) {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(*peer)
                    .addresses(vec![addr.clone()])
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    debug!(%peer, "dial: {e}");
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(data) => {
                let len = data.len();
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), data)
                {
                    Ok(_) => metrics::GOSSIP_OUT.inc(),
                    Err(gossipsub::PublishError::Duplicate) => {}
                    Err(e) => {
                        metrics::GOSSIP_PUBLISH_FAILED.inc();
                        debug!("publish of {len} bytes: {e}");
                    }
                }
            }
            Command::Validate { id, source, accept } => {
                let verdict = if accept {
                    MessageAcceptance::Accept
                } else {
                    metrics::GOSSIP_REJECTED.inc();
                    MessageAcceptance::Reject
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, verdict);
                if !accept {
                    self.offence(source);
                }
            }
            Command::Offence(peer) => self.offence(peer),
            Command::Request { peer, data, reply } => {
                let id = self.swarm.behaviour_mut().catchup.send_request(&peer, data);
                self.pending.insert(id, reply);
            }
        }
    }

    /// Handles one swarm event; false when the node has gone away.
    async fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> bool {
        let out = match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                Some(P2pEvent::Listening(address))
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if num_established.get() == 1 && self.connected.insert(peer_id) {
                    metrics::PEERS.set(self.connected.len() as i64);
                    info!(peer = %peer_id, "member connected");
                    Some(P2pEvent::PeerConnected(peer_id))
                } else {
                    None
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 && self.connected.remove(&peer_id) {
                    metrics::PEERS.set(self.connected.len() as i64);
                    info!(peer = %peer_id, "member disconnected");
                    Some(P2pEvent::PeerDisconnected(peer_id))
                } else {
                    None
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                if let libp2p::swarm::ListenError::Denied { cause } = &error {
                    if cause
                        .downcast_ref::<allow_block_list::NotAllowed>()
                        .is_some()
                    {
                        metrics::DENIED.inc();
                        warn!(%send_back_addr, "refused a connection from a peer that is not an allowed member (a non-member, or a banned one)");
                    }
                }
                None
            }
            SwarmEvent::OutgoingConnectionError { error, peer_id, .. } => {
                if let libp2p::swarm::DialError::Denied { cause } = &error {
                    if cause
                        .downcast_ref::<allow_block_list::NotAllowed>()
                        .is_some()
                    {
                        metrics::DENIED.inc();
                        warn!(
                            ?peer_id,
                            "refused a connection to a peer that is not an allowed member"
                        );
                    }
                }
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                metrics::GOSSIP_IN.inc();
                Some(P2pEvent::Gossip {
                    id: message_id,
                    source: propagation_source,
                    data: message.data,
                })
            }
            SwarmEvent::Behaviour(BehaviourEvent::Catchup(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if request.is_empty() {
                        warn!(%peer, "catch-up request empty or over the size limit");
                        drop(channel);
                        self.offence(peer);
                        return true;
                    }
                    if !self.conduct.allow_request(peer, Instant::now()) {
                        // Dropping the channel fails the request on the asker's side.
                        drop(channel);
                        self.offence(peer);
                        return true;
                    }
                    let (reply, rx) = oneshot::channel();
                    self.replies.push(Box::pin(async move {
                        rx.await.ok().map(|bytes| (channel, bytes))
                    }));
                    Some(P2pEvent::Request {
                        peer,
                        data: request,
                        reply,
                    })
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(tx) = self.pending.remove(&request_id) {
                        let _ = tx.send(Ok(response));
                    }
                    None
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Catchup(
                request_response::Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                },
            )) => {
                if let request_response::OutboundFailure::Io(e) = &error {
                    if codec::is_over_limit(e) {
                        warn!(%peer, "catch-up response over the size limit");
                        self.offence(peer);
                    }
                }
                if let Some(tx) = self.pending.remove(&request_id) {
                    let _ = tx.send(Err(error.to_string()));
                }
                None
            }
            _ => None,
        };
        match out {
            Some(ev) => self.events.send(ev).await.is_ok(),
            None => true,
        }
    }
}

/// Federation members currently connected (this process's swarm).
pub fn connected_peers() -> i64 {
    metrics::PEERS.get()
}
