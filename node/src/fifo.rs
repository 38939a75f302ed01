//! A map that forgets its oldest entries beyond a capacity: the bounded memory of the event loop
//! (recently decided slots) and of the store (recent certificates' ranks).

use std::collections::VecDeque;
use std::hash::Hash;

use foldhash::{HashMap, HashMapExt};

/// A map bounded to `cap` entries; inserting a new key beyond it drops the oldest key. Replacing
/// the value of a key already present keeps its place.
pub struct Fifo<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Copy + Eq + Hash, V> Fifo<K, V> {
    /// An empty map holding at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Inserts or replaces `k`.
    pub fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// The value of `k`, if remembered.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// The value of `k`, if remembered, to change in place.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    /// Whether `k` is remembered.
    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_go_first() {
        let mut f = Fifo::new(2);
        f.insert(1, 'a');
        f.insert(2, 'b');
        f.insert(1, 'c');
        f.insert(3, 'd');
        assert_eq!(f.len(), 2);
        assert!(!f.contains_key(&1));
        assert_eq!(f.get(&3), Some(&'d'));
        assert_eq!(f.get(&2), Some(&'b'));
    }
}
