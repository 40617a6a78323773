//! Connection tracking, as Open vSwitch's userspace datapath does it
//! (`lib/conntrack.c`): per-zone tables of connections keyed by both
//! directions' tuples, TCP tracked with sequence windows after OpenBSD pf
//! ([`tcp`]), UDP and other protocols by direction seen, ICMP and ICMPv6
//! queries by identifier with errors about a known connection as related,
//! NAT chosen at commit ([`nat`]), marks and labels, timeouts per state
//! ([`expiry`]), limits on connections in total and per zone.
//!
//! Owns the connection table. A `ct` action is [`Conntrack::execute`]: it
//! reads the packet, finds or makes its connection, may rewrite it (NAT),
//! and writes the connection's metadata into the packet's [`CtMeta`] (what
//! the next pass's key matches: ct_state, ct_zone, ct_mark, ct_label and
//! the original direction's tuple).
//!
//! Invariants: a connection answers to exactly its two keys (original and
//! reply, the reply after NAT) and every key in the table names a live
//! connection; a connection is on exactly one expiry list; the number of
//! connections never passes the total limit nor a zone's; nothing here
//! panics on any packet, and nothing grows with packets, only with
//! connections (bounded by the limits). Time is passed in (milliseconds),
//! never read, so tests drive the clock. Hand-written: no crate tracks
//! connections; the hashing is `rustc-hash`'s.

pub mod expiry;
pub mod frag;
pub mod nat;
pub mod tcp;
pub mod tuple;

use kairo_flow::field::Field;
use kairo_flow::FlowKey;
use kairo_odp::nat::{Nat, NatKind};
use rustc_hash::FxHashMap;

pub use expiry::Timeout;
use expiry::{Link, Lists, Slots, CLASSES, NIL};
use tcp::TcpConn;
pub use tuple::Tuple;

/// ct_state bits (Open vSwitch's `CS_*`).
pub const NEW: u8 = 0x01;
pub const EST: u8 = 0x02;
pub const REL: u8 = 0x04;
pub const RPL: u8 = 0x08;
pub const INV: u8 = 0x10;
pub const TRK: u8 = 0x20;
pub const SNAT: u8 = 0x40;
pub const DNAT: u8 = 0x80;

/// Open vSwitch's default limit on connections (`dpctl/ct-set-maxconns`).
pub const DEFAULT_MAX_CONNS: usize = 3_000_000;

/// What a packet carries out of a `ct` action: its connection's metadata,
/// as the next pass's key has it ([`CtMeta::write_key`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtMeta {
    pub state: u8,
    pub zone: u16,
    pub mark: u32,
    pub label: u128,
    /// The original direction's tuple of the connection (or of the packet,
    /// when it made none).
    pub orig: Option<Tuple>,
    /// The connection a `ct` with NAT found, for a later `ct` on the same
    /// packet (which then neither looks up nor counts it again).
    cached: Option<Cached>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cached {
    slot: u32,
    gen: u32,
    reply: bool,
    related: bool,
}

impl CtMeta {
    /// The metadata of a packet in the key of its next pass.
    pub fn write_key(&self, k: &mut FlowKey) {
        k.set(Field::CtState, u64::from(self.state));
        k.set(Field::CtZone, u64::from(self.zone));
        k.set(Field::CtMark, u64::from(self.mark));
        k.set_wide(Field::CtLabelHi, self.label);
        let t = self.orig.unwrap_or_default();
        k.set(Field::CtNwProto, u64::from(t.proto));
        // ICMP: the type and code (Open vSwitch's ct_tp_src/ct_tp_dst).
        let (tp_src, tp_dst) = if t.is_icmp() { (t.sport >> 8, t.sport & 0xff) } else { (t.sport, t.dport) };
        k.set(Field::CtTpSrc, u64::from(tp_src));
        k.set(Field::CtTpDst, u64::from(tp_dst));
        if t.v6 {
            k.set_wide(Field::CtIpv6SrcHi, t.src);
            k.set_wide(Field::CtIpv6DstHi, t.dst);
            k.set(Field::CtNwSrc, 0);
            k.set(Field::CtNwDst, 0);
        } else {
            k.set(Field::CtNwSrc, t.src as u64);
            k.set(Field::CtNwDst, t.dst as u64);
            k.set_wide(Field::CtIpv6SrcHi, 0);
            k.set_wide(Field::CtIpv6DstHi, 0);
        }
    }
}

