//! Offloads a sender left to the hardware: a transport checksum to finish
//! (Linux's `CHECKSUM_PARTIAL`) and segmentation (GSO), as the kernel
//! describes them in the `virtio_net_hdr` in front of each frame of an
//! AF_PACKET socket with `PACKET_VNET_HDR` or a TAP with `IFF_VNET_HDR`.
//!
//! A frame from such a port keeps its offloads through the datapath (one
//! lookup and one execution for a 64 KB TCP super-frame instead of 45) in
//! [`Offload`], which lives in the frame's [`Layout`]: header rewrites keep
//! a partial checksum partial (see [`crate::rewrite`]), and a port that
//! takes virtio headers gets the frame as it came, the kernel or the peer
//! finishing the work; any other port gets it finished here
//! ([`finish`]: the checksum completed, the super-frame cut into segments
//! as the kernel's `tcp_gso_segment` and `__udp_gso_segment` cut them).
//!
//! Invariants: a partial checksum is only ever kept for the TCP or UDP
//! header at `lay.l4` (anything else the sender left partial is completed
//! on arrival, [`VnetHdr::settle`]); its field then holds the folded
//! pseudo-header sum, not complemented, as Linux leaves it. A super-frame's
//! checksum is always partial (settled so, and made so again after anything
//! that finishes it: [`make_partial`]), as the kernel expects. Every segment
//! [`finish`] emits has IP lengths, IPv4 header checksum and transport
//! checksum exactly as a full recomputation gives. Nothing here panics on
//! any input: a header that lies (offsets past the frame, a GSO frame that
//! is not TCP or UDP) makes the frame complete-or-dropped, never read out
//! of bounds.
//!
//! Hand-written: the header is ten bytes of a kernel ABI, and the checksum
//! and segmentation loops are the hot path of TCP through the switch (no
//! crate does either over a plain byte buffer without its own packet type).

use crate::{be16, Layout};

/// Size of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// `virtio_net_hdr.flags`: the checksum from `csum_start` is to be finished.
pub const F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// Segmentation left to the hardware: what kind and the payload per segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    /// Largest transport payload per segment (TCP's MSS).
    pub size: u16,
    /// The sender set ECN on the flow (`VIRTIO_NET_HDR_GSO_ECN`): segments
    /// after the first keep CWR clear, as `tcp_gso_segment` does anyway.
    pub ecn: bool,
}

/// The transports the kernel hands out as super-frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    Tcp4,
    Tcp6,
    /// UDP segmentation (`UDP_SEGMENT`): one UDP header per segment.
    UdpL4,
}

/// What a frame still owes the hardware, kept beside its layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// The TCP or UDP checksum at `lay.l4` holds the pseudo-header sum
    /// only; the rest is to be summed from `lay.l4` to the end.
    pub partial: bool,
    pub gso: Option<Gso>,
}

impl Offload {
    /// Nothing owed: the frame is ready for any wire.
    pub fn is_none(&self) -> bool {
        !self.partial && self.gso.is_none()
    }
}

