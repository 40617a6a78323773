//! The classifier against a linear scan, and the soundness of its un-wildcarding.

use super::*;
use proptest::prelude::*;

/// A random match over a few fields with small value spaces (so rules overlap).
fn arb_match() -> impl Strategy<Value = Match> {
    (
        proptest::option::of(1u64..4),
        proptest::option::of(prop_oneof![Just(0x0800u64), Just(0x0806u64), Just(0x86ddu64)]),
        proptest::option::of((0u64..4, 0u32..=32)),
        proptest::option::of((0u64..4, 0u32..=32)),
        proptest::option::of(prop_oneof![Just(6u64), Just(17u64)]),
        proptest::option::of((0u64..4, prop_oneof![Just(0xffffu64), Just(0xfff0u64), Just(0x3u64)])),
        proptest::option::of((0u64..16, 0u64..16)),
        (proptest::option::of((0usize..4, 0u32..=128)), proptest::option::of((0usize..4, 0u32..=128))),
    )
        .prop_map(|(port, et, src, dst, proto, tp, reg, (src6, dst6))| {
            let mut m = Match::ANY;
            if let Some(p) = port {
                m.set_exact(Field::InPort, p);
            }
            if let Some(e) = et {
                m.set_exact(Field::EthType, e);
            }
            // addresses from a small set of bases so prefixes nest and collide
            let base = |b: u64| [0x0a00_0000u64, 0x0a01_0000, 0x0a01_0100, 0xc0a8_0000][b as usize];
            if let Some((b, l)) = src {
                m.set_masked(Field::IpSrc, base(b), kairo_flow::parse::prefix_mask(l, 32));
            }
            if let Some((b, l)) = dst {
                m.set_masked(Field::IpDst, base(b) | 7, kairo_flow::parse::prefix_mask(l, 32));
            }
            if let Some(p) = proto {
                m.set_exact(Field::IpProto, p);
            }
            if let Some((v, mk)) = tp {
                m.set_masked(Field::TpDst, 80 + v, mk);
            }
            if let Some((v, mk)) = reg {
                m.set_masked(Field::Reg0, v, mk);
            }
            if let Some((b, l)) = src6 {
                m.set_wide_masked(Field::Ipv6SrcHi, BASES6[b], kairo_flow::parse::prefix_mask128(l));
            }
            if let Some((b, l)) = dst6 {
                m.set_wide_masked(Field::Ipv6DstHi, BASES6[b] | 9, kairo_flow::parse::prefix_mask128(l));
            }
            m
        })
}

/// IPv6 bases whose prefixes nest and collide, in both halves of the address.
const BASES6: [u128; 4] = [
    0x2001_0db8 << 96,
    0x2001_0db8_0000_0001 << 64,
    0x2001_0db8_0000_0001_8000 << 48,
    0x2001_0db8_0000_0001_8000_0000_0000_0100,
];

fn arb_key() -> impl Strategy<Value = FlowKey> {
    (
        1u64..4,
        prop_oneof![Just(0x0800u64), Just(0x0806u64), Just(0x86ddu64)],
        any::<u32>(),
        any::<u32>(),
        0u64..4,
        prop_oneof![Just(6u64), Just(17u64), Just(1u64)],
        76u64..90,
        0u64..16,
        any::<bool>(),
        (any::<u128>(), any::<u128>()),
    )
        .prop_map(|(port, et, s, d, base, proto, tp, reg, near, (s6, d6))| {
            let mut k = FlowKey::ZERO;
            k.set(Field::InPort, port);
            k.set(Field::EthType, et);
            let b = [0x0a00_0000u64, 0x0a01_0000, 0x0a01_0100, 0xc0a8_0000][base as usize];
            // half the keys near the rule addresses, half anywhere
            k.set(Field::IpSrc, if near { b | (s as u64 & 0x1ff) } else { s as u64 });
            k.set(Field::IpDst, if near { b | (d as u64 & 0x1ff) } else { d as u64 });
            k.set(Field::IpProto, proto);
            k.set(Field::TpDst, tp);
            k.set(Field::Reg0, reg);
            let b6 = BASES6[base as usize];
            k.set_wide(Field::Ipv6SrcHi, if near { b6 | (s6 & 0x1ff) } else { s6 });
            k.set_wide(Field::Ipv6DstHi, if near { b6 | (d6 & 0x1_ffff_ffff_ffff_ffff) } else { d6 });
            k
        })
}

