//! Ports: where frames enter and leave the switch.
//!
//! A [`Port`] owns one attachment (an AF_PACKET ring on a Linux interface, a
//! TAP device, or an in-memory queue for tests and replay) and moves whole
//! Ethernet frames in batches. Invariant: `recv` hands out complete frames
//! only (a truncated or oversized frame is counted as dropped, never passed
//! on), and `send` never blocks the forwarding loop: a full transmit queue
//! drops the frame and counts it.

use kairo_datapath::Packet;
use kairo_ofproto::ports::PortSettings;
use kairo_wire::offload::VnetHdr;
use kairo_wire::Layout;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

/// Counters of one port, shared between the forwarding thread (writer) and
/// the control socket (reader); and the port's OpenFlow configuration bits
/// (`OFPPC_*`, set by PORT_MOD, read by the forwarding thread).
#[derive(Debug, Default)]
pub struct PortCounters {
    pub config: AtomicU32,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_dropped: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
}

impl PortCounters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// One attachment of the switch.
pub trait Port: Send {
    /// What kind of port this is, for `show`: "afpacket", "tap", "mem".
    fn kind(&self) -> &'static str;
    /// How the port runs, where there is more to say than its kind (for
    /// `show`).
    fn mode(&self) -> Option<String> {
        None
    }
    /// A file descriptor that polls readable when frames wait, if any.
    fn fd(&self) -> Option<RawFd>;
    /// Every file descriptor that polls readable when frames wait (a port
    /// with several receive queues has one each).
    fn fds(&self) -> Vec<RawFd> {
        self.fd().into_iter().collect()
    }
    /// Receives up to `max` frames, appending them to `out` (buffers popped
    /// from `pool` are reused) with the virtio header each came with, if
    /// the port reads them (the caller sets `in_port`). Returns how many
    /// were appended.
    fn recv(&mut self, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, max: usize, c: &PortCounters) -> usize;
    /// Does `send` take frames with offloads still owed, described by a
    /// virtio header (a kernel port with `PACKET_VNET_HDR` or `IFF_VNET_HDR`)?
    fn offloads(&self) -> bool {
        false
    }
    /// Queues one frame for transmission (dropped and counted if the queue
    /// is full). `vnet` is what it owes, given only to a port whose
    /// [`Port::offloads`] is true (None: nothing).
    fn send(&mut self, frame: &[u8], vnet: Option<&VnetHdr>, c: &PortCounters);
    /// Hands queued frames to the kernel.
    fn flush(&mut self) {}
    /// Frames the kernel dropped for this port since the last call (its
    /// receive queue full before the switch read it); 0 where unknown.
    fn kernel_drops(&mut self) -> u64 {
        0
    }
    /// Another handle that sends out of the same port and receives
    /// nothing (for another forwarding thread), if the port can make one.
    fn tx_clone(&self) -> Option<Box<dyn Port>> {
        None
    }
}

/// Buffers for finishing frames for ports without offloads (reused: no
/// allocation per packet once they have grown).
#[derive(Default)]
pub struct Scratch {
    frame: Vec<u8>,
    segment: Vec<u8>,
}

/// Sends a frame laid out as `lay` out of `port`: as it is (with its
/// virtio header) if the port takes offloads or the frame owes nothing;
/// otherwise finished here first, on a copy (the caller's frame may go on
/// to other actions): its checksum completed, a super-frame cut into
/// segments.
pub fn transmit(port: &mut dyn Port, frame: &[u8], lay: &Layout, scratch: &mut Scratch, c: &PortCounters) {
    if lay.offload.is_none() {
        return port.send(frame, None, c);
    }
    if port.offloads() {
        return port.send(frame, Some(&VnetHdr::for_frame(frame, lay)), c);
    }
    let Scratch { frame: copy, segment } = scratch;
    copy.clear();
    copy.extend_from_slice(frame);
    let mut lay = *lay;
    kairo_wire::offload::finish(copy, &mut lay, segment, &mut |f| port.send(f, None, c));
}

