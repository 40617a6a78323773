//! Asynchronous messages to controllers: each connection's outbox (a
//! bounded queue its writer thread drains), and the dispatcher that turns
//! packets the datapath sent to the controller into packet-ins for every
//! connection that asked for them: the connections with the action's
//! controller id, each in the format it asked for (OpenFlow's PACKET_IN,
//! or NXT_PACKET_IN2 with the action's userdata), with the pipeline's
//! metadata as Open vSwitch's `flow_get_metadata` gives it.
//!
//! Invariants: replies are written by the thread that read the request,
//! before it reads the next (a request is never left unanswered, and a
//! barrier's reply follows every earlier request's); asynchronous messages
//! never wait: when an outbox is
//! full the message is dropped and counted, so a slow controller costs the
//! switch at most [`OUTBOX`] messages of memory per connection. A
//! connection gets a PACKET_IN or FLOW_REMOVED only if its role and
//! asynchronous configuration ask for that reason (OpenFlow 1.3 §6.1.1).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use kairo_datapath::execute::ToController;
use kairo_flow::Field;
use kairo_odp::ControllerReason;
use kairo_ofp::map;
use kairo_ofp::message::{nxpif, AsyncConfig, FlowRemoved, PacketIn, PacketIn2, PortDesc, NO_BUFFER};
use kairo_ofp::oxm::{Oxm, OxmId};
use kairo_ofp::{port, Message, Version};

use super::conn::{send, Stream, ROLE_SLAVE};
use crate::lives::Removed;

/// Messages a connection's outbox holds.
pub const OUTBOX: usize = 256;

/// A connection's way out: replies are written at once by the thread that
/// answers (under the lock that keeps messages whole), asynchronous messages
/// go through a bounded queue to the connection's writer thread.
pub struct Outbox {
    pub id: u64,
    out: Arc<Mutex<Stream>>,
    version: Version,
    tx: SyncSender<(u32, Message)>,
    role: AtomicU32,
    /// Packet-in reasons wanted as [equal/master, slave].
    packet_in: [AtomicU32; 2],
    /// Flow-removed reasons wanted, likewise.
    flow_removed: [AtomicU32; 2],
    /// Port-status reasons wanted, likewise.
    port_status: [AtomicU32; 2],
    /// The format of its packet-ins (`nxpif`: OpenFlow's own or
    /// NXT_PACKET_IN2), as NXT_SET_PACKET_IN_FORMAT set it.
    packet_in_format: AtomicU32,
    /// The id `controller(id=N)` actions name it by (NXT_SET_CONTROLLER_ID; 0 until set).
    controller_id: AtomicU32,
    /// Asynchronous messages dropped because the outbox was full.
    pub dropped: AtomicU64,
}

impl Outbox {
    pub fn new(
        id: u64,
        out: Arc<Mutex<Stream>>,
        version: Version,
        tx: SyncSender<(u32, Message)>,
        role: u32,
        a: &AsyncConfig,
    ) -> Outbox {
        let o = Outbox {
            id,
            out,
            version,
            tx,
            role: AtomicU32::new(role),
            packet_in: [AtomicU32::new(0), AtomicU32::new(0)],
            flow_removed: [AtomicU32::new(0), AtomicU32::new(0)],
            port_status: [AtomicU32::new(0), AtomicU32::new(0)],
            packet_in_format: AtomicU32::new(nxpif::STANDARD),
            controller_id: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
        };
        o.configure(role, a);
        o
    }

    /// The connection's role or asynchronous configuration changed.
    pub fn configure(&self, role: u32, a: &AsyncConfig) {
        self.role.store(role, Ordering::Relaxed);
        self.packet_in[0].store(a.packet_in[0], Ordering::Relaxed);
        self.packet_in[1].store(a.packet_in[1], Ordering::Relaxed);
        self.flow_removed[0].store(a.flow_removed[0], Ordering::Relaxed);
        self.flow_removed[1].store(a.flow_removed[1], Ordering::Relaxed);
        self.port_status[0].store(a.port_status[0], Ordering::Relaxed);
        self.port_status[1].store(a.port_status[1], Ordering::Relaxed);
    }

