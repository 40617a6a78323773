//! A binary prefix trie over addresses of up to 128 bits (IPv4, IPv6, the
//! 32-bit transport-port pair), counting rules per prefix. Values are
//! left-aligned in a `u128`: bit 0 of a prefix is the value's top bit.
//!
//! Invariant: a node exists only while some stored prefix passes through or
//! ends at it (removal prunes), so a walk stops exactly where no stored prefix
//! continues, and [`TrieLookup::bits_needed`] is as small as it can be.

/// The result of walking an address down the trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrieLookup {
    /// Bit `l - 1` set: some stored prefix of length `l` contains the address.
    plens: u128,
    /// How many leading bits of the address the walk followed.
    depth: u32,
}

impl TrieLookup {
    /// Does some stored prefix of length `plen` contain the address?
    #[inline]
    pub fn has_plen(&self, plen: u32) -> bool {
        (1..=128).contains(&plen) && self.plens & (1u128 << (plen - 1)) != 0
    }
    /// How many leading address bits prove that no prefix of length `plen`
    /// contains it: the walk either diverged earlier (depth + 1 bits) or passed
    /// depth `plen` without a prefix ending there (`plen` bits).
    #[inline]
    pub fn bits_needed(&self, plen: u32) -> u32 {
        if self.depth >= plen {
            plen
        } else {
            self.depth + 1
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Node {
    child: [u32; 2],
    count: u32,
}

/// Prefixes (left-aligned value, length 1..=128) with a count of rules for each.
#[derive(Clone, Debug)]
pub struct PrefixTrie {
    nodes: Vec<Node>,
    free: Vec<u32>,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        PrefixTrie { nodes: vec![Node::default()], free: Vec::new() }
    }
}

#[inline]
fn bit(v: u128, i: u32) -> usize {
    ((v >> (127 - i)) & 1) as usize
}

impl PrefixTrie {
    pub fn insert(&mut self, v: u128, len: u32) {
        let len = len.min(128);
        let mut n = 0usize;
        for i in 0..len {
            let b = bit(v, i);
            let c = self.nodes[n].child[b];
            n = if c != 0 {
                c as usize
            } else {
                let idx = match self.free.pop() {
                    Some(f) => {
                        self.nodes[f as usize] = Node::default();
                        f as usize
                    }
                    None => {
                        self.nodes.push(Node::default());
                        self.nodes.len() - 1
                    }
                };
                self.nodes[n].child[b] = idx as u32;
                idx
            };
        }
        self.nodes[n].count += 1;
    }

    pub fn remove(&mut self, v: u128, len: u32) {
        let len = len.min(128);
        let mut path = Vec::with_capacity(len as usize + 1);
        let mut n = 0usize;
        path.push(0usize);
        for i in 0..len {
            let c = self.nodes[n].child[bit(v, i)];
            if c == 0 {
                return; // not present
            }
            n = c as usize;
            path.push(n);
        }
        if self.nodes[n].count == 0 {
            return;
        }
        self.nodes[n].count -= 1;
        // Prune empty leaves upward.
        for depth in (1..path.len()).rev() {
            let node = path[depth];
            let nd = self.nodes[node];
            if nd.count != 0 || nd.child != [0, 0] {
                break;
            }
            let parent = path[depth - 1];
            self.nodes[parent].child[bit(v, depth as u32 - 1)] = 0;
            self.free.push(node as u32);
        }
    }

    /// Walks `v` (left-aligned) down the trie.
    pub fn lookup(&self, v: u128) -> TrieLookup {
        let mut plens = 0u128;
        let mut n = 0usize;
        let mut depth = 0;
        while depth < 128 {
            let c = self.nodes[n].child[bit(v, depth)];
            if c == 0 {
                break;
            }
            n = c as usize;
            depth += 1;
            if self.nodes[n].count > 0 {
                plens |= 1u128 << (depth - 1);
            }
        }
        TrieLookup { plens, depth }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 32-bit value, left-aligned.
    fn a(v: u32) -> u128 {
        u128::from(v) << 96
    }

    #[test]
    fn lookup_and_prune() {
        let mut t = PrefixTrie::default();
        t.insert(a(0x0a00_0000), 8); // 10/8
        t.insert(a(0x0a01_0000), 16); // 10.1/16
        let r = t.lookup(a(0x0a01_0203));
        assert!(r.has_plen(8) && r.has_plen(16) && !r.has_plen(24));
        assert_eq!(r.depth, 16);
        assert_eq!(r.bits_needed(24), 17);
        // 12.0.0.0 diverges from 10 at bit 5 (00001100 vs 00001010)
        let r = t.lookup(a(0x0c00_0000));
        assert!(!r.has_plen(8));
        assert_eq!(r.bits_needed(8), 6);
        t.remove(a(0x0a01_0000), 16);
        let r = t.lookup(a(0x0a01_0203));
        assert_eq!(r.depth, 8);
        t.remove(a(0x0a00_0000), 8);
        assert_eq!(t.lookup(a(0x0a01_0203)).depth, 0);
        assert_eq!(t.nodes.len() - t.free.len(), 1);
    }

    #[test]
    fn full_length_128_bit_prefixes() {
        let mut t = PrefixTrie::default();
        let x = 0x2001_0db8_0000_0000_0000_0000_0000_0001u128;
        t.insert(x, 128);
        t.insert(x, 32);
        let r = t.lookup(x);
        assert!(r.has_plen(128) && r.has_plen(32) && !r.has_plen(64) && !r.has_plen(0));
        assert_eq!(r.depth, 128);
        let r = t.lookup(x ^ 1);
        assert!(!r.has_plen(128) && r.has_plen(32));
        assert_eq!(r.bits_needed(128), 128);
        t.remove(x, 128);
        t.remove(x, 32);
        assert_eq!(t.nodes.len() - t.free.len(), 1);
    }
}
