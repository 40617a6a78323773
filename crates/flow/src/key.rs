//! [`FlowKey`], [`FlowMask`] and [`Match`]: fixed-size arrays of 64-bit words laid
//! out by the field table.
//!
//! Invariant: a [`Match`] always has `key & mask == key` (bits outside the mask
//! are zero), so two matches are equal exactly when they match the same packets.
//! A [`FlowMask`] 1-bit means "this bit may change the result".

use crate::field::{Field, Place, Stage, PLACEMENT, STAGE_WORDS, WORDS};

/// The header and metadata fields of one packet (or the value part of a match).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub w: [u64; WORDS],
}

/// Which bits of a [`FlowKey`] matter; same layout as the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowMask {
    pub w: [u64; WORDS],
}

#[inline]
fn field_bits(f: Field) -> (usize, u32, u64) {
    let p = f.place();
    (p.word, p.shift, f.ones())
}

/// Where MPLS label stack entry `i` (0-2) lives: its word and shift. The
/// top entry's four fields lie in one word in the entry's own bit order
/// (checked at compile time), so each entry is 32 contiguous bits.
#[inline]
fn lse_place(i: usize) -> (usize, u32) {
    const TOP: Place = PLACEMENT[Field::MplsTtl as usize];
    const fn at(f: Field, ofs: u32) -> bool {
        let p = PLACEMENT[f as usize];
        p.word == TOP.word && p.shift == TOP.shift + ofs
    }
    const _: () = assert!(
        at(Field::MplsBos, 8) && at(Field::MplsTc, 9) && at(Field::MplsLabel, 12) && TOP.shift + 32 <= 64,
        "the top MPLS entry's fields must lie in one word in the entry's bit order"
    );
    let f = match i {
        0 => return (TOP.word, TOP.shift),
        1 => Field::MplsLse1,
        _ => Field::MplsLse2,
    };
    let p = f.place();
    (p.word, p.shift)
}

/// Field `f` of a key or mask laid out by the field table.
#[inline]
fn get_field(words: &[u64; WORDS], f: Field) -> u64 {
    let (w, s, m) = field_bits(f);
    (words[w] >> s) & m
}

/// Sets field `f` of a key or mask to `v` (truncated to the field's width).
#[inline]
fn set_field(words: &mut [u64; WORDS], f: Field, v: u64) {
    let (w, s, m) = field_bits(f);
    words[w] = (words[w] & !(m << s)) | ((v & m) << s);
}

impl Default for FlowKey {
    fn default() -> FlowKey {
        FlowKey::ZERO
    }
}

impl Default for FlowMask {
    fn default() -> FlowMask {
        FlowMask::ZERO
    }
}

impl FlowKey {
    pub const ZERO: FlowKey = FlowKey { w: [0; WORDS] };

    /// The key of an IPv4 packet from `in_port`: Ethernet and IP addresses,
    /// IP protocol, TTL 64; add L4 ports and the rest with [`FlowKey::with`].
    pub fn ipv4(in_port: u32, eth_src: u64, eth_dst: u64, ip_src: u32, ip_dst: u32, proto: u8) -> FlowKey {
        FlowKey::ZERO
            .with(Field::InPort, in_port as u64)
            .with(Field::EthSrc, eth_src)
            .with(Field::EthDst, eth_dst)
            .with(Field::EthType, 0x0800)
            .with(Field::IpSrc, ip_src as u64)
            .with(Field::IpDst, ip_dst as u64)
            .with(Field::IpProto, proto as u64)
            .with(Field::IpTtl, 64)
    }

    /// This key with `f` set to `v` (for building keys in one expression).
    #[must_use]
    pub fn with(mut self, f: Field, v: u64) -> FlowKey {
        self.set(f, v);
        self
    }

