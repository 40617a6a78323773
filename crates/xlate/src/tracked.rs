//! The logical flow a translation works on, and what the translation has
//! examined of it: the one place megaflow mask bits come from.
//!
//! Invariant (the megaflow contract's half that translation keeps): every bit
//! of the flow a decision of translation depends on is in the result's mask.
//! The flow's value is reachable only through getters that record what they
//! return ([`Tracked::get`], [`Tracked::get_bits`], [`Tracked::is_ip`],
//! [`Tracked::is_in_port`]), lookups through [`Tracked::lookup`], which adds
//! what the classifier examined, and writes through setters that record what
//! they write (a rewrite is committed to the packet only where the value
//! differs from the packet's, so the result depends on the old bits too).
//! Bits are only ever added. The exceptions are named and each says why no
//! bit is lost: [`Tracked::write_pipeline`] (registers and metadata, never
//! committed), [`Tracked::write_conntrack`] (ct_mark and ct_label inside
//! `ct(exec(...))`, and the clearing of every ct field after `ct` and
//! `ct_clear`: never committed either, the datapath's `ct` action carries
//! the written bits as constants) and [`Tracked::unexamined`] (bookkeeping: key versions,
//! commits, outcomes replayed from an earlier traversal).
//!
//! Two sinks are kept: the bits lookups examined and the bits actions read
//! or wrote (with the bits every megaflow matches exactly); the mask is their
//! union, the action mask the second alone. A third, from a marked visit on,
//! serves [`crate::actions_read_from`].

use kairo_flow::field::{Field, ETH_TYPE_IP, ETH_TYPE_IPV6};
use kairo_flow::{FlowKey, FlowMask};

/// The flow and the bits translation examined of it.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    flow: FlowKey,
    /// Bits classifier lookups examined.
    looked: FlowMask,
    /// Bits actions read or wrote, and the bits every megaflow matches.
    acted: FlowMask,
    /// From a marked visit on, the action bits again.
    since: Option<FlowMask>,
    /// When in_port is not matched exactly (a suffix made for sharing): the
    /// ports it was compared with, instead of in_port's bits.
    ports: Option<Vec<u32>>,
}

/// What a translation examined, once it ends.
#[derive(Clone, Debug)]
pub(crate) struct Examined {
    /// The flow at the end.
    pub flow: FlowKey,
    /// Everything examined, pipeline-only fields included.
    pub all: FlowMask,
    /// `all` without the pipeline-only fields the key had at zero.
    pub mask: FlowMask,
    /// The action bits and fixed bits, without those pipeline-only fields.
    pub action_mask: FlowMask,
    /// From the marked visit on, the action bits (zero if never marked).
    pub since: FlowMask,
    /// The ports compared with in_port (empty when in_port was exact).
    pub ports: Vec<u32>,
}

impl Tracked {
    /// `key` as translation starts, with what the datapath always matches
    /// exactly (as Open vSwitch's xlate does): recirc_id, eth_type, ip_frag
    /// of IPv4 and IPv6, and in_port unless `in_port_fixed` is false (then the ports
    /// compared with it are recorded instead, and in_port only if read).
    pub fn new(key: &FlowKey, in_port_fixed: bool) -> Tracked {
        let mut fixed = FlowMask::ZERO;
        if in_port_fixed {
            fixed.exact(Field::InPort);
        }
        fixed.exact(Field::RecircId);
        fixed.exact(Field::EthType);
        if key.is_ip() {
            fixed.exact(Field::IpFrag);
        }
        Tracked {
            flow: *key,
            looked: FlowMask::ZERO,
            acted: fixed,
            since: None,
            ports: (!in_port_fixed).then(Vec::new),
        }
    }

    /// Records that the actions depend on `bits` of `f`.
    #[inline]
    fn record(&mut self, f: Field, bits: u64) {
        self.acted.or_bits(f, bits);
        if let Some(s) = self.since.as_mut() {
            s.or_bits(f, bits);
        }
    }

    /// Records that the actions depend on all of `f`, without reading it
    /// (VLAN actions: the commit compares both tags whole).
    #[inline]
    pub fn examine(&mut self, f: Field) {
        self.record(f, u64::MAX);
    }

    /// The value of `f`, recorded whole.
    #[inline]
    pub fn get(&mut self, f: Field) -> u64 {
        self.record(f, u64::MAX);
        self.flow.get(f)
    }

    /// The value of `f` on `bits`, those bits recorded.
    #[inline]
    pub fn get_bits(&mut self, f: Field, bits: u64) -> u64 {
        self.record(f, bits);
        self.flow.get(f) & bits
    }

    /// Whether the flow is IPv4 or IPv6 (eth_type recorded).
    #[inline]
    pub fn is_ip(&mut self) -> bool {
        matches!(self.get(Field::EthType), ETH_TYPE_IP | ETH_TYPE_IPV6)
    }

    /// Whether the flow is MPLS (eth_type recorded).
    #[inline]
    pub fn is_mpls(&mut self) -> bool {
        kairo_flow::field::is_mpls_type(self.get(Field::EthType))
    }