    /// Its packet-ins from now on in `format` (`nxpif`).
    pub fn set_packet_in_format(&self, format: u32) {
        self.packet_in_format.store(format, Ordering::Relaxed);
    }

    /// It answers to `controller(id=N)` actions with this id from now on.
    pub fn set_controller_id(&self, id: u16) {
        self.controller_id.store(u32::from(id), Ordering::Relaxed);
    }

    /// A reply, written now (in the order of the requests: one thread
    /// answers them); false if the connection is gone.
    pub fn reply(&self, xid: u32, m: Message) -> bool {
        send(&mut crate::lock(&self.out), self.version, xid, &m)
    }

    /// An asynchronous message: dropped and counted if there is no room.
    pub fn post(&self, m: Message) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send((0, m)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn wants(&self, masks: &[AtomicU32; 2], reason: u8) -> bool {
        let slave = usize::from(self.role.load(Ordering::Relaxed) == ROLE_SLAVE);
        masks[slave].load(Ordering::Relaxed) & (1 << reason) != 0
    }
}

/// The outboxes of a switch's connections.
#[derive(Default)]
pub struct Outboxes {
    list: Mutex<Vec<Arc<Outbox>>>,
}

impl Outboxes {
    pub fn add(&self, o: Arc<Outbox>) {
        crate::lock(&self.list).push(o);
    }

    pub fn remove(&self, id: u64) {
        crate::lock(&self.list).retain(|o| o.id != id);
    }

    fn snapshot(&self) -> Vec<Arc<Outbox>> {
        crate::lock(&self.list).clone()
    }

    /// A PORT_STATUS for every connection that wants its reason.
    pub fn port_status(&self, reason: u8, desc: PortDesc) {
        for o in self.snapshot().into_iter().filter(|o| o.wants(&o.port_status, reason)) {
            o.post(Message::PortStatus { reason, desc: desc.clone() });
        }
    }

    /// A FLOW_REMOVED for every connection that wants its reason.
    pub fn flow_removed(&self, r: &Removed, (packet_count, byte_count): (u64, u64)) {
        let reason = r.reason as u8;
        let targets: Vec<Arc<Outbox>> =
            self.snapshot().into_iter().filter(|o| o.wants(&o.flow_removed, reason)).collect();
        if targets.is_empty() {
            return;
        }
        // NXM/OXM fields every version reads (1.3's forms).
        let Ok(fields) = map::match_to_wire(&r.rule.m, Version::V1_3) else { return };
        let m = FlowRemoved {
            cookie: r.rule.cookie,
            priority: r.rule.priority,
            reason,
            table_id: r.table,
            duration_sec: (r.lived_ms / 1000) as u32,
            duration_nsec: ((r.lived_ms % 1000) * 1_000_000) as u32,
            idle_timeout: r.rule.idle_timeout,
            hard_timeout: r.rule.hard_timeout,
            packet_count,
            byte_count,
            fields,
        };
        for o in targets {
            o.post(Message::FlowRemoved(m.clone()));
        }
    }
}

fn reason_code(r: ControllerReason) -> u8 {
    match r {
        ControllerReason::NoMatch => 0,
        ControllerReason::Action => 1,
        ControllerReason::InvalidTtl => 2,
    }
}

/// What a packet-in says of the packet's pipeline state, as Open vSwitch's
/// `flow_get_metadata`: in_port, the pipeline fields that were not zero at
/// the controller action (metadata, registers, pkt_mark, tunnel), and the
/// packet's connection (its ct_state, zone, mark and label when not zero,
/// the original tuple when the connection is valid).
pub fn metadata(c: &ToController) -> Vec<Oxm> {
    let mut m = kairo_flow::Match::default();
    m.set_exact(Field::InPort, u64::from(c.in_port));
    for &(f, v) in &c.meta.fields {
        m.set_exact(f, v);
    }
    let mut ct = kairo_flow::FlowKey::default();
    c.ct.write_key(&mut ct);
    let mut fields = vec![Field::CtState, Field::CtZone, Field::CtMark, Field::CtLabelHi, Field::CtLabelLo];
    // A valid connection's tuple (new, established, related or reply).
    if ct.get(Field::CtState) & 0x0f != 0 && ct.get(Field::CtNwProto) != 0 {
        fields.extend([Field::CtNwProto, Field::CtTpSrc, Field::CtTpDst]);
        fields.extend([Field::CtNwSrc, Field::CtNwDst]);
        fields.extend([Field::CtIpv6SrcHi, Field::CtIpv6SrcLo, Field::CtIpv6DstHi, Field::CtIpv6DstLo]);
    }
    for f in fields {
        let v = ct.get(f);
        if v != 0 || (f == Field::CtNwProto && ct.get(Field::CtState) != 0) {
            m.set_exact(f, v);
        }
    }
    // The fields all have OpenFlow forms (OXM or NXM), in every version.
    map::match_to_wire(&m, Version::V1_3)
        .unwrap_or_else(|_| vec![Oxm::exact(OxmId::basic(0), u128::from(port::to_wire(c.in_port)))])
}

/// The packet's bytes a packet-in carries (at most the action's max_len).
fn kept<'b>(c: &ToController, bytes: &'b [u8]) -> &'b [u8] {
    let keep = if c.max_len == u16::MAX { bytes.len() } else { bytes.len().min(usize::from(c.max_len)) };
    &bytes[..keep]
}