/// What one `ct` action asks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    pub zone: u16,
    pub commit: bool,
    /// Commit, first deleting a connection the packet is the reply of.
    pub force: bool,
    pub mark: Option<(u32, u32)>,
    pub label: Option<(u128, u128)>,
    pub nat: Option<&'a Nat>,
}

/// Counters, as `kairo ctl stats` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections in the table now.
    pub conns: u64,
    /// Packets the tracker saw.
    pub packets: u64,
    /// Connections committed.
    pub committed: u64,
    /// Packets found invalid (no key, out of window, impossible flags).
    pub invalid: u64,
    /// New connections not made: the total limit was reached.
    pub full: u64,
    /// New connections not made: their zone's limit was reached.
    pub zone_full: u64,
    /// New connections not made: no NAT tuple was left.
    pub nat_exhausted: u64,
    /// Connections that timed out.
    pub expired: u64,
    /// Connections flushed by request.
    pub flushed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Other {
    First,
    Multiple,
    Bidir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum L4 {
    Tcp(TcpConn),
    Other(Other),
    Icmp { replied: bool },
}

#[derive(Clone, Debug)]
struct Conn {
    orig: Tuple,
    /// The reply's key (the reverse of the translated tuple under NAT).
    rev: Tuple,
    l4: L4,
    mark: u32,
    label: u128,
    nat: Option<nat::Applied>,
    expires: u64,
    timeout: Timeout,
}

struct Slot {
    conn: Option<Conn>,
    link: Link,
    gen: u32,
}

struct Table(Vec<Slot>);

impl Slots for Table {
    fn link(&self, i: u32) -> Link {
        self.0[i as usize].link
    }
    fn set_link(&mut self, i: u32, l: Link) {
        self.0[i as usize].link = l;
    }
}

/// One connection as `dump-conntrack` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub mark: u32,
    pub label: u128,
    /// TCP: both ends' states.
    pub tcp: Option<(tcp::TcpState, tcp::TcpState)>,
    pub timeout: Timeout,
    /// Milliseconds left.
    pub expires_in: u64,
}

fn addr(v6: bool, a: u128) -> String {
    if v6 {
        kairo_flow::parse::format_ipv6(a)
    } else {
        kairo_flow::parse::format_ipv4(a as u64)
    }
}

fn fmt_tuple(t: &Tuple) -> String {
    let mut s = format!("src={},dst={}", addr(t.v6, t.src), addr(t.v6, t.dst));
    if t.is_icmp() {
        s += &format!(",id={},type={},code={}", t.ident, t.sport >> 8, t.sport & 0xff);
    } else if t.has_ports() {
        s += &format!(",sport={},dport={}", t.sport, t.dport);
    }
    s
}

impl std::fmt::Display for Entry {
    /// As `ovs-appctl dpctl/dump-conntrack` prints a connection.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.orig;
        let proto = match (o.proto, o.v6) {
            (6, _) => "tcp".to_string(),
            (17, _) => "udp".to_string(),
            (132, _) => "sctp".to_string(),
            (1, false) => "icmp".to_string(),
            (58, true) => "icmpv6".to_string(),
            (p, _) => format!("proto={p}"),
        };
        write!(f, "{proto},orig=({}),reply=({})", fmt_tuple(o), fmt_tuple(&self.reply))?;
        if o.zone != 0 {
            write!(f, ",zone={}", o.zone)?;
        }
        if self.mark != 0 {
            write!(f, ",mark={}", self.mark)?;
        }
        if self.label != 0 {
            write!(f, ",labels={:#x}", self.label)?;
        }
        if let Some((a, b)) = self.tcp {
            write!(f, ",protoinfo=(state={},{})", a.name(), b.name())?;
        }
        write!(f, ",timeout={}s", self.expires_in.div_ceil(1000))
    }
}

