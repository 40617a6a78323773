//! AF_XDP ports: one XDP socket per receive queue of a Linux interface,
//! each with its own frame area (UMEM) and its four rings (fill, receive,
//! transmit, completion), fed by the redirecting program of [`crate::xdp`].
//!
//! Frames bypass the kernel's stack: the program hands each frame arriving
//! on queue q to queue q's socket, the kernel copies it (or, on a driver
//! with zero-copy support, DMAs it) into a frame of the UMEM that user space
//! gave it on the fill ring and posts the frame on the receive ring. We copy
//! it out and give the frame back on the fill ring at once. Sending, we copy
//! the frame into a free UMEM frame, post it on the transmit ring, and kick
//! the kernel once per batch; the completion ring gives the frame back.
//!
//! Frames carry no virtio header here. What the kernel hands over is never
//! a super-frame (a veth or driver with an XDP program stops taking them),
//! but a local stack on the far side of a veth or TAP with checksum offload
//! on still leaves its TCP and UDP checksums partial, and nothing says so:
//! such a checksum is recognised by its value
//! ([`kairo_wire::offload::partial_left`]) and carried as partial, so the
//! datapath treats it as a partial checksum from an AF_PACKET port (TCP then
//! works over default veth settings, where Open vSwitch's AF_XDP ports need
//! `ethtool -K ... tx off`). What this port sends must be finished first
//! (`offloads` is false, so [`crate::port::transmit`] completes checksums
//! and cuts super-frames before they come here).
//!
//! Invariant: every descriptor the kernel posts is checked against the UMEM
//! before a byte is read (a bad one is counted dropped, never followed); a
//! UMEM frame is in exactly one place at a time (the kernel's rings, or the
//! free list), so no frame is written while the kernel may read it; receive
//! and send never block (a full ring drops the frame and counts it).
//!
//! System calls go through `rustix` where it has a safe wrapper (the socket,
//! the interface index, the kick). The `unsafe` left is `setsockopt` and
//! `getsockopt` with the kernel's structures and the `sockaddr_xdp` bind;
//! each block says why it is sound. Ring memory is the `mapping` module's.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::afpacket::setsockopt;
use crate::mapping::Mapping;
use crate::port::{pooled, Port, PortCounters, PortError};
use crate::xdp::{XdpMode, XdpProgram, MAX_QUEUES};
use kairo_datapath::Packet;
use kairo_wire::offload::{partial_left, VnetHdr};

/// One UMEM frame (a page): the kernel puts a received frame after its
/// headroom (256 bytes), so frames up to 3,840 bytes arrive.
const FRAME: usize = 4096;
/// Frames for receiving (kept on the fill ring), across a port's queues:
/// a queue has `RX_BUDGET / queues` of them, at least `RX_MIN` and at most
/// `RX_MAX` (a port on a 64-queue NIC pins 64 MB for receiving, not 1 GB).
const RX_BUDGET: usize = 8192;
const RX_MIN: usize = 256;
const RX_MAX: usize = 4096;
/// Frames for sending (the first queue's socket sends for the port).
const TX_FRAMES: usize = 2048;
/// Entries of each ring: a power of two, at least the frames it can hold.
const RING: u32 = 4096;
const _: () = assert!(RX_MAX <= RING as usize, "a fill ring holds every receive frame");
const _: () = assert!(TX_FRAMES <= RING as usize, "a transmit ring holds every send frame");
/// Size of a receive/transmit descriptor (`struct xdp_desc`) and of a
/// fill/completion entry (a UMEM address).
const DESC: usize = 16;
const ADDR: usize = 8;
/// Frames posted before the kernel is kicked.
const TX_KICK: u32 = 64;
/// The largest frame a UMEM frame takes for sending.
pub const MAX_FRAME: usize = FRAME;

/// One mapped ring: where its indexes and entries are.
struct XskRing {
    map: Mapping,
    producer: usize,
    consumer: usize,
    desc: usize,
    entry: usize,
}

impl XskRing {
    fn open(fd: RawFd, off: &libc::xdp_ring_offset, entry: usize, pgoff: u64) -> io::Result<XskRing> {
        let at = |v: u64| usize::try_from(v).map_err(|_| io::Error::other("ring offset out of range"));
        let desc = at(off.desc)?;
        let map = Mapping::of_fd(fd, desc + RING as usize * entry, pgoff)?;
        Ok(XskRing { map, producer: at(off.producer)?, consumer: at(off.consumer)?, desc, entry })
    }
    fn prod(&self) -> &AtomicU32 {
        self.map.word(self.producer)
    }
    fn cons(&self) -> &AtomicU32 {
        self.map.word(self.consumer)
    }
    /// Where entry `i` (an index, wrapped) starts.
    fn at(&self, i: u32) -> usize {
        self.desc + (i & (RING - 1)) as usize * self.entry
    }
}

