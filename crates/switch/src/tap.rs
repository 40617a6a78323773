//! TAP ports: a Linux TAP device created (or attached to) by name, brought
//! up, read and written one frame per system call, each behind a virtio
//! header (`IFF_VNET_HDR`): the kernel hands over what its stack sends out
//! of the device with checksums and segmentation left undone (as to a VM's
//! virtio NIC; `TUNSETOFFLOAD`), and takes frames that owe them.
//!
//! Invariant: the descriptor is non-blocking, so neither receive nor send can
//! stall the forwarding loop; a frame the device refuses is counted dropped.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::port::{pooled, Port, PortCounters, PortError};
use kairo_datapath::Packet;
use kairo_wire::offload::{VnetHdr, VNET_HDR_LEN};

pub struct Tap {
    fd: OwnedFd,
    buf: Vec<u8>,
}

/// The offloads asked of the kernel: checksums, TCP segmentation (v4, v6,
/// ECN), and UDP segmentation where the kernel has it (6.2 and later).
const OFFLOADS: [libc::c_uint; 2] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN | libc::TUN_F_USO4 | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
];

fn ifreq(name: &str, flags: libc::c_short) -> libc::ifreq {
    // SAFETY: all-zero is a valid ifreq.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r.ifr_ifru.ifru_flags = flags;
    r
}

impl Tap {
    /// Creates TAP device `name` (or attaches to an existing one) and sets it up.
    pub fn open(name: &str) -> Result<Tap, PortError> {
        let os = |what: &'static str| PortError::last_os(name, what);
        let errno = |what: &'static str| {
            move |err: rustix::io::Errno| PortError::Os { name: name.into(), what, err: err.into() }
        };
        use rustix::fs::{open, Mode, OFlags};
        let fd = open("/dev/net/tun", OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno("open /dev/net/tun"))?;
        let raw = fd.as_raw_fd();
        let mut r = ifreq(name, (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short);
        // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
        if unsafe { libc::ioctl(raw, libc::TUNSETIFF, &mut r) } < 0 {
            return Err(os("TUNSETIFF (needs CAP_NET_ADMIN)"));
        }
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if !OFFLOADS.iter().any(|&f| unsafe { libc::ioctl(raw, libc::TUNSETOFFLOAD, f as libc::c_ulong) } == 0) {
            return Err(os("TUNSETOFFLOAD"));
        }
        // Bring the device up through an ordinary socket.
        use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
        let s = socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
            .map_err(errno("socket for SIOCSIFFLAGS"))?;
        let mut q = ifreq(name, 0);
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
        unsafe {
            if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut q) < 0 {
                return Err(os("SIOCGIFFLAGS"));
            }
            q.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &q) < 0 {
                return Err(os("SIOCSIFFLAGS (set up)"));
            }
        }
        Ok(Tap { fd, buf: vec![0; VNET_HDR_LEN + 65536] })
    }
}

impl Port for Tap {
    fn kind(&self) -> &'static str {
        "tap"
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
    fn recv(&mut self, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, max: usize, c: &PortCounters) -> usize {
        let mut n = 0;
        while n < max {
            let len = match rustix::io::read(&self.fd, &mut self.buf[..]) {
                Ok(n) if n > 0 => n,
                _ => break, // EAGAIN (nothing waiting) or an error: try again next round
            };
            if len < VNET_HDR_LEN + 14 {
                PortCounters::add(&c.rx_dropped, 1);
                continue;
            }
            let vnet = VnetHdr::read(&self.buf).filter(|h| *h != VnetHdr::default());
            let frame = &self.buf[VNET_HDR_LEN..len];
            out.push(Packet { bytes: pooled(pool, frame), in_port: 0, rss: None, vnet });
            PortCounters::add(&c.rx_packets, 1);
            PortCounters::add(&c.rx_bytes, frame.len() as u64);
            n += 1;
        }
        n
    }
    fn offloads(&self) -> bool {
        true
    }
    /// The same device through a duplicate of the descriptor (a write is
    /// one frame whichever thread makes it).
    fn tx_clone(&self) -> Option<Box<dyn Port>> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0).ok()?;
        Some(Box::new(Tap { fd, buf: Vec::new() }))
    }
    fn send(&mut self, frame: &[u8], vnet: Option<&VnetHdr>, c: &PortCounters) {
        let h = vnet.copied().unwrap_or_default().bytes();
        let iov = [std::io::IoSlice::new(&h), std::io::IoSlice::new(frame)];
        if rustix::io::writev(&self.fd, &iov) == Ok(VNET_HDR_LEN + frame.len()) {
            PortCounters::add(&c.tx_packets, 1);
            PortCounters::add(&c.tx_bytes, frame.len() as u64);
        } else {
            PortCounters::add(&c.tx_dropped, 1);
        }
    }
}
