//! AF_PACKET ports: a TPACKET_V3 memory-mapped receive ring and a transmit
//! ring on one socket bound to one Linux interface, every frame behind a
//! virtio header (`PACKET_VNET_HDR`), and a second socket, bound to the
//! interface but receiving nothing, for frames larger than a ring slot.
//!
//! Receive walks the ring block by block (the kernel fills a block, retires it
//! after `RETIRE_MS` or when full, and hands it to user space by setting
//! `TP_STATUS_USER`; we copy its frames out and give it back). Transmit writes
//! frames into free slots of the TX ring, marks them `TP_STATUS_SEND_REQUEST`
//! and kicks the kernel once per batch with a zero-length `send`; a frame too
//! large for a slot (a TCP super-frame) goes by `sendmsg` on the second
//! socket, after the ring is kicked (so frames leave in the order sent).
//!
//! With virtio headers the kernel hands over what a veth peer or the local
//! stack sent as it is: super-frames of up to 64 KB and checksums left to
//! the hardware ([`kairo_wire::offload`]); blocks are large enough for the
//! largest. Sending, it takes the same, finishing them itself or passing
//! them on (a veth peer's stack takes a super-frame whole).
//!
//! Invariant: every offset read from the ring is checked against the block it
//! lies in before memory is touched; a frame the kernel truncated (snaplen <
//! len) or one larger than a TX slot is dropped and counted, never forwarded.
//! Frames this socket did not receive from the wire (`PACKET_OUTGOING`, the
//! kernel's own transmissions on the interface) are skipped. VLAN tags the
//! kernel stripped into the ring header are put back into the frame (and
//! the virtio header's checksum offset moved past them).
//!
//! System calls go through `rustix` where it has a safe wrapper (the socket,
//! the interface index, the transmit kick, `sendmsg`). The `unsafe` left is
//! what it has none for: the AF_PACKET ring options and membership
//! (`setsockopt` with kernel structures), the `sockaddr_ll` bind, and the
//! ring accesses (the `mapping` module); each block says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use crate::mapping::Mapping;
use crate::port::{pooled, Port, PortCounters, PortError};
use kairo_datapath::Packet;
use kairo_wire::offload::{VnetHdr, VNET_HDR_LEN};

/// Receive blocks: each holds a whole 64 KB super-frame with its headers.
const RX_BLOCK_SIZE: usize = 1 << 17;
const RX_BLOCKS: usize = 32;
const TX_BLOCK_SIZE: usize = 1 << 16;
const TX_BLOCKS: usize = 16;
const FRAME_SIZE: usize = 2048;
const RETIRE_MS: u32 = 1;
/// Where a frame's virtio header starts in a TX slot: the aligned
/// `tpacket3_hdr` (TPACKET3_HDRLEN minus the `sockaddr_ll` the kernel
/// accounts for); the frame follows it.
const TX_DATA_OFF: usize = 48;
/// Largest frame a TX slot holds.
pub const MAX_FRAME: usize = FRAME_SIZE - TX_DATA_OFF - VNET_HDR_LEN;
/// `PACKET_VNET_HDR` (linux/if_packet.h; not in the libc crate).
const PACKET_VNET_HDR: i32 = 15;
/// `PACKET_STATISTICS` (linux/if_packet.h).
const PACKET_STATISTICS: i32 = 6;

/// `struct tpacket_stats_v3` (linux/if_packet.h): what `PACKET_STATISTICS`
/// returns (and resets) on a TPACKET_V3 socket.
#[repr(C)]
#[derive(Default)]
struct StatsV3 {
    packets: u32,
    drops: u32,
    freeze_q_cnt: u32,
}

// Offsets inside the kernel's structures (linux/if_packet.h), fixed by the ABI.
const BD_STATUS: usize = 8;
const BD_NUM_PKTS: usize = 12;
const BD_FIRST: usize = 16;
const H3_NEXT: usize = 0;
const H3_SNAPLEN: usize = 12;
const H3_LEN: usize = 16;
const H3_STATUS: usize = 20;
const H3_MAC: usize = 24;
const H3_VLAN_TCI: usize = 32;
const H3_VLAN_TPID: usize = 36;
const H3_PKTTYPE: usize = 48 + 10; // sockaddr_ll.sll_pkttype after the header