/// One receive queue's socket with its UMEM and rings.
struct Queue {
    fd: OwnedFd,
    umem: Mapping,
    rx: XskRing,
    tx: XskRing,
    fill: XskRing,
    comp: XskRing,
    /// UMEM frames free for sending.
    free: Vec<u64>,
    /// Frames for receiving (the first `n_rx` of the UMEM) and for sending
    /// (the `n_tx` after them).
    n_rx: usize,
    n_tx: usize,
    tx_pending: u32,
    /// The kernel's drop counters at the last look (they only grow).
    drops_seen: u64,
    zero_copy: bool,
}

fn getsockopt<T>(fd: RawFd, opt: i32, v: &mut T) -> io::Result<()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a live, exclusively borrowed T and `len` its size; the
    // kernel writes at most `len` bytes and updates `len`.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, (v as *mut T).cast(), &mut len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Queue {
    /// Opens queue `queue`'s socket with `n_rx` frames for receiving and
    /// `n_tx` for sending (0: the socket never sends).
    fn open(
        ifindex: u32,
        (queue, n_rx, n_tx): (u32, usize, usize),
        e: &dyn Fn(&'static str, io::Error) -> PortError,
    ) -> Result<Queue, PortError> {
        use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
        let fd = socket_with(AddressFamily::XDP, SocketType::RAW, SocketFlags::CLOEXEC, None)
            .map_err(|err| e("socket(AF_XDP)", err.into()))?;
        let raw = fd.as_raw_fd();
        let umem = Mapping::anonymous((n_rx + n_tx) * FRAME).map_err(|err| e("mmap of the UMEM", err))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.addr(),
            len: umem.len() as u64,
            chunk_size: FRAME as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg).map_err(|err| e("XDP_UMEM_REG", err))?;
        for (opt, what) in [
            (libc::XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (libc::XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (libc::XDP_RX_RING, "XDP_RX_RING"),
            (libc::XDP_TX_RING, "XDP_TX_RING"),
        ] {
            setsockopt(raw, libc::SOL_XDP, opt, &RING).map_err(|err| e(what, err))?;
        }
        // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        getsockopt(raw, libc::XDP_MMAP_OFFSETS, &mut off).map_err(|err| e("XDP_MMAP_OFFSETS", err))?;
        let ring = |o: &libc::xdp_ring_offset, entry, pgoff: u64, what| {
            XskRing::open(raw, o, entry, pgoff).map_err(|err| e(what, err))
        };
        let rx = ring(&off.rx, DESC, libc::XDP_PGOFF_RX_RING as u64, "mmap of the receive ring")?;
        let tx = ring(&off.tx, DESC, libc::XDP_PGOFF_TX_RING as u64, "mmap of the transmit ring")?;
        let fill = ring(&off.fr, ADDR, libc::XDP_UMEM_PGOFF_FILL_RING, "mmap of the fill ring")?;
        let comp = ring(&off.cr, ADDR, libc::XDP_UMEM_PGOFF_COMPLETION_RING, "mmap of the completion ring")?;
        // Every receive frame goes on the fill ring before the bind.
        for i in 0..n_rx as u32 {
            let at = fill.at(i);
            fill.map.word64(at).store(u64::from(i) * FRAME as u64, Ordering::Relaxed);
        }
        fill.prod().store(n_rx as u32, Ordering::Release);
        let free = (n_rx..n_rx + n_tx).rev().map(|i| (i * FRAME) as u64).collect();
        // Zero-copy where the driver has it, else copy (flags 0).
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: 0,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sxdp` is a valid sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&sxdp as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as u32,
            )
        };
        if r != 0 {
            return Err(e("bind", io::Error::last_os_error()));
        }
        let mut opts = libc::xdp_options { flags: 0 };
        let zero_copy =
            getsockopt(raw, libc::XDP_OPTIONS, &mut opts).is_ok() && opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        Ok(Queue { fd, umem, rx, tx, fill, comp, free, n_rx, n_tx, tx_pending: 0, drops_seen: 0, zero_copy })
    }

    /// Copies up to `max` received frames out, giving their UMEM frames
    /// back on the fill ring; returns how many were appended.
    fn recv(&mut self, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, max: usize, c: &PortCounters) -> usize {
        let cons = self.rx.cons().load(Ordering::Relaxed);
        let prod = self.rx.prod().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons).min(RING).min(max as u32);
        if n == 0 {
            return 0;
        }
        let fill_prod = self.fill.prod().load(Ordering::Relaxed);
        let mut got = 0;
        for i in 0..n {
            let d = self.rx.at(cons.wrapping_add(i));
            let addr = self.rx.map.word64(d).load(Ordering::Relaxed);
            let len = self.rx.map.read_u32(d + 8) as usize;
            let base = (addr as usize) & !(FRAME - 1);
            let fits = (addr as usize).checked_add(len).is_some_and(|end| end <= base + FRAME)
                && base + FRAME <= self.umem.len();
            if fits && len >= 14 {
                let f = pooled(pool, self.umem.bytes(addr as usize, len));
                PortCounters::add(&c.rx_packets, 1);
                PortCounters::add(&c.rx_bytes, len as u64);
                // A checksum the sender left to an offload it thought it had.
                let vnet = partial_left(&f);
                out.push(Packet { bytes: f, in_port: 0, rss: None, vnet });
                got += 1;
            } else {
                PortCounters::add(&c.rx_dropped, 1);
            }
            // The frame goes back to the kernel (a bad address is replaced
            // by what it should have been: the frames on the rings are ours
            // to name, so the fill ring never runs short).
            let back = if base + FRAME <= self.n_rx * FRAME { base as u64 } else { 0 };
            let at = self.fill.at(fill_prod.wrapping_add(i));
            self.fill.map.word64(at).store(back, Ordering::Relaxed);
        }
        self.rx.cons().store(cons.wrapping_add(n), Ordering::Release);
        self.fill.prod().store(fill_prod.wrapping_add(n), Ordering::Release);
        got
    }

    /// Takes the frames the kernel has sent back onto the free list.
    fn reclaim(&mut self) {
        let cons = self.comp.cons().load(Ordering::Relaxed);
        let prod = self.comp.prod().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons).min(RING);
        for i in 0..n {
            let addr = self.comp.map.word64(self.comp.at(cons.wrapping_add(i))).load(Ordering::Relaxed);
            let base = (addr as usize) & !(FRAME - 1);
            // Only frames of the sending half go on the list (and each at most once:
            // the list never holds more than the sending half has).
            if (self.n_rx * FRAME..(self.n_rx + self.n_tx) * FRAME).contains(&base) && self.free.len() < self.n_tx {
                self.free.push(base as u64);
            }
        }
        self.comp.cons().store(cons.wrapping_add(n), Ordering::Release);
    }

    fn send(&mut self, frame: &[u8], c: &PortCounters) {
        if frame.len() > FRAME {
            PortCounters::add(&c.tx_dropped, 1);
            return;
        }
        if self.free.is_empty() {
            self.kick();
            self.reclaim();
        }
        let prod = self.tx.prod().load(Ordering::Relaxed);
        let room = RING - prod.wrapping_sub(self.tx.cons().load(Ordering::Acquire));
        // (The ring has room for every sending frame; checked first all the
        // same, so that a frame is never taken off the list and lost.)
        let Some(addr) = (if room > 0 { self.free.pop() } else { None }) else {
            PortCounters::add(&c.tx_dropped, 1);
            return;
        };
        self.umem.write(addr as usize, frame);
        let d = self.tx.at(prod);
        self.tx.map.word64(d).store(addr, Ordering::Relaxed);
        self.tx.map.word(d + 8).store(frame.len() as u32, Ordering::Relaxed);
        self.tx.map.word(d + 12).store(0, Ordering::Relaxed);
        self.tx.prod().store(prod.wrapping_add(1), Ordering::Release);
        self.tx_pending += 1;
        PortCounters::add(&c.tx_packets, 1);
        PortCounters::add(&c.tx_bytes, frame.len() as u64);
        if self.tx_pending >= TX_KICK {
            self.kick();
        }
    }

    /// Asks the kernel to send what the transmit ring holds. In copy mode
    /// it sends a batch per call (and says EAGAIN while more wait), so
    /// this calls again a bounded number of times; what it still has not
    /// taken stays pending, for the next flush to kick again.
    fn kick(&mut self) {
        if self.tx_pending == 0 {
            return;
        }
        let left = || self.tx.prod().load(Ordering::Relaxed).wrapping_sub(self.tx.cons().load(Ordering::Acquire));
        for _ in 0..RING / 32 + 1 {
            let again =
                rustix::net::send(&self.fd, &[], rustix::net::SendFlags::DONTWAIT) == Err(rustix::io::Errno::AGAIN);
            if !again || left() == 0 {
                break;
            }
        }
        self.tx_pending = left();
        self.reclaim();
    }

    /// Frames the kernel dropped for this socket since the last call: no
    /// frame on the fill ring or too large (`rx_dropped`), or the receive
    /// ring full (`rx_ring_full`). (`rx_fill_ring_empty_descs` counts the
    /// first kind again.)
    fn drops(&mut self) -> u64 {
        // SAFETY: all-zero is a valid xdp_statistics (plain integers).
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        if getsockopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS, &mut st).is_err() {
            return 0;
        }
        let total = st.rx_dropped + st.rx_ring_full;
        let new = total.saturating_sub(self.drops_seen);
        self.drops_seen = total;
        new
    }
}

/// An AF_XDP port: a socket per receive queue (the first also sends).
pub struct AfXdp {
    name: String,
    queues: Vec<Queue>,
    prog: XdpProgram,
}

/// Receive frames for each queue of a port with `queues` queues.
fn rx_frames(queues: u32) -> usize {
    (RX_BUDGET / queues.max(1) as usize).clamp(RX_MIN, RX_MAX)
}

/// The receive queues interface `name` has (its `queues/rx-N` in sysfs).
fn rx_queues(name: &str) -> u32 {
    let n = std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(1);
    (n as u32).clamp(1, MAX_QUEUES)
}

impl AfXdp {
    /// Attaches to interface `name`: the redirecting program on it and a
    /// socket on each of its receive queues.
    pub fn open(name: &str) -> Result<AfXdp, PortError> {
        let e = |what: &'static str, err: io::Error| PortError::Os { name: name.into(), what, err };
        if name.contains(['\0', '/']) {
            return Err(PortError::Bad { name: name.into(), what: "not a valid interface name".into() });
        }
        use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
        // The interface's index, asked through an ordinary socket (an XDP
        // socket takes no ioctls).
        let probe = socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
            .map_err(|err| e("socket for the interface index", err.into()))?;
        let ifindex =
            rustix::net::netdevice::name_to_index(&probe, name).map_err(|err| e("no such interface", err.into()))?;
        drop(probe);
        let prog = XdpProgram::attach(ifindex).map_err(|err| e("XDP", err))?;
        let mut queues = Vec::new();
        let n = rx_queues(name);
        let n_rx = rx_frames(n);
        for q in 0..n {
            let queue = Queue::open(ifindex, (q, n_rx, if q == 0 { TX_FRAMES } else { 0 }), &e)?;
            prog.set_socket(q, queue.fd.as_raw_fd()).map_err(|err| e("putting the socket in the XSKMAP", err))?;
            queues.push(queue);
        }
        Ok(AfXdp { name: name.to_string(), queues, prog })
    }

    pub fn xdp_mode(&self) -> XdpMode {
        self.prog.mode
    }
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        for q in 0..self.queues.len() as u32 {
            self.prog.clear_socket(q);
        }
    }
}

impl Port for AfXdp {
    fn kind(&self) -> &'static str {
        "afxdp"
    }
    /// The program's mode and the sockets' copy mode.
    fn mode(&self) -> Option<String> {
        let zc = self.queues.iter().all(|q| q.zero_copy);
        let copy = if zc { "zero-copy" } else { "copy" };
        Some(format!("{} XDP, {copy}, {} queue(s)", self.prog.mode.name(), self.queues.len()))
    }
    fn fd(&self) -> Option<RawFd> {
        self.queues.first().map(|q| q.fd.as_raw_fd())
    }
    fn fds(&self) -> Vec<RawFd> {
        self.queues.iter().map(|q| q.fd.as_raw_fd()).collect()
    }
    fn recv(&mut self, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, max: usize, c: &PortCounters) -> usize {
        let mut got = 0;
        for q in &mut self.queues {
            got += q.recv(out, pool, max.saturating_sub(got), c);
        }
        got
    }
    fn send(&mut self, frame: &[u8], _vnet: Option<&VnetHdr>, c: &PortCounters) {
        match self.queues.first_mut() {
            Some(q) => q.send(frame, c),
            None => PortCounters::add(&c.tx_dropped, 1),
        }
    }
    fn flush(&mut self) {
        if let Some(q) = self.queues.first_mut() {
            q.kick();
        }
    }
    fn kernel_drops(&mut self) -> u64 {
        self.queues.iter_mut().map(Queue::drops).sum()
    }
    /// Other threads send out of this interface through AF_PACKET (an XDP
    /// socket is bound to one queue, and this one's is read here).
    fn tx_clone(&self) -> Option<Box<dyn Port>> {
        crate::afpacket::AfPacket::open_tx(&self.name).ok().map(|p| Box::new(p) as Box<dyn Port>)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn receive_frames_are_shared_out_between_queues_within_bounds() {
        let got: Vec<usize> = [1, 2, 4, 8, 64].into_iter().map(super::rx_frames).collect();
        assert_eq!(got, [4096, 4096, 2048, 1024, 256]);
    }
}
