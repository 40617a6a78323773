//! TAP ports: a Linux TAP device created (or attached to) by name, brought
//! up, read and written one frame per system call.
//!
//! Invariant: the descriptor is non-blocking, so neither receive nor send can
//! stall the forwarding loop; a frame the device refuses is counted dropped.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::port::{pooled, Port, PortCounters, PortError};

pub struct Tap {
    fd: OwnedFd,
    buf: Vec<u8>,
}

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
        let mut r = ifreq(name, (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short);
        // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
        if unsafe { libc::ioctl(raw, libc::TUNSETIFF, &mut r) } < 0 {
            return Err(os("TUNSETIFF (needs CAP_NET_ADMIN)"));
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
        Ok(Tap { fd, buf: vec![0; 65536] })
    }
}

impl Port for Tap {
    fn kind(&self) -> &'static str {
        "tap"
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
    fn recv(&mut self, out: &mut Vec<Vec<u8>>, pool: &mut Vec<Vec<u8>>, max: usize, c: &PortCounters) -> usize {
        let mut n = 0;
        while n < max {
            let len = match rustix::io::read(&self.fd, &mut self.buf[..]) {
                Ok(n) if n > 0 => n,
                _ => break, // EAGAIN (nothing waiting) or an error: try again next round
            };
            if len < 14 {
                PortCounters::add(&c.rx_dropped, 1);
                continue;
            }
            out.push(pooled(pool, &self.buf[..len]));
            PortCounters::add(&c.rx_packets, 1);
            PortCounters::add(&c.rx_bytes, len as u64);
            n += 1;
        }
        n
    }
    fn send(&mut self, frame: &[u8], c: &PortCounters) {
        if rustix::io::write(&self.fd, frame) == Ok(frame.len()) {
            PortCounters::add(&c.tx_packets, 1);
            PortCounters::add(&c.tx_bytes, frame.len() as u64);
        } else {
            PortCounters::add(&c.tx_dropped, 1);
        }
    }
}
