//! Gossip between federation members over direct streams.
//!
//! A federation is a full mesh of direct connections (every member dials every other one, and
//! redials), so a message goes once to every connected member and nobody relays it: each member
//! keeps one outbound stream of the federation's gossip protocol to every other, and writes each
//! message on it as a frame (a 4-byte big-endian length, then the payload). A member that misses
//! messages (a dropped stream, a full queue, a restart) catches up on the certified log from its
//! peers (the node asks one peer every tick, round robin).
//!
//! Before this, gossip went through gossipsub (flood publish, no mesh, no lazy gossip): the same
//! traffic, but every message also passed through the swarm task on both sides, was hashed for a
//! message id on both sides, set a send timer per peer (each one a wake-up of a timer thread) and
//! waited for the node's verdict before being dropped from the duplicate cache: at 300 ev/s a
//! third of an operator's CPU went to the message path (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{metrics, Command, P2pEvent};

/// Messages queued to one member; more are dropped (it catches up on the log later).
const PEER_QUEUE: usize = 1024;
/// Most bytes of queued messages written to a stream in one write.
const WRITE_CHUNK: usize = 1 << 20;
/// Wait before a writer opens a new stream after its stream failed.
const REOPEN_AFTER: Duration = Duration::from_millis(200);

/// The federation's gossip protocol: one per federation (`topic` names it).
pub(crate) fn protocol(topic: &str) -> Result<StreamProtocol, String> {
    StreamProtocol::try_from_owned(format!("/{topic}/gossip")).map_err(|e| e.to_string())
}

type Message = Arc<Vec<u8>>;
type Writers = HashMap<PeerId, mpsc::Sender<Message>>;

/// The queues of the writers to the connected members: the swarm task adds and removes them
/// as members connect and disconnect, every [`crate::P2pHandle`] broadcasts through them.
#[derive(Clone, Default, Debug)]
pub(crate) struct Outbound {
    writers: Arc<Mutex<Writers>>,
}

impl Outbound {
    fn writers(&self) -> std::sync::MutexGuard<'_, Writers> {
        // A panic while holding the lock leaves the map whole (every change is one call).
        self.writers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `data` to every connected member; returns to how many.
    pub(crate) fn broadcast(&self, data: Vec<u8>) -> usize {
        let data = Arc::new(data);
        let mut queued = 0;
        for (peer, tx) in self.writers().iter() {
            match tx.try_send(data.clone()) {
                Ok(()) => queued += 1,
                Err(_) => {
                    metrics::GOSSIP_PUBLISH_FAILED.inc();
                    debug!(%peer, "gossip queue full: message dropped");
                }
            }
        }
        queued
    }

    /// Queues `data` to `peer` alone; returns whether it was queued (connected, room left).
    pub(crate) fn send_to(&self, peer: &PeerId, data: Vec<u8>) -> bool {
        let queued = self
            .writers()
            .get(peer)
            .is_some_and(|tx| tx.try_send(Arc::new(data)).is_ok());
        if !queued {
            metrics::GOSSIP_PUBLISH_FAILED.inc();
        }
        queued
    }

    /// Starts a writer to `peer` (a member that just connected).
    pub(crate) fn connect(&self, peer: PeerId, control: Control, protocol: StreamProtocol) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        // (A writer still running for an earlier connection ends: its queue is dropped here.)
        self.writers().insert(peer, tx);
        tokio::spawn(write_to(peer, control, protocol, rx));
    }

    /// Stops the writer to `peer` (its last connection closed).
    pub(crate) fn disconnect(&self, peer: &PeerId) {
        // Dropping the queue's only sender ends the writer once it has written what is queued.
        self.writers().remove(peer);
    }
}

/// Writes the messages queued to `peer` on a stream of `protocol`, opening a new stream when
/// one fails, until the queue is dropped.
async fn write_to(
    peer: PeerId,
    mut control: Control,
    protocol: StreamProtocol,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut buf = Vec::new();
    'open: loop {
        let mut stream = match control.open_stream(peer, protocol.clone()).await {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, "opening a gossip stream: {e}");
                tokio::time::sleep(REOPEN_AFTER).await;
                if queue.is_closed() {
                    return;
                }
                continue 'open;
            }
        };
        while let Some(first) = queue.recv().await {
            // Everything queued meanwhile goes in the same write.
            buf.clear();
            frame(&mut buf, &first);
            while buf.len() < WRITE_CHUNK {
                let Ok(next) = queue.try_recv() else { break };
                frame(&mut buf, &next);
            }
            let written = async {
                stream.write_all(&buf).await?;
                stream.flush().await
            };
            if let Err(e) = written.await {
                debug!(%peer, "gossip stream failed ({e}): opening a new one");
                tokio::time::sleep(REOPEN_AFTER).await;
                continue 'open;
            }
        }
        let _ = stream.close().await;
        return;
    }
}

fn frame(buf: &mut Vec<u8>, msg: &[u8]) {
    let len = u32::try_from(msg.len()).expect("messages are at most the gossip limit");
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
}

/// Takes the members' gossip streams as they open, each read by a task of its own, until
/// `cancel` fires.
pub(crate) async fn accept(
    mut incoming: IncomingStreams,
    events: mpsc::Sender<P2pEvent>,
    commands: mpsc::Sender<Command>,
    limit: usize,
    cancel: CancellationToken,
) {
    loop {
        let (peer, stream) = tokio::select! {
            _ = cancel.cancelled() => return,
            next = incoming.next() => match next {
                Some(s) => s,
                None => return,
            },
        };
        // (Only members connect: the allow-list refuses everyone else.)
        tokio::spawn(read_from(
            peer,
            stream,
            events.clone(),
            commands.clone(),
            limit,
            cancel.clone(),
        ));
    }
}

/// Reads `peer`'s messages from `stream` and hands them to the node. A frame over `limit` is
/// an offence: the stream is dropped without reading it.
async fn read_from(
    peer: PeerId,
    mut stream: libp2p::Stream,
    events: mpsc::Sender<P2pEvent>,
    commands: mpsc::Sender<Command>,
    limit: usize,
    cancel: CancellationToken,
) {
    loop {
        let mut len = [0u8; 4];
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            r = stream.read_exact(&mut len) => r,
        };
        if read.is_err() {
            return; // closed or reset
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > limit {
            warn!(%peer, "gossip message of {len} bytes refused (the limit is {limit}): stream dropped");
            let _ = commands.send(Command::Offence(peer)).await;
            return;
        }
        let mut data = vec![0; len];
        if stream.read_exact(&mut data).await.is_err() {
            return;
        }
        metrics::GOSSIP_IN.inc();
        if events
            .send(P2pEvent::Gossip { source: peer, data })
            .await
            .is_err()
        {
            return;
        }
    }
}
