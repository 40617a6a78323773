//! The classifier against a linear scan, and the soundness of its un-wildcarding.

use super::*;
use crate::conj::Clause;
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

fn build(rules: &[(Match, u16)]) -> Classifier<(Match, ())> {
    let mut c = Classifier::new();
    for (i, (m, p)) in rules.iter().enumerate() {
        c.insert(ClsRule { id: i as u64, priority: *p, payload: (*m, ()) });
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
                        prop_assert!(w.m().mask().is_subset_of(&region));
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
                    let overlaps = |r: &ClsRule<(Match, ())>| {
                        (0..kn.w.len()).all(|i| (r.m().key().w[i] ^ kn.w[i]) & r.m().mask().w[i] & narrow.w[i] == 0)
                    };
                    let odd = |r: &ClsRule<(Match, ())>| r.id % 2 == 1;
                    let linear = c.iter().any(|r| r.priority >= floor && odd(r) && overlaps(r));
                    prop_assert_eq!(c.any_overlapping(&kn, &narrow, floor, odd), linear, "floor {} region {:?}", floor, narrow);
                    let linear_all = c.iter().any(|r| r.priority >= floor && overlaps(r));
                    prop_assert_eq!(c.any_overlapping(&kn, &narrow, floor, |_| true), linear_all);
                }
            }
            let mut union = FlowMask::ZERO;
            for r in c.iter() {
                union.or(r.m().mask());
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
fn the_destination_trie_is_asked_first() {
    // An ACL rule on both addresses; a packet matching neither: both tries
    // can skip its subtable, the source's with fewer bits (2 against 8).
    // As in Open vSwitch, the destination's is taken: a route lookup has
    // made the packet's destination exact in the megaflow already, and the
    // source's bits would be new.
    let mut acl = Match::ANY;
    acl.set_exact(Field::EthType, 0x0800);
    acl.set_exact(Field::IpSrc, 0xb700_0001); // 183.0.0.1: 1011_0111
    acl.set_exact(Field::IpDst, 0x0b00_0001); // 11.0.0.1: 0000_1011
    let c = build(&[(acl, 100)]);
    let mut k = FlowKey::ZERO;
    k.set(Field::EthType, 0x0800);
    k.set(Field::IpSrc, 0xc400_0001); // 196.0.0.1: 1100_0100, apart at bit 2
    k.set(Field::IpDst, 0x0a00_0001); // 10.0.0.1: 0000_1010, apart at bit 8
    let mut wc = FlowMask::ZERO;
    let mut st = LookupStats::default();
    assert!(c.lookup_stats(&k, &mut wc, &mut st).is_none());
    assert_eq!(st.trie_skips, 1);
    assert_eq!((wc.get(Field::IpDst), wc.get(Field::IpSrc)), (0xff00_0000, 0));
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
    c.insert(ClsRule { id: 2, priority: 5, payload: (a, ()) });
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
    c.insert(ClsRule { id: 7, priority: 5, payload: (a, "old") });
    // Another match, another priority, another id: nothing changes.
    assert_eq!(c.replace_payload(7, 5, &b, (b, "b")), None);
    assert_eq!(c.replace_payload(7, 6, &a, (a, "p")), None);
    assert_eq!(c.replace_payload(8, 5, &a, (a, "id")), None);
    assert_eq!(c.get(7).map(|r| r.payload.1), Some("old"));
    assert_eq!(c.replace_payload(7, 5, &a, (a, "new")).map(|p| p.1), Some("old"));
    let mut k = FlowKey::ZERO;
    k.set(Field::InPort, 1);
    let hit = c.lookup(&k, &mut FlowMask::default()).map(|r| (r.id, r.payload.1));
    assert_eq!(hit, Some((7, "new")));
    assert_eq!(c.find_exact(&a, 5).map(|r| r.payload.1), Some("new"));
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

/// The conjunctive lookup against a reference written from Open vSwitch's
/// documentation: the best ordinary rule; above it, priority by priority,
/// the conjunctions the matching clauses complete (by id), each answered by
/// the best ordinary rule matching with that conj_id whose match no clause
/// outranks; the hard match if none answers.
fn conj_reference(c: &Classifier<(Match, Vec<Clause>)>, key: &FlowKey) -> Option<RuleId> {
    let all: Vec<&ClsRule<(Match, Vec<Clause>)>> = c.iter().collect();
    fn best<'a>(
        rs: impl Iterator<Item = &'a ClsRule<(Match, Vec<Clause>)>>,
    ) -> Option<&'a ClsRule<(Match, Vec<Clause>)>> {
        rs.fold(
            None,
            |b: Option<&ClsRule<(Match, Vec<Clause>)>>, r| if b.is_none_or(|b| r.beats(b)) { Some(r) } else { b },
        )
    }
    let hard = best(all.iter().copied().filter(|r| r.payload.1.is_empty() && r.m().matches(key)));
    let floor = hard.map(|h| i32::from(h.priority)).unwrap_or(-1);
    let mut levels: Vec<u16> = all
        .iter()
        .filter(|r| !r.payload.1.is_empty() && r.m().matches(key) && i32::from(r.priority) > floor)
        .map(|r| r.priority)
        .collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    for s in levels {
        let softs: Vec<&ClsRule<(Match, Vec<Clause>)>> =
            all.iter().copied().filter(|r| !r.payload.1.is_empty() && r.m().matches(key) && r.priority == s).collect();
        let mut ids: Vec<u32> = Vec::new();
        for c0 in softs.iter().flat_map(|r| r.payload.1.iter()) {
            let covered = (1..=c0.n)
                .all(|k| softs.iter().any(|r| r.payload.1.iter().any(|c| c.id == c0.id && c.n == c0.n && c.k == k)));
            if usize::from(c0.n) <= softs.len() && covered {
                ids.push(c0.id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let mut k2 = *key;
            k2.set(Field::ConjId, u64::from(id));
            let shadowed = |r: &ClsRule<(Match, Vec<Clause>)>| {
                all.iter().any(|c| !c.payload.1.is_empty() && c.m() == r.m() && c.beats(r))
            };
            let found =
                best(all.iter().copied().filter(|r| r.payload.1.is_empty() && r.m().matches(&k2) && !shadowed(r)));
            if let Some(r) = found {
                return Some(r.id);
            }
        }
    }
    hard.map(|h| h.id)
}

/// What a generated rule is: ordinary, a clause of conjunctions, or the
/// answer to one (matching `conj_id`).
#[derive(Clone, Debug)]
enum Kind {
    Ordinary,
    Clauses(Vec<Clause>),
    Answer(u32, bool),
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => Just(Kind::Ordinary),
        4 => proptest::collection::vec((1u32..3, 2u8..4, 1u8..4), 1..3).prop_map(|v| Kind::Clauses(v
            .into_iter()
            .map(|(id, n, k)| Clause { id, n: n.min(3), k: k.min(n.min(3)) })
            .collect())),
        2 => (1u32..3, any::<bool>()).prop_map(|(id, wide)| Kind::Answer(id, wide)),
    ]
}

/// Run by hand rather than by `proptest!`, to count across cases how
/// many lookups a conjunction answered: a generator that never completes
/// one would pass without testing anything.
#[test]
fn conjunctive_lookup_agrees_with_the_reference_and_masks_are_sound() {
    let answered = std::cell::Cell::new(0usize);
    let strategy = (
        proptest::collection::vec((arb_match(), 0u16..4, arb_kind(), (0u8..4, 0u64..4)), 1..40),
        proptest::collection::vec(arb_key(), 1..20),
        proptest::collection::vec(any::<[u64; 4]>(), 6),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 400, ..ProptestConfig::default() });
    let result = runner.run(&strategy, |(rules, keys, noise)| {
        let mut c: Classifier<(Match, Vec<Clause>)> = Classifier::new();
        for (i, (m, p, kind, dim)) in rules.iter().enumerate() {
            let (m, payload) = match kind {
                Kind::Ordinary => (*m, vec![]),
                // A clause matches one dimension with few values (most
                // keys meet some), or anything a rule may match.
                Kind::Clauses(cl) => {
                    let mut d = Match::ANY;
                    match dim {
                        (0, v) => d.set_exact(Field::InPort, 1 + v % 3),
                        (1, v) => d.set_masked(Field::Reg0, *v, 3),
                        (2, v) => d.set_exact(Field::EthType, [0x0800, 0x0806, 0x86dd][*v as usize % 3]),
                        _ => d = *m,
                    }
                    (d, cl.clone())
                }
                Kind::Answer(id, wide) => {
                    let mut a = if *wide { Match::ANY } else { *m };
                    a.set_exact(Field::ConjId, u64::from(*id));
                    (a, vec![])
                }
            };
            // Clauses crowd two priorities, so conjunctions complete.
            let p = if payload.is_empty() { *p } else { 2 + *p % 2 };
            if c.find_exact(&m, p).is_none() {
                c.insert(ClsRule { id: i as u64, priority: p, payload: (m, payload) });
            }
        }
        for k in &keys {
            let mut wc = FlowMask::ZERO;
            let r = c.lookup_conjunctive(k, &mut wc, |p, f| p.1.iter().for_each(|c| f(*c)));
            answered.set(answered.get() + usize::from(r.conj.is_some()));
            let got = r.rule.map(|r| r.id);
            let want = conj_reference(&c, k);
            prop_assert_eq!(got, want, "key {:?}", k);
            for n in &noise {
                let mut p = *k;
                for (i, w) in p.w.iter_mut().enumerate() {
                    let r = n[i % 4].rotate_left(i as u32 * 7);
                    *w = (*w & wc.w[i]) | (r & !wc.w[i]);
                }
                p.set(Field::ConjId, 0);
                prop_assert_eq!(conj_reference(&c, &p), want, "mask {:?} too wide: {:?} vs {:?}", wc, p, k);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(answered.get() >= 100, "only {} lookups completed a conjunction", answered.get());
}

#[test]
fn a_conjunction_completes_only_with_every_clause_and_falls_back_when_unanswered() {
    let ip = |src: u64, dst: Option<u64>| {
        let mut m = Match::ANY;
        m.set_exact(Field::EthType, 0x0800);
        m.set_exact(Field::IpSrc, src);
        if let Some(d) = dst {
            m.set_exact(Field::IpDst, d);
        }
        m
    };
    let conj = |id, k| vec![Clause { id, k, n: 2 }];
    let mut c: Classifier<(Match, Vec<Clause>)> = Classifier::new();
    // conj 7: ip_src in {1, 2} and ip_dst in {10}
    let mut m1 = Match::ANY;
    m1.set_exact(Field::EthType, 0x0800);
    m1.set_exact(Field::IpSrc, 1);
    c.insert(ClsRule { id: 1, priority: 100, payload: (m1, conj(7, 1)) });
    c.insert(ClsRule { id: 2, priority: 100, payload: (ip(2, None), conj(7, 1)) });
    let mut m3 = Match::ANY;
    m3.set_exact(Field::EthType, 0x0800);
    m3.set_exact(Field::IpDst, 10);
    c.insert(ClsRule { id: 3, priority: 100, payload: (m3, conj(7, 2)) });
    let mut answer = Match::ANY;
    answer.set_exact(Field::ConjId, 7);
    c.insert(ClsRule { id: 4, priority: 100, payload: (answer, vec![]) });
    // an ordinary catch-all below
    let mut any_ip = Match::ANY;
    any_ip.set_exact(Field::EthType, 0x0800);
    c.insert(ClsRule { id: 5, priority: 10, payload: (any_ip, vec![]) });
    let key = |s: u64, d: u64| {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthType, 0x0800);
        k.set(Field::IpSrc, s);
        k.set(Field::IpDst, d);
        k
    };
    let look = |c: &Classifier<(Match, Vec<Clause>)>, k: &FlowKey| {
        let mut wc = FlowMask::ZERO;
        let r = c.lookup_conjunctive(k, &mut wc, |p, f| p.1.iter().for_each(|c| f(*c)));
        (r.rule.map(|r| r.id), r.hard.map(|r| r.id), r.conj.map(|(id, _)| id), wc)
    };
    let (rule, floor, conj_id, wc) = look(&c, &key(2, 10));
    assert_eq!((rule, floor, conj_id), (Some(4), Some(5), Some(7)));
    // Both dimensions were examined, and conj_id by the second lookup.
    assert_eq!(wc.get(Field::IpSrc), 0xffff_ffff);
    assert_eq!(wc.get(Field::IpDst), 0xffff_ffff);
    // One dimension only: the catch-all.
    assert_eq!(look(&c, &key(2, 11)).0, Some(5));
    assert_eq!(look(&c, &key(3, 10)).0, Some(5));
    // Without the conj_id flow, a complete conjunction is as if it had not matched.
    c.remove(4);
    assert_eq!(look(&c, &key(2, 10)).0, Some(5));
    // An ordinary rule above the clauses wins outright.
    let mut hi = Match::ANY;
    hi.set_exact(Field::EthType, 0x0800);
    hi.set_exact(Field::IpDst, 10);
    c.insert(ClsRule { id: 6, priority: 200, payload: (hi, vec![]) });
    c.insert(ClsRule { id: 4, priority: 100, payload: (answer, vec![]) });
    assert_eq!(look(&c, &key(2, 10)).0, Some(6));
}
