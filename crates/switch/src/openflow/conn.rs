//! One OpenFlow connection: framing, version negotiation by HELLO, ECHO in
//! both directions with a dead-peer timeout, and the per-connection state
//! (agreed version, role, switch config, async masks).
//!
//! Invariants: nothing but HELLO is read before versions are agreed; a
//! message that cannot be framed (length under 8) ends the connection after
//! an error reply, any other bad message gets its error reply and the
//! connection goes on; requests are answered in the order they came, so a
//! BARRIER reply follows every earlier request's effects (each flow-mod is
//! applied, with its cache maintenance, before the next message is read).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kairo_ofp::message::{AsyncConfig, SwitchConfig, HEADER_LEN};
use kairo_ofp::{decode, encode, Error, ErrorCode, Header, Message, Version};

use super::events::{dispatch, Outbox, Outboxes, OUTBOX};
use super::OfLimits;
use crate::Switch;

/// Versions kairo offers, lowest first.
pub const VERSIONS: [Version; 2] = [Version::V1_3, Version::V1_5];

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    pub(crate) fn set_read_timeout(&self, d: Option<Duration>) {
        let _ = match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        };
    }

    fn set_write_timeout(&self, d: Option<Duration>) {
        let _ = match self {
            Stream::Tcp(s) => s.set_write_timeout(d),
            Stream::Unix(s) => s.set_write_timeout(d),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Roles as OpenFlow numbers them.
pub const ROLE_NOCHANGE: u32 = 0;
pub const ROLE_EQUAL: u32 = 1;
pub const ROLE_MASTER: u32 = 2;
pub const ROLE_SLAVE: u32 = 3;

/// What every connection of one switch shares: its datapath id, the
/// master election's generation id, and the connections' outboxes.
pub struct Shared {
    pub dpid: u64,
    pub outboxes: Arc<Outboxes>,
    /// The largest generation id seen in a master/slave role request.
    pub generation: Mutex<Option<u64>>,
    /// Connection ids of the current master, if any.
    pub master: Mutex<Option<u64>>,
    /// The ports' descriptions as last announced (see `ports::watch`).
    pub ports_seen: Mutex<Vec<kairo_ofp::message::PortDesc>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The switch's OpenFlow state, made on first use: that also starts the
    /// dispatcher of packets for the controller and opens the datapath's
    /// queue to it.
    pub fn of(sw: &Switch) -> Arc<Shared> {
        sw.openflow
            .get_or_init(|| {
                let outboxes = Arc::new(Outboxes::default());
                let (tx, rx) = std::sync::mpsc::sync_channel(crate::CONTROLLER_QUEUE);
                let o = outboxes.clone();
                if std::thread::Builder::new().name("kairo-of-events".into()).spawn(move || dispatch(rx, o)).is_ok() {
                    let _ = sw.to_controller.set(tx);
                }
                Arc::new(Shared {
                    dpid: sw.dpid,
                    outboxes,
                    generation: Mutex::new(None),
                    master: Mutex::new(None),
                    ports_seen: Mutex::new(sw.ports().iter().map(super::ports::port_desc).collect()),
                    next_id: std::sync::atomic::AtomicU64::new(1),
                })
            })
            .clone()
    }
}

/// One connection's state.
pub struct Session {
    pub id: u64,
    /// Where replies and asynchronous messages go (drained by the writer thread).
    pub outbox: Arc<Outbox>,
    /// Bundles opened on this connection and not yet committed or discarded.
    pub bundles: super::bundle::Bundles,
    pub version: Version,
    pub role: u32,
    pub config: SwitchConfig,
    pub async_config: AsyncConfig,
}

/// Outcome of reading one message.
enum Read1 {
    Msg(Vec<u8>),
    /// Nothing arrived within the probe interval.
    Idle,
    Closed,
}

/// Reads one message: the header, then the rest of its stated length.
fn read_msg(s: &mut impl Read, buf: &mut Vec<u8>) -> Read1 {
    let mut hdr = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match s.read(&mut hdr[got..]) {
            Ok(0) => return Read1::Closed,
            Ok(n) => got += n,
            Err(e) if got == 0 && matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Read1::Idle
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A peer that stalls mid-message for a whole probe interval is dropped.
            Err(_) => return Read1::Closed,
        }
    }
    let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    buf.clear();
    buf.extend_from_slice(&hdr);
    if len < HEADER_LEN {
        return Read1::Msg(std::mem::take(buf));
    }
    buf.resize(len, 0);
    match s.read_exact(&mut buf[HEADER_LEN..]) {
        Ok(()) => Read1::Msg(std::mem::take(buf)),
        Err(_) => Read1::Closed,
    }
}

/// Sends a message; false if the peer is gone.
pub fn send(s: &mut Stream, v: Version, xid: u32, m: &Message) -> bool {
    match encode(v, xid, m) {
        Ok(b) => s.write_all(&b).is_ok(),
        Err(_) => false,
    }
}

/// An ERROR reply to the message in `req` (its first 64 bytes as data, as OpenFlow asks).
pub fn error_reply(req: &[u8], e: &Error) -> Message {
    Message::Error { code: e.code, data: req[..req.len().min(64)].to_vec() }
}

/// Serves one connection until the peer leaves, falls silent, or `stop`.
pub fn run(sw: &Switch, shared: &Shared, limits: &OfLimits, stop: &AtomicBool, mut s: Stream) {
    s.set_write_timeout(Some(limits.probe * 2));
    s.set_read_timeout(Some(limits.probe));
    let offered = Version::bitmap(&VERSIONS);
    if !send(&mut s, Version::V1_5, 0, &Message::Hello { bitmap: Some(offered) }) {
        return;
    }
    let mut buf = Vec::with_capacity(kairo_ofp::message::MAX_LEN);
    // Versions first.
    let version = loop {
        match read_msg(&mut s, &mut buf) {
            Read1::Msg(b) => match decode(&b) {
                Ok((h, Message::Hello { bitmap })) => match Version::negotiate(&VERSIONS, h.version, bitmap) {
                    Some(v) => break v,
                    None => {
                        let e = Error::new(
                            ErrorCode::HELLO_INCOMPATIBLE,
                            format!("kairo speaks OpenFlow 1.3 and 1.5; the peer offered version {:#04x}", h.version),
                        );
                        let mut m = error_reply(&b, &e);
                        if let Message::Error { data, .. } = &mut m {
                            *data = e.detail.into_bytes();
                        }
                        send(&mut s, Version::V1_3, h.xid, &m);
                        return;
                    }
                },
                Ok((h, _)) => {
                    let e = Error::new(ErrorCode::BAD_TYPE, "expected HELLO first");
                    send(&mut s, Version::V1_3, h.xid, &error_reply(&b, &e));
                    return;
                }
                Err(e) => {
                    let xid = Header::peek(&b).map_or(0, |h| h.xid);
                    send(&mut s, Version::V1_3, xid, &error_reply(&b, &e));
                    return;
                }
            },
            Read1::Idle => continue,
            Read1::Closed => return,
        }
    };
    let Ok(w) = s.try_clone() else { return };
    let out = Arc::new(Mutex::new(w));
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u32, Message)>(OUTBOX);
    // The writer of asynchronous messages, in the order queued.
    let async_out = out.clone();
    let writer = std::thread::Builder::new().name("kairo-of-writer".into()).spawn(move || {
        for (xid, m) in rx {
            if !send(&mut crate::lock(&async_out), version, xid, &m) {
                break;
            }
        }
    });
    if writer.is_err() {
        return;
    }
    let async_config = AsyncConfig { packet_in: [0x7, 0], port_status: [0x7, 0x7], flow_removed: [0xf, 0] };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let outbox = Arc::new(Outbox::new(id, out, version, tx, ROLE_EQUAL, &async_config));
    // Requests are read through a buffer (a flow-mod and its barrier arrive
    // together and are read by one system call).
    let mut s = std::io::BufReader::with_capacity(kairo_ofp::message::MAX_LEN, s);
    shared.outboxes.add(outbox.clone());
    let mut session = Session {
        id,
        outbox: outbox.clone(),
        bundles: Default::default(),
        version,
        role: ROLE_EQUAL,
        config: SwitchConfig { flags: 0, miss_send_len: 128 },
        async_config,
    };
    let mut probing = false;
    let mut housekeep = false;
    while !stop.load(Ordering::Relaxed) {
        let b = match read_msg(&mut s, &mut buf) {
            Read1::Msg(b) => b,
            Read1::Idle if !probing => {
                // Silence: ask whether the peer is alive.
                probing = true;
                if !outbox.reply(0, Message::EchoRequest(Vec::new())) {
                    break;
                }
                continue;
            }
            Read1::Idle | Read1::Closed => break,
        };
        probing = false;
        let (h, m) = match decode(&b) {
            Ok(x) => x,
            Err(e) => {
                let Ok(h) = Header::peek(&b) else {
                    // Unframeable: answer, then close.
                    outbox.reply(0, error_reply(&b, &e));
                    break;
                };
                if !outbox.reply(h.xid, error_reply(&b, &e)) {
                    break;
                }
                continue;
            }
        };
        if h.version != session.version.wire() && !matches!(m, Message::Hello { .. }) {
            let e = Error::new(
                ErrorCode::BAD_VERSION,
                format!("version {:#04x} on a connection that agreed on OpenFlow {}", h.version, session.version),
            );
            if !outbox.reply(h.xid, error_reply(&b, &e)) {
                break;
            }
            continue;
        }
        let replies = match super::handle::handle(sw, shared, &mut session, h.xid, &m) {
            Ok(r) => r,
            Err(e) => vec![error_reply(&b, &e)],
        };
        if !replies.into_iter().all(|r| outbox.reply(h.xid, r)) {
            break;
        }
        // The bookkeeping changes deferred, once nothing more is waiting to
        // be read (a barrier behind a flow-mod is answered first).
        housekeep |= matches!(m, Message::FlowMod(_) | Message::GroupMod(_) | Message::BundleControl(_));
        if housekeep && s.buffer().is_empty() {
            housekeep = false;
            sw.housekeep();
        }
    }
    shared.outboxes.remove(id);
    // A master leaving frees the role.
    let mut master = crate::lock(&shared.master);
    if *master == Some(id) {
        *master = None;
    }
}