    #[inline]
    pub fn get(&self, f: Field) -> u64 {
        get_field(&self.w, f)
    }
    /// Sets `f` to `v` (truncated to the field's width).
    #[inline]
    pub fn set(&mut self, f: Field, v: u64) {
        set_field(&mut self.w, f, v)
    }
    /// Sets only the bits of `f` that are 1 in `mask` to those of `v`.
    #[inline]
    pub fn set_masked(&mut self, f: Field, v: u64, mask: u64) {
        let cur = self.get(f);
        self.set(f, (cur & !mask) | (v & mask));
    }
    /// `self & mask`.
    #[inline]
    pub fn masked(&self, m: &FlowMask) -> FlowKey {
        let mut out = *self;
        for i in 0..WORDS {
            out.w[i] &= m.w[i];
        }
        out
    }
    /// Do `self` and `other` agree on every bit of `m`?
    #[inline]
    pub fn eq_masked(&self, other: &FlowKey, m: &FlowMask) -> bool {
        (0..WORDS).all(|i| (self.w[i] ^ other.w[i]) & m.w[i] == 0)
    }
    /// Do `self` and `other` agree on every bit of `m` within the words of stages `..=stage`?
    #[inline]
    pub fn eq_masked_words(&self, other: &FlowKey, m: &FlowMask, words: std::ops::Range<usize>) -> bool {
        words.into_iter().all(|i| (self.w[i] ^ other.w[i]) & m.w[i] == 0)
    }
    /// Is this an IPv4 packet?
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        self.get(Field::EthType) == crate::field::ETH_TYPE_IP
    }
    /// Is this an IPv6 packet?
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.get(Field::EthType) == crate::field::ETH_TYPE_IPV6
    }
    /// Is this an IPv4 or IPv6 packet?
    #[inline]
    pub fn is_ip(&self) -> bool {
        self.is_ipv4() || self.is_ipv6()
    }
    /// Is this an MPLS packet (unicast or multicast ethertype)?
    #[inline]
    pub fn is_mpls(&self) -> bool {
        crate::field::is_mpls_type(self.get(Field::EthType))
    }
    /// MPLS label stack entry `i` (0 = top, up to 2) as on the wire:
    /// label << 12 | tc << 9 | bos << 8 | ttl.
    #[inline]
    pub fn mpls_lse(&self, i: usize) -> u32 {
        let (w, s) = lse_place(i);
        (self.w[w] >> s) as u32
    }
    /// Sets MPLS label stack entry `i` (see [`FlowKey::mpls_lse`]).
    #[inline]
    pub fn set_mpls_lse(&mut self, i: usize, lse: u32) {
        let (w, s) = lse_place(i);
        self.w[w] = (self.w[w] & !(0xffff_ffff << s)) | u64::from(lse) << s;
    }
    /// The 128-bit value of a wide field named by its high half.
    #[inline]
    pub fn get_wide(&self, hi: Field) -> u128 {
        let lo = Field::wide_low(hi);
        (u128::from(self.get(hi)) << 64) | u128::from(self.get(lo))
    }
    /// Sets a wide field named by its high half.
    #[inline]
    pub fn set_wide(&mut self, hi: Field, v: u128) {
        let lo = Field::wide_low(hi);
        self.set(hi, (v >> 64) as u64);
        self.set(lo, v as u64);
    }
    /// Is this an IP packet with a TCP, UDP or SCTP header?
    #[inline]
    pub fn has_ports(&self) -> bool {
        self.is_ip()
            && matches!(
                self.get(Field::IpProto),
                crate::field::IPPROTO_TCP | crate::field::IPPROTO_UDP | crate::field::IPPROTO_SCTP
            )
    }
}

impl FlowMask {
    pub const ZERO: FlowMask = FlowMask { w: [0; WORDS] };
    pub const ALL: FlowMask = FlowMask { w: [u64::MAX; WORDS] };