/// The connection tracker of one datapath.
pub struct Conntrack {
    table: Table,
    free: Vec<u32>,
    keys: FxHashMap<Tuple, (u32, bool)>,
    zones: FxHashMap<u16, u32>,
    zone_limits: FxHashMap<u16, u32>,
    max_conns: usize,
    timeouts: [u64; CLASSES.len()],
    lists: Lists,
    rng: u64,
    stats: Stats,
    frags: frag::Reassembly,
}

/// What a `ct` did with the packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The packet goes on.
    Continue,
    /// A fragment kept until its datagram is whole: it goes no further
    /// now.
    Held,
    /// The datagram is whole: these fragments (the one just given among
    /// them), in order, go on, each with the datagram's metadata.
    Fragments(Vec<Vec<u8>>),
}

impl Default for Conntrack {
    fn default() -> Conntrack {
        Conntrack::new()
    }
}

impl Conntrack {
    pub fn new() -> Conntrack {
        let mut timeouts = [0; CLASSES.len()];
        for (t, c) in timeouts.iter_mut().zip(CLASSES) {
            *t = c.default_secs() * 1000;
        }
        Conntrack {
            table: Table(Vec::new()),
            free: Vec::new(),
            keys: FxHashMap::default(),
            zones: FxHashMap::default(),
            zone_limits: FxHashMap::default(),
            max_conns: DEFAULT_MAX_CONNS,
            timeouts,
            lists: Lists::default(),
            rng: 0x9e37_79b9_7f4a_7c15,
            stats: Stats::default(),
            frags: frag::Reassembly::default(),
        }
    }

    /// Sets the limit on connections in all zones together.
    pub fn set_max_conns(&mut self, n: usize) {
        self.max_conns = n;
    }

    /// The limit on connections in all zones together.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// The limit on connections in `zone` (`None`: only the total limit).
    pub fn set_zone_limit(&mut self, zone: u16, limit: Option<u32>) {
        match limit {
            Some(l) => self.zone_limits.insert(zone, l),
            None => self.zone_limits.remove(&zone),
        };
    }

    /// A class's timeout, in milliseconds (for tests and tuning).
    pub fn set_timeout(&mut self, class: Timeout, ms: u64) {
        if class != Timeout::Keep {
            self.timeouts[class.index()] = ms;
        }
    }

    pub fn stats(&self) -> Stats {
        Stats { conns: self.len() as u64, ..self.stats }
    }

    /// The fragment reassembly's counters.
    pub fn frag_stats(&self) -> frag::FragStats {
        self.frags.stats
    }

    /// Connections in the table (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.table.0.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections in `zone`.
    pub fn zone_len(&self, zone: u16) -> usize {
        self.zones.get(&zone).copied().unwrap_or(0) as usize
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn conn(&self, i: u32) -> Option<&Conn> {
        self.table.0.get(i as usize).and_then(|s| s.conn.as_ref())
    }

    fn conn_mut(&mut self, i: u32) -> Option<&mut Conn> {
        self.table.0.get_mut(i as usize).and_then(|s| s.conn.as_mut())
    }

    /// Sets a connection's timeout class and puts it at the back of its list.
    fn refresh(&mut self, i: u32, t: Timeout, now: u64) {
        if t == Timeout::Keep {
            return;
        }
        let ms = self.timeouts[t.index()];
        if let Some(c) = self.conn_mut(i) {
            c.expires = now.saturating_add(ms);
            c.timeout = t;
        }
        self.lists.unlink(&mut self.table, i);
        self.lists.push_back(&mut self.table, i, t.index());
    }

    /// The live connection `key` names, and whether `key` is its reply;
    /// a connection past its time is removed instead.
    fn lookup(&mut self, key: &Tuple, now: u64) -> Option<(u32, bool)> {
        let (i, reply) = *self.keys.get(key)?;
        match self.conn(i) {
            Some(c) if c.expires > now => Some((i, reply)),
            Some(_) => {
                self.remove(i);
                self.stats.expired += 1;
                None
            }
            None => None,
        }
    }

    fn remove(&mut self, i: u32) {
        let Some(c) = self.table.0.get_mut(i as usize).and_then(|s| s.conn.take()) else { return };
        for k in [c.orig, c.rev] {
            if self.keys.get(&k).is_some_and(|(j, _)| *j == i) {
                self.keys.remove(&k);
            }
        }
        if let Some(n) = self.zones.get_mut(&c.orig.zone) {
            *n -= 1;
            if *n == 0 {
                self.zones.remove(&c.orig.zone);
            }
        }
        self.lists.unlink(&mut self.table, i);
        self.table.0[i as usize].gen = self.table.0[i as usize].gen.wrapping_add(1);
        self.free.push(i);
    }

    /// Removes connections whose time has come, at most `budget` of them
    /// (so a sweep never holds the data path up for long); returns how
    /// many went.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        self.frags.expire(now);
        let mut n = 0;
        for class in 0..CLASSES.len() {
            while n < budget {
                let head = self.lists.head[class];
                if head == NIL || self.conn(head).is_none_or(|c| c.expires > now) {
                    break;
                }
                self.remove(head);
                self.stats.expired += 1;
                n += 1;
            }
        }
        n
    }

