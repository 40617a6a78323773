//! The dependency index of the incremental engine: from rules, table misses,
//! groups, the clause flows that completed conjunctions and the MACs NORMAL
//! looked up to the cache entries whose traversal used them, and, per
//! table, a two-level prefix index (two fields the table's rules constrain
//! most) of the entries that reached it, to find the entries a new rule
//! overlaps without scanning the others; in a table with conjunctive flows
//! that index is kept per band of the floors of the visits (a rule's query
//! walks only the bands it may pass), and the entries are also filed by
//! floor and, per band, by their prefix on a third field (a port, with
//! its protocol ahead of it), to narrow a conjunction's.
//!
//! Invariants: every live entry is registered under exactly the rules,
//! misses, groups, clause flows, looked-up MACs and table regions of its current
//! traversal (re-registered whenever its traversal is replaced), its
//! registrations under rules
//! filed by the shared action cell it is noted in (so that an update of a
//! rule finds its users already grouped by cell, without reading each
//! one's cell); the region an entry is indexed under
//! at a table is a superset of its true region there, so a query never misses
//! an overlapping entry; its floors and third-field slots there are exactly
//! those of its visits (a rule's priority noted while the rule has users);
//! an entry's slots are a pure function of its megaflow, its traversal and
//! the noted priorities of the rules it ran (a table's fields never change
//! once chosen), so they are recomputed to unregister it rather than
//! stored (before its registrations under rules go, which may drop a
//! priority).
//!
//! Bringing registrations up to date after an update is deferred to
//! [`Index::collect`]: it fixes nothing in the cache, only readies the
//! index for the next update, and every pass collects what is pending
//! before it looks for affected entries. A removed entry leaves the live
//! set at once (queries may still hand out its id, which names no live
//! entry, and callers skip it) and its id is not reused before its
//! registrations are out, so a registration never names the wrong entry.
//! An entry whose megaflow got a new traversal stays registered under the
//! old one until then. (Re-registering touches the entry's sets in every
//! table whose visit changed, unregistering in every table it visited: at
//! 10M entries about 300 us of cold reads for one entry.) Once nothing is
//! pending, every live entry is registered under exactly its megaflow's
//! traversal.

use crate::prefetch::ReadAhead;
use std::collections::BTreeMap;
use std::sync::Arc;

use kairo_classifier::RuleId;
use kairo_flow::parse::prefix_mask;
use kairo_flow::{Field, FlowKey, FlowMask, Match};
use kairo_xlate::{Floor, Outcome, Pipeline, Step, Traversal};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::Ukey;
use kairo_datapath::Megaflow;

pub type EntryId = u32;

/// The (value aligned to len, prefix length) of one field under which an
/// entry is indexed at a table.
type Slot = (u64, u8);

/// The slots of one visit: its floor's band ([`band_of`]; 0 in a table
/// that keeps no floors), then its slot on the table's outer field, then on
/// its inner one.
type Slots = (u16, Slot, Slot);

/// Priorities per band of floors (a power of two): a table with
/// conjunctive flows keeps its two-level index per band
/// ([`TableIndex::bands`]). (In this crate's tests, whose priorities are
/// a few hundred, narrower, so that the engine proptest crosses bands.)
const BAND_SHIFT: u32 = if cfg!(test) { 5 } else { 12 };

/// Bands in a table that keeps floors: one for [`Floor::None`], then one
/// per `1 << BAND_SHIFT` priorities.
const BANDS: usize = 1 + (1 << (16 - BAND_SHIFT));

/// The band of a floor code: 0 for [`Floor::None`] (it lets every rule
/// in), else one past its priority's band.
fn band_of(code: u32) -> u16 {
    if code == Floor::None.code() {
        0
    } else {
        1 + ((code >> 1) >> BAND_SHIFT) as u16
    }
}

/// The highest band holding a floor a rule of `priority` passes, added or
/// changed (a floor above `q` lets in only rules of priority `q` or more):
/// those at or below it hold every such floor.
fn top_band_admitting(priority: u16) -> usize {
    1 + (usize::from(priority) >> BAND_SHIFT)
}

/// An entry under an inner slot: (value, len, entry).
type Key = (u64, u8, EntryId);

/// One entry: the megaflow's record and the traversal it is registered
/// under (shared with the record, which may hold a newer one until
/// [`Index::collect`];
/// the table, outcome and key of each visit are read from it, and its index
/// slots are recomputed from it rather than stored).
struct Entry {
    mf: Arc<Ukey>,
    trav: Arc<Traversal>,
}

/// The entries under one outer slot, ordered by inner slot: inline when
/// there is one (most outer slots of high-cardinality fields), a sorted
/// vector while few, and when many a B-tree of inner slots, each with the
/// set of its entries. (A B-tree of every (slot, entry) made removing one
/// entry from a catch-all table's 100K a walk down five levels of cold
/// nodes; a slot's entries need no order, so a hash set holds them.)
enum Inner {
    One(Key),
    Few(Vec<Key>),
    Many(BTreeMap<Slot, Ids>),
}

const FEW: usize = 64;

/// The entries under one inner slot of a large outer slot.
enum Ids {
    One(EntryId),
    Set(FxHashSet<EntryId>),
}

impl Ids {
    fn insert(&mut self, id: EntryId) -> bool {
        match self {
            Ids::One(x) if *x == id => false,
            Ids::One(x) => {
                *self = Ids::Set([*x, id].into_iter().collect());
                true
            }
            Ids::Set(s) => s.insert(id),
        }
    }

    /// Removes `id`; returns (whether it was there, whether this is now empty).
    fn remove(&mut self, id: EntryId) -> (bool, bool) {
        match self {
            Ids::One(x) => (*x == id, *x == id),
            Ids::Set(s) => {
                let hit = s.remove(&id);
                (hit, s.is_empty())
            }
        }
    }

    /// Whether `f` holds for every id (stopping at the first it does not).
    fn all(&self, mut f: impl FnMut(EntryId) -> bool) -> bool {
        match self {
            Ids::One(x) => f(*x),
            Ids::Set(s) => s.iter().all(|&x| f(x)),
        }
    }
}

fn many_insert(map: &mut BTreeMap<Slot, Ids>, (v, l, id): Key) -> bool {
    match map.get_mut(&(v, l)) {
        Some(ids) => ids.insert(id),
        None => {
            map.insert((v, l), Ids::One(id));
            true
        }
    }
}

impl Inner {
    fn insert(&mut self, k: Key) -> bool {
        match self {
            Inner::One(x) if *x == k => false,
            Inner::One(x) => {
                let mut v = vec![*x, k];
                v.sort_unstable();
                *self = Inner::Few(v);
                true
            }
            Inner::Few(v) => match v.binary_search(&k) {
                Ok(_) => false,
                Err(i) if v.len() < FEW => {
                    v.insert(i, k);
                    true
                }
                Err(_) => {
                    let mut map = BTreeMap::new();
                    for x in v.drain(..).chain(std::iter::once(k)) {
                        many_insert(&mut map, x);
                    }
                    *self = Inner::Many(map);
                    true
                }
            },
            Inner::Many(map) => many_insert(map, k),
        }
    }

    /// Removes `k`; returns (whether it was there, whether this is now empty).
    fn remove(&mut self, k: &Key) -> (bool, bool) {
        match self {
            Inner::One(x) => (x == k, x == k),
            Inner::Few(v) => match v.binary_search(k) {
                Ok(i) => {
                    v.remove(i);
                    (true, v.is_empty())
                }
                Err(_) => (false, false),
            },
            Inner::Many(map) => {
                let Some(ids) = map.get_mut(&(k.0, k.1)) else { return (false, false) };
                let (hit, empty) = ids.remove(k.2);
                if empty {
                    map.remove(&(k.0, k.1));
                }
                (hit, map.is_empty())
            }
        }
    }

    /// Calls `f` on every key in `lo..=hi`, in no particular order (none if
    /// `lo > hi`, where a B-tree range would panic).
    fn range(&self, lo: Key, hi: Key, mut f: impl FnMut(&Key)) {
        self.range_while(lo, hi, |k| {
            f(k);
            true
        });
    }

    /// [`Inner::range`] until `f` returns false; whether it never did.
    fn range_while(&self, lo: Key, hi: Key, mut f: impl FnMut(&Key) -> bool) -> bool {
        if lo > hi {
            return true;
        }
        match self {
            Inner::One(x) => !(lo <= *x && *x <= hi) || f(x),
            Inner::Few(v) => v[v.partition_point(|x| *x < lo)..].iter().take_while(|x| **x <= hi).all(f),
            Inner::Many(map) => map.range((lo.0, lo.1)..=(hi.0, hi.1)).all(|(&(v, l), ids)| {
                ids.all(|id| {
                    let k = (v, l, id);
                    !(lo <= k && k <= hi) || f(&k)
                })
            }),
        }
    }
}

/// Per-table index over two fields chosen for the table: entries by their
/// prefix on the outer field, then on the inner one. A new rule's
/// candidates are the entries compatible with it on both, found by visiting
/// only the outer slots compatible with it, so their number is bounded by
/// what both fields select, not by how many entries reached the table.
/// A table with conjunctive flows also keeps its entries by the floor of
/// their visits there ([`Floor`]) and, per band, by their prefix on a
/// third field (the one its clause flows constrain most after those two;
/// a port is qualified by the protocol: [`qualifier`]): a conjunction's
/// clause flows often overlap, on the two fields, most entries that
/// reached the table, of which only those decided below the flows'
/// priority, and inside one flow of each dimension (ports, say), can change.
struct TableIndex {
    outer_field: Field,
    /// `None` when the table's rules constrain a single field.
    inner_field: Option<Field>,
    /// The two-level index: one, or, where floors are kept, one per band
    /// of floors ([`band_of`]), so that a rule's query walks only the
    /// entries whose visits it may pass the floor of. (In a conjunctive
    /// table most entries a policy's flows overlap were decided above it,
    /// by the policies of higher priority they also match.)
    bands: Vec<Band>,
    /// By floor code ([`Floor::code`]; [`Floor::None`] highest): each
    /// entry under the distinct floors of its visits to the table
    /// ([`Index::extras_of`]). Only where the table had conjunctive flows
    /// when its index was made.
    floors: Option<BTreeMap<u32, FxHashSet<EntryId>>>,
    /// The third field and, per band of floors, its entries by slot on it.
    third: Option<Third>,
    /// Where floors are kept: per entry id, the code of the floor of its
    /// visits here that lets in the most ([`most_admitting`]; `Floor::None`'s
    /// for ids with no visit here), so that a candidate whose floor keeps
    /// a rule out is dropped without reading its entry.
    lowest: Vec<u32>,
    /// Where a third field is kept: per entry id, its one slot on it here
    /// ([`pack_slot`]), or [`ANY_SLOT`] where its visits here have several
    /// (or none, or one too wide to pack), so that a candidate outside
    /// every flow of a dimension on that field is dropped unread.
    thirds: Vec<u32>,
}

