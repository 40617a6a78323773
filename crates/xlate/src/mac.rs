//! The MAC learning table of `NORMAL` (Open vSwitch's `lib/mac-learning.c`):
//! the port each (VLAN, MAC) was last seen on.
//!
//! Owns the entries, when each was last learned or refreshed, and the
//! table's bound. Invariants: at most [`MacTable::max`] entries (learning a
//! new one into a full table evicts the least recently used first); no
//! multicast MAC is ever an entry; an entry's port is the port of its
//! latest learning. Time is the caller's (seconds on any monotonic clock):
//! the table only changes through [`MacTable::learn`], [`MacTable::expire`]
//! and the flushes, each of which returns what changed, so translation, which
//! only reads it, stays a pure function of the pipeline and the key, and
//! every change can be handed to cache maintenance.

use std::collections::HashMap;

/// Open vSwitch's default idle time of a learned MAC (`mac-aging-time`).
pub const DEFAULT_AGING: u64 = 300;
/// Open vSwitch's default bound on learned MACs (`mac-table-size`).
pub const DEFAULT_MAX: usize = 2048;

/// A (VLAN, MAC) the table knows, as a key.
pub type MacKey = (u16, u64);

/// One key whose port changed, and what the table held for it before
/// (its port and last use), to put back if the update is undone.
pub type MacChange = (MacKey, Option<(u32, u64)>);

/// One learned MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacEntry {
    pub vlan: u16,
    pub mac: u64,
    pub port: u32,
    /// When it was last learned or refreshed (the caller's seconds).
    pub used: u64,
}

/// The learning table.
#[derive(Clone, Debug)]
pub struct MacTable {
    entries: HashMap<MacKey, (u32, u64)>,
    aging: u64,
    max: usize,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable::new(DEFAULT_AGING, DEFAULT_MAX)
    }
}

/// Whether a MAC is a group address (the low bit of its first octet).
pub fn is_multicast(mac: u64) -> bool {
    mac & (1 << 40) != 0
}

/// The broadcast address.
pub const BROADCAST: u64 = 0xffff_ffff_ffff;

/// Whether a bridge must never forward to `mac` (Open vSwitch's
/// `eth_addr_is_reserved`: STP, pause frames and the other IEEE 802.1D
/// reserved addresses, Extreme's and Cisco's protocol addresses).
pub fn is_reserved(mac: u64) -> bool {
    matches!(
        mac,
        0x0180_c200_0000..=0x0180_c200_000f
            | 0x00e0_2b00_0000
            | 0x00e0_2b00_0004
            | 0x00e0_2b00_0006
            | 0x0100_0c00_0000
            | 0x0100_0ccc_cccc
            | 0x0100_0ccc_cccd
            | 0x0100_0ccd_cdcd
            | 0x0100_0ccc_ccc0..=0x0100_0ccc_ccc7
    )
}

impl MacTable {
    /// A table whose entries idle out after `aging` seconds, holding at most `max`.
    pub fn new(aging: u64, max: usize) -> MacTable {
        MacTable { entries: HashMap::new(), aging: aging.max(1), max: max.max(1) }
    }

