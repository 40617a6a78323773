//! TCP state and sequence-window tracking, after OpenBSD pf as Open
//! vSwitch's userspace conntrack uses it (Guido van Rooij's "Real Stateful
//! TCP Packet Filtering"): each end's highest sequence sent, the highest
//! the other end may send (its ack plus window), the largest window and
//! the window scale; a segment passes only inside those bounds.
//!
//! Invariant: [`TcpConn::update`] moves each end's state only forward
//! (CLOSED < SYN_SENT < ESTABLISHED < CLOSING < FIN_WAIT_2 < TIME_WAIT),
//! except that a SYN on a connection both ends have closed starts it anew
//! (the caller replaces the connection); the timeout class it returns is a
//! function of the two states.

use crate::tuple::Segment;
use crate::Timeout;

pub const FIN: u16 = 0x01;
pub const SYN: u16 = 0x02;
pub const RST: u16 = 0x04;
pub const PSH: u16 = 0x08;
pub const ACK: u16 = 0x10;
pub const URG: u16 = 0x20;

/// One end's state, in the order a connection goes through them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TcpState {
    #[default]
    Closed,
    SynSent,
    Established,
    Closing,
    FinWait2,
    TimeWait,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::Established => "ESTABLISHED",
            TcpState::Closing => "CLOSING",
            TcpState::FinWait2 => "FIN_WAIT_2",
            TcpState::TimeWait => "TIME_WAIT",
        }
    }
}

const WSCALE_SEEN: u8 = 0x80;
const WSCALE_UNKNOWN: u8 = 0x40;
const WSCALE_MASK: u8 = 0x0f;
/// How far an ACK may lag or lead what was sent (a window and a fudge).
const MAX_ACK_WINDOW: i64 = 0xffff + 1500;

/// One end of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Highest sequence number sent (plus one past the end).
    pub seqlo: u32,
    /// Highest sequence number the other end allows (its ack + window).
    pub seqhi: u32,
    /// Largest window seen, unscaled.
    pub max_win: u32,
    pub wscale: u8,
    pub state: TcpState,
}

/// Both ends: `[0]` the one that opened, `[1]` the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpConn {
    pub peer: [Peer; 2],
}

/// What a segment does to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// In window: the connection goes on, with this timeout.
    Valid(Timeout),
    /// Out of window or impossible flags: the segment is invalid.
    Invalid,
    /// A SYN after both ends closed: a new connection replaces this one.
    New,
}

/// Flag combinations no TCP sends (pf checks them when scrubbing).
pub fn invalid_flags(f: u16) -> bool {
    if f & SYN != 0 {
        if f & (RST | FIN) != 0 {
            return true;
        }
    } else if f & (ACK | RST) == 0 {
        return true;
    }
    f & ACK == 0 && f & (FIN | PSH | URG) != 0
}

/// May this segment open a connection? A SYN (not SYN+ACK), or a segment
/// of a connection already under way (picked up mid-stream).
pub fn valid_new(seg: &Segment) -> bool {
    !(invalid_flags(seg.flags) || seg.flags & (SYN | ACK) == SYN | ACK)
}

/// a < b in sequence space.
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
fn seq_geq(a: u32, b: u32) -> bool {
    !seq_lt(a, b)
}
fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

impl TcpConn {
    /// The connection its first segment opens.
    pub fn new(seg: &Segment) -> TcpConn {
        let mut c = TcpConn::default();
        let (src, dst) = c.peer.split_at_mut(1);
        let (src, dst) = (&mut src[0], &mut dst[0]);
        src.seqlo = seg.seq;
        src.seqhi = seg.seq.wrapping_add(seg.len).wrapping_add(1);
        if seg.flags & SYN != 0 {
            src.seqhi = src.seqhi.wrapping_add(1);
            src.wscale = seg.wscale.map_or(0, |w| w | WSCALE_SEEN);
        } else {
            // Picked up mid-stream: the scales are unknown.
            src.wscale = WSCALE_UNKNOWN;
            dst.wscale = WSCALE_UNKNOWN;
        }
        src.max_win = u32::from(seg.win).max(1);
        if src.wscale & WSCALE_MASK != 0 {
            let s = src.wscale & WSCALE_MASK;
            src.max_win = src.max_win.div_ceil(1 << s);
        }
        if seg.flags & FIN != 0 {
            src.seqhi = src.seqhi.wrapping_add(1);
        }
        dst.seqhi = 1;
        dst.max_win = 1;
        src.state = TcpState::SynSent;
        dst.state = TcpState::Closed;
        c
    }

    /// The timeout a new connection starts with.
    pub fn first_timeout() -> Timeout {
        Timeout::TcpFirst
    }