/// [`TableIndex::thirds`] of an entry whose slot is not known there.
const ANY_SLOT: u32 = u32::MAX;

/// A slot on a third field of at most 24 bits (a port with its protocol,
/// a VLAN) as one word ([`ANY_SLOT`] for a wider field).
fn pack_slot((v, len): Slot, f: Field) -> u32 {
    match u32::try_from(v) {
        Ok(v) if third_bits(f) <= 24 => (v << 8) | u32::from(len),
        _ => ANY_SLOT,
    }
}

/// The field a third field's slots are qualified by, ahead of it: for a
/// transport port, the IP protocol (a UDP entry whose region leaves the
/// port wild is no candidate for a flow on a TCP port).
fn qualifier(f: Field) -> Option<Field> {
    matches!(f, Field::TpSrc | Field::TpDst).then_some(Field::IpProto)
}

/// Width of third field `f`'s slots, its qualifier's bits ahead of its own.
fn third_bits(f: Field) -> u32 {
    f.bits() + qualifier(f).map_or(0, |q| q.bits())
}

/// A value and mask on third field `f` as one prefix (as [`prefix_of`]
/// gives it), its qualifier's value and mask ahead of its own: `get` reads
/// a field's value and mask.
fn third_prefix(f: Field, get: impl Fn(Field) -> (u64, u64)) -> (u64, u8, u64) {
    let (v, w) = get(f);
    let (v, w) = match qualifier(f) {
        Some(q) => {
            let (qv, qw) = get(q);
            ((qv << f.bits()) | v, (qw << f.bits()) | w)
        }
        None => (v, w),
    };
    prefix_in(v, w, third_bits(f))
}

/// The two-level index of one band of a table: entries by their prefix on
/// the outer field, then on the inner one.
struct Band {
    outer: BTreeMap<Slot, Inner>,
    /// Entries per prefix length on each field (queries skip lengths nobody uses).
    outer_lens: [u32; 65],
    inner_lens: [u32; 65],
}

impl Band {
    fn new() -> Band {
        Band { outer: BTreeMap::new(), outer_lens: [0; 65], inner_lens: [0; 65] }
    }
}

/// A conjunctive table's third field, and per band of floors (as
/// [`TableIndex::bands`]) the entries by slot on it (each under the
/// distinct (band, slot) pairs of its visits), with registrations per
/// prefix length: a query on it walks only the bands its rule may pass
/// (in Antrea, the replies decided above every policy by the table's
/// established-connection flows leave the port wild).
struct Third {
    field: Field,
    bands: Vec<(BySlot, [u32; 65])>,
}

/// Of two floor codes, the one whose floor lets in every rule the other's
/// does ([`Floor::None`] lets in all; a lower priority more; of one
/// priority, with ties more).
fn most_admitting(a: u32, b: u32) -> u32 {
    let none = Floor::None.code();
    if a == none || b == none {
        none
    } else if a >> 1 != b >> 1 {
        a.min(b)
    } else {
        a | b
    }
}

/// Entries by slot on a field.
type BySlot = BTreeMap<Slot, FxHashSet<EntryId>>;

/// What an entry is filed under in a table with conjunctive flows besides
/// its two-level slots (derived from its traversal: [`Index::extras_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Extra {
    /// A floor code ([`Floor::code`]).
    Floor(u32),
    /// A slot on the table's third field, in the band ([`band_of`]) of
    /// the floor of the visit with it.
    Third(u16, Slot),
}

/// Calls `f` on every value of `map` under a slot compatible with prefix
/// `p` (as [`prefix_of`] gives it) of a field of `bits` bits: the slots of
/// its prefixes that hold entries (`lens`), and those inside it; stops
/// where `f` returns false.
fn compatible<X>(
    map: &BTreeMap<Slot, X>,
    lens: &[u32; 65],
    p: (u64, u8, u64),
    bits: u32,
    mut f: impl FnMut(&X) -> bool,
) {
    for len in (0..=p.1).filter(|&len| lens[len as usize] > 0) {
        if let Some(x) = map.get(&(p.0 & prefix_mask(len as u32, bits), len)) {
            if !f(x) {
                return;
            }
        }
    }
    if p.1 < 64 && lens[(p.1 as usize + 1)..].iter().any(|&n| n > 0) {
        for (_, x) in map.range((p.0, 0)..=(p.2, u8::MAX)).filter(|(s, _)| s.1 > p.1) {
            if !f(x) {
                return;
            }
        }
    }
}

/// Leading ones of `m` in a field of `bits` bits.
fn leading_ones(m: u64, bits: u32) -> u8 {
    let shifted = if bits == 64 { m } else { m << (64 - bits) };
    shifted.leading_ones().min(bits) as u8
}

/// A rule's (or region's) prefix on `f`: the value aligned to it, its length,
/// and the last value inside it.
fn prefix_of(v: u64, w: u64, f: Field) -> (u64, u8, u64) {
    prefix_in(v, w, f.bits())
}

/// [`prefix_of`] on a value of `bits` bits.
fn prefix_in(v: u64, w: u64, bits: u32) -> (u64, u8, u64) {
    let l = leading_ones(w, bits);
    let ones = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let lo = v & prefix_mask(l as u32, bits);
    (lo, l, lo | (ones & !prefix_mask(l as u32, bits)))
}

/// Whether entries may be indexed on `f` (not conj_id: zero wherever a
/// lookup starts, so no entry's slot would tell any conj_id flow's apart).
fn useful(f: &Field) -> bool {
    f.def().storage.is_none() && !matches!(f, Field::EthType | Field::RecircId | Field::ConjId)
}

/// The fields to index a table on: the two its rules constrain with the
/// most bits (the first outer).
fn choose_fields(p: &Pipeline, t: u8) -> (Field, Option<Field>) {
    let mut score: FxHashMap<Field, u64> = FxHashMap::default();
    if let Some(tb) = p.table(t) {
        for r in tb.cls.iter() {
            for f in Field::all().filter(useful) {
                let n = r.m().mask().get(f).count_ones() as u64;
                if n > 0 {
                    *score.entry(f).or_insert(0) += n;
                }
            }
        }
    }
    let mut ranked: Vec<(Field, u64)> = score.into_iter().collect();
    ranked.sort_unstable_by_key(|(f, n)| (std::cmp::Reverse(*n), *f as u8));
    (ranked.first().map(|x| x.0).unwrap_or(Field::IpDst), ranked.get(1).map(|x| x.0))
}

/// A conjunctive table's third index field: the one its clause flows
/// constrain with the most bits, other than `outer` and `inner`.
fn third_field(p: &Pipeline, t: u8, outer: Field, inner: Option<Field>) -> Option<Field> {
    let mut score: FxHashMap<Field, u64> = FxHashMap::default();
    for r in p.table(t)?.cls.iter().filter(|r| r.payload.inst.is_clause()) {
        for f in Field::all().filter(|f| useful(f) && *f != outer && Some(*f) != inner) {
            let n = r.m().mask().get(f).count_ones() as u64;
            if n > 0 {
                *score.entry(f).or_insert(0) += n;
            }
        }
    }
    score.into_iter().max_by_key(|(f, n)| (*n, std::cmp::Reverse(*f as u8))).map(|x| x.0)
}

impl TableIndex {
    fn new(p: &Pipeline, t: u8) -> TableIndex {
        let (outer_field, inner_field) = choose_fields(p, t);
        // (Floors only where conjunctions are: elsewhere a rule is one
        // query, and the map would cost every entry.)
        let conjunctive = p.table(t).is_some_and(|tb| tb.conjunctive());
        let floors = conjunctive.then(BTreeMap::new);
        let third = conjunctive
            .then(|| third_field(p, t, outer_field, inner_field))
            .flatten()
            .map(|field| Third { field, bands: (0..BANDS).map(|_| (BTreeMap::new(), [0; 65])).collect() });
        let bands = (0..if floors.is_some() { BANDS } else { 1 }).map(|_| Band::new()).collect();
        TableIndex { outer_field, inner_field, bands, floors, third, lowest: Vec::new(), thirds: Vec::new() }
    }

    /// The visit's slot on the third field, if the table has one.
    fn third_slot(&self, region: &FlowMask, key: &FlowKey) -> Option<Slot> {
        let f = self.third.as_ref()?.field;
        let (lo, l, _) = third_prefix(f, |g| (key.get(g), region.get(g)));
        Some((lo, l))
    }

    /// The slots of a visit with floor code `floor` (its band only where
    /// the table keeps floors).
    fn slots(&self, region: &FlowMask, key: &FlowKey, floor: u32) -> Slots {
        let slot = |f: Field| {
            let (lo, l, _) = prefix_of(key.get(f), region.get(f), f);
            (lo, l)
        };
        let band = if self.floors.is_some() { band_of(floor) } else { 0 };
        (band, slot(self.outer_field), self.inner_field.map_or((0, 0), slot))
    }

    fn insert(&mut self, id: EntryId, (band, a, b): Slots) {
        let Some(band) = self.bands.get_mut(usize::from(band)) else { return };
        let k = (b.0, b.1, id);
        let added = match band.outer.get_mut(&a) {
            Some(inner) => inner.insert(k),
            None => {
                band.outer.insert(a, Inner::One(k));
                true
            }
        };
        if added {
            band.outer_lens[a.1 as usize] += 1;
            band.inner_lens[b.1 as usize] += 1;
        }
    }