fn build(rules: &[(Match, u16)]) -> Classifier<()> {
    let mut c = Classifier::new();
    for (i, (m, p)) in rules.iter().enumerate() {
        c.insert(ClsRule { id: i as u64, priority: *p, m: *m, payload: () });
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_linear_scan_and_masks_are_sound(
        rules in proptest::collection::vec((arb_match(), 0u16..6), 1..40),
        keys in proptest::collection::vec(arb_key(), 1..20),
        noise in proptest::collection::vec(any::<[u64; 4]>(), 8),
        removals in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut c = build(&rules);
        let mut live: Vec<u64> = (0..rules.len() as u64).collect();
        for round in 0..2 {
            for k in &keys {
                let mut wc = FlowMask::ZERO;
                let got = c.lookup(k, &mut wc).map(|r| r.id);
                let want = c.lookup_linear(k).map(|r| r.id);
                prop_assert_eq!(got, want, "round {} key {:?}", round, k);
                // Soundness: any packet agreeing with k on wc gets the same rule.
                for n in &noise {
                    let mut p = *k;
                    for (i, w) in p.w.iter_mut().enumerate() {
                        let r = n[i % 4].rotate_left(i as u32 * 7);
                        *w = (*w & wc.w[i]) | (r & !wc.w[i]);
                    }
                    let alt = c.lookup_linear(&p).map(|r| r.id);
                    prop_assert_eq!(alt, want, "mask {:?} too wide: {:?} vs {:?}", wc, p, k);
                    // Keys equal on the read mask get the same rule.
                    let mut q = p;
                    for i in 0..q.w.len() {
                        q.w[i] = (k.w[i] & c.read_mask().w[i]) | (p.w[i] & !c.read_mask().w[i]);
                    }
                    prop_assert_eq!(c.lookup_linear(&q).map(|r| r.id), want, "read mask {:?}", c.read_mask());
                }
                // What maintenance relies on: within any region that holds the
                // bits the lookup examined, no rule that beats the result overlaps,
                // and the result's own mask is inside the region.
                let mut region = wc;
                for i in 0..region.w.len() {
                    region.w[i] |= noise[1][i % 4].rotate_left(i as u32 * 3) & 0x00ff_00ff_00ff_00ff;
                }
                let kt = k.masked(&region);
                match c.lookup_linear(k) {
                    Some(w) => {
                        prop_assert!(w.m.mask().is_subset_of(&region));
                        let (wp, wid) = (w.priority, w.id);
                        prop_assert!(!c.any_overlapping(&kt, &region, wp, |q| q.priority > wp || q.id < wid));
                    }
                    None => prop_assert!(!c.any_overlapping(&kt, &region, 0, |_| true)),
                }
                // And the other direction, against a linear scan: for
                // regions of every width and every priority floor, it finds
                // an overlapping rule exactly when one exists.
                for (j, n) in noise.iter().enumerate() {
                    let mut narrow = FlowMask::ZERO;
                    for (i, w) in narrow.w.iter_mut().enumerate() {
                        *w = wc.w[i] & n[(i + j) % 4].rotate_left(i as u32 * 5);
                    }
                    let kn = k.masked(&narrow);
                    let floors: Vec<u16> = std::iter::once(0).chain(c.iter().map(|r| r.priority)).collect();
                    let floor = floors[j % floors.len()];
                    let overlaps = |r: &ClsRule<()>| {
                        (0..kn.w.len()).all(|i| (r.m.key().w[i] ^ kn.w[i]) & r.m.mask().w[i] & narrow.w[i] == 0)
                    };
                    let odd = |r: &ClsRule<()>| r.id % 2 == 1;
                    let linear = c.iter().any(|r| r.priority >= floor && odd(r) && overlaps(r));
                    prop_assert_eq!(c.any_overlapping(&kn, &narrow, floor, odd), linear, "floor {} region {:?}", floor, narrow);
                    let linear_all = c.iter().any(|r| r.priority >= floor && overlaps(r));
                    prop_assert_eq!(c.any_overlapping(&kn, &narrow, floor, |_| true), linear_all);
                }
            }
            let mut union = FlowMask::ZERO;
            for r in c.iter() {
                union.or(r.m.mask());
            }
            prop_assert_eq!(c.read_mask(), &union);
            for idx in &removals {
                if live.is_empty() { break; }
                let id = live.remove(idx.index(live.len()));
                prop_assert!(c.remove(id).is_some());
            }
        }
        prop_assert_eq!(c.len(), live.len());
    }
}

#[test]
fn trie_keeps_megaflow_narrow() {
    // As in the Open vSwitch trace: 10/8 at high priority, packet to 12.0.0.1
    // only needs the first 6 bits of nw_dst to skip it.
    let mut hi = Match::ANY;
    hi.set_exact(Field::EthType, 0x0800);
    hi.set_masked(Field::IpDst, 0x0a00_0000, 0xff00_0000);
    let mut lo = Match::ANY;
    lo.set_exact(Field::EthType, 0x0800);
    let c = build(&[(hi, 100), (lo, 10)]);
    let mut k = FlowKey::ZERO;
    k.set(Field::EthType, 0x0800);
    k.set(Field::IpDst, 0x0c00_0001);
    let mut wc = FlowMask::ZERO;
    let mut st = LookupStats::default();
    let r = c.lookup_stats(&k, &mut wc, &mut st).map(|r| r.id);
    assert_eq!(r, Some(1));
    assert_eq!(st.trie_skips, 1);
    assert_eq!(wc.get(Field::IpDst), 0xfc00_0000);
}

#[test]
fn staged_lookup_stops_early() {
    let mut a = Match::ANY;
    a.set_exact(Field::InPort, 1);
    a.set_exact(Field::EthType, 0x0800);
    a.set_exact(Field::IpProto, 6);
    a.set_exact(Field::TpDst, 80);
    let c = build(&[(a, 5)]);
    let mut k = FlowKey::ZERO;
    k.set(Field::InPort, 2);
    k.set(Field::EthType, 0x0800);
    let mut wc = FlowMask::ZERO;
    assert!(c.lookup(&k, &mut wc).is_none());
    // Only the metadata stage was needed.
    assert_eq!(wc.get(Field::InPort), u32::MAX as u64);
    assert_eq!(wc.get(Field::TpDst), 0);
    assert_eq!(wc.get(Field::EthType), 0);
}

#[test]
fn ties_go_to_the_earlier_rule_and_priority_skips() {
    let mut a = Match::ANY;
    a.set_exact(Field::InPort, 1);
    let mut b = Match::ANY;
    b.set_exact(Field::Reg0, 0);
    let mut c = build(&[(a, 5), (b, 5)]);
    let mut k = FlowKey::ZERO;
    k.set(Field::InPort, 1);
    let mut wc = FlowMask::ZERO;
    assert_eq!(c.lookup(&k, &mut wc).map(|r| r.id), Some(0));
    c.remove(0);
    c.insert(ClsRule { id: 2, priority: 5, m: a, payload: () });
    assert_eq!(c.lookup(&k, &mut FlowMask::default()).map(|r| r.id), Some(1));
    assert_eq!(c.find_exact(&a, 5).map(|r| r.id), Some(2));
    assert_eq!(c.n_subtables(), 2);
    c.remove(1);
    c.remove(2);
    assert_eq!(c.n_subtables(), 0);
    assert!(c.is_empty());
}

#[test]
fn ports_trie_keeps_l4_masks_narrow() {
    // As Open vSwitch's trace of `tcp,tp_dst=80` for a packet to port 0:
    // the megaflow needs only tp_dst=0x0/0xffc0.
    let mut r = Match::ANY;
    r.set_exact(Field::EthType, 0x0800);
    r.set_exact(Field::IpProto, 6);
    r.set_exact(Field::TpDst, 80);
    let c = build(&[(r, 10)]);
    let mut k = FlowKey::ZERO;
    k.set(Field::EthType, 0x0800);
    k.set(Field::IpProto, 6);
    let mut wc = FlowMask::ZERO;
    assert!(c.lookup(&k, &mut wc).is_none());
    assert_eq!(wc.get(Field::TpDst), 0xffc0);
    assert_eq!(wc.get(Field::TpSrc), 0);
    // A packet to port 80 matches and needs the whole mask.
    k.set(Field::TpDst, 80);
    let mut wc = FlowMask::ZERO;
    assert!(c.lookup(&k, &mut wc).is_some());
    assert_eq!(wc.get(Field::TpDst), 0xffff);
}

#[test]
fn a_payload_is_replaced_in_place_only_under_the_same_match_and_priority() {
    let mut a = Match::ANY;
    a.set_exact(Field::InPort, 1);
    let mut b = Match::ANY;
    b.set_exact(Field::InPort, 2);
    let mut c = Classifier::new();
    c.insert(ClsRule { id: 7, priority: 5, m: a, payload: "old" });
    // Another match, another priority, another id: nothing changes.
    assert_eq!(c.replace_payload(7, 5, &b, "b"), None);
    assert_eq!(c.replace_payload(7, 6, &a, "p"), None);
    assert_eq!(c.replace_payload(8, 5, &a, "id"), None);
    assert_eq!(c.get(7).map(|r| r.payload), Some("old"));
    assert_eq!(c.replace_payload(7, 5, &a, "new"), Some("old"));
    let mut k = FlowKey::ZERO;
    k.set(Field::InPort, 1);
    let hit = c.lookup(&k, &mut FlowMask::default()).map(|r| (r.id, r.payload));
    assert_eq!(hit, Some((7, "new")));
    assert_eq!(c.find_exact(&a, 5).map(|r| r.payload), Some("new"));
    assert_eq!(c.len(), 1);
}

/// The IPv6 tries keep a miss wide: only the leading bits that tell the
/// packet's address apart from every stored prefix are un-wildcarded.
#[test]
fn ipv6_prefix_tries_unwildcard_only_what_decides() {
    let mut rules = Vec::new();
    for (i, (net, len)) in [(0x2001_0db8u128 << 96, 32), (0x2001_0db8_0000_0001u128 << 64, 64)].into_iter().enumerate()
    {
        let mut m = Match::ANY;
        m.set_exact(Field::EthType, 0x86dd);
        m.set_wide_masked(Field::Ipv6DstHi, net, kairo_flow::parse::prefix_mask128(len));
        rules.push((m, 10 + i as u16));
    }
    let c = build(&rules);
    let mut k = FlowKey::ZERO;
    k.set(Field::EthType, 0x86dd);
    // fd00::1 differs from 2001:... in the first bit.
    k.set_wide(Field::Ipv6DstHi, 0xfd00u128 << 112 | 1);
    let mut wc = FlowMask::ZERO;
    assert!(c.lookup(&k, &mut wc).is_none());
    assert_eq!(wc.get_wide(Field::Ipv6DstHi), 1u128 << 127, "{wc:?}");
    // Inside the /32 but not the /64: the /64 subtable is ruled out by 64 bits at most.
    k.set_wide(Field::Ipv6DstHi, 0x2001_0db8_0000_0002u128 << 64 | 5);
    let mut wc = FlowMask::ZERO;
    assert_eq!(c.lookup(&k, &mut wc).map(|r| r.id), Some(0));
    assert_eq!(kairo_flow::parse::prefix_len128(wc.get_wide(Field::Ipv6DstHi)), Some(63), "{wc:?}");
    // An IPv4 packet never consults them.
    let mut k4 = FlowKey::ZERO;
    k4.set(Field::EthType, 0x0800);
    let mut wc = FlowMask::ZERO;
    assert!(c.lookup(&k4, &mut wc).is_none());
    assert_eq!(wc.get_wide(Field::Ipv6DstHi), 0);
}