/// A `virtio_net_hdr` as the kernel wrote it (native byte order, as for
/// AF_PACKET and TAP without `TUNSETVNETLE`/`BE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `b` (None if shorter).
    pub fn read(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let w = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: w(2),
            gso_size: w(4),
            csum_start: w(6),
            csum_offset: w(8),
        })
    }

    /// The header's bytes.
    pub fn bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [self.hdr_len, self.gso_size, self.csum_start, self.csum_offset].into_iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// What frame `b` (laid out as `lay`) owes, given this header: a
    /// partial checksum that is not the TCP or UDP one at `lay.l4` is
    /// finished here, in `b`. Err (the frame is to be dropped, as the
    /// kernel drops it) if the header contradicts the frame: a checksum
    /// field past its end, or segmentation of what is not the transport
    /// it names.
    pub fn settle(&self, b: &mut [u8], lay: &Layout) -> Result<Offload, &'static str> {
        let mut off = Offload::default();
        if self.flags & F_NEEDS_CSUM != 0 {
            let (start, field) = (usize::from(self.csum_start), usize::from(self.csum_offset));
            if start.checked_add(field + 2).is_none_or(|end| end > b.len()) {
                return Err("checksum offsets past the end of the frame");
            }
            let ours = lay.l4 == Some(start) && matches!((lay.proto, field), (6, 16) | (17, 6));
            if ours {
                off.partial = true;
            } else {
                finish_at(b, start, field, false);
            }
        }
        let kind = match self.gso_type & !GSO_ECN {
            GSO_NONE => return Ok(off),
            GSO_TCPV4 if lay.proto == 6 && !lay.ipv6 => GsoKind::Tcp4,
            GSO_TCPV6 if lay.proto == 6 && lay.ipv6 => GsoKind::Tcp6,
            GSO_UDP_L4 if lay.proto == 17 => GsoKind::UdpL4,
            GSO_UDP => return Err("UDP fragmentation offload (UFO) is not supported"),
            _ => return Err("segmentation of a frame that is not of the transport the header names"),
        };
        if self.gso_size == 0 {
            return Err("segmentation with a segment size of 0");
        }
        off.gso = Some(Gso { kind, size: self.gso_size, ecn: self.gso_type & GSO_ECN != 0 });
        // A super-frame's checksum is always kept partial (see `for_frame`).
        if !off.partial {
            make_partial(b, lay).ok_or("segmentation of a frame without a whole transport header")?;
            off.partial = true;
        }
        Ok(off)
    }

    /// The header that hands frame `b` (laid out as `lay`) with its
    /// offloads to a port that takes them. A super-frame's checksum is
    /// partial (the kernel expects it so: [`VnetHdr::settle`] and
    /// [`make_partial`] after anything that finishes it keep it so); one
    /// that is not goes without its segmentation (and so, too large, is
    /// dropped by the port) rather than with a wrong checksum.
    pub fn for_frame(b: &[u8], lay: &Layout) -> VnetHdr {
        let mut h = VnetHdr::default();
        let Some(l4) = lay.l4 else { return h };
        let at = |n: usize| n.min(usize::from(u16::MAX)) as u16;
        if lay.offload.partial {
            h.flags = F_NEEDS_CSUM;
            h.csum_start = at(l4);
            h.csum_offset = if lay.proto == 6 { 16 } else { 6 };
            if let Some(g) = lay.offload.gso {
                h.gso_type = match g.kind {
                    GsoKind::Tcp4 => GSO_TCPV4,
                    GsoKind::Tcp6 => GSO_TCPV6,
                    GsoKind::UdpL4 => GSO_UDP_L4,
                } | if g.ecn { GSO_ECN } else { 0 };
                h.gso_size = g.size;
                h.hdr_len = at(l4 + transport_header_len(b, lay).unwrap_or(8));
            }
        }
        h
    }
}

/// The checksum a sender left partial in a frame that came without a
/// virtio header (an XDP socket: the kernel's XDP path hands frames over as
/// they are, and a local stack sending on a veth or TAP with checksum
/// offload on leaves its TCP and UDP checksums partial). Returns the header
/// that says so, or None where the frame owes nothing or is not a whole,
/// unfragmented TCP or UDP datagram.
///
/// Told apart by the checksum itself: a frame whose checksum verifies owes
/// nothing; one whose checksum field holds exactly the pseudo-header sum
/// (what Linux leaves for the hardware: folded, not complemented) is
/// partial; anything else has a bad checksum and is left as it is, for the
/// receiver to drop. A frame whose checksum verifies is never taken for a
/// partial one; a damaged frame is, with odds of 1 in 65,536, if its field
/// happens to hold the pseudo-header sum. Costs one pass over the segment
/// for a TCP or UDP frame with a checksum, nothing for any other.
pub fn partial_left(b: &[u8]) -> Option<VnetHdr> {
    let (k, lay) = crate::parse(b, 0);
    let (l3, l4) = (lay.l3?, lay.l4?);
    let (field, udp) = csum_field(&lay)?;
    if k.get(kairo_flow::Field::IpFrag) != 0 {
        return None;
    }
    // The IP datagram must end where the frame ends (no padding: a partial
    // checksum covers the segment to its end).
    let ip_end = if lay.ipv6 { l3 + 40 + usize::from(be16(b, l3 + 4)?) } else { l3 + usize::from(be16(b, l3 + 2)?) };
    if ip_end != b.len() {
        return None;
    }
    let stored = be16(b, l4 + field)?;
    if udp && stored == 0 && !lay.ipv6 {
        return None; // no checksum (IPv4 UDP)
    }
    let len = b.len() - l4;
    let pseudo = pseudo_sum(b, &lay, len)?;
    let whole = crate::fold(u32::from(pseudo) + u32::from(sum_fast(b.get(l4..)?)));
    if whole == 0xffff || stored != pseudo {
        return None; // verifies, or is simply wrong
    }
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: u16::try_from(l4).ok()?,
        csum_offset: field as u16,
        ..VnetHdr::default()
    })
}