    /// Removes every connection (of `zone` only, if given); returns how many.
    pub fn flush(&mut self, zone: Option<u16>) -> usize {
        let doomed: Vec<u32> = (0..self.table.0.len() as u32)
            .filter(|&i| self.conn(i).is_some_and(|c| zone.is_none_or(|z| c.orig.zone == z)))
            .collect();
        for &i in &doomed {
            self.remove(i);
        }
        self.stats.flushed += doomed.len() as u64;
        doomed.len()
    }

    /// The connections (of `zone` only, if given), in table order.
    pub fn dump(&self, zone: Option<u16>, now: u64) -> Vec<Entry> {
        self.table
            .0
            .iter()
            .filter_map(|s| s.conn.as_ref())
            .filter(|c| zone.is_none_or(|z| c.orig.zone == z))
            .map(|c| Entry {
                orig: c.orig,
                reply: c.rev,
                mark: c.mark,
                label: c.label,
                tcp: match c.l4 {
                    L4::Tcp(t) => Some(t.states()),
                    _ => None,
                },
                timeout: c.timeout,
                expires_in: c.expires.saturating_sub(now),
            })
            .collect()
    }

    /// Runs a packet (bytes, ingress port) through the tracker as one `ct`
    /// action asks: finds or makes its connection, applies NAT, and writes
    /// the connection's metadata into `meta`. A fragment is held
    /// until its datagram is whole, which is then tracked; its fragments
    /// go on (rewritten as a NAT rewrote the datagram).
    pub fn execute(&mut self, pkt: &mut [u8], in_port: u32, meta: &mut CtMeta, req: &Request<'_>, now: u64) -> Verdict {
        let (k, lay) = kairo_wire::parse(pkt, in_port);
        let fragment = k.is_ip() && k.get(Field::IpFrag) & kairo_flow::parse::FRAG_ANY != 0;
        let Some(l3) = lay.l3.filter(|_| fragment) else {
            self.track(pkt, (&k, &lay), meta, req, now);
            return Verdict::Continue;
        };
        match self.frags.add(pkt, &k, l3, req.zone, now) {
            frag::Outcome::Held => Verdict::Held,
            frag::Outcome::Refused => {
                self.stats.packets += 1;
                self.stats.invalid += 1;
                meta.state = INV;
                self.write_meta(meta, req.zone, None, None);
                Verdict::Continue
            }
            frag::Outcome::Whole { mut datagram, mut fragments } => {
                let (before, dlay) = kairo_wire::parse(&datagram, in_port);
                self.track(&mut datagram, (&before, &dlay), meta, req, now);
                let after = kairo_wire::parse(&datagram, in_port).0;
                // What a NAT changed, changed in the fragments too (the
                // ports only in the first, which carries them).
                for f in &mut fragments {
                    let (fk, flay) = kairo_wire::parse(f, in_port);
                    for (field, set) in [
                        (Field::IpSrc, kairo_wire::rewrite::set_ipv4_src as fn(&mut [u8], &kairo_wire::Layout, u32)),
                        (Field::IpDst, kairo_wire::rewrite::set_ipv4_dst),
                    ] {
                        if fk.is_ipv4() && before.get(field) != after.get(field) {
                            set(f, &flay, after.get(field) as u32);
                        }
                    }
                    for (field, set) in [
                        (
                            Field::Ipv6SrcHi,
                            kairo_wire::rewrite::set_ipv6_src as fn(&mut [u8], &kairo_wire::Layout, u128),
                        ),
                        (Field::Ipv6DstHi, kairo_wire::rewrite::set_ipv6_dst),
                    ] {
                        if fk.is_ipv6() && before.get_wide(field) != after.get_wide(field) {
                            set(f, &flay, after.get_wide(field));
                        }
                    }
                    if fk.get(Field::IpFrag) & kairo_flow::parse::FRAG_LATER == 0 {
                        if before.get(Field::TpSrc) != after.get(Field::TpSrc) {
                            kairo_wire::rewrite::set_l4_src(f, &flay, after.get(Field::TpSrc) as u16);
                        }
                        if before.get(Field::TpDst) != after.get(Field::TpDst) {
                            kairo_wire::rewrite::set_l4_dst(f, &flay, after.get(Field::TpDst) as u16);
                        }
                    }
                }
                Verdict::Fragments(fragments)
            }
        }
    }