/// The PACKET_IN for a packet the datapath sent to the controller.
pub fn packet_in(c: &ToController, bytes: &[u8]) -> PacketIn {
    PacketIn {
        buffer_id: NO_BUFFER,
        total_len: u16::try_from(bytes.len()).unwrap_or(u16::MAX),
        reason: reason_code(c.reason),
        table_id: c.table,
        cookie: c.cookie,
        fields: metadata(c),
        data: kept(c, bytes).to_vec(),
    }
}

/// The NXT_PACKET_IN2 for it (what a PACKET_IN says, and the userdata).
pub fn packet_in2(c: &ToController, bytes: &[u8]) -> PacketIn2 {
    let data = kept(c, bytes).to_vec();
    PacketIn2 {
        full_len: (data.len() < bytes.len()).then_some(bytes.len() as u32),
        data,
        buffer_id: None,
        table_id: c.table,
        cookie: Some(c.cookie),
        reason: reason_code(c.reason),
        metadata: metadata(c),
        userdata: (!c.meta.userdata.is_empty()).then(|| c.meta.userdata.clone()),
    }
}

/// Serves the datapath's controller queue until the switch goes away: each
/// packet to the connections that have the action's controller id and
/// want its reason, in the format each asked for.
pub fn dispatch(rx: Receiver<(ToController, Vec<u8>)>, outboxes: Arc<Outboxes>) {
    while let Ok((c, bytes)) = rx.recv() {
        let reason = reason_code(c.reason);
        let targets: Vec<Arc<Outbox>> = outboxes
            .snapshot()
            .into_iter()
            .filter(|o| o.controller_id.load(Ordering::Relaxed) == u32::from(c.controller_id))
            .filter(|o| o.wants(&o.packet_in, reason))
            .collect();
        let (mut std, mut nx) = (None, None);
        for o in targets {
            let m = if o.packet_in_format.load(Ordering::Relaxed) == nxpif::NXT_PACKET_IN2 {
                Message::PacketIn2(nx.get_or_insert_with(|| packet_in2(&c, &bytes)).clone())
            } else {
                Message::PacketIn(std.get_or_insert_with(|| packet_in(&c, &bytes)).clone())
            };
            o.post(m);
        }
    }
}
