//! Timeouts: the classes a connection's timeout comes from (Open vSwitch's
//! userspace defaults), and one list per class of the connections in it,
//! oldest refresh first.
//!
//! Invariant: every live connection is on exactly one list, its class's;
//! a class has one timeout, so each list is in expiry order and the
//! connections due are a prefix of each list: expiring is popping prefixes,
//! a bounded number per call, never a walk of the table. Links are slab
//! indices (an intrusive doubly linked list): moving a connection to the
//! back on a refresh is O(1) and allocates nothing.

/// Where a connection's timeout comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// TCP: only the opener has sent (SYN_SENT).
    TcpFirst,
    /// TCP: not established both ways yet (SYN_RECV).
    TcpOpening,
    TcpEstablished,
    /// TCP: one end has sent FIN (FIN_WAIT).
    TcpClosing,
    /// TCP: both ends have sent FIN (TIME_WAIT).
    TcpFinWait,
    /// TCP: both ends closed or reset (CLOSE).
    TcpClosed,
    /// UDP and others: one packet seen.
    OtherFirst,
    /// More packets, one direction only.
    OtherMultiple,
    /// Both directions seen.
    OtherBidir,
    IcmpFirst,
    IcmpReply,
    /// Leave the timeout as it is (a segment pf accepts loosely).
    Keep,
}

/// The classes that have lists ([`Timeout::Keep`] is not one).
pub const CLASSES: [Timeout; 11] = [
    Timeout::TcpFirst,
    Timeout::TcpOpening,
    Timeout::TcpEstablished,
    Timeout::TcpClosing,
    Timeout::TcpFinWait,
    Timeout::TcpClosed,
    Timeout::OtherFirst,
    Timeout::OtherMultiple,
    Timeout::OtherBidir,
    Timeout::IcmpFirst,
    Timeout::IcmpReply,
];

impl Timeout {
    /// Its list's index.
    pub fn index(self) -> usize {
        CLASSES.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// Open vSwitch's default for the class, in seconds (its userspace
    /// datapath's default timeout policy).
    pub fn default_secs(self) -> u64 {
        match self {
            Timeout::TcpFirst | Timeout::TcpOpening => 30,
            Timeout::TcpEstablished => 24 * 60 * 60,
            Timeout::TcpClosing => 15 * 60,
            Timeout::TcpFinWait => 45,
            Timeout::TcpClosed => 30,
            Timeout::OtherFirst | Timeout::OtherMultiple => 60,
            Timeout::OtherBidir => 30,
            Timeout::IcmpFirst => 60,
            Timeout::IcmpReply => 30,
            Timeout::Keep => 0,
        }
    }

    /// The name `dump-conntrack` shows.
    pub fn name(self) -> &'static str {
        match self {
            Timeout::TcpFirst => "tcp_syn_sent",
            Timeout::TcpOpening => "tcp_syn_recv",
            Timeout::TcpEstablished => "tcp_established",
            Timeout::TcpClosing => "tcp_fin_wait",
            Timeout::TcpFinWait => "tcp_time_wait",
            Timeout::TcpClosed => "tcp_close",
            Timeout::OtherFirst => "udp_first",
            Timeout::OtherMultiple => "udp_single",
            Timeout::OtherBidir => "udp_multiple",
            Timeout::IcmpFirst => "icmp_first",
            Timeout::IcmpReply => "icmp_reply",
            Timeout::Keep => "keep",
        }
    }
}

pub(crate) const NIL: u32 = u32::MAX;

/// A connection's place on its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub prev: u32,
    pub next: u32,
    pub class: usize,
}

/// The heads and tails of the lists, one per class.
#[derive(Clone, Debug)]
pub(crate) struct Lists {
    pub head: [u32; CLASSES.len()],
    pub tail: [u32; CLASSES.len()],
}

impl Default for Lists {
    fn default() -> Lists {
        Lists { head: [NIL; CLASSES.len()], tail: [NIL; CLASSES.len()] }
    }
}

/// Storage whose slots carry a [`Link`] each.
pub(crate) trait Slots {
    fn link(&self, i: u32) -> Link;
    fn set_link(&mut self, i: u32, l: Link);
}

impl Lists {
    /// Appends slot `i` to the back of `class`'s list.
    pub fn push_back(&mut self, s: &mut impl Slots, i: u32, class: usize) {
        let tail = self.tail[class];
        s.set_link(i, Link { prev: tail, next: NIL, class });
        if tail == NIL {
            self.head[class] = i;
        } else {
            let mut t = s.link(tail);
            t.next = i;
            s.set_link(tail, t);
        }
        self.tail[class] = i;
    }

    /// Takes slot `i` off its list.
    pub fn unlink(&mut self, s: &mut impl Slots, i: u32) {
        let l = s.link(i);
        if l.prev == NIL {
            self.head[l.class] = l.next;
        } else {
            let mut p = s.link(l.prev);
            p.next = l.next;
            s.set_link(l.prev, p);
        }
        if l.next == NIL {
            self.tail[l.class] = l.prev;
        } else {
            let mut n = s.link(l.next);
            n.prev = l.prev;
            s.set_link(l.next, n);
        }
        s.set_link(i, Link { prev: NIL, next: NIL, class: l.class });
    }
}