/// An AF_PACKET port.
pub struct AfPacket {
    fd: OwnedFd,
    /// For frames larger than a TX slot (receives nothing: protocol 0).
    big: OwnedFd,
    ring: Mapping,
    /// Has it a receive ring (else it only sends: [`AfPacket::open_tx`])?
    rx: bool,
    name: String,
    /// Where the TX ring starts in the mapping.
    tx_base: usize,
    rx_block: usize,
    tx_slot: usize,
    tx_pending: usize,
}

pub(crate) fn setsockopt<T>(fd: RawFd, level: i32, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live T of the size passed.
    let r = unsafe { libc::setsockopt(fd, level, opt, (v as *const T).cast(), std::mem::size_of::<T>() as u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds packet socket `fd` to interface `ifindex` for `protocol` (host
/// order; 0: receive nothing).
fn bind(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The ring request for `blocks` blocks of `block_size`, in `FRAME_SIZE` frames.
fn ring_req(blocks: usize, block_size: usize, retire_ms: u32) -> libc::tpacket_req3 {
    libc::tpacket_req3 {
        tp_block_size: block_size as u32,
        tp_block_nr: blocks as u32,
        tp_frame_size: FRAME_SIZE as u32,
        tp_frame_nr: (blocks * block_size / FRAME_SIZE) as u32,
        tp_retire_blk_tov: retire_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    }
}

impl AfPacket {
    /// Opens interface `name`: a raw socket with RX and TX rings, bound to it,
    /// in promiscuous mode.
    pub fn open(name: &str) -> Result<AfPacket, PortError> {
        AfPacket::open_as(name, true)
    }

    /// Opens interface `name` to send only: a TX ring on a socket bound for
    /// no protocol (it receives nothing), for a forwarding thread that
    /// sends to a port another thread reads.
    pub fn open_tx(name: &str) -> Result<AfPacket, PortError> {
        AfPacket::open_as(name, false)
    }

    fn open_as(name: &str, rx: bool) -> Result<AfPacket, PortError> {
        let e = |what: &'static str| move |err| PortError::Os { name: name.into(), what, err };
        let errno = |what: &'static str| move |err: rustix::io::Errno| e(what)(err.into());
        if name.contains('\0') {
            return Err(PortError::Bad { name: name.into(), what: "NUL in interface name".into() });
        }
        // Protocol 0 until bound: the socket sees no traffic from other interfaces meanwhile.
        use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
        let fd = socket_with(AddressFamily::PACKET, SocketType::RAW, SocketFlags::CLOEXEC, None)
            .map_err(errno("socket(AF_PACKET) (needs CAP_NET_RAW)"))?;
        let ifindex = rustix::net::netdevice::name_to_index(&fd, name).map_err(errno("no such interface"))?;
        let raw = fd.as_raw_fd();
        let v3 = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &v3).map_err(e("PACKET_VERSION=TPACKET_V3"))?;
        let one: libc::c_int = 1;
        // Before the rings (the kernel refuses it after).
        setsockopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, &one).map_err(e("PACKET_VNET_HDR"))?;
        let rx_len = if rx { RX_BLOCKS * RX_BLOCK_SIZE } else { 0 };
        if rx {
            let rx_req = ring_req(RX_BLOCKS, RX_BLOCK_SIZE, RETIRE_MS);
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req).map_err(e("PACKET_RX_RING"))?;
        }
        // A TX ring takes no block timeout (the kernel rejects one).
        let tx_req = ring_req(TX_BLOCKS, TX_BLOCK_SIZE, 0);
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx_req).map_err(e("PACKET_TX_RING"))?;
        let len = rx_len + TX_BLOCKS * TX_BLOCK_SIZE;
        let ring = Mapping::of_fd(raw, len, 0).map_err(e("mmap of the packet rings"))?;
        // Best effort: skipping the qdisc layer is faster but not required.
        let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one);
        bind(raw, ifindex, if rx { libc::ETH_P_ALL as u16 } else { 0 }).map_err(e("bind"))?;
        // The socket for large frames: protocol 0, so it receives nothing.
        let big = socket_with(AddressFamily::PACKET, SocketType::RAW, SocketFlags::CLOEXEC, None)
            .map_err(errno("socket(AF_PACKET) for large frames"))?;
        setsockopt(big.as_raw_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, &one).map_err(e("PACKET_VNET_HDR"))?;
        bind(big.as_raw_fd(), ifindex, 0).map_err(e("bind"))?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        if rx {
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq).map_err(e("promiscuous mode"))?;
        }
        Ok(AfPacket {
            fd,
            big,
            ring,
            rx,
            name: name.to_string(),
            tx_base: rx_len,
            rx_block: 0,
            tx_slot: 0,
            tx_pending: 0,
        })
    }

    fn tx_slot_off(&self, slot: usize) -> usize {
        let per_block = TX_BLOCK_SIZE / FRAME_SIZE;
        self.tx_base + (slot / per_block) * TX_BLOCK_SIZE + (slot % per_block) * FRAME_SIZE
    }

    /// Sends a frame too large for a TX slot on the second socket, after
    /// the ring's frames (dropped and counted if the kernel refuses it).
    fn send_big(&mut self, frame: &[u8], h: &[u8; VNET_HDR_LEN], c: &PortCounters) {
        self.flush();
        let iov = [io::IoSlice::new(h), io::IoSlice::new(frame)];
        let sent = rustix::net::sendmsg(
            &self.big,
            &iov,
            &mut rustix::net::SendAncillaryBuffer::default(),
            rustix::net::SendFlags::DONTWAIT,
        );
        if sent == Ok(VNET_HDR_LEN + frame.len()) {
            PortCounters::add(&c.tx_packets, 1);
            PortCounters::add(&c.tx_bytes, frame.len() as u64);
        } else {
            PortCounters::add(&c.tx_dropped, 1);
        }
    }

    /// Copies the frames of one user-owned block out; returns how many.
    fn drain_block(&self, b: usize, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, c: &PortCounters) -> usize {
        let base = b * RX_BLOCK_SIZE;
        let n = self.ring.read_u32(base + BD_NUM_PKTS) as usize;
        let mut off = self.ring.read_u32(base + BD_FIRST) as usize;
        let mut got = 0;
        for _ in 0..n {
            if off < 16 || off + TX_DATA_OFF + 20 > RX_BLOCK_SIZE {
                break; // a corrupt block: give it back without reading on
            }
            let h = base + off;
            let status = self.ring.read_u32(h + H3_STATUS);
            let snap = self.ring.read_u32(h + H3_SNAPLEN) as usize;
            let len = self.ring.read_u32(h + H3_LEN) as usize;
            let mac = self.ring.read_u16(h + H3_MAC) as usize;
            let next = self.ring.read_u32(h + H3_NEXT) as usize;
            let outgoing = self.ring.read_u8(h + H3_PKTTYPE) == libc::PACKET_OUTGOING;
            if !outgoing {
                if snap != len || off + mac + snap > RX_BLOCK_SIZE || snap < 14 || mac < VNET_HDR_LEN + 32 {
                    PortCounters::add(&c.rx_dropped, 1);
                } else {
                    let data = self.ring.bytes(h + mac, snap);
                    let mut f = pooled(pool, data);
                    let mut vnet = VnetHdr::read(self.ring.bytes(h + mac - VNET_HDR_LEN, VNET_HDR_LEN))
                        .filter(|v| *v != VnetHdr::default());
                    if status & libc::TP_STATUS_VLAN_VALID != 0 {
                        // The tag goes back in front of what the offsets count from.
                        if let Some(v) = vnet.as_mut() {
                            v.csum_start = v.csum_start.saturating_add(4);
                            v.hdr_len = v.hdr_len.saturating_add(4);
                        }
                        let tci = self.ring.read_u32(h + H3_VLAN_TCI) as u16;
                        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                            self.ring.read_u16(h + H3_VLAN_TPID)
                        } else {
                            0x8100
                        };
                        let [t0, t1] = tpid.to_be_bytes();
                        let [c0, c1] = tci.to_be_bytes();
                        f.splice(12..12, [t0, t1, c0, c1]);
                    }
                    PortCounters::add(&c.rx_packets, 1);
                    PortCounters::add(&c.rx_bytes, f.len() as u64);
                    out.push(Packet { bytes: f, in_port: 0, rss: None, vnet });
                    got += 1;
                }
            }
            if next == 0 {
                break;
            }
            off += next;
        }
        got
    }
}