    #[inline]
    pub fn get(&self, f: Field) -> u64 {
        get_field(&self.w, f)
    }
    #[inline]
    pub fn set(&mut self, f: Field, v: u64) {
        set_field(&mut self.w, f, v)
    }
    /// The 128-bit mask of a wide field named by its high half.
    #[inline]
    pub fn get_wide(&self, hi: Field) -> u128 {
        (u128::from(self.get(hi)) << 64) | u128::from(self.get(Field::wide_low(hi)))
    }
    /// ORs `bits` into a wide field named by its high half.
    #[inline]
    pub fn or_wide(&mut self, hi: Field, bits: u128) {
        self.or_bits(hi, (bits >> 64) as u64);
        self.or_bits(Field::wide_low(hi), bits as u64);
    }
    /// ORs `bits` into field `f` (un-wildcards them).
    #[inline]
    pub fn or_bits(&mut self, f: Field, bits: u64) {
        let (w, s, m) = field_bits(f);
        self.w[w] |= (bits & m) << s;
    }
    /// ORs `bits` (laid out as an MPLS label stack entry) into entry `i`.
    #[inline]
    pub fn or_mpls_lse(&mut self, i: usize, bits: u32) {
        let (w, s) = lse_place(i);
        self.w[w] |= u64::from(bits) << s;
    }
    /// Un-wildcards the whole of `f`.
    #[inline]
    pub fn exact(&mut self, f: Field) {
        self.or_bits(f, u64::MAX);
    }
    #[inline]
    pub fn or(&mut self, other: &FlowMask) {
        for i in 0..WORDS {
            self.w[i] |= other.w[i];
        }
    }
    /// ORs in the words of `other` in `words`.
    #[inline]
    pub fn or_words(&mut self, other: &FlowMask, words: std::ops::Range<usize>) {
        for i in words {
            self.w[i] |= other.w[i];
        }
    }
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.w.iter().all(|&x| x == 0)
    }
    /// Is every 1-bit of `self` also set in `other`?
    #[inline]
    pub fn is_subset_of(&self, other: &FlowMask) -> bool {
        (0..WORDS).all(|i| self.w[i] & !other.w[i] == 0)
    }
    /// Number of 1-bits (a measure of how narrow a megaflow is).
    pub fn count_ones(&self) -> u32 {
        self.w.iter().map(|w| w.count_ones()).sum()
    }
    /// Does the mask have any 1-bit in the words of `stage`?
    pub fn stage_nonzero(&self, stage: Stage) -> bool {
        let s = stage as usize;
        self.w[STAGE_WORDS[s]..STAGE_WORDS[s + 1]].iter().any(|&x| x != 0)
    }
}

impl std::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowKey({})", crate::print::format_key(self))
    }
}

impl std::fmt::Debug for FlowMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowMask({})", crate::print::format_match(&Match::new(FlowKey::ZERO, *self).with_mask_as_value()))
    }
}

/// A value/mask pair over the key: the match part of a rule, or a megaflow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Match {
    key: FlowKey,
    mask: FlowMask,
}

/// What carries a match (a rule, or a match with a payload beside it): a
/// classifier reads each rule's match from its payload, so that the match
/// is held once.
pub trait HasMatch {
    fn matched(&self) -> &Match;
}

impl HasMatch for Match {
    fn matched(&self) -> &Match {
        self
    }
}

impl<T: HasMatch + ?Sized> HasMatch for std::sync::Arc<T> {
    fn matched(&self) -> &Match {
        (**self).matched()
    }
}

impl<P> HasMatch for (Match, P) {
    fn matched(&self) -> &Match {
        &self.0
    }
}

impl Match {
    /// The match-everything match.
    pub const ANY: Match = Match { key: FlowKey::ZERO, mask: FlowMask::ZERO };