    /// Whether entry `id` is under slots `s`.
    fn holds(&self, id: EntryId, (band, a, b): Slots) -> bool {
        let mut found = false;
        if let Some(inner) = self.bands.get(usize::from(band)).and_then(|x| x.outer.get(&a)) {
            inner.range((b.0, b.1, id), (b.0, b.1, id), |_| found = true);
        }
        found
    }

    /// Files (`add`) or takes out entry `id` under `x`.
    fn file_extra(&mut self, id: EntryId, x: Extra, add: bool) {
        fn file<K: Ord + Copy>(map: &mut BTreeMap<K, FxHashSet<EntryId>>, k: K, id: EntryId, add: bool) -> bool {
            if add {
                return map.entry(k).or_default().insert(id);
            }
            let Some(ids) = map.get_mut(&k) else { return false };
            let hit = ids.remove(&id);
            if ids.is_empty() {
                map.remove(&k);
            }
            hit
        }
        match x {
            Extra::Floor(c) => {
                if let Some(map) = self.floors.as_mut() {
                    file(map, c, id, add);
                }
            }
            Extra::Third(band, c) => {
                if let Some((map, lens)) = self.third.as_mut().and_then(|x| x.bands.get_mut(usize::from(band))) {
                    if file(map, c, id, add) {
                        if add {
                            lens[c.1 as usize] += 1;
                        } else {
                            lens[c.1 as usize] -= 1;
                        }
                    }
                }
            }
        }
    }

    /// Whether a rule of `priority` added (or `change`d) can pass the floor
    /// of one of entry `id`'s visits here, as far as the table tells (yes
    /// where it keeps no floors).
    fn may_admit(&self, id: EntryId, priority: u16, change: bool) -> bool {
        self.lowest.get(id as usize).is_none_or(|&c| Floor::of_code(c).admits(priority, change))
    }

    /// Whether entry `id`'s slot on the third field here (if one is known)
    /// is compatible with one of `ms` there.
    fn may_meet_third(&self, id: EntryId, ms: &[&Match]) -> bool {
        let Some(f) = self.third.as_ref().map(|x| &x.field) else { return true };
        let packed = self.thirds.get(id as usize).copied().unwrap_or(ANY_SLOT);
        if packed == ANY_SLOT {
            return true;
        }
        let (v, len) = (u64::from(packed >> 8), (packed & 0xff) as u8);
        ms.iter().any(|m| {
            let (lo, l, _) = third_prefix(*f, |g| m.field(g));
            (v ^ lo) & prefix_mask(u32::from(len.min(l)), third_bits(*f)) == 0
        })
    }

    /// Whether entry `id` is filed under `x`.
    fn has_extra(&self, id: EntryId, x: Extra) -> bool {
        let set = match x {
            Extra::Floor(c) => self.floors.as_ref().and_then(|m| m.get(&c)),
            Extra::Third(band, c) => {
                self.third.as_ref().and_then(|t| t.bands.get(usize::from(band))).and_then(|b| b.0.get(&c))
            }
        };
        set.is_some_and(|ids| ids.contains(&id))
    }

    /// The entries whose slot on the third field is compatible with match
    /// `m`, into `out` (repeats possible), until `out` holds more than
    /// `limit`. Returns whether it finished under that (false also where
    /// the table has no third field) and how many index keys were looked at.
    fn candidates_on_third(&self, m: &Match, priority: u16, out: &mut Vec<EntryId>, limit: usize) -> (bool, usize) {
        let Some(third) = self.third.as_ref() else { return (false, 0) };
        let f = third.field;
        let p = third_prefix(f, |g| m.field(g));
        let mut looked = 0;
        let hi = top_band_admitting(priority).min(third.bands.len() - 1);
        for (map, lens) in third.bands[..=hi].iter().filter(|b| !b.0.is_empty()) {
            compatible(map, lens, p, third_bits(f), |ids| {
                looked += 1;
                ids.iter().all(|&id| {
                    looked += 1;
                    out.push(id);
                    out.len() <= limit
                })
            });
            if out.len() > limit {
                break;
            }
        }
        (out.len() <= limit, looked)
    }

    fn remove(&mut self, id: EntryId, (band, a, b): Slots) {
        let Some(band) = self.bands.get_mut(usize::from(band)) else { return };
        let Some(inner) = band.outer.get_mut(&a) else { return };
        let (hit, empty) = inner.remove(&(b.0, b.1, id));
        if empty {
            band.outer.remove(&a);
        }
        if hit {
            band.outer_lens[a.1 as usize] -= 1;
            band.inner_lens[b.1 as usize] -= 1;
        }
    }

    /// The entries at a visit whose floor a rule of `priority` passes
    /// (added, or `change`d: [`Floor::admits`]), into `out` (repeats
    /// possible), until `out` holds more than `limit`. Returns whether it
    /// finished under that (false also where the table keeps no floors)
    /// and how many index keys were looked at.
    fn candidates_by_floor(&self, priority: u16, change: bool, out: &mut Vec<EntryId>, limit: usize) -> (bool, usize) {
        let Some(map) = self.floors.as_ref() else { return (false, 0) };
        let mut looked = 0;
        for (_, ids) in Self::admitted(map, priority, change) {
            looked += 1;
            for &id in ids {
                looked += 1;
                out.push(id);
                if out.len() > limit {
                    return (false, looked);
                }
            }
        }
        (true, looked)
    }

    /// The floors a rule of `priority` passes (added, or `change`d), with
    /// the entries at visits there.
    fn admitted(
        map: &BTreeMap<u32, FxHashSet<EntryId>>,
        priority: u16,
        change: bool,
    ) -> impl Iterator<Item = (&u32, &FxHashSet<EntryId>)> {
        let p = u32::from(priority) << 1;
        // Above{q, ties} is (q << 1) | ties: below the priority, its tie
        // (added: a floor with ties only; changed: both), and none.
        let below = map.range(..p).chain(map.range(p..=p | 1).filter(move |(c, _)| change || **c & 1 == 1));
        below.chain(map.range(Floor::None.code()..))
    }

    /// The entries whose slots are compatible with match `m` on both fields,
    /// at visits in a band that may hold a floor a rule of `priority` passes.
    /// Returns how many index keys were looked at.
    fn candidates(&self, m: &Match, priority: u16, out: &mut Vec<EntryId>) -> usize {
        self.candidates_within(m, priority, out, usize::MAX).1
    }

    /// [`TableIndex::candidates`] until `out` holds more than `limit`
    /// (checked between outer slots); whether it finished under that.
    fn candidates_within(&self, m: &Match, priority: u16, out: &mut Vec<EntryId>, limit: usize) -> (bool, usize) {
        let mut looked = 0;
        let hi = top_band_admitting(priority).min(self.bands.len() - 1);
        for band in self.bands[..=hi].iter().filter(|b| !b.outer.is_empty()) {
            let (done, n) = self.band_candidates(band, m, out, limit);
            looked += n;
            if !done {
                return (false, looked);
            }
        }
        (true, looked)
    }

    /// [`TableIndex::candidates_within`] in one band.
    fn band_candidates(&self, band: &Band, m: &Match, out: &mut Vec<EntryId>, limit: usize) -> (bool, usize) {
        let (va, wa) = m.field(self.outer_field);
        let pa = prefix_of(va, wa, self.outer_field);
        let pb = self.inner_field.map_or((0, 0, 0), |f| {
            let (v, w) = m.field(f);
            prefix_of(v, w, f)
        });
        let bits_b = self.inner_field.map_or(64, |f| f.bits());
        let mut looked = 0usize;
        let visit = |inner: &Inner| {
            looked += 1;
            let mut take = |k: &Key| {
                looked += 1;
                out.push(k.2);
                out.len() <= limit
            };
            for len in (0..=pb.1).filter(|&len| band.inner_lens[len as usize] > 0) {
                let v = pb.0 & prefix_mask(len as u32, bits_b);
                if !inner.range_while((v, len, 0), (v, len, EntryId::MAX), &mut take) {
                    return false;
                }
            }
            if pb.1 < 64 && band.inner_lens[(pb.1 as usize + 1)..].iter().any(|&n| n > 0) {
                return inner.range_while((pb.0, 0, 0), (pb.2, u8::MAX, EntryId::MAX), |k| k.1 <= pb.1 || take(k));
            }
            true
        };
        compatible(&band.outer, &band.outer_lens, pa, self.outer_field.bits(), visit);
        (out.len() <= limit, looked)
    }
}

/// How [`Index::candidates_within`] finds entries at a table.
#[derive(Clone, Debug)]
pub enum Probe {
    /// Those under slots compatible with one of these matches on the two
    /// fields.
    Walk(Vec<Match>),
    /// Those under a slot compatible with one of these on the third field.
    Third(Vec<Match>),
    /// Those at a visit whose floor the rule passes.
    Floor,
}

/// `v` sorted, without repeats.
fn sorted_set(mut v: Vec<EntryId>) -> Vec<EntryId> {
    v.sort_unstable();
    v.dedup();
    v
}

/// The index key of a group use: the group, and whether the use only froze
/// for a datapath hash (its own key, so that a change of buckets alone
/// leaves those users out).
fn group_key(g: u32, recirc: bool) -> u64 {
    u64::from(g) | u64::from(recirc) << 32
}