    /// [`Conntrack::execute`] of a packet that is not a fragment, given its
    /// parse.
    fn track(
        &mut self,
        pkt: &mut [u8],
        parsed: (&FlowKey, &kairo_wire::Layout),
        meta: &mut CtMeta,
        req: &Request<'_>,
        now: u64,
    ) {
        let (k, lay) = (parsed.0, parsed.1);
        self.stats.packets += 1;
        // Entering another zone: the state from the last one does not hold.
        if meta.state != 0 && meta.zone != req.zone {
            meta.state = 0;
        }
        if let Some(c) = meta.cached.filter(|c| !req.force && self.alive(c.slot, c.gen, req.zone)) {
            // The same packet again after a NAT: its connection is known.
            if req.nat.is_some() {
                self.handle_nat(pkt, lay, c.slot, c.reply, c.related, meta, req.zone);
            }
            self.write_meta(meta, req.zone, Some(c.slot), None);
            self.set_mark_label(c.slot, meta, req);
            return;
        }
        let Some(ex) = tuple::extract(pkt, k, lay, req.zone) else {
            self.stats.invalid += 1;
            meta.state = INV;
            self.write_meta(meta, req.zone, None, None);
            meta.cached = None;
            return;
        };
        let mut found = self.lookup(&ex.key, now);
        if let Some((i, true)) = found.filter(|_| req.force) {
            // force: a connection this packet answers is replaced by one it opens.
            self.remove(i);
            found = None;
        }
        let mut create = false;
        let mut conn = None;
        let mut reply = false;
        // By its own key, or (a packet a NAT already rewrote, which is not
        // rewritten again) by the original tuple it carries.
        let by_key = found.map(|f| (f, true));
        if let Some(((i, r), own)) = by_key.or_else(|| self.orig_tuple_lookup(meta, &ex, now).map(|f| (f, false))) {
            conn = Some(i);
            reply = r;
            create = self.update_state(i, &ex, r, pkt, lay, meta, now);
            if create {
                self.remove(i);
                conn = None;
            } else if own && req.nat.is_some() {
                self.handle_nat(pkt, lay, i, r, ex.related, meta, req.zone);
            }
        } else if ex.related {
            // An error about no known connection.
            meta.state = INV;
        } else {
            create = true;
        }
        if create {
            conn = self.not_found(pkt, lay, &ex, meta, req, now);
            reply = false;
        }
        if meta.state & INV != 0 {
            self.stats.invalid += 1;
        }
        self.write_meta(meta, req.zone, conn, Some(ex.key));
        if let Some(i) = conn {
            self.set_mark_label(i, meta, req);
        }
        meta.cached = match (conn, req.nat) {
            (Some(slot), Some(_)) => {
                Some(Cached { slot, gen: self.table.0[slot as usize].gen, reply, related: ex.related })
            }
            _ => None,
        };
    }

    fn alive(&self, slot: u32, gen: u32, zone: u16) -> bool {
        self.table
            .0
            .get(slot as usize)
            .is_some_and(|s| s.gen == gen && s.conn.as_ref().is_some_and(|c| c.orig.zone == zone))
    }

