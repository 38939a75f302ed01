//! Hallmark's peer-to-peer layer. One task owns the libp2p [`Swarm`] (tcp + noise + yamux,
//! gossip streams, request-response, identify, ping, an allow-list of federation members); the
//! rest of the node talks to it through a cloneable [`P2pHandle`] sending [`Command`]s (and
//! broadcasting gossip straight to the members' streams, [`P2pHandle::broadcast`]) and a bounded
//! receiver of [`P2pEvent`]s. Payloads are opaque bytes: the node encodes and validates them.

mod codec;
mod conduct;
mod gossip;
mod metrics;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
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
    /// The federation's gossip topic: its gossip protocol is `/<topic>/gossip`.
    pub topic: String,
    /// Largest gossip message sent or accepted: [`MAX_GOSSIP_BYTES`] for an operator (tests of
    /// a misbehaving member raise it so that it can send oversize messages).
    pub gossip_limit: usize,
}

/// Requests to the swarm task.
#[derive(Debug)]
pub enum Command {
    /// The node rejected a gossip message from `peer` as invalid (counts toward its ban).
    Rejected(PeerId),
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
    /// A gossip message (report an invalid one with [`Command::Rejected`]).
    Gossip {
        /// The member that sent it.
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
    outbound: gossip::Outbound,
    gossip_limit: usize,
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

    /// Gossips `data` to every connected member, without waiting: it is queued to each
    /// member's stream (a member whose queue is full misses it, and catches up later). Returns
    /// to how many members it was queued.
    pub fn broadcast(&self, data: Vec<u8>) -> usize {
        if !self.sendable(&data) {
            return 0;
        }
        self.outbound.broadcast(data)
    }

    /// Gossips `data` to one connected member only, without waiting (as [`P2pHandle::broadcast`]
    /// does to each); returns whether it was queued. The node gossips to everyone: this is for
    /// tests that play a member showing different messages to different members.
    pub fn send_to(&self, peer: &PeerId, data: Vec<u8>) -> bool {
        self.sendable(&data) && self.outbound.send_to(peer, data)
    }

    /// Whether a gossip message of `data` is within the limit (counted as sent; else counted as
    /// failed and logged).
    fn sendable(&self, data: &[u8]) -> bool {
        if data.len() > self.gossip_limit {
            metrics::GOSSIP_PUBLISH_FAILED.inc();
            warn!(
                "gossip message of {} bytes not sent: over the limit of {}",
                data.len(),
                self.gossip_limit
            );
            return false;
        }
        metrics::GOSSIP_OUT.inc();
        true
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
    gossip: libp2p_stream::Behaviour,
    catchup: request_response::Behaviour<BytesCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
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
    let protocol = gossip::protocol(&config.topic).map_err(P2pError::Setup)?;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Setup(e.to_string()))?
        .with_behaviour(|key| {
            Ok(Behaviour {
                allow: Default::default(),
                gossip: libp2p_stream::Behaviour::new(),
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
    let mut control = swarm.behaviour().gossip.new_control();
    let incoming = control
        .accept(protocol.clone())
        .map_err(|e| P2pError::Setup(e.to_string()))?;
    swarm
        .listen_on(config.listen.clone())
        .map_err(|e| P2pError::Setup(format!("listen on {}: {e}", config.listen)))?;
    metrics::register();

    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(gossip::accept(
        incoming,
        ev_tx.clone(),
        cmd_tx.clone(),
        config.gossip_limit,
        cancel.clone(),
    ));
    let outbound = gossip::Outbound::default();
    let task = SwarmTask {
        swarm,
        control,
        protocol,
        outbound: outbound.clone(),
        members: config.members.into_iter().collect(),
        connected: HashSet::new(),
        pending: HashMap::new(),
        replies: FuturesUnordered::new(),
        events: ev_tx,
        conduct: Conduct::default(),
    };
    let handle = tokio::spawn(task.run(cmd_rx, cancel));
    let handle_ = P2pHandle {
        tx: cmd_tx,
        local,
        outbound,
        gossip_limit: config.gossip_limit,
    };
    Ok((handle_, ev_rx, handle))
}

type ReplyFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<(ResponseChannel<Vec<u8>>, Vec<u8>)>> + Send>,
>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    /// Opens the gossip streams to members.
    control: libp2p_stream::Control,
    /// The federation's gossip protocol.
    protocol: StreamProtocol,
    /// The writers to connected members.
    outbound: gossip::Outbound,
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
            Command::Rejected(peer) => {
                metrics::GOSSIP_REJECTED.inc();
                self.offence(peer);
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
                    self.outbound
                        .connect(peer_id, self.control.clone(), self.protocol.clone());
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
                    self.outbound.disconnect(&peer_id);
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