/// The dependency index.
#[derive(Default)]
pub struct Index {
    entries: Vec<Option<Entry>>,
    /// The priority of each rule entries ran ([`Index::note_priorities`]),
    /// kept while it has users.
    rule_prio: FxHashMap<RuleId, u16>,
    /// Rules whose priority may have lost its last user: noted for a
    /// traversal not registered yet (a replaced one, waiting for
    /// [`Index::collect`]), or whose last registration went during a pass.
    /// Their priority goes at the pass's end if no entry is registered
    /// under them then (not at once: a later entry of the same pass may
    /// register under the rule again).
    noted: Vec<RuleId>,
    /// Per entry id, the tag of its megaflow's shared action cell (0:
    /// none, or no live entry), kept apart and dense so that an update
    /// finds the cells of the entries it affects without reading their
    /// megaflows or entries (checked by [`Index::check`]).
    cells: Vec<u32>,
    /// Per entry id, the cell its registrations under rules are filed by
    /// ([`Index::by_rule`]): its tag in `cells`, except for entries in
    /// `retag`, whose registrations [`Index::collect`] moves (a pass that
    /// takes a million entries out of their cells notes it at once and
    /// moves their registrations off the time-to-update, with the rest).
    filed: Vec<u32>,
    /// Entries whose tag changed since their registrations were filed.
    retag: Vec<EntryId>,
    free: Vec<EntryId>,
    /// Removed entries still registered, waiting for [`Index::collect`].
    removed: Vec<(EntryId, Entry)>,
    /// Live entries whose megaflow's traversal was replaced while they stay
    /// registered under the one they had ([`Entry::trav`]), waiting for
    /// [`Index::collect`] to move them over.
    stale: Vec<EntryId>,
    by_ptr: FxHashMap<usize, EntryId>,
    /// Per rule, its users by the cell they are filed by (0: none).
    by_rule: FxHashMap<RuleId, FxHashMap<u32, FxHashSet<EntryId>>>,
    by_miss: FxHashMap<u8, FxHashSet<EntryId>>,
    /// By group use ([`group_key`]: the group, and whether the use only
    /// froze for a datapath hash).
    by_group: FxHashMap<u64, FxHashSet<EntryId>>,
    /// By the destination MACs NORMAL looked up ([`Traversal::normal`]).
    by_mac: FxHashMap<u64, FxHashSet<EntryId>>,
    /// By the clause flows that completed a conjunction at one of the
    /// entry's visits ([`Traversal::clauses`]): where no flow is two
    /// clauses of one conjunction, the entries a clause flow's removal can
    /// change (besides those of an ordinary rule it outranks with its match).
    by_clause: FxHashMap<RuleId, FxHashSet<EntryId>>,
    /// By the (table, cookie) whose flows a learn's limit counted for its
    /// result bit ([`kairo_xlate::Learned::checked`]).
    by_limit: FxHashMap<(u8, u64), FxHashSet<EntryId>>,
    /// Entries whose translation learned flows or ran a `fin_timeout`
    /// (what their hits refresh).
    refreshing: FxHashSet<EntryId>,
    tables: FxHashMap<u8, TableIndex>,
    po: FlowMask,
}

/// Files entry `id` under each of `keys` (a group use, a looked-up MAC).
fn file<K: std::hash::Hash + Eq + Copy>(map: &mut FxHashMap<K, FxHashSet<EntryId>>, id: EntryId, keys: &[K]) {
    for &k in keys {
        map.entry(k).or_default().insert(id);
    }
}

/// Takes entry `id` out from under each of `keys`, dropping emptied sets.
fn unfile<K: std::hash::Hash + Eq + Copy>(map: &mut FxHashMap<K, FxHashSet<EntryId>>, id: EntryId, keys: &[K]) {
    for k in keys {
        if let Some(s) = map.get_mut(k) {
            s.remove(&id);
            if s.is_empty() {
                map.remove(k);
            }
        }
    }
}

impl Index {
    pub fn new() -> Index {
        Index { po: crate::revalidate::pipeline_only_mask(), ..Index::default() }
    }

    pub fn len(&self) -> usize {
        self.by_ptr.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_ptr.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Arc<Ukey>> {
        self.entries.iter().flatten().map(|e| &e.mf)
    }

    /// The live entries among ids `from..from + n` (appended to `out`);
    /// the id after them, 0 once past the last.
    pub fn entries_from(&self, from: usize, n: usize, out: &mut Vec<Arc<Ukey>>) -> usize {
        let end = from.saturating_add(n).min(self.entries.len());
        out.extend(self.entries.get(from..end).unwrap_or_default().iter().flatten().map(|e| e.mf.clone()));
        if end >= self.entries.len() {
            0
        } else {
            end
        }
    }

    /// The live entries with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (EntryId, &Arc<Ukey>)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| Some((i as EntryId, &e.as_ref()?.mf)))
    }

    /// The tag of entry `id`'s shared action cell (0: none, or no such entry).
    pub fn cell_of(&self, id: EntryId) -> u32 {
        self.cells.get(id as usize).copied().unwrap_or(0)
    }

    /// Notes that entry `id`'s megaflow reads its actions from cell `tag`
    /// now (its registrations are filed by it at the next
    /// [`Index::collect`]).
    pub fn set_cell(&mut self, id: EntryId, tag: u32) {
        if self.entries.get(id as usize).is_some_and(|e| e.is_some()) {
            let i = id as usize;
            // Queued once: while its tag differs from its filing it is.
            if self.cells[i] == self.filed[i] && tag != self.filed[i] {
                self.retag.push(id);
            }
            self.cells[i] = tag;
        }
    }

    /// Files a live entry's registrations under rules by its tag.
    fn refile(&mut self, id: EntryId) {
        let i = id as usize;
        let (from, to) = (self.filed[i], self.cells[i]);
        let Some(e) = self.entries.get(i).and_then(|e| e.as_ref()) else { return };
        if from == to {
            return;
        }
        let trav = e.trav.clone();
        for st in &trav.steps {
            if let Some(r) = st.outcome.rule() {
                if let Some(users) = self.by_rule.get_mut(&r) {
                    if Self::take_user(users, from, id) {
                        users.entry(to).or_default().insert(id);
                    }
                }
            }
        }
        self.filed[i] = to;
    }

    /// Takes `id` out of a rule's users filed by `tag`; whether it was there.
    fn take_user(users: &mut FxHashMap<u32, FxHashSet<EntryId>>, tag: u32, id: EntryId) -> bool {
        let Some(set) = users.get_mut(&tag) else { return false };
        let hit = set.remove(&id);
        if set.is_empty() {
            users.remove(&tag);
        }
        hit
    }

    pub fn get(&self, id: EntryId) -> Option<&Arc<Ukey>> {
        self.entries.get(id as usize)?.as_ref().map(|e| &e.mf)
    }

    fn region(&self, mf: &Ukey) -> FlowMask {
        let mut m = *mf.mask;
        m.or(&self.po);
        m
    }

    /// Creates the index of each table a traversal visits that has none yet
    /// (its fields are chosen then, from the table's rules, and never change).
    fn ensure_tables(&mut self, p: &Pipeline, trav: &Traversal) {
        for st in &trav.steps {
            self.tables.entry(st.table).or_insert_with(|| TableIndex::new(p, st.table));
        }
    }

    /// The index slots of each step of a traversal (a pure function of the
    /// megaflow and the traversal, so they are recomputed, not stored).
    fn slots_of(&self, mf: &Ukey, trav: &Traversal) -> Vec<Slots> {
        let region = self.region(mf);
        trav.steps.iter().map(|st| self.slots_at(&region, mf, trav, st)).collect()
    }