    /// Builds a match; value bits outside the mask are cleared.
    pub fn new(key: FlowKey, mask: FlowMask) -> Match {
        Match { key: key.masked(&mask), mask }
    }
    #[inline]
    pub fn key(&self) -> &FlowKey {
        &self.key
    }
    #[inline]
    pub fn mask(&self) -> &FlowMask {
        &self.mask
    }
    /// Sets field `f` to `value` under `mask` (ORing the mask in).
    pub fn set_masked(&mut self, f: Field, value: u64, mask: u64) {
        let m = self.mask.get(f) | mask;
        self.mask.set(f, m);
        let v = (self.key.get(f) & !mask) | (value & mask);
        self.key.set(f, v & m);
    }
    /// The same match with field `f` wildcarded.
    pub fn without(&self, f: Field) -> Match {
        let mut mask = self.mask;
        mask.set(f, 0);
        Match::new(self.key, mask)
    }
    /// Exact match on `f`.
    pub fn set_exact(&mut self, f: Field, value: u64) {
        self.set_masked(f, value, u64::MAX);
    }
    /// Sets a wide field (named by its high half) to `value` under `mask`.
    pub fn set_wide_masked(&mut self, hi: Field, value: u128, mask: u128) {
        self.set_masked(hi, (value >> 64) as u64, (mask >> 64) as u64);
        self.set_masked(Field::wide_low(hi), value as u64, mask as u64);
    }
    /// Value/mask of a wide field named by its high half.
    pub fn wide_field(&self, hi: Field) -> (u128, u128) {
        (self.key.get_wide(hi), self.mask.get_wide(hi))
    }
    /// Does packet `k` match?
    #[inline]
    pub fn matches(&self, k: &FlowKey) -> bool {
        k.eq_masked(&self.key, &self.mask)
    }
    /// Do two matches share at least one packet?
    pub fn overlaps(&self, other: &Match) -> bool {
        (0..crate::field::WORDS).all(|i| {
            let common = self.mask.w[i] & other.mask.w[i];
            (self.key.w[i] ^ other.key.w[i]) & common == 0
        })
    }
    /// The packets both match, if they share one.
    pub fn intersect(&self, other: &Match) -> Option<Match> {
        if !self.overlaps(other) {
            return None;
        }
        let mut m = *self;
        for i in 0..crate::field::WORDS {
            m.mask.w[i] |= other.mask.w[i];
            m.key.w[i] |= other.key.w[i];
        }
        Some(m)
    }
    /// Value/mask of `f`.
    pub fn field(&self, f: Field) -> (u64, u64) {
        (self.key.get(f), self.mask.get(f))
    }
    // Used only to print a mask through the match printer.
    fn with_mask_as_value(mut self) -> Match {
        self.key = FlowKey { w: self.mask.w };
        self
    }
}

impl std::fmt::Debug for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Match({})", crate::print::format_match(self))
    }
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::print::format_match(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_set_round_trip_every_field() {
        for f in Field::all() {
            let mut k = FlowKey::ZERO;
            k.set(f, 0x5a5a_5a5a_5a5a_5a5a);
            assert_eq!(k.get(f), 0x5a5a_5a5a_5a5a_5a5a & f.ones(), "{}", f.name());
            let mut m = FlowMask::ZERO;
            m.exact(f);
            assert_eq!(m.count_ones(), f.bits());
        }
    }

    #[test]
    fn match_clears_value_outside_mask() {
        let mut k = FlowKey::ZERO;
        k.set(Field::IpDst, 0x0a01_0203);
        let mut m = FlowMask::ZERO;
        m.set(Field::IpDst, 0xff00_0000);
        let mm = Match::new(k, m);
        assert_eq!(mm.key().get(Field::IpDst), 0x0a00_0000);
        assert!(mm.matches(&k));
    }

    #[test]
    fn overlap() {
        let mut a = Match::ANY;
        a.set_masked(Field::IpDst, 0x0a00_0000, 0xff00_0000);
        let mut b = Match::ANY;
        b.set_exact(Field::IpDst, 0x0a01_0101);
        let mut c = Match::ANY;
        c.set_exact(Field::IpDst, 0x0b01_0101);
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
        assert!(!b.overlaps(&c));
        // The intersection is the narrower where one holds the other, and
        // matches exactly the packets both match where they cross.
        assert_eq!(a.intersect(&b), Some(b));
        assert_eq!(b.intersect(&c), None);
        let mut d = Match::ANY;
        d.set_exact(Field::TpDst, 80);
        let ad = a.intersect(&d).unwrap();
        let mut k = FlowKey::ZERO;
        for (dst, port, both) in [(0x0a09_0909, 80, true), (0x0a09_0909, 81, false), (0x0b09_0909, 80, false)] {
            k.set(Field::IpDst, dst);
            k.set(Field::TpDst, port);
            assert_eq!(ad.matches(&k), both);
            assert_eq!(a.matches(&k) && d.matches(&k), both);
        }
    }
}