    /// A segment from the opener (`reply` false) or the other end.
    pub fn update(&mut self, seg: &Segment, reply: bool) -> Verdict {
        let (si, di) = if reply { (1, 0) } else { (0, 1) };
        let flags = seg.flags;
        if invalid_flags(flags) {
            return Verdict::Invalid;
        }
        let (mut src, mut dst) = (self.peer[si], self.peer[di]);
        if flags & (SYN | ACK) == SYN && dst.state >= TcpState::FinWait2 && src.state >= TcpState::FinWait2 {
            return Verdict::New;
        }
        let (mut sws, mut dws) = (0u8, 0u8);
        if src.wscale & WSCALE_SEEN != 0 && dst.wscale & WSCALE_SEEN != 0 && flags & SYN == 0 {
            sws = src.wscale & WSCALE_MASK;
            dws = dst.wscale & WSCALE_MASK;
        } else if src.wscale & WSCALE_UNKNOWN != 0 && dst.wscale & WSCALE_UNKNOWN != 0 && flags & SYN == 0 {
            sws = 14;
            dws = 14;
        }
        let mut win = u32::from(seg.win);
        let orig_seq = seg.seq;
        let mut seq = seg.seq;
        let mut ack = seg.ack;
        let mut end = seq.wrapping_add(seg.len);
        let mut check_ackskew = true;
        if flags & SYN != 0 {
            end = end.wrapping_add(1);
        }
        if flags & FIN != 0 {
            end = end.wrapping_add(1);
        }
        if src.state < TcpState::SynSent {
            // This end's first segment.
            if flags & SYN != 0 && dst.wscale & WSCALE_SEEN != 0 {
                src.wscale = seg.wscale.map_or(0, |w| w | WSCALE_SEEN);
                if src.wscale & WSCALE_SEEN != 0 {
                    sws = src.wscale & WSCALE_MASK;
                    win = win.div_ceil(1 << sws);
                    dws = dst.wscale & WSCALE_MASK;
                } else {
                    // The other end's window was scaled for nothing.
                    dst.max_win <<= dst.wscale & WSCALE_MASK;
                    dst.wscale = 0;
                }
            }
            src.seqlo = seq;
            src.state = TcpState::SynSent;
            let reach = end.wrapping_add(shl(dst.max_win, dws).max(1));
            if src.seqhi == 1 || seq_geq(reach, src.seqhi) {
                src.seqhi = reach;
                check_ackskew = false;
            }
            src.max_win = src.max_win.max(win);
        }
        if flags & ACK == 0 || (ack == 0 && flags & (ACK | RST) == ACK | RST) {
            // No ACK to check (or a stack that sends none with RST).
            ack = dst.seqlo;
        }
        if seq == end {
            // No data: ease the sequence checks.
            seq = src.seqlo;
            end = seq;
        }
        let ackskew = if check_ackskew { i64::from(dst.seqlo.wrapping_sub(ack) as i32) } else { 0 };
        let in_window = seq_geq(src.seqhi, end)
            && seq_geq(seq, src.seqlo.wrapping_sub(shl(dst.max_win, dws)))
            && ackskew >= -MAX_ACK_WINDOW
            && ackskew <= MAX_ACK_WINDOW << sws
            && (flags & RST == 0
                || orig_seq == src.seqlo
                || orig_seq == src.seqlo.wrapping_add(1)
                || orig_seq.wrapping_add(1) == src.seqlo);
        let verdict = if in_window {
            slide(&mut src, &mut dst, end, ack, win, sws);
            if flags & SYN != 0 && src.state < TcpState::SynSent {
                src.state = TcpState::SynSent;
            }
            if flags & FIN != 0 && src.state < TcpState::Closing {
                src.state = TcpState::Closing;
            }
            if flags & ACK != 0 {
                if dst.state == TcpState::SynSent {
                    dst.state = TcpState::Established;
                } else if dst.state == TcpState::Closing {
                    dst.state = TcpState::FinWait2;
                }
            }
            if flags & RST != 0 {
                src.state = TcpState::TimeWait;
                dst.state = TcpState::TimeWait;
            }
            Verdict::Valid(timeout_of(src.state, dst.state))
        } else if (dst.state < TcpState::SynSent || dst.state >= TcpState::FinWait2 || src.state >= TcpState::FinWait2)
            && seq_geq(src.seqhi.wrapping_add(MAX_ACK_WINDOW as u32), end)
            && seq_geq(seq, src.seqlo.wrapping_sub(MAX_ACK_WINDOW as u32))
        {
            // Loose: SYNs shotgunned before the other end answered, a
            // connection picked up after establishment, stray segments
            // after the close. The timeout is not refreshed.
            slide(&mut src, &mut dst, end, ack, win, sws);
            if flags & FIN != 0 && src.state < TcpState::Closing {
                src.state = TcpState::Closing;
            }
            if flags & RST != 0 {
                src.state = TcpState::TimeWait;
                dst.state = TcpState::TimeWait;
            }
            Verdict::Valid(Timeout::Keep)
        } else {
            return Verdict::Invalid;
        };
        self.peer[si] = src;
        self.peer[di] = dst;
        verdict
    }

    /// Both ends' states, opener first.
    pub fn states(&self) -> (TcpState, TcpState) {
        (self.peer[0].state, self.peer[1].state)
    }
}

/// A segment the window takes: the sender's largest window and highest
/// sequence sent grow, and what the other end may send slides to the
/// segment's ack plus its window.
fn slide(src: &mut Peer, dst: &mut Peer, end: u32, ack: u32, win: u32, sws: u8) {
    src.max_win = src.max_win.max(win);
    if seq_gt(end, src.seqlo) {
        src.seqlo = end;
    }
    if seq_geq(ack.wrapping_add(shl(win, sws)), dst.seqhi) {
        dst.seqhi = ack.wrapping_add(shl(win, sws).max(1));
    }
}

/// `v << s` without overflow (windows are at most 2^30).
fn shl(v: u32, s: u8) -> u32 {
    v.checked_shl(u32::from(s)).unwrap_or(u32::MAX).min(1 << 30)
}

/// The timeout class of a connection whose ends are in `a` and `b`.
pub fn timeout_of(a: TcpState, b: TcpState) -> Timeout {
    use TcpState::*;
    if a >= FinWait2 && b >= FinWait2 {
        Timeout::TcpClosed
    } else if a >= Closing && b >= Closing {
        Timeout::TcpFinWait
    } else if a < Established || b < Established {
        Timeout::TcpOpening
    } else if a >= Closing || b >= Closing {
        Timeout::TcpClosing
    } else {
        Timeout::TcpEstablished
    }
}