/// Takes a buffer from the pool (or a new one) and fills it with `data`.
pub(crate) fn pooled(pool: &mut Vec<Vec<u8>>, data: &[u8]) -> Vec<u8> {
    let mut b = pool.pop().unwrap_or_default();
    b.clear();
    b.extend_from_slice(data);
    b
}

/// An in-memory port: frames are injected through a channel and what the
/// switch sends comes out of another (tests, stress runs and replay).
pub struct MemPort {
    rx: Receiver<Vec<u8>>,
    tx: Sender<Vec<u8>>,
}

/// The outside end of a [`MemPort`].
pub struct MemPeer {
    /// Frames sent into the switch through this port.
    pub inject: Sender<Vec<u8>>,
    /// Frames the switch sent out of this port.
    pub sent: Receiver<Vec<u8>>,
}

impl MemPort {
    pub fn pair() -> (MemPort, MemPeer) {
        let (inject, rx) = std::sync::mpsc::channel();
        let (tx, sent) = std::sync::mpsc::channel();
        (MemPort { rx, tx }, MemPeer { inject, sent })
    }
}

impl Port for MemPort {
    fn tx_clone(&self) -> Option<Box<dyn Port>> {
        let (_never, rx) = std::sync::mpsc::channel();
        Some(Box::new(MemPort { rx, tx: self.tx.clone() }))
    }
    fn kind(&self) -> &'static str {
        "mem"
    }
    fn fd(&self) -> Option<RawFd> {
        None
    }
    fn recv(&mut self, out: &mut Vec<Packet>, _pool: &mut Vec<Vec<u8>>, max: usize, c: &PortCounters) -> usize {
        let mut n = 0;
        while n < max {
            match self.rx.try_recv() {
                Ok(f) => {
                    PortCounters::add(&c.rx_packets, 1);
                    PortCounters::add(&c.rx_bytes, f.len() as u64);
                    out.push(Packet::new(f, 0));
                    n += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        n
    }
    fn send(&mut self, frame: &[u8], _vnet: Option<&VnetHdr>, c: &PortCounters) {
        if self.tx.send(frame.to_vec()).is_ok() {
            PortCounters::add(&c.tx_packets, 1);
            PortCounters::add(&c.tx_bytes, frame.len() as u64);
        } else {
            PortCounters::add(&c.tx_dropped, 1);
        }
    }
}

/// A port as the switch holds it: its OpenFlow number, name and counters.
pub struct Attached {
    pub ofport: u32,
    pub name: String,
    pub io: Box<dyn Port>,
    pub counters: Arc<PortCounters>,
}

impl Attached {
    /// The same port for another forwarding thread to send to (its own
    /// handle, the same number, name and counters), if the port has one.
    pub fn send_handle(&self) -> Option<Attached> {
        let io = self.io.tx_clone()?;
        Some(Attached { ofport: self.ofport, name: self.name.clone(), io, counters: self.counters.clone() })
    }
}

/// Errors opening a port, naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port `{name}`: {what}: {err}")]
    Os { name: String, what: &'static str, err: io::Error },
    #[error("port `{name}`: {what}")]
    Bad { name: String, what: String },
}

impl PortError {
    pub(crate) fn last_os(name: &str, what: &'static str) -> PortError {
        PortError::Os { name: name.to_string(), what, err: io::Error::last_os_error() }
    }
}

/// What a port attaches with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A Linux interface through AF_PACKET rings (the default).
    AfPacket,
    /// A Linux interface through XDP sockets and an XDP program on it.
    AfXdp,
    /// A TAP device, created or attached to.
    Tap,
}

impl PortKind {
    pub fn parse(s: &str) -> Result<PortKind, String> {
        match s {
            "afpacket" => Ok(PortKind::AfPacket),
            "afxdp" => Ok(PortKind::AfXdp),
            "tap" => Ok(PortKind::Tap),
            _ => Err(format!("no port type `{s}` (afpacket, afxdp or tap)")),
        }
    }

    /// Opens interface (or TAP device) `name` as this kind of port.
    pub fn open(self, name: &str) -> Result<Box<dyn Port>, PortError> {
        Ok(match self {
            PortKind::AfPacket => Box::new(crate::afpacket::AfPacket::open(name)?),
            PortKind::AfXdp => Box::new(crate::afxdp::AfXdp::open(name)?),
            PortKind::Tap => Box::new(crate::tap::Tap::open(name)?),
        })
    }
}

/// A port as `--port` and `add-port` give it.
#[derive(Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub name: String,
    /// Its OpenFlow number, if given (else the lowest free one from 1,
    /// chosen by the caller, who knows the others).
    pub ofport: Option<u32>,
    /// Its VLAN settings for NORMAL, if any were given.
    pub settings: Option<PortSettings>,
    /// `type=`, if given.
    pub kind: Option<PortKind>,
}

