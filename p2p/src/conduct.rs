//! Members' conduct: a member that sends messages the node rejects, or floods it with requests,
//! is disconnected and shut out for a while. Honest members never trip this: gossip is never
//! relayed (each member writes its own messages to every other one, `gossip.rs`), so the member
//! a rejected message came from is its author, and they ask for catch-up one request at a time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Rejected messages (or refused requests) a member may cause within [`WINDOW`].
pub const MAX_OFFENCES: u32 = 20;
/// The window offences are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a member that went over the limit stays disconnected.
pub const BAN: Duration = Duration::from_secs(60);
/// Catch-up requests per second a member may make on average...
pub const REQUESTS_PER_SEC: f64 = 50.0;
/// ...and at once.
pub const REQUEST_BURST: f64 = 200.0;

/// Offence counts, request buckets and bans, by member.
#[derive(Default)]
pub struct Conduct {
    offences: HashMap<PeerId, (u32, Instant)>,
    requests: HashMap<PeerId, (f64, Instant)>,
    banned: HashMap<PeerId, Instant>,
}

impl Conduct {
    /// Records an offence by `peer`; true when it must now be banned.
    pub fn offence(&mut self, peer: PeerId, now: Instant) -> bool {
        let (count, since) = self.offences.entry(peer).or_insert((0, now));
        if now.duration_since(*since) > WINDOW {
            (*count, *since) = (0, now);
        }
        *count += 1;
        if *count > MAX_OFFENCES && !self.banned.contains_key(&peer) {
            self.banned.insert(peer, now + BAN);
            self.offences.remove(&peer);
            return true;
        }
        false
    }

    /// Whether `peer` may make a request now (takes a token if so).
    pub fn allow_request(&mut self, peer: PeerId, now: Instant) -> bool {
        let (tokens, at) = self.requests.entry(peer).or_insert((REQUEST_BURST, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * REQUESTS_PER_SEC).min(REQUEST_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `peer` is shut out.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains_key(peer)
    }

    /// Bans that are over at `now` (removed).
    pub fn expired(&mut self, now: Instant) -> Vec<PeerId> {
        let over: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &over {
            self.banned.remove(p);
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offences_over_the_limit_ban_until_the_ban_is_over() {
        let mut c = Conduct::default();
        let (bad, good) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        for _ in 0..MAX_OFFENCES {
            assert!(!c.offence(bad, t));
        }
        assert!(!c.offence(good, t), "counted per member");
        assert!(c.offence(bad, t), "one more bans");
        assert!(c.is_banned(&bad) && !c.is_banned(&good));
        assert!(c.expired(t + BAN / 2).is_empty());
        assert_eq!(c.expired(t + BAN), vec![bad]);
        assert!(!c.is_banned(&bad));
        // Offences spread wider than the window never add up to a ban.
        for i in 0..3 * MAX_OFFENCES {
            assert!(!c.offence(good, t + WINDOW.mul_f64(f64::from(i) / 10.0)));
        }
    }

    #[test]
    fn requests_beyond_the_burst_wait_for_the_rate() {
        let mut c = Conduct::default();
        let p = PeerId::random();
        let t = Instant::now();
        let allowed = (0..1_000).filter(|_| c.allow_request(p, t)).count();
        assert_eq!(allowed, REQUEST_BURST as usize);
        assert!(!c.allow_request(p, t + Duration::from_millis(10)));
        assert!(c.allow_request(p, t + Duration::from_millis(20)));
    }
}
