//! IPv4 and IPv6 fragments held until their datagram is whole, so that the
//! tracker sees the datagram (Open vSwitch's `ipf`): the fragments go on
//! once the last arrives, each with the whole datagram's connection state.
//!
//! Invariants: memory is bounded (at most [`MAX_BYTES`] held in all, at most
//! [`MAX_FRAGS`] fragments a datagram; a fragment past either bound, one
//! that overlaps another or runs past 64 KiB is refused and counted); a
//! datagram not complete within [`TIMEOUT_MS`] is dropped, fragments and
//! all; nothing here panics on any bytes.

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
    src: u128,
    dst: u128,
    id: u32,
    proto: u8,
    v6: bool,
    zone: u16,
}

/// Where a fragment's parts are: the end of the part every fragment
/// repeats (the IP header, and for IPv6 the extension headers before the
/// fragment header), where its fragmentable part starts and ends, the
/// byte that names what follows the repeated part (IPv6), and the
/// fragment's id, offset, more-fragments flag and upper protocol.
struct Parts {
    unfrag_end: usize,
    start: usize,
    end: usize,
    next_at: Option<usize>,
    id: u32,
    offset: usize,
    more: bool,
    proto: u8,
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn parts_v4(frame: &[u8], l3: usize) -> Option<Parts> {
    let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
    let total = usize::from(be16(frame, l3 + 2)?);
    let word = be16(frame, l3 + 6)?;
    if ihl < 20 || total < ihl {
        return None;
    }
    Some(Parts {
        unfrag_end: l3 + ihl,
        start: l3 + ihl,
        end: l3 + total,
        next_at: None,
        id: u32::from(be16(frame, l3 + 4)?),
        offset: usize::from(word & 0x1fff) * 8,
        more: word & 0x2000 != 0,
        proto: *frame.get(l3 + 9)?,
    })
}

fn parts_v6(frame: &[u8], l3: usize) -> Option<Parts> {
    let end = l3 + 40 + usize::from(be16(frame, l3 + 4)?);
    let (mut next, mut next_at, mut ofs) = (*frame.get(l3 + 6)?, l3 + 6, l3 + 40);
    loop {
        let len = match next {
            0 | 43 | 60 => (usize::from(*frame.get(ofs + 1)?) + 1) * 8,
            51 => (usize::from(*frame.get(ofs + 1)?) + 2) * 4,
            44 => {
                let word = be16(frame, ofs + 2)?;
                return Some(Parts {
                    unfrag_end: ofs,
                    start: ofs + 8,
                    end,
                    next_at: Some(next_at),
                    id: be32(frame, ofs + 4)?,
                    offset: usize::from(word >> 3) * 8,
                    more: word & 1 != 0,
                    proto: *frame.get(ofs)?,
                });
            }
            _ => return None,
        };
        next = *frame.get(ofs)?;
        next_at = ofs;
        ofs += len;
    }
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

    /// Takes a fragment (its frame, key and L3 offset) in `zone`.
    pub fn add(&mut self, frame: &[u8], k: &FlowKey, l3: usize, zone: u16, now: u64) -> Outcome {
        let Some(o) = self.add_inner(frame, k, l3, zone, now) else {
            self.stats.refused += 1;
            return Outcome::Refused;
        };
        o
    }

    fn add_inner(&mut self, frame: &[u8], k: &FlowKey, l3: usize, zone: u16, now: u64) -> Option<Outcome> {
        let v6 = k.is_ipv6();
        let p = if v6 { parts_v6(frame, l3)? } else { parts_v4(frame, l3)? };
        let len = p.end.checked_sub(p.start)?;
        if p.end > frame.len() || p.offset + len > 0xffff || len == 0 || (p.more && len % 8 != 0) {
            return None;
        }
        let (src, dst) = if v6 {
            (k.get_wide(Field::Ipv6SrcHi), k.get_wide(Field::Ipv6DstHi))
        } else {
            (u128::from(k.get(Field::IpSrc)), u128::from(k.get(Field::IpDst)))
        };
        let key = DatagramKey { src, dst, id: p.id, proto: p.proto, v6, zone };
        if self.bytes + frame.len() > MAX_BYTES {
            return None;
        }
        let (offset, more) = (p.offset, p.more);
        let list = self.lists.entry(key).or_insert(Held { frags: Vec::new(), bytes: 0, since: now });
        let overlaps = list.frags.iter().any(|&(o, l, _, _)| offset < o + l && o < offset + len);
        if overlaps || list.frags.len() >= MAX_FRAGS || (!more && list.frags.iter().any(|f| !f.2)) {
            return None;
        }
        list.frags.push((offset, len, more, frame[..p.end].to_vec()));
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
        // The first fragment's repeated part, then every fragment's payload.
        let first = &list.frags[0].3;
        let fp = if v6 { parts_v6(first, l3)? } else { parts_v4(first, l3)? };
        let mut datagram = first[..fp.unfrag_end].to_vec();
        for (_, _, _, f) in &list.frags {
            let q = if v6 { parts_v6(f, l3)? } else { parts_v4(f, l3)? };
            datagram.extend_from_slice(f.get(q.start..q.end)?);
        }
        if v6 {
            // No fragment header: what it named follows the repeated part.
            *datagram.get_mut(fp.next_at?)? = fp.proto;
            let plen = u16::try_from(datagram.len() - l3 - 40).ok()?;
            datagram[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let ihl = fp.unfrag_end - l3;
            let total = u16::try_from(datagram.len() - l3).ok()?;
            datagram[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            datagram[l3 + 6..l3 + 8].copy_from_slice(&[0, 0]);
            datagram[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = kairo_wire::checksum(&datagram[l3..l3 + ihl]);
            datagram[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
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