impl Port for AfPacket {
    fn kind(&self) -> &'static str {
        "afpacket"
    }
    /// The kernel's count of frames it dropped because the receive ring
    /// was full (read and reset with `PACKET_STATISTICS`).
    fn kernel_drops(&mut self) -> u64 {
        if !self.rx {
            return 0;
        }
        let mut st = StatsV3::default();
        let mut len = std::mem::size_of::<StatsV3>() as libc::socklen_t;
        // SAFETY: `st` is a live tpacket_stats_v3 and `len` its size; the
        // kernel writes at most `len` bytes and updates `len`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut StatsV3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            u64::from(st.drops)
        } else {
            0
        }
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
    fn tx_clone(&self) -> Option<Box<dyn Port>> {
        AfPacket::open_tx(&self.name).ok().map(|p| Box::new(p) as Box<dyn Port>)
    }
    fn recv(&mut self, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, max: usize, c: &PortCounters) -> usize {
        if !self.rx {
            return 0;
        }
        let mut got = 0;
        // Whole blocks at a time: a block holds many frames, so `max` is a hint.
        for _ in 0..RX_BLOCKS {
            if got >= max {
                break;
            }
            let status = self.ring.word(self.rx_block * RX_BLOCK_SIZE + BD_STATUS);
            if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break;
            }
            got += self.drain_block(self.rx_block, out, pool, c);
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.rx_block = (self.rx_block + 1) % RX_BLOCKS;
        }
        got
    }
    fn offloads(&self) -> bool {
        true
    }
    fn send(&mut self, frame: &[u8], vnet: Option<&VnetHdr>, c: &PortCounters) {
        let h = vnet.copied().unwrap_or_default().bytes();
        if frame.len() > MAX_FRAME {
            return self.send_big(frame, &h, c);
        }
        let slots = TX_BLOCKS * TX_BLOCK_SIZE / FRAME_SIZE;
        let off = self.tx_slot_off(self.tx_slot);
        let st = self.ring.word(off + H3_STATUS).load(Ordering::Acquire);
        if st != libc::TP_STATUS_AVAILABLE && st != libc::TP_STATUS_WRONG_FORMAT {
            PortCounters::add(&c.tx_dropped, 1);
            self.flush();
            return;
        }
        let len = VNET_HDR_LEN + frame.len();
        self.ring.write(off + TX_DATA_OFF, &h);
        self.ring.write(off + TX_DATA_OFF + VNET_HDR_LEN, frame);
        self.ring.word(off + H3_LEN).store(len as u32, Ordering::Relaxed);
        self.ring.word(off + H3_SNAPLEN).store(len as u32, Ordering::Relaxed);
        self.ring.word(off + H3_NEXT).store(0, Ordering::Relaxed);
        self.ring.word(off + H3_STATUS).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_slot = (self.tx_slot + 1) % slots;
        self.tx_pending += 1;
        PortCounters::add(&c.tx_packets, 1);
        PortCounters::add(&c.tx_bytes, frame.len() as u64);
        if self.tx_pending >= 64 {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if self.tx_pending == 0 {
            return;
        }
        self.tx_pending = 0;
        // A zero-length send asks the kernel to transmit the slots marked
        // SEND_REQUEST (a full queue is retried at the next flush).
        let _ = rustix::net::send(&self.fd, &[], rustix::net::SendFlags::DONTWAIT);
    }
}