    /// MPLS label stack entry `i` on `bits`, those bits recorded.
    #[inline]
    pub fn mpls_lse_bits(&mut self, i: usize, bits: u32) -> u32 {
        self.acted.or_mpls_lse(i, bits);
        if let Some(s) = self.since.as_mut() {
            s.or_mpls_lse(i, bits);
        }
        self.flow.mpls_lse(i) & bits
    }

    /// Sets MPLS label stack entry `i`, recorded whole.
    #[inline]
    pub fn set_mpls_lse(&mut self, i: usize, lse: u32) {
        self.acted.or_mpls_lse(i, u32::MAX);
        if let Some(s) = self.since.as_mut() {
            s.or_mpls_lse(i, u32::MAX);
        }
        self.flow.set_mpls_lse(i, lse);
    }

    /// Whether `port` is the flow's in_port. When in_port is not matched
    /// exactly, the port compared is recorded instead of in_port's bits
    /// (a suffix keeps in_port out of its mask unless something else
    /// reads it).
    #[inline]
    pub fn is_in_port(&mut self, port: u32) -> bool {
        match self.ports.as_mut() {
            Some(ps) => ps.push(port),
            None => self.record(Field::InPort, u64::MAX),
        }
        self.flow.get(Field::InPort) == u64::from(port)
    }

    /// Sets `f` to `v`, recorded whole.
    #[inline]
    pub fn set(&mut self, f: Field, v: u64) {
        self.record(f, u64::MAX);
        self.flow.set(f, v);
    }

    /// Sets the `mask` bits of `f` to `v`'s, recorded.
    #[inline]
    pub fn set_masked(&mut self, f: Field, v: u64, mask: u64) {
        self.record(f, mask);
        self.flow.set_masked(f, v, mask);
    }

    /// Writes a pipeline-only field (metadata by write_metadata) without
    /// recording: such a field is never committed to the packet, so the
    /// written bits decide nothing by themselves; a later read records them.
    #[inline]
    pub fn write_pipeline(&mut self, f: Field, v: u64, mask: u64) {
        debug_assert!(f.pipeline_only(), "{f:?} is committed to packets: use set_masked");
        self.flow.set_masked(f, v, mask);
    }

    /// Writes a conntrack field without recording (see the module doc):
    /// the bits written are constants of the action, or copied from bits
    /// whose read was recorded; a later read records them.
    #[inline]
    pub fn write_conntrack(&mut self, f: Field, v: u64, mask: u64) {
        debug_assert!(kairo_odp::CT_FIELDS.contains(&f), "{f:?} is not a conntrack field");
        self.flow.set_masked(f, v, mask);
    }

    /// A classifier lookup of the flow: `lookup` is given the flow and an
    /// empty mask to add what it examines to; that mask is recorded and
    /// returned with the result.
    #[inline]
    pub fn lookup<R>(&mut self, lookup: impl FnOnce(&FlowKey, &mut FlowMask) -> R) -> (R, FlowMask) {
        let mut wc = FlowMask::ZERO;
        let r = lookup(&self.flow, &mut wc);
        self.looked.or(&wc);
        (r, wc)
    }

    /// The flow, read for bookkeeping only, never for a decision of the
    /// translation: numbering key versions, committing (a commit emits a set
    /// action only for fields the actions wrote, which recorded them),
    /// replaying an earlier traversal's outcome (a replayed visit examines
    /// nothing: its outcome holds for every key that agrees on the table's
    /// read bits, which the caller checks), and saving it around a bucket.
    #[inline]
    pub fn unexamined(&self) -> &FlowKey {
        &self.flow
    }

    /// Puts back a flow saved with [`Tracked::unexamined`] (a bucket ran on
    /// a copy). What the bucket examined stays recorded.
    #[inline]
    pub fn restore(&mut self, saved: FlowKey) {
        self.flow = saved;
    }

    /// Starts gathering action bits in the third sink as well.
    pub fn mark(&mut self) {
        self.since.get_or_insert(FlowMask::ZERO);
    }

    /// Whether anything read in_port other than a comparison with a port.
    pub fn in_port_read(&self) -> bool {
        self.acted.get(Field::InPort) != 0 || self.looked.get(Field::InPort) != 0
    }

    /// What was examined. Registers and metadata are zero whenever a packet
    /// enters the datapath: where `start` has them at zero, matching on
    /// them there is useless (Open vSwitch clears them too), and they leave
    /// the mask and the action mask.
    pub fn finish(self, start: &FlowKey) -> Examined {
        let mut all = self.looked;
        all.or(&self.acted);
        let (mut mask, mut action_mask) = (all, self.acted);
        for f in Field::all().filter(|f| f.pipeline_only()) {
            if start.get(f) == 0 {
                mask.set(f, 0);
                action_mask.set(f, 0);
            }
        }
        Examined {
            flow: self.flow,
            all,
            mask,
            action_mask,
            since: self.since.unwrap_or(FlowMask::ZERO),
            ports: self.ports.unwrap_or_default(),
        }
    }
}