/// Parses a port as `--port` and `add-port` take it:
/// `IF[=OFPORT][,SETTING...]`, each setting `type=afpacket|afxdp|tap`, or a
/// VLAN setting for NORMAL: `tag=N`, `trunks=N,M,...` (the numbers after
/// `trunks=` are its list) or `vlan_mode=MODE`, as `ovs-vsctl set port`.
pub fn parse_port_spec(s: &str) -> Result<PortSpec, PortError> {
    let (head, rest) = s.split_once(',').unwrap_or((s, ""));
    let (name, ofport) = parse_port_arg(head)?;
    let mut spec = PortSpec { name, ofport, settings: None, kind: None };
    // Words of the settings: a bare number continues the trunks list.
    let mut words: Vec<String> = Vec::new();
    for tok in rest.split(',').filter(|t| !t.is_empty()) {
        if let Some(k) = tok.strip_prefix("type=") {
            if spec.kind.is_some() {
                return Err(PortError::Bad { name: spec.name, what: "`type=` given twice".into() });
            }
            spec.kind = Some(PortKind::parse(k).map_err(|what| PortError::Bad { name: spec.name.clone(), what })?);
            continue;
        }
        match words.last_mut() {
            Some(w) if w.starts_with("trunks=") && !tok.contains('=') => {
                w.push(',');
                w.push_str(tok);
            }
            _ => words.push(tok.to_string()),
        }
    }
    if !words.is_empty() {
        spec.settings = Some(
            PortSettings::parse(words.iter().map(String::as_str))
                .map_err(|e| PortError::Bad { name: spec.name.clone(), what: e.to_string() })?,
        );
    }
    Ok(spec)
}

pub fn parse_port_arg(s: &str) -> Result<(String, Option<u32>), PortError> {
    let (name, num) = match s.split_once('=') {
        Some((n, p)) => {
            let v = p.trim().parse::<u32>().ok().filter(|v| *v >= 1 && *v < 0xff00).ok_or_else(|| PortError::Bad {
                name: n.to_string(),
                what: format!("OpenFlow port number `{p}` is not in 1..65279"),
            })?;
            (n, Some(v))
        }
        None => (s, None),
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(PortError::Bad { name: name.to_string(), what: "not a valid interface name".into() });
    }
    Ok((name.to_string(), num))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_spec_names_its_type_among_its_settings() {
        let s = parse_port_spec("veth1=3,type=afxdp,tag=10").expect("parses");
        assert_eq!((s.name.as_str(), s.ofport, s.kind), ("veth1", Some(3), Some(PortKind::AfXdp)));
        assert!(s.settings.is_some());
        let s = parse_port_spec("veth2,trunks=10,20,type=afpacket").expect("parses");
        assert_eq!((s.ofport, s.kind), (None, Some(PortKind::AfPacket)));
        assert_eq!(
            s.settings.map(|p| p.to_string()),
            parse_port_spec("x,trunks=10,20").expect("p").settings.map(|p| p.to_string())
        );
        let s = parse_port_spec("veth3").expect("parses");
        assert_eq!((s.kind, s.settings.is_none()), (None, true));
        for (bad, says) in [
            ("veth1,type=dpdk", "no port type `dpdk`"),
            ("veth1,type=afxdp,type=tap", "`type=` given twice"),
            ("veth1=0,type=afxdp", "not in 1..65279"),
        ] {
            let e = parse_port_spec(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