    /// What a traversal's visits to tables with conjunctive flows are filed
    /// under there besides their slots, distinct: each visit's floor (a
    /// rule's priority from `rule_prio`) and slot on the third field.
    fn extras_of(&self, mf: &Ukey, trav: &Traversal) -> Vec<(u8, Extra)> {
        let mut region = None;
        let mut out: Vec<(u8, Extra)> = Vec::new();
        for st in &trav.steps {
            let Some(ti) = self.tables.get(&st.table).filter(|ti| ti.floors.is_some()) else { continue };
            let floor = st.outcome.floor(|r| self.rule_prio.get(&r).copied()).code();
            out.push((st.table, Extra::Floor(floor)));
            if ti.third.is_some() {
                let region = region.get_or_insert_with(|| self.region(mf));
                let slot = ti.third_slot(region, &trav.key_at(&mf.rep, st));
                out.extend(slot.map(|c| (st.table, Extra::Third(band_of(floor), c))));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Files (`add`) or takes out entry `id` under each of `extras`.
    fn file_extras(&mut self, id: EntryId, extras: &[(u8, Extra)], add: bool) {
        for &(t, x) in extras {
            if let Some(ti) = self.tables.get_mut(&t) {
                ti.file_extra(id, x, add);
            }
        }
    }

    /// Brings entry `id`'s most admitting floor and its third-field slot
    /// per table up to date, from its extras before (`was`) and now.
    fn note_per_id(&mut self, id: EntryId, was: &[(u8, Extra)], now: &[(u8, Extra)]) {
        let none = Floor::None.code();
        let i = id as usize;
        for (t, x) in was {
            let Some(ti) = self.tables.get_mut(t) else { continue };
            match x {
                Extra::Floor(_) => ti.lowest.get_mut(i).into_iter().for_each(|c| *c = none),
                Extra::Third(..) => ti.thirds.get_mut(i).into_iter().for_each(|c| *c = ANY_SLOT),
            }
        }
        // (Extras come sorted: a table's floors, then its third slots.)
        let mut folded: Vec<(u8, u32)> = Vec::new();
        let mut thirds: Vec<(u8, Slot, bool)> = Vec::new();
        for &(t, x) in now {
            match x {
                Extra::Floor(c) => match folded.last_mut() {
                    Some((lt, lc)) if *lt == t => *lc = most_admitting(*lc, c),
                    _ => folded.push((t, c)),
                },
                Extra::Third(_, c) => match thirds.last_mut() {
                    Some((lt, lc, one)) if *lt == t => *one &= *lc == c,
                    _ => thirds.push((t, c, true)),
                },
            }
        }
        for (t, c) in folded {
            if let Some(ti) = self.tables.get_mut(&t) {
                if ti.lowest.len() <= i {
                    ti.lowest.resize(i + 1, none);
                }
                ti.lowest[i] = c;
            }
        }
        for (t, c, one) in thirds {
            let Some(ti) = self.tables.get_mut(&t) else { continue };
            let Some(f) = ti.third.as_ref().map(|x| x.field) else { continue };
            if ti.thirds.len() <= i {
                ti.thirds.resize(i + 1, ANY_SLOT);
            }
            ti.thirds[i] = if one { pack_slot(c, f) } else { ANY_SLOT };
        }
    }

    /// Of `cands`, those whose slot on table `t`'s third field (where it is
    /// known) is compatible with one of `ms`.
    pub fn may_meet_third(&self, t: u8, cands: &mut Vec<EntryId>, ms: &[&Match]) {
        if let Some(ti) = self.tables.get(&t) {
            cands.retain(|&id| ti.may_meet_third(id, ms));
        }
    }

    /// Of `cands`, those that may reach table `t` at a visit whose floor a
    /// rule of `priority` passes (added, or `change`d), judged from the
    /// table's floors alone (all where it keeps none).
    pub fn may_admit(&self, t: u8, cands: &mut Vec<EntryId>, priority: u16, change: bool) {
        if let Some(ti) = self.tables.get(&t) {
            cands.retain(|&id| ti.may_admit(id, priority, change));
        }
    }

    /// Notes the priority of each rule a traversal's visits ran (kept while
    /// the rule has users: [`Index::extras_of`] reads it when the rule may
    /// be gone from the pipeline).
    fn note_priorities(&mut self, p: &Pipeline, trav: &Traversal) {
        for st in &trav.steps {
            if let Outcome::Rule(r) = st.outcome {
                if let Some(rule) = p.rule(st.table, r) {
                    self.rule_prio.insert(r, rule.priority);
                }
            }
        }
    }

    /// The index slots of one step, given the megaflow's indexed region.
    /// (A plain outcome's floor is its rule's priority, noted while the
    /// rule has users: the slots of a visit are taken out before the rule's
    /// registration, which may drop it.)
    fn slots_at(&self, region: &FlowMask, mf: &Ukey, trav: &Traversal, st: &Step) -> Slots {
        self.tables.get(&st.table).map_or((0, (0, 0), (0, 0)), |ti| {
            let floor = st.outcome.floor(|r| self.rule_prio.get(&r).copied()).code();
            ti.slots(region, &trav.key_at(&mf.rep, st), floor)
        })
    }

    /// An entry is registered under the rule whose instructions ran at a
    /// visit (a conjunction's answer, for a conjunctive match), or under
    /// the table's miss where none did.
    fn add_outcome(&mut self, id: EntryId, table: u8, outcome: Outcome) {
        match outcome.rule() {
            Some(r) => {
                let tag = self.filed[id as usize];
                self.by_rule.entry(r).or_default().entry(tag).or_default().insert(id)
            }
            None => self.by_miss.entry(table).or_default().insert(id),
        };
    }

    fn add_slot(&mut self, id: EntryId, table: u8, slots: Slots) {
        if let Some(ti) = self.tables.get_mut(&table) {
            ti.insert(id, slots);
        }
    }

    fn del_outcome(&mut self, id: EntryId, table: u8, outcome: Outcome) {
        match outcome.rule() {
            Some(r) => {
                if let Some(users) = self.by_rule.get_mut(&r) {
                    Self::take_user(users, self.filed[id as usize], id);
                    if users.is_empty() {
                        // (Its priority stays until the pass is done: an
                        // entry moved over later in the same pass may
                        // register under it again.)
                        self.by_rule.remove(&r);
                        self.noted.push(r);
                    }
                }
            }
            None => {
                if let Some(s) = self.by_miss.get_mut(&table) {
                    s.remove(&id);
                    if s.is_empty() {
                        self.by_miss.remove(&table);
                    }
                }
            }
        }
    }

    fn del_slot(&mut self, id: EntryId, table: u8, slots: Slots) {
        if let Some(ti) = self.tables.get_mut(&table) {
            ti.remove(id, slots);
        }
    }

    fn groups_of(trav: &Traversal) -> Vec<u64> {
        let mut groups: Vec<u64> = trav.groups.iter().map(|g| group_key(g.group, g.recirc)).collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// Do the entry's hits refresh something (learned flows, fin timeouts)?
    fn refreshes(trav: &Traversal) -> bool {
        trav.learned.is_some() || trav.fin.is_some()
    }

    fn limits_of(trav: &Traversal) -> Vec<(u8, u64)> {
        let mut keys: Vec<(u8, u64)> =
            trav.learned.iter().flatten().filter(|l| l.checked).map(|l| (l.rule.table, l.rule.cookie)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn clauses_of(trav: &Traversal) -> Vec<RuleId> {
        let mut ids: Vec<RuleId> = trav.clauses.iter().map(|&(_, c)| c).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn macs_of(trav: &Traversal) -> Vec<u64> {
        let mut macs: Vec<u64> = trav.normal.iter().flat_map(|n| n.iter().map(|&(_, mac)| mac)).collect();
        macs.sort_unstable();
        macs.dedup();
        macs
    }

    fn register(&mut self, p: &Pipeline, id: EntryId, mf: &Arc<Ukey>, trav: Arc<Traversal>) {
        if self.cells.len() < self.entries.len() {
            self.cells.resize(self.entries.len(), 0);
            self.filed.resize(self.entries.len(), 0);
        }
        self.cells[id as usize] = mf.cell_tag();
        self.filed[id as usize] = mf.cell_tag();
        self.ensure_tables(p, &trav);
        // (Priorities first: a visit's slots hold its floor's band.)
        self.note_priorities(p, &trav);
        let slots = self.slots_of(mf, &trav);
        for (st, &slot) in trav.steps.iter().zip(slots.iter()) {
            self.add_outcome(id, st.table, st.outcome);
            self.add_slot(id, st.table, slot);
        }
        let extras = self.extras_of(mf, &trav);
        self.file_extras(id, &extras, true);
        self.note_per_id(id, &[], &extras);
        file(&mut self.by_group, id, &Self::groups_of(&trav));
        file(&mut self.by_mac, id, &Self::macs_of(&trav));
        file(&mut self.by_clause, id, &Self::clauses_of(&trav));
        file(&mut self.by_limit, id, &Self::limits_of(&trav));
        if Self::refreshes(&trav) {
            self.refreshing.insert(id);
        }
        self.entries[id as usize] = Some(Entry { mf: mf.clone(), trav });
    }

    /// Takes out every registration of a removed entry's traversal.
    fn unregister(&mut self, id: EntryId, e: &Entry) {
        // (Before the rules: the floors read their priorities, which go
        // with their last user.)
        let extras = self.extras_of(&e.mf, &e.trav);
        self.file_extras(id, &extras, false);
        self.note_per_id(id, &extras, &[]);
        for (st, s) in e.trav.steps.iter().zip(self.slots_of(&e.mf, &e.trav)) {
            self.del_slot(id, st.table, s);
        }
        for st in &e.trav.steps {
            self.del_outcome(id, st.table, st.outcome);
        }
        unfile(&mut self.by_group, id, &Self::groups_of(&e.trav));
        unfile(&mut self.by_mac, id, &Self::macs_of(&e.trav));
        unfile(&mut self.by_clause, id, &Self::clauses_of(&e.trav));
        unfile(&mut self.by_limit, id, &Self::limits_of(&e.trav));
        self.refreshing.remove(&id);
    }

    /// Adds an entry under its current traversal.
    pub fn insert(&mut self, p: &Pipeline, mf: Arc<Ukey>) -> EntryId {
        self.insert_with(p, mf, |_| {})
    }

    /// [`Index::insert`], calling `first` with the entry's id before it is
    /// registered (to give its megaflow a cell, whose tag its
    /// registrations are then filed by at once).
    pub fn insert_with(&mut self, p: &Pipeline, mf: Arc<Ukey>, first: impl FnOnce(EntryId)) -> EntryId {
        let key = crate::ukey::addr(&mf);
        if let Some(&id) = self.by_ptr.get(&key) {
            return id;
        }
        let id = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(None);
                (self.entries.len() - 1) as EntryId
            }
        };
        self.by_ptr.insert(key, id);
        first(id);
        let trav = mf.traversal();
        self.register(p, id, &mf, trav);
        id
    }

    /// Notes that entry `id`'s megaflow now has a new traversal: it stays
    /// registered under the old one until [`Index::collect`] moves it over.
    /// (Until then a query finds it under what it used before the update
    /// that replaced its traversal, which no query runs between: every pass
    /// collects what is pending before it looks for affected entries.)
    pub fn replaced(&mut self, p: &Pipeline, id: EntryId) {
        let Some(e) = self.entries.get(id as usize).and_then(|e| e.as_ref()) else { return };
        // The tables' indexes are made now, while the pipeline is at hand:
        // which fields a table is indexed on is chosen from its rules.
        let new = e.mf.traversal();
        self.ensure_tables(p, &new);
        self.note_priorities(p, &new);
        self.noted.extend(new.steps.iter().filter_map(|st| match st.outcome {
            Outcome::Rule(r) => Some(r),
            _ => None,
        }));
        self.stale.push(id);
    }

    /// Moves a live entry's registrations from the traversal it is
    /// registered under to its megaflow's current one: adds what the new
    /// one has that the old had not at the same visit (usually from the
    /// table whose rule changed onwards), then takes out what the old one
    /// had that the new one lacks.
    fn move_over(&mut self, id: EntryId) {
        let Some(e) = self.entries.get_mut(id as usize).and_then(|e| e.take()) else { return };
        let new = e.mf.traversal();
        if Arc::ptr_eq(&new, &e.trav) {
            self.entries[id as usize] = Some(e);
            return;
        }
        let region = self.region(&e.mf);
        let (old, now) = (&e.trav.steps, &new.steps);
        // Two registrations per visit: its outcome and its slots. Every
        // registration of the old traversal is in place (the invariant), so
        // a visit with the old visit's outcome at the same place needs none,
        // and one with the old visit's key and outcome keeps its slots (a
        // function of the key and the floor); slots are computed only for
        // visits where either changed.
        let same_table = |i: usize| matches!((old.get(i), now.get(i)), (Some(a), Some(b)) if a.table == b.table);
        // (Registered under the rule that ran, or the miss: two outcomes
        // with the same rule share their registration.)
        let same_outcome = |i: usize| same_table(i) && old[i].outcome.rule() == now[i].outcome.rule();
        let same_key = |i: usize| {
            same_table(i)
                && old[i].outcome == now[i].outcome
                && e.trav.version(old[i].version) == new.version(now[i].version)
        };
        let mut changed = old.len() != now.len();
        for (i, st) in now.iter().enumerate() {
            if !same_outcome(i) {
                self.add_outcome(id, st.table, st.outcome);
                changed = true;
            }
            if !same_key(i) {
                let s = self.slots_at(&region, &e.mf, &new, st);
                if !same_table(i) || self.slots_at(&region, &e.mf, &e.trav, &old[i]) != s {
                    self.add_slot(id, st.table, s);
                    changed = true;
                }
            }
        }
        let (was, extras) = (self.extras_of(&e.mf, &e.trav), self.extras_of(&e.mf, &new));
        if extras != was {
            let gone: Vec<(u8, Extra)> = was.iter().copied().filter(|c| !extras.contains(c)).collect();
            self.file_extras(id, &extras, true);
            self.file_extras(id, &gone, false);
            self.note_per_id(id, &was, &extras);
        }
        let (was, groups) = (Self::groups_of(&e.trav), Self::groups_of(&new));
        if groups != was {
            file(&mut self.by_group, id, &groups);
            let gone: Vec<u64> = was.iter().copied().filter(|g| !groups.contains(g)).collect();
            unfile(&mut self.by_group, id, &gone);
        }
        let (was, macs) = (Self::macs_of(&e.trav), Self::macs_of(&new));
        if macs != was {
            file(&mut self.by_mac, id, &macs);
            let gone: Vec<u64> = was.iter().copied().filter(|m| !macs.contains(m)).collect();
            unfile(&mut self.by_mac, id, &gone);
        }
        let (was, clauses) = (Self::clauses_of(&e.trav), Self::clauses_of(&new));
        if clauses != was {
            file(&mut self.by_clause, id, &clauses);
            let gone: Vec<RuleId> = was.iter().copied().filter(|c| !clauses.contains(c)).collect();
            unfile(&mut self.by_clause, id, &gone);
        }
        if Self::refreshes(&new) {
            self.refreshing.insert(id);
        } else {
            self.refreshing.remove(&id);
        }
        let (was, limits) = (Self::limits_of(&e.trav), Self::limits_of(&new));
        if limits != was {
            file(&mut self.by_limit, id, &limits);
            let gone: Vec<(u8, u64)> = was.iter().copied().filter(|k| !limits.contains(k)).collect();
            unfile(&mut self.by_limit, id, &gone);
        }
        // What the old traversal asserted that the new one does not: only
        // visits that changed can have it, and only a visit to the same
        // table can still assert it.
        // (Slots first: an old visit's floor may read the priority of a
        // rule whose last registration goes below.)
        if changed {
            for (i, st) in old.iter().enumerate() {
                if !same_key(i) {
                    let so = self.slots_at(&region, &e.mf, &e.trav, st);
                    let kept = now.iter().any(|s| s.table == st.table && self.slots_at(&region, &e.mf, &new, s) == so);
                    if !kept {
                        self.del_slot(id, st.table, so);
                    }
                }
            }
            for (i, st) in old.iter().enumerate() {
                let asserted = |s: &Step| s.table == st.table && s.outcome.rule() == st.outcome.rule();
                if !same_outcome(i) && !now.iter().any(asserted) {
                    self.del_outcome(id, st.table, st.outcome);
                }
            }
        }
        self.entries[id as usize] = Some(Entry { mf: e.mf, trav: new });
    }

    /// Takes an entry out of the live set (its registrations stay).
    fn take_live(&mut self, id: EntryId) -> Option<Entry> {
        let e = self.entries.get_mut(id as usize)?.take()?;
        self.by_ptr.remove(&crate::ukey::addr(&e.mf));
        self.cells[id as usize] = 0;
        // (`filed` stays until its registrations are out.)
        Some(e)
    }

    /// Removes an entry from the live set; its registrations go at the
    /// next [`Index::collect`].
    pub fn remove(&mut self, id: EntryId) -> Option<Arc<Ukey>> {
        let e = self.take_live(id)?;
        let mf = e.mf.clone();
        self.removed.push((id, e));
        Some(mf)
    }

    /// Removes an entry and its registrations at once (for removals off the
    /// update path, such as idle expiry, where nothing waits on them and no
    /// later update may come to collect them).
    pub fn remove_now(&mut self, id: EntryId) -> Option<Arc<Ukey>> {
        // Its id is freed at once: no deferred record may still name it.
        if self.pending() > 0 {
            self.collect();
        }
        let e = self.take_live(id)?;
        self.unregister(id, &e);
        self.filed[id as usize] = 0;
        self.free.push(id);
        self.forget_unused_priorities();
        Some(e.mf)
    }

    /// Removed entries whose registrations are still to be taken out, and
    /// live ones still registered under a replaced traversal.
    pub fn pending(&self) -> usize {
        self.removed.len() + self.stale.len() + self.retag.len()
    }

    /// Brings the registrations up to date: moves every entry whose
    /// traversal was replaced over to its current one, then takes out those
    /// of removed entries (freeing their ids); returns how many entries
    /// that was.
    pub fn collect(&mut self) -> usize {
        // Filings first: moving over and unregistering find an entry's
        // registrations under rules by its filing.
        let retag = std::mem::take(&mut self.retag);
        for &id in &retag {
            self.refile(id);
        }
        let stale = std::mem::take(&mut self.stale);
        for &id in &stale {
            self.move_over(id);
        }
        let removed = std::mem::take(&mut self.removed);
        for (id, e) in &removed {
            self.unregister(*id, e);
            self.filed[*id as usize] = 0;
            self.free.push(*id);
        }
        self.forget_unused_priorities();
        stale.len() + removed.len() + retag.len()
    }

    /// Drops the priorities noted for rules that no entry runs now (of
    /// those whose last user went, or that were noted for a traversal
    /// registered under other rules after all).
    fn forget_unused_priorities(&mut self) {
        for r in std::mem::take(&mut self.noted) {
            if !self.by_rule.contains_key(&r) {
                self.rule_prio.remove(&r);
            }
        }
    }

    /// Checks the invariants above against the index's own sets: every live
    /// entry is registered under each rule, miss, group and slot of its
    /// traversal, and once nothing is pending every registration is one a
    /// live entry's traversal asserts. Returns what is wrong (a test aid: it
    /// walks everything).
    pub fn check(&self) -> Result<(), String> {
        for (i, e) in self.entries.iter().enumerate() {
            let Some(e) = e else { continue };
            let id = i as EntryId;
            if self.cell_of(id) != e.mf.cell_tag() {
                return Err(format!(
                    "entry {id}: noted in cell {}, reads from cell {}",
                    self.cell_of(id),
                    e.mf.cell_tag()
                ));
            }
            let region = self.region(&e.mf);
            let filed = self.filed[i];
            if self.retag.is_empty() && filed != self.cell_of(id) {
                return Err(format!("entry {id}: in cell {}, filed by {filed}", self.cell_of(id)));
            }
            for st in &e.trav.steps {
                let set = match st.outcome.rule() {
                    Some(r) => self.by_rule.get(&r).and_then(|u| u.get(&filed)),
                    None => self.by_miss.get(&st.table),
                };
                if !set.is_some_and(|s| s.contains(&id)) {
                    return Err(format!("entry {id}: not registered under {:?} at table {}", st.outcome, st.table));
                }
                if let Some(ti) = self.tables.get(&st.table) {
                    let s = self.slots_at(&region, &e.mf, &e.trav, st);
                    if !ti.holds(id, s) {
                        return Err(format!("entry {id}: missing from table {}'s slot {s:?}", st.table));
                    }
                    if ti.floors.is_some() {
                        let c = st.outcome.floor(|r| self.rule_prio.get(&r).copied()).code();
                        let third_slot = ti.third_slot(&region, &e.trav.key_at(&e.mf.rep, st));
                        let third = third_slot.map(|s| Extra::Third(band_of(c), s));
                        if let Some(x) = [Extra::Floor(c)].into_iter().chain(third).find(|x| !ti.has_extra(id, *x)) {
                            return Err(format!("entry {id}: not filed under {x:?} at table {}", st.table));
                        }
                        let lowest = ti.lowest.get(id as usize).copied();
                        if lowest.is_none_or(|l| most_admitting(l, c) != l) {
                            return Err(format!(
                                "entry {id}: its lowest floor at table {} ({lowest:?}) is above {c:#x}",
                                st.table
                            ));
                        }
                        if let Some((f, c)) = ti.third.as_ref().map(|x| x.field).zip(third_slot) {
                            let noted = ti.thirds.get(id as usize).copied().unwrap_or(ANY_SLOT);
                            let others = self
                                .extras_of(&e.mf, &e.trav)
                                .iter()
                                .any(|&(xt, x)| xt == st.table && matches!(x, Extra::Third(_, o) if o != c));
                            let want = if others { ANY_SLOT } else { pack_slot(c, f) };
                            if noted != want {
                                return Err(format!(
                                    "entry {id}: its third slot at table {} is noted as {noted:#x}, not {want:#x}",
                                    st.table
                                ));
                            }
                        }
                    }
                    if let Outcome::Rule(r) = st.outcome {
                        if !self.rule_prio.contains_key(&r) {
                            return Err(format!("entry {id}: no priority noted for rule {r}, which it ran"));
                        }
                    }
                }
            }
            for g in Self::groups_of(&e.trav) {
                if !self.by_group.get(&g).is_some_and(|s| s.contains(&id)) {
                    return Err(format!("entry {id}: not registered under group {g:#x}"));
                }
            }
            for m in Self::macs_of(&e.trav) {
                if !self.by_mac.get(&m).is_some_and(|s| s.contains(&id)) {
                    return Err(format!("entry {id}: not registered under MAC {m:#x}"));
                }
            }
            for c in Self::clauses_of(&e.trav) {
                if !self.by_clause.get(&c).is_some_and(|s| s.contains(&id)) {
                    return Err(format!("entry {id}: not registered under clause flow {c}"));
                }
            }
            if Self::refreshes(&e.trav) && !self.refreshing.contains(&id) {
                return Err(format!("entry {id}: learns or cuts timeouts, but is not listed as refreshing"));
            }
            for k in Self::limits_of(&e.trav) {
                if !self.by_limit.get(&k).is_some_and(|s| s.contains(&id)) {
                    return Err(format!("entry {id}: not registered under the learn limit of {k:?}"));
                }
            }
        }
        if self.removed.is_empty() && self.stale.is_empty() && self.retag.is_empty() {
            for (i, e) in self.entries.iter().enumerate() {
                if let Some(e) = e.as_ref().filter(|e| *e.trav != *e.mf.traversal()) {
                    return Err(format!("entry {i}: registered under a traversal its megaflow no longer has ({e:p})"));
                }
            }
            if let Some(r) = self.rule_prio.keys().find(|r| !self.by_rule.contains_key(r)) {
                return Err(format!("rule {r}'s priority is kept, but no entry ran it"));
            }
            let trav = |id: EntryId| self.entries.get(id as usize).and_then(|e| e.as_ref());
            let asserts = |id: EntryId, f: &dyn Fn(&Entry) -> bool| trav(id).is_some_and(f);
            for (r, users) in &self.by_rule {
                for (tag, ids) in users {
                    if let Some(id) = ids
                        .iter()
                        .find(|&&id| !asserts(id, &|e| e.trav.steps.iter().any(|s| s.outcome.rule() == Some(*r))))
                    {
                        return Err(format!(
                            "entry {id} is registered under rule {r:?}, which its traversal does not use"
                        ));
                    }
                    if let Some(id) = ids.iter().find(|&&id| self.cell_of(id) != *tag) {
                        return Err(format!("entry {id} is filed under rule {r:?} by cell {tag}, not its own"));
                    }
                }
            }
            for (t, ids) in &self.by_miss {
                let miss = |e: &Entry| e.trav.steps.iter().any(|s| s.table == *t && s.outcome.rule().is_none());
                if let Some(id) = ids.iter().find(|&&id| !asserts(id, &miss)) {
                    return Err(format!("entry {id} is registered under a miss in table {t} it does not take"));
                }
            }
            for (g, ids) in &self.by_group {
                if let Some(id) = ids.iter().find(|&&id| !asserts(id, &|e| Self::groups_of(&e.trav).contains(g))) {
                    return Err(format!("entry {id} is registered under group {g:#x}, which it does not use"));
                }
            }
            for (m, ids) in &self.by_mac {
                if let Some(id) = ids.iter().find(|&&id| !asserts(id, &|e| Self::macs_of(&e.trav).contains(m))) {
                    return Err(format!("entry {id} is registered under MAC {m:#x}, which NORMAL did not look up"));
                }
            }
            for (c, ids) in &self.by_clause {
                if let Some(id) = ids.iter().find(|&&id| !asserts(id, &|e| Self::clauses_of(&e.trav).contains(c))) {
                    return Err(format!(
                        "entry {id} is registered under clause flow {c}, which completed none of its lookups"
                    ));
                }
            }
            if let Some(id) = self.refreshing.iter().find(|&&id| !asserts(id, &|e| Self::refreshes(&e.trav))) {
                return Err(format!("entry {id} is listed as refreshing, but learns nothing and cuts no timeout"));
            }
            for (k, ids) in &self.by_limit {
                if let Some(id) = ids.iter().find(|&&id| !asserts(id, &|e| Self::limits_of(&e.trav).contains(k))) {
                    return Err(format!("entry {id} is registered under a learn limit of {k:?} it did not count"));
                }
            }
            for (t, ti) in &self.tables {
                let outers = ti.bands.iter().enumerate().flat_map(|(b, x)| x.outer.iter().map(move |o| (b as u16, o)));
                for (band, (a, inner)) in outers {
                    let mut wrong = None;
                    inner.range((0, 0, 0), (u64::MAX, u8::MAX, EntryId::MAX), |k| {
                        let held = |e: &Entry| {
                            let region = self.region(&e.mf);
                            e.trav.steps.iter().any(|st| {
                                st.table == *t && self.slots_at(&region, &e.mf, &e.trav, st) == (band, *a, (k.0, k.1))
                            })
                        };
                        if !asserts(k.2, &held) {
                            wrong = Some(k.2);
                        }
                    });
                    if let Some(id) = wrong {
                        return Err(format!(
                            "entry {id} is in table {t}'s index under a slot its traversal does not hold"
                        ));
                    }
                }
                let floors = ti.floors.iter().flat_map(|m| m.iter()).map(|(c, ids)| (Extra::Floor(*c), ids));
                let thirds = ti
                    .third
                    .iter()
                    .flat_map(|x| x.bands.iter().enumerate())
                    .flat_map(|(b, (map, _))| map.iter().map(move |(c, ids)| (Extra::Third(b as u16, *c), ids)));
                for (x, ids) in floors.chain(thirds) {
                    let held = |e: &Entry| self.extras_of(&e.mf, &e.trav).contains(&(*t, x));
                    if let Some(&id) = ids.iter().find(|&&id| !asserts(id, &held)) {
                        return Err(format!("entry {id} is filed under {x:?} at table {t}, which no visit has"));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn id_of(&self, mf: &Megaflow) -> Option<EntryId> {
        self.by_ptr.get(&crate::ukey::addr(mf)).copied()
    }

    /// Entries at one of whose visits clause flow `r` completed a
    /// conjunction.
    pub fn users_of_clause(&self, r: RuleId) -> impl Iterator<Item = EntryId> + '_ {
        self.by_clause.get(&r).into_iter().flatten().copied()
    }

    /// Entries whose traversal matched rule `r`.
    pub fn users_of_rule(&self, r: RuleId) -> impl Iterator<Item = EntryId> + '_ {
        self.by_rule.get(&r).into_iter().flat_map(|u| u.values()).flatten().copied()
    }

    /// Entries whose traversal matched rule `r`, by the shared action cell
    /// each is in (0: none; once nothing is pending, [`Index::pending`]).
    pub fn users_of_rule_by_cell(&self, r: RuleId) -> impl Iterator<Item = (u32, &FxHashSet<EntryId>)> + '_ {
        self.by_rule.get(&r).into_iter().flatten().map(|(t, ids)| (*t, ids))
    }
    /// Entries whose traversal matched rule `r` filed under cell `tag`.
    pub fn users_of_rule_in_cell(&self, r: RuleId, tag: u32) -> Option<&FxHashSet<EntryId>> {
        self.by_rule.get(&r)?.get(&tag)
    }
    /// Entries that missed in table `t`.
    pub fn users_of_miss(&self, t: u8) -> impl Iterator<Item = EntryId> + '_ {
        self.by_miss.get(&t).into_iter().flatten().copied()
    }
    /// Entries that used group `g` (chose buckets of it, or froze at it).
    pub fn users_of_group(&self, g: u32) -> impl Iterator<Item = EntryId> + '_ {
        self.users_choosing(g).chain(self.by_group.get(&group_key(g, true)).into_iter().flatten().copied())
    }

    /// Entries whose NORMAL looked up `mac` in the MAC learning table (in
    /// any VLAN).
    pub fn users_of_mac(&self, mac: u64) -> impl Iterator<Item = EntryId> + '_ {
        self.by_mac.get(&mac).into_iter().flatten().copied()
    }

    /// Entries whose learn counted flows of `table` for a result bit (of
    /// any cookie: whether a learn's flow is there does not look at it).
    pub fn users_of_limit(&self, table: u8, out: &mut Vec<EntryId>) {
        for (_, ids) in self.by_limit.iter().filter(|((t, _), _)| *t == table) {
            out.extend(ids.iter().copied());
        }
    }

    /// Entries whose hits refresh learned flows or cut timeouts.
    pub fn refreshing(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.refreshing.iter().copied()
    }

    /// Does any entry's learn count flows for a result bit?
    pub fn has_limits(&self) -> bool {
        !self.by_limit.is_empty()
    }

    /// Entries that used group `g` other than to freeze at it for a
    /// datapath hash: what a change of its buckets alone can affect.
    pub fn users_choosing(&self, g: u32) -> impl Iterator<Item = EntryId> + '_ {
        self.by_group.get(&group_key(g, false)).into_iter().flatten().copied()
    }

    /// The entries the index holds at table `t` that `probe` finds (floors:
    /// those a rule of `priority` passes, added or `change`d), each once;
    /// `None` once they pass `limit` (counted with repeats, checked between
    /// slots), or where the table keeps no floors or third field for a
    /// probe of them. Also how many index keys were looked at.
    pub fn candidates_within(
        &self,
        t: u8,
        probe: &Probe,
        (priority, change): (u16, bool),
        limit: usize,
    ) -> (Option<Vec<EntryId>>, usize) {
        let Some(ti) = self.tables.get(&t) else { return (Some(Vec::new()), 0) };
        let mut out = Vec::new();
        let mut looked = 0;
        let (queries, third) = match probe {
            Probe::Floor => {
                let (done, n) = ti.candidates_by_floor(priority, change, &mut out, limit);
                return (done.then(|| sorted_set(out)), n);
            }
            Probe::Walk(qs) => (qs, false),
            Probe::Third(qs) => (qs, true),
        };
        for q in queries {
            let q = q.without(Field::ConjId);
            let (done, n) = if third {
                ti.candidates_on_third(&q, priority, &mut out, limit)
            } else {
                ti.candidates_within(&q, priority, &mut out, limit)
            };
            looked += n;
            if !done {
                return (None, looked);
            }
        }
        (Some(sorted_set(out)), looked)
    }

    /// The fields table `t` is indexed on: outer, inner and third.
    pub fn fields(&self, t: u8) -> Option<(Field, Option<Field>, Option<Field>)> {
        let ti = self.tables.get(&t)?;
        Some((ti.outer_field, ti.inner_field, ti.third.as_ref().map(|x| x.field)))
    }

    /// Reads ahead what checking `cands` at table `t` reads first ([`Index::touch`],
    /// and the rules they matched there: a chain of cold reads each,
    /// independent of the others).
    pub fn touch_at(&self, p: &Pipeline, t: u8, cands: &[EntryId]) {
        let mut ra = ReadAhead::default();
        self.touch(cands, &mut ra);
        let prio = |r: RuleId| p.rule(t, r).map(|old| old.priority);
        ra.level(cands, |id| {
            let Some(e) = self.entries[*id as usize].as_ref() else { return 0 };
            let matched = e.trav.steps.iter().filter(|st| st.table == t);
            matched.fold(0, |w, st| match st.outcome.rule() {
                Some(r) => w ^ u64::from(prio(r).unwrap_or(0)),
                None => w,
            })
        });
    }

    /// Entries that reached table `t` whose region there overlaps `m` and whose
    /// outcome there a rule of `priority` can change: by being added (`change`
    /// false: it loses ties), or, in a table with conjunctive matches, by being
    /// removed or given new instructions (`change`: it may be one of those
    /// that decided). A match on `conj_id` is left out of the overlap (it is
    /// zero wherever a lookup starts). Returns them, and how many index slots
    /// were looked at.
    pub fn overlapping(
        &self,
        p: &Pipeline,
        t: u8,
        m: &Match,
        priority: u16,
        change: bool,
        out: &mut Vec<EntryId>,
    ) -> usize {
        let Some(ti) = self.tables.get(&t) else { return 0 };
        let stripped;
        let m = if m.mask().get(Field::ConjId) != 0 {
            stripped = m.without(Field::ConjId);
            &stripped
        } else {
            m
        };
        let mut cands: Vec<EntryId> = Vec::new();
        let looked = ti.candidates(m, priority, &mut cands);
        cands.sort_unstable();
        cands.dedup();
        self.touch_at(p, t, &cands);
        let prio = |r: RuleId| p.rule(t, r).map(|old| old.priority);
        for id in cands {
            let hit = self.meets(id, t, m, |st| st.outcome.floor(prio).admits(priority, change));
            if hit {
                out.push(id);
            }
        }
        looked
    }

    /// Does live entry `id` reach table `t` at a visit `at` admits with a
    /// region there that overlaps `m` (conj_id left out)?
    /// Does live entry `id` reach table `t` at a visit `at` admits whose
    /// region there `holds` (given as its key there, masked, and the mask,
    /// conj_id left out)?
    pub fn meets_with(
        &self,
        id: EntryId,
        t: u8,
        at: impl Fn(&Step) -> bool,
        holds: impl Fn(&FlowKey, &FlowMask) -> bool,
    ) -> bool {
        let Some(e) = self.entries.get(id as usize).and_then(|e| e.as_ref()) else { return false };
        let mut region = self.region(&e.mf);
        region.set(Field::ConjId, 0);
        let trav = &e.trav;
        trav.steps
            .iter()
            .filter(|st| st.table == t)
            .any(|st| at(st) && holds(&trav.key_at(&e.mf.rep, st).masked(&region), &region))
    }

    pub fn meets(&self, id: EntryId, t: u8, m: &Match, at: impl Fn(&Step) -> bool) -> bool {
        let Some(e) = self.entries.get(id as usize).and_then(|e| e.as_ref()) else { return false };
        let region = self.region(&e.mf);
        let mut common = region;
        for i in 0..common.w.len() {
            common.w[i] &= m.mask().w[i];
        }
        common.set(Field::ConjId, 0);
        let trav = &e.trav;
        trav.steps
            .iter()
            .filter(|st| st.table == t)
            .any(|st| at(st) && trav.key_at(&e.mf.rep, st).eq_masked(m.key(), &common))
    }

    /// Reads what a check of each of `ids` reads first, stage by stage
    /// (the entry; its megaflow and traversal; their mask, steps and
    /// versions), into `ra`. Checked one after another, each
    /// entry's reads wait on each other and the next entry's wait on the
    /// whole check; read here in stages of independent reads, a large
    /// cache's misses overlap (a policy add at 10M Antrea entries checked
    /// 83 candidates in 84 us, about one miss chain each).
    pub fn touch(&self, ids: &[EntryId], ra: &mut ReadAhead) {
        let es: Vec<&Entry> = ids.iter().filter_map(|&id| self.entries.get(id as usize)?.as_ref()).collect();
        ra.level(&es, |e| e.mf.rep.w[0] ^ e.trav.steps.len() as u64);
        ra.level(&es, |e| {
            e.mf.mask.w[0]
                ^ e.trav.steps.first().map_or(0, |s| s.version as u64)
                ^ e.trav.steps.last().map_or(0, |s| s.version as u64)
        });
        ra.level(&es, |e| {
            let t = &e.trav;
            t.steps.last().map_or(0, |s| t.version(s.version).first().map_or(0, |d| d.1))
        });
    }

    /// Approximate bytes held by the index (for the memory figure): every
    /// set and tree walked, hash tables by their capacity (a slot and a
    /// control byte each), B-tree nodes counted at about two thirds full.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let set = |s: &FxHashSet<EntryId>| s.capacity() * (size_of::<EntryId>() + 1) + size_of::<FxHashSet<EntryId>>();
        let node = |n: usize, each: usize| n * each * 3 / 2;
        let mut bytes = self.entries.capacity() * size_of::<Option<Entry>>()
            + self.cells.capacity() * 4
            + self.by_ptr.capacity() * (size_of::<(usize, EntryId)>() + 1);
        let per_key = size_of::<(u64, FxHashSet<EntryId>)>() + 1;
        let per_cell = size_of::<(u32, FxHashSet<EntryId>)>() + 1;
        let per_rule = size_of::<(RuleId, FxHashMap<u32, FxHashSet<EntryId>>)>() + 1;
        bytes +=
            self.by_rule.values().map(|u| u.values().map(set).sum::<usize>() + u.capacity() * per_cell).sum::<usize>()
                + self.by_rule.capacity() * per_rule
                + self.filed.capacity() * 4;
        bytes += self.by_group.values().map(set).sum::<usize>() + self.by_group.capacity() * per_key;
        bytes += self.by_mac.values().map(set).sum::<usize>() + self.by_mac.capacity() * per_key;
        bytes += self.by_clause.values().map(set).sum::<usize>() + self.by_clause.capacity() * per_key;
        bytes += self.by_limit.values().map(set).sum::<usize>() + self.by_limit.capacity() * (per_key + 8);
        bytes += self.by_miss.values().map(set).sum::<usize>() + self.by_miss.capacity() * per_key;
        for ti in self.tables.values() {
            bytes += ti
                .bands
                .iter()
                .map(|b| size_of::<Band>() + node(b.outer.len(), size_of::<(Slot, Inner)>()))
                .sum::<usize>();
            for inner in ti.bands.iter().flat_map(|b| b.outer.values()) {
                bytes += match inner {
                    Inner::One(_) => 0,
                    Inner::Few(v) => v.capacity() * size_of::<Key>(),
                    Inner::Many(map) => {
                        node(map.len(), size_of::<(Slot, Ids)>())
                            + map.values().map(|ids| if let Ids::Set(s) = ids { set(s) } else { 0 }).sum::<usize>()
                    }
                };
            }
            if let Some(map) = ti.floors.as_ref() {
                bytes += node(map.len(), size_of::<(u32, FxHashSet<EntryId>)>()) + map.values().map(set).sum::<usize>();
            }
            for (map, _) in ti.third.iter().flat_map(|x| &x.bands) {
                bytes +=
                    node(map.len(), size_of::<(Slot, FxHashSet<EntryId>)>()) + map.values().map(set).sum::<usize>();
            }
            bytes += ti.lowest.capacity() * size_of::<u32>() + ti.thirds.capacity() * size_of::<u32>();
        }
        bytes += self.rule_prio.capacity() * (size_of::<(RuleId, u16)>() + 1);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether two third-field prefixes may hold a common value.
    fn third_compatible(f: Field, a: (u64, u8, u64), b: (u64, u8, u64)) -> bool {
        (a.0 ^ b.0) & prefix_mask(u32::from(a.1.min(b.1)), third_bits(f)) == 0
    }

    /// A port's slot carries the protocol ahead of it: a UDP entry whose
    /// region leaves the port wild is no candidate for a flow on a TCP
    /// port, while one whose region leaves the protocol wild is.
    #[test]
    fn a_port_slot_is_qualified_by_the_protocol() {
        let flow = kairo_flow::parse::parse_match("tcp,tp_dst=1521").unwrap();
        let on = |proto: u64, proto_mask: u64, port_mask: u64| {
            let get = |g: Field| match g {
                Field::IpProto => (proto, proto_mask),
                Field::TpDst => (53, port_mask),
                _ => (0, 0),
            };
            third_prefix(Field::TpDst, get)
        };
        let rule = third_prefix(Field::TpDst, |g| flow.field(g));
        assert_eq!(rule.1, 24, "protocol and port exact");
        assert!(!third_compatible(Field::TpDst, rule, on(17, 0xff, 0)), "UDP, port wild");
        assert!(!third_compatible(Field::TpDst, rule, on(6, 0xff, 0xffff)), "TCP, another port");
        assert!(third_compatible(Field::TpDst, rule, on(6, 0xff, 0)), "TCP, port wild");
        assert!(third_compatible(Field::TpDst, rule, on(17, 0, 0)), "protocol wild");
        assert_eq!(third_bits(Field::VlanTci), Field::VlanTci.bits(), "other fields are not qualified");
    }

    proptest! {
        /// An outer slot's entries behave as an ordered set through every
        /// representation (one, few, many) and back to empty.
        #[test]
        fn inner_is_an_ordered_set(ops in proptest::collection::vec((any::<bool>(), 0u64..40, 0u8..3, 0u32..8), 1..400),
                                    lo in (0u64..40, 0u8..3, 0u32..9), hi in (0u64..40, 0u8..3, 0u32..9)) {
            let mut inner: Option<Inner> = None;
            let mut model: std::collections::BTreeSet<Key> = std::collections::BTreeSet::new();
            for (add, v, l, id) in ops {
                let k = (v, l, id);
                if add {
                    let fresh = match inner.as_mut() {
                        Some(i) => i.insert(k),
                        None => {
                            inner = Some(Inner::One(k));
                            true
                        }
                    };
                    prop_assert_eq!(fresh, model.insert(k));
                } else if let Some(i) = inner.as_mut() {
                    let (hit, empty) = i.remove(&k);
                    prop_assert_eq!(hit, model.remove(&k));
                    prop_assert_eq!(empty, model.is_empty());
                    if empty {
                        inner = None;
                    }
                }
                let (a, b) = (lo, hi);
                let mut got = Vec::new();
                if let Some(i) = &inner {
                    i.range(a, b, |k| got.push(*k));
                }
                got.sort_unstable();
                let want: Vec<Key> = if a <= b { model.range(a..=b).copied().collect() } else { Vec::new() };
                prop_assert_eq!(got, want);
            }
        }
    }
}