/// The one's-complement sum of `data` as 16-bit big-endian words, folded
/// (RFC 1071; the sum is byte-order independent, so native words are summed
/// eight bytes at a time and swapped once at the end).
pub fn sum_fast(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut it = data.chunks_exact(8);
    for c in &mut it {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Two 32-bit halves: 8K of them per 64 KB cannot overflow 64 bits.
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    let mut rest = it.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_ne_bytes([c[0], c[1]]));
    }
    if let [b] = rest.remainder() {
        // The big-endian word [b, 0], as the native words are read.
        acc += u64::from(u16::from_ne_bytes([*b, 0]));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let native = acc as u16;
    // Native words summed: on a little-endian machine the result is
    // byte-swapped relative to the big-endian sum.
    if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    }
}

/// Writes the finished checksum of `b[start..]` at `start + field`, whose
/// current value is taken as part of the sum (the pseudo-header sum a
/// partial checksum leaves there). `udp`: a result of 0 is sent as 0xffff.
fn finish_at(b: &mut [u8], start: usize, field: usize, udp: bool) {
    let Some(region) = b.get(start..) else { return };
    let mut c = !sum_fast(region);
    if udp && c == 0 {
        c = 0xffff;
    }
    if let Some(s) = b.get_mut(start + field..start + field + 2) {
        s.copy_from_slice(&c.to_be_bytes());
    }
}

/// The pseudo-header sum (folded, not complemented) of the transport
/// segment at `lay.l4` with `len` bytes.
fn pseudo_sum(b: &[u8], lay: &Layout, len: usize) -> Option<u16> {
    let l3 = lay.l3?;
    let mut acc =
        if lay.ipv6 { crate::sum(0, b.get(l3 + 8..l3 + 40)?) } else { crate::sum(0, b.get(l3 + 12..l3 + 20)?) };
    acc = crate::sum(acc, &u16::from(lay.proto).to_be_bytes());
    acc = crate::sum(acc, &(len as u32).to_be_bytes());
    Some(crate::fold(acc))
}

/// Where a TCP or UDP frame's checksum field is (from `lay.l4`), and
/// whether it is UDP's.
fn csum_field(lay: &Layout) -> Option<(usize, bool)> {
    match lay.proto {
        6 => Some((16, false)),
        17 => Some((6, true)),
        _ => None,
    }
}

/// Turns a complete TCP or UDP checksum into a partial one (the field gets
/// the pseudo-header sum; the layout is not changed). None if the frame
/// has no such header.
pub fn make_partial(b: &mut [u8], lay: &Layout) -> Option<()> {
    let l4 = lay.l4?;
    let (field, _) = csum_field(lay)?;
    let p = pseudo_sum(b, lay, b.len().checked_sub(l4)?)?;
    b.get_mut(l4 + field..l4 + field + 2)?.copy_from_slice(&p.to_be_bytes());
    Some(())
}

/// Completes a partial checksum in place (nothing if there is none).
pub fn finish_csum(b: &mut [u8], lay: &mut Layout) {
    if !lay.offload.partial {
        return;
    }
    lay.offload.partial = false;
    if let (Some(l4), Some((field, udp))) = (lay.l4, csum_field(lay)) {
        finish_at(b, l4, field, udp);
    }
}

/// The length of the transport header at `lay.l4`.
fn transport_header_len(b: &[u8], lay: &Layout) -> Option<usize> {
    let l4 = lay.l4?;
    match lay.proto {
        6 => Some(usize::from(*b.get(l4 + 12)? >> 4) * 4).filter(|&n| n >= 20),
        17 => Some(8),
        _ => None,
    }
}