    pub fn aging(&self) -> u64 {
        self.aging
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The port `mac` was learned on in `vlan`.
    pub fn lookup(&self, vlan: u16, mac: u64) -> Option<u32> {
        self.entries.get(&(vlan, mac)).map(|e| e.0)
    }

    /// When the least recently learned or refreshed entry was.
    pub fn oldest_use(&self) -> Option<u64> {
        self.entries.values().map(|e| e.1).min()
    }

    /// The port `mac` was learned on in `vlan` and when it was last used.
    pub fn get(&self, vlan: u16, mac: u64) -> Option<(u32, u64)> {
        self.entries.get(&(vlan, mac)).copied()
    }

    /// Learns that `mac` is on `port` in `vlan` at time `now`. Returns the
    /// keys whose port changed (the learned one when it is new or moved,
    /// and one evicted to make room) with what they were; a refresh of what
    /// the table already says changes nothing. A multicast MAC is never
    /// learned.
    pub fn learn(&mut self, vlan: u16, mac: u64, port: u32, now: u64) -> Vec<MacChange> {
        if is_multicast(mac) {
            return Vec::new();
        }
        if let Some(e) = self.entries.get_mut(&(vlan, mac)) {
            let was = *e;
            e.1 = e.1.max(now);
            if e.0 == port {
                return Vec::new();
            }
            e.0 = port;
            return vec![((vlan, mac), Some(was))];
        }
        let mut changed = Vec::with_capacity(2);
        if self.entries.len() >= self.max {
            // The least recently used goes (ties: the lowest key, so the
            // choice does not depend on the map's order).
            if let Some(old) = self.entries.iter().min_by_key(|(k, e)| (e.1, **k)).map(|(k, _)| *k) {
                let was = self.entries.remove(&old);
                changed.push((old, was));
            }
        }
        self.entries.insert((vlan, mac), (port, now));
        changed.push(((vlan, mac), None));
        changed
    }

    /// Puts back what a [`MacChange`] says the table held.
    pub fn restore(&mut self, (key, was): MacChange) {
        match was {
            Some(e) => self.entries.insert(key, e),
            None => self.entries.remove(&key),
        };
    }

    /// Removes the entries not learned or refreshed since `now - aging`,
    /// returning them.
    pub fn expire(&mut self, now: u64) -> Vec<MacChange> {
        let aging = self.aging;
        self.remove_where(|_, e| e.1.saturating_add(aging) <= now)
    }

    /// Removes every entry on `port` (the port left the bridge, or its
    /// VLAN settings changed), returning them.
    pub fn flush_port(&mut self, port: u32) -> Vec<MacChange> {
        self.remove_where(|_, e| e.0 == port)
    }

    /// Removes every entry (in `vlan` only, if given), returning them.
    pub fn flush(&mut self, vlan: Option<u16>) -> Vec<MacChange> {
        self.remove_where(|k, _| vlan.is_none_or(|v| k.0 == v))
    }

    /// Sets the idle time and the bound; entries over the new bound go,
    /// least recently used first. Returns those removed.
    pub fn configure(&mut self, aging: u64, max: usize) -> Vec<MacChange> {
        self.aging = aging.max(1);
        self.max = max.max(1);
        let mut by_age: Vec<(u64, MacKey)> = self.entries.iter().map(|(k, e)| (e.1, *k)).collect();
        by_age.sort_unstable();
        let over = self.entries.len().saturating_sub(self.max);
        by_age.into_iter().take(over).map(|(_, k)| (k, self.entries.remove(&k))).collect()
    }

    /// The entries, ordered by port, VLAN and MAC (as `ovs-appctl fdb/show`
    /// lists them, by port).
    pub fn entries(&self) -> Vec<MacEntry> {
        let mut v: Vec<MacEntry> =
            self.entries.iter().map(|(&(vlan, mac), &(port, used))| MacEntry { vlan, mac, port, used }).collect();
        v.sort_unstable_by_key(|e| (e.port, e.vlan, e.mac));
        v
    }

    fn remove_where(&mut self, gone: impl Fn(&MacKey, &(u32, u64)) -> bool) -> Vec<MacChange> {
        let mut keys: Vec<MacKey> = self.entries.iter().filter(|(k, e)| gone(k, e)).map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.into_iter().map(|k| (k, self.entries.remove(&k))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0x0200_0000_0001;
    const B: u64 = 0x0200_0000_0002;

    #[test]
    fn learns_moves_refreshes_and_ages() {
        let mut t = MacTable::new(300, 10);
        assert_eq!(t.learn(0, A, 1, 0), vec![((0, A), None)]);
        assert_eq!(t.lookup(0, A), Some(1));
        assert_eq!(t.lookup(5, A), None, "another VLAN is another entry");
        // The same port again: a refresh, no change.
        assert_eq!(t.learn(0, A, 1, 200), Vec::new());
        assert_eq!(t.expire(300), Vec::new(), "refreshed at 200: idle 100 s");
        // A move.
        assert_eq!(t.learn(0, A, 2, 250), vec![((0, A), Some((1, 200)))]);
        assert_eq!(t.lookup(0, A), Some(2));
        assert_eq!(t.expire(549), Vec::new());
        assert_eq!(t.expire(550), vec![((0, A), Some((2, 250)))]);
        assert!(t.is_empty());
    }

    #[test]
    fn multicast_is_never_learned_and_reserved_addresses_are_known() {
        let mut t = MacTable::default();
        assert_eq!(t.learn(0, 0x0100_5e00_0001, 1, 0), Vec::new());
        assert_eq!(t.learn(0, BROADCAST, 1, 0), Vec::new());
        assert!(t.is_empty());
        assert!(is_reserved(0x0180_c200_0000) && is_reserved(0x0180_c200_000e) && is_reserved(0x0100_0ccc_ccc7));
        assert!(!is_reserved(0x0180_c200_0010) && !is_reserved(BROADCAST));
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let mut t = MacTable::new(300, 2);
        t.learn(0, A, 1, 10);
        t.learn(0, B, 2, 5);
        let changed = t.learn(0, 0x0200_0000_0003, 3, 20);
        assert_eq!(changed, vec![((0, B), Some((2, 5))), ((0, 0x0200_0000_0003), None)]);
        assert_eq!(t.len(), 2);
        // Undone, the table is as it was.
        for c in changed.into_iter().rev() {
            t.restore(c);
        }
        assert_eq!((t.lookup(0, B), t.lookup(0, 0x0200_0000_0003)), (Some(2), None));
        t.learn(0, 0x0200_0000_0003, 3, 20);
        assert_eq!(t.configure(300, 1), vec![((0, A), Some((1, 10)))]);
        assert_eq!(t.flush_port(3), vec![((0, 0x0200_0000_0003), Some((3, 20)))]);
    }
}
