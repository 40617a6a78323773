//! IPv4 fragments held until their datagram is whole, so that the tracker
//! sees the datagram (Open vSwitch's `ipf`): the fragments go on once the
//! last arrives, each with the whole datagram's connection state.
//!
//! Invariants: memory is bounded (at most [`MAX_BYTES`] held in all, at most
//! [`MAX_FRAGS`] fragments a datagram; a fragment past either bound, one
//! that overlaps another or runs past 64 KiB is refused and counted); a
//! datagram not complete within [`TIMEOUT_MS`] is dropped, fragments and
//! all; nothing here panics on any bytes. IPv6 fragments are not reassembled
//! yet (the tracker marks them invalid).

use kairo_flow::field::Field;
use kairo_flow::FlowKey;
use rustc_hash::FxHashMap;

/// Bytes of fragments held at most, over all datagrams.
pub const MAX_BYTES: usize = 4 << 20;
/// Fragments of one datagram at most.
pub const MAX_FRAGS: usize = 64;
/// How long a datagram waits for its missing fragments (Open vSwitch's
/// default for its fragment lists: 15 s).
pub const TIMEOUT_MS: u64 = 15_000;

/// Which datagram a fragment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DatagramKey {
    src: u32,
    dst: u32,
    id: u16,
    proto: u8,
    zone: u16,
}

struct Held {
    /// (offset in bytes, payload length, more fragments, the frame).
    frags: Vec<(usize, usize, bool, Vec<u8>)>,
    bytes: usize,
    since: u64,
}

/// What became of a fragment.
#[derive(Debug)]
pub enum Outcome {
    /// Kept until its datagram is whole.
    Held,
    /// Refused (a bound, an overlap, a bad header): drop it.
    Refused,
    /// The datagram is whole: the reassembled frame (to track) and every
    /// fragment (this one included), in offset order, to send on.
    Whole { datagram: Vec<u8>, fragments: Vec<Vec<u8>> },
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragStats {
    pub held: u64,
    pub reassembled: u64,
    pub refused: u64,
    pub timed_out: u64,
}

#[derive(Default)]
pub struct Reassembly {
    lists: FxHashMap<DatagramKey, Held>,
    bytes: usize,
    pub stats: FragStats,
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

impl Reassembly {
    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Takes an IPv4 fragment (its frame, key and L3 offset) in `zone`.
    pub fn add(&mut self, frame: &[u8], k: &FlowKey, l3: usize, zone: u16, now: u64) -> Outcome {
        let Some(o) = self.add_inner(frame, k, l3, zone, now) else {
            self.stats.refused += 1;
            return Outcome::Refused;
        };
        o
    }

    fn add_inner(&mut self, frame: &[u8], k: &FlowKey, l3: usize, zone: u16, now: u64) -> Option<Outcome> {
        let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
        let total = usize::from(be16(frame, l3 + 2)?);
        let word = be16(frame, l3 + 6)?;
        let (more, offset) = (word & 0x2000 != 0, usize::from(word & 0x1fff) * 8);
        let len = total.checked_sub(ihl)?;
        if ihl < 20 || l3 + total > frame.len() || offset + len > 0xffff || len == 0 || (more && len % 8 != 0) {
            return None;
        }
        let key = DatagramKey {
            src: k.get(Field::IpSrc) as u32,
            dst: k.get(Field::IpDst) as u32,
            id: be16(frame, l3 + 4)?,
            proto: k.get(Field::IpProto) as u8,
            zone,
        };
        if self.bytes + frame.len() > MAX_BYTES {
            return None;
        }
        let list = self.lists.entry(key).or_insert(Held { frags: Vec::new(), bytes: 0, since: now });
        let overlaps = list.frags.iter().any(|&(o, l, _, _)| offset < o + l && o < offset + len);
        if overlaps || list.frags.len() >= MAX_FRAGS || (!more && list.frags.iter().any(|f| !f.2)) {
            return None;
        }
        list.frags.push((offset, len, more, frame[..l3 + total].to_vec()));
        list.bytes += frame.len();
        self.bytes += frame.len();
        list.frags.sort_by_key(|f| f.0);
        // Whole: from 0, no gaps, to a last fragment.
        let mut end = 0;
        for &(o, l, _, _) in &list.frags {
            if o != end {
                self.stats.held += 1;
                return Some(Outcome::Held);
            }
            end = o + l;
        }
        if list.frags.last().is_some_and(|f| f.2) {
            self.stats.held += 1;
            return Some(Outcome::Held);
        }
        let list = self.lists.remove(&key)?;
        self.bytes -= list.bytes;
        let first = &list.frags[0].3;
        let fl3 = l3;
        let fihl = usize::from(first.get(fl3)? & 0x0f) * 4;
        let mut datagram = first[..fl3 + fihl].to_vec();
        for (_, _, _, f) in &list.frags {
            let ihl = usize::from(f.get(fl3)? & 0x0f) * 4;
            datagram.extend_from_slice(f.get(fl3 + ihl..)?);
        }
        let total = datagram.len() - fl3;
        let total16 = u16::try_from(total).ok()?;
        datagram[fl3 + 2..fl3 + 4].copy_from_slice(&total16.to_be_bytes());
        datagram[fl3 + 6..fl3 + 8].copy_from_slice(&[0, 0]);
        datagram[fl3 + 10..fl3 + 12].copy_from_slice(&[0, 0]);
        let c = kairo_wire::checksum(&datagram[fl3..fl3 + fihl]);
        datagram[fl3 + 10..fl3 + 12].copy_from_slice(&c.to_be_bytes());
        self.stats.reassembled += 1;
        Some(Outcome::Whole { datagram, fragments: list.frags.into_iter().map(|f| f.3).collect() })
    }

    /// Drops datagrams that waited past [`TIMEOUT_MS`]; how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.lists.len();
        let mut freed = 0;
        self.lists.retain(|_, l| {
            let keep = now.saturating_sub(l.since) < TIMEOUT_MS;
            if !keep {
                freed += l.bytes;
            }
            keep
        });
        self.bytes -= freed;
        let n = before - self.lists.len();
        self.stats.timed_out += n as u64;
        n
    }
}