/// Finishes what frame `b` owes for a port that takes no offloads: each
/// segment it makes (or the frame itself, its checksum completed) is
/// passed to `emit`. A super-frame's segments are built in `scratch`
/// (reused: no allocation once it has grown to a segment). A frame whose
/// headers cannot be segmented is passed on as it is, its checksum
/// completed (the port drops it if it is too large, as the kernel would).
pub fn finish(b: &mut [u8], lay: &mut Layout, scratch: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    if let Some(g) = lay.offload.gso {
        if segment(b, lay, g, scratch, emit).is_some() {
            return;
        }
        lay.offload.gso = None;
    }
    finish_csum(b, lay);
    emit(b);
}

/// The frame's length on the wire, as Open vSwitch's `check_pkt_len`
/// compares it: the bytes after an IP packet's end (Ethernet padding) not
/// counted, and a super-frame counted as its largest segment (headers and
/// one segment's payload, as the kernel datapath judges a GSO frame).
pub fn wire_len(b: &[u8], lay: &Layout) -> usize {
    let mut len = b.len();
    if let Some(l3) = lay.l3 {
        let end = if lay.ipv6 {
            be16(b, l3 + 4).filter(|&p| p > 0).map(|p| l3 + 40 + usize::from(p))
        } else {
            be16(b, l3 + 2).map(|t| l3 + usize::from(t)).filter(|&e| e >= l3 + 20)
        };
        if let Some(end) = end.filter(|&e| e < len) {
            len = end;
        }
    }
    if let (Some(g), Some(l4)) = (lay.offload.gso, lay.l4) {
        if let Some(hdrs) = transport_header_len(b, lay).and_then(|th| l4.checked_add(th)) {
            len = len.min(hdrs + usize::from(g.size));
        }
    }
    len
}

/// Cuts a super-frame into segments (see [`finish`]); None, with nothing
/// emitted, if its headers do not allow it.
fn segment(b: &[u8], lay: &Layout, g: Gso, scratch: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) -> Option<()> {
    let (l3, l4) = (lay.l3?, lay.l4?);
    let th = transport_header_len(b, lay)?;
    let hdrs = l4.checked_add(th)?;
    let payload = b.get(hdrs..)?;
    let mss = usize::from(g.size);
    let tcp = lay.proto == 6;
    // An IPv4 header must be whole and its own checksum field in place.
    let ihl = if lay.ipv6 { 40 } else { usize::from(*b.get(l3)? & 0x0f) * 4 };
    if l3 + ihl > l4 || mss == 0 {
        return None;
    }
    let seq0 = if tcp { crate::be32(b, l4 + 4)? } else { 0 };
    let id0 = if lay.ipv6 { 0 } else { be16(b, l3 + 4)? };
    let flags0 = if tcp { *b.get(l4 + 13)? } else { 0 };
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = payload.get(i * mss..((i + 1) * mss).min(payload.len()))?;
        scratch.clear();
        scratch.extend_from_slice(b.get(..hdrs)?);
        scratch.extend_from_slice(chunk);
        let seg_l4 = th + chunk.len();
        if lay.ipv6 {
            // Payload length counts extension headers too.
            let plen = (scratch.len() - l3 - 40) as u16;
            scratch[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let tot = (scratch.len() - l3) as u16;
            scratch[l3 + 2..l3 + 4].copy_from_slice(&tot.to_be_bytes());
            // Each segment its own IP id, counting up (as the kernel's
            // TSO for a socket with the DF id scheme).
            scratch[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            scratch[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = crate::checksum(&scratch[l3..l3 + ihl]);
            scratch[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        if tcp {
            let seq = seq0.wrapping_add((i * mss) as u32);
            scratch[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut f = flags0;
            if i + 1 < n {
                f &= !(0x01 | 0x08); // FIN and PSH only on the last
            }
            if i > 0 {
                f &= !0x80; // CWR only on the first
            }
            scratch[l4 + 13] = f;
        } else {
            scratch[l4 + 4..l4 + 6].copy_from_slice(&(seg_l4 as u16).to_be_bytes());
        }
        let (field, udp) = csum_field(lay)?;
        let seg_lay = Layout { offload: Offload::default(), ..*lay };
        let p = pseudo_sum(scratch, &seg_lay, seg_l4)?;
        scratch[l4 + field..l4 + field + 2].copy_from_slice(&p.to_be_bytes());
        finish_at(scratch, l4, field, udp);
        emit(scratch);
    }
    Some(())
}