    /// Open vSwitch's check_orig_tuple: a packet NATed by an earlier `ct`
    /// (its state says so) is found by the original tuple it carries.
    fn orig_tuple_lookup(&mut self, meta: &CtMeta, ex: &tuple::Extracted, now: u64) -> Option<(u32, bool)> {
        if meta.state & (SNAT | DNAT) == 0 || ex.related {
            return None;
        }
        let orig = meta.orig.filter(|o| o.zone == ex.key.zone)?;
        let (i, _) = self.lookup(&orig, now)?;
        Some((i, ex.key == orig.reverse()))
    }

    /// Updates connection `i` with a packet of it; returns true if the
    /// packet starts a new connection in its place (a SYN after both ends
    /// closed).
    #[allow(clippy::too_many_arguments)]
    fn update_state(
        &mut self,
        i: u32,
        ex: &tuple::Extracted,
        reply: bool,
        pkt: &[u8],
        lay: &kairo_wire::Layout,
        meta: &mut CtMeta,
        now: u64,
    ) -> bool {
        if ex.related {
            meta.state |= REL;
            if reply {
                meta.state |= RPL;
            }
            return false;
        }
        let Some(c) = self.conn_mut(i) else { return false };
        let (res, timeout) = match &mut c.l4 {
            L4::Tcp(t) => match tuple::segment(pkt, lay) {
                None => (tcp::Verdict::Invalid, Timeout::Keep),
                Some(seg) => match t.update(&seg, reply) {
                    tcp::Verdict::Valid(to) => (tcp::Verdict::Valid(to), to),
                    v => (v, Timeout::Keep),
                },
            },
            L4::Other(st) => {
                let mut new = false;
                if reply && *st != Other::Bidir {
                    *st = Other::Bidir;
                } else if *st == Other::First {
                    *st = Other::Multiple;
                    new = true;
                }
                let to = match st {
                    Other::First => Timeout::OtherFirst,
                    Other::Multiple => Timeout::OtherMultiple,
                    Other::Bidir => Timeout::OtherBidir,
                };
                (if new { tcp::Verdict::New } else { tcp::Verdict::Valid(to) }, to)
            }
            L4::Icmp { replied } => {
                if reply {
                    *replied = true;
                }
                let to = if *replied { Timeout::IcmpReply } else { Timeout::IcmpFirst };
                (tcp::Verdict::Valid(to), to)
            }
        };
        let other = matches!(c.l4, L4::Other(_));
        match res {
            tcp::Verdict::Valid(_) => {
                meta.state = (meta.state | EST) & !NEW;
                if reply {
                    meta.state |= RPL;
                }
                self.refresh(i, timeout, now);
                false
            }
            // A second packet one way of a UDP-like flow: still new.
            tcp::Verdict::New if other => {
                meta.state |= NEW;
                self.refresh(i, timeout, now);
                false
            }
            tcp::Verdict::New => true,
            tcp::Verdict::Invalid => {
                meta.state = INV;
                false
            }
        }
    }

