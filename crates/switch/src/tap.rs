//! TAP ports: a Linux TAP device created (or attached to) by name, brought
//! up, read and written one frame per system call.
//!
//! Invariant: the descriptor is non-blocking, so neither receive nor send can
//! stall the forwarding loop; a frame the device refuses is counted dropped.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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
        // SAFETY: a valid NUL-terminated path.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(os("open /dev/net/tun"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut r = ifreq(name, (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short);
        // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
        if unsafe { libc::ioctl(raw, libc::TUNSETIFF, &mut r) } < 0 {
            return Err(os("TUNSETIFF (needs CAP_NET_ADMIN)"));
        }
        // Bring the device up through an ordinary socket.
        // SAFETY: plain syscall.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(os("socket for SIOCSIFFLAGS"));
        }
        // SAFETY: a fresh descriptor we own.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
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
            // SAFETY: reading into our own buffer of the length passed.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if r <= 0 {
                break; // EAGAIN (nothing waiting) or an error: try again next round
            }
            let len = r as usize;
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
        // SAFETY: writing from a live slice of the length passed.
        let r = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if r == frame.len() as isize {
            PortCounters::add(&c.tx_packets, 1);
            PortCounters::add(&c.tx_bytes, frame.len() as u64);
        } else {
            PortCounters::add(&c.tx_dropped, 1);
        }
    }
}