    /// A packet of no connection: invalid if it cannot open one, else new,
    /// and with `commit` a connection is made (limits and NAT allowing).
    fn not_found(
        &mut self,
        pkt: &mut [u8],
        lay: &kairo_wire::Layout,
        ex: &tuple::Extracted,
        meta: &mut CtMeta,
        req: &Request<'_>,
        now: u64,
    ) -> Option<u32> {
        let seg = if u64::from(ex.key.proto) == kairo_flow::field::IPPROTO_TCP {
            match tuple::segment(pkt, lay) {
                Some(s) if tcp::valid_new(&s) => Some(s),
                _ => {
                    meta.state = INV;
                    return None;
                }
            }
        } else {
            None
        };
        if !ex.may_open {
            meta.state = INV;
            return None;
        }
        meta.state = NEW;
        if !req.commit {
            return None;
        }
        let zone = ex.key.zone;
        if self.zone_limits.get(&zone).is_some_and(|&l| self.zone_len(zone) >= l as usize) {
            self.stats.zone_full += 1;
            return None;
        }
        if self.len() >= self.max_conns {
            self.stats.full += 1;
            return None;
        }
        let applied = match req.nat {
            None => None,
            Some(n) => {
                let rand = self.random();
                let keys = &self.keys;
                match nat::choose(&ex.key, n, |t| keys.contains_key(t), rand) {
                    Some(a) => a,
                    None => {
                        self.stats.nat_exhausted += 1;
                        meta.state = INV;
                        return None;
                    }
                }
            }
        };
        let rev = applied.map_or(ex.key, |a| a.translated).reverse();
        if self.keys.contains_key(&rev) {
            // The reply key is another connection's (only without NAT,
            // which checks): the packet cannot be told apart from its replies.
            meta.state = INV;
            return None;
        }
        let (l4, timeout) = match seg {
            Some(s) => (L4::Tcp(TcpConn::new(&s)), TcpConn::first_timeout()),
            None if ex.key.is_icmp() => (L4::Icmp { replied: false }, Timeout::IcmpFirst),
            None => (L4::Other(Other::First), Timeout::OtherFirst),
        };
        let conn = Conn { orig: ex.key, rev, l4, mark: 0, label: 0, nat: applied, expires: 0, timeout };
        let i = match self.free.pop() {
            Some(i) => {
                self.table.0[i as usize].conn = Some(conn);
                i
            }
            None => {
                self.table.0.push(Slot { conn: Some(conn), link: Link { prev: NIL, next: NIL, class: 0 }, gen: 0 });
                (self.table.0.len() - 1) as u32
            }
        };
        self.lists.push_back(&mut self.table, i, timeout.index());
        self.refresh(i, timeout, now);
        self.keys.insert(ex.key, (i, false));
        self.keys.insert(rev, (i, true));
        *self.zones.entry(zone).or_insert(0) += 1;
        self.stats.committed += 1;
        if let Some(a) = applied {
            nat::forward(pkt, lay, &ex.key, &a);
            meta.state |= if a.kind == NatKind::Src { SNAT } else { DNAT };
        }
        Some(i)
    }

    /// Open vSwitch's handle_nat: a packet of a NATed connection is
    /// rewritten (forward, or back for a reply) unless an earlier `ct` in
    /// this zone did it already. ICMP errors keep their headers.
    #[allow(clippy::too_many_arguments)]
    fn handle_nat(
        &mut self,
        pkt: &mut [u8],
        lay: &kairo_wire::Layout,
        i: u32,
        reply: bool,
        related: bool,
        meta: &mut CtMeta,
        zone: u16,
    ) {
        let Some(c) = self.conn(i) else { return };
        let Some(a) = c.nat else { return };
        let done = meta.state & (SNAT | DNAT) != 0;
        if done && zone == meta.zone || related {
            return;
        }
        meta.state &= !(SNAT | DNAT);
        let orig = c.orig;
        if reply {
            nat::reverse(pkt, lay, &orig, &a);
            meta.state |= if a.kind == NatKind::Src { DNAT } else { SNAT };
        } else {
            nat::forward(pkt, lay, &orig, &a);
            meta.state |= if a.kind == NatKind::Src { SNAT } else { DNAT };
        }
    }

    /// Open vSwitch's write_ct_md: tracked, the zone, the connection's mark,
    /// label and original tuple (a packet without a connection: zero mark
    /// and label, its own tuple, or none if it had no key).
    fn write_meta(&self, meta: &mut CtMeta, zone: u16, conn: Option<u32>, key: Option<Tuple>) {
        meta.state |= TRK;
        meta.zone = zone;
        match conn.and_then(|i| self.conn(i)) {
            Some(c) => {
                meta.mark = c.mark;
                meta.label = c.label;
                meta.orig = Some(c.orig);
            }
            None => {
                meta.mark = 0;
                meta.label = 0;
                meta.orig = key;
            }
        }
    }

    fn set_mark_label(&mut self, i: u32, meta: &mut CtMeta, req: &Request<'_>) {
        let Some(c) = self.conn_mut(i) else { return };
        if let Some((v, m)) = req.mark {
            c.mark = (c.mark & !m) | (v & m);
            meta.mark = c.mark;
        }
        if let Some((v, m)) = req.label {
            c.label = (c.label & !m) | (v & m);
            meta.label = c.label;
        }
    }
}

#[cfg(test)]
mod tests;
