//! Ports added and removed while the switch runs (`kairo ctl add-port`,
//! `del-port`): the switch's list of ports, the hand-over of a port's socket
//! to the forwarding thread, the pipeline's port set (what FLOOD reaches)
//! and the PORT_STATUS that tells the controllers.
//!
//! Invariant: when `add_port` returns, the forwarding thread polls the new
//! port and the cache floods to it (the port-set change and its maintenance
//! are done); when `del_port` returns, nothing is sent to or read from the
//! removed port any more and fast-failover groups count it down. The
//! switch's list, the forwarding thread's and the pipeline's agree after
//! either returns; a failed request changes none of them.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Duration;

use kairo_maintain::FlowMod;
use kairo_ofp::message::ofppr;
use rustc_hash::FxHashMap;

use crate::port::Attached;
use crate::{lock, PortInfo, Switch};

/// Ports a switch holds at most (each is a socket and a poll entry).
pub const MAX_PORTS: usize = 1024;

/// How long a request waits for the forwarding thread to take a change (a
/// switch whose forwarding thread does not run answers after this).
const HANDOVER: Duration = Duration::from_secs(2);

/// A change for a forwarding thread, with where to say it is done: a port
/// to read and send to (`reads`), or only to send to (a handle of a port
/// another thread reads), or one to let go of.
pub(crate) enum PortChange {
    Add(Attached, bool, SyncSender<()>),
    Remove(u32, SyncSender<()>),
}

/// A forwarding thread's ports: the ports themselves (those it reads, and
/// send handles of the ports other threads read), where each is by
/// OpenFlow number, which it reads, and what it polls.
pub(crate) struct PortSet {
    pub ports: Vec<Attached>,
    pub reads: Vec<bool>,
    pub by_ofport: FxHashMap<u32, usize>,
    pub pfds: Vec<libc::pollfd>,
}

impl PortSet {
    /// The ports `read` (read and sent to) and `send` (sent to only).
    pub fn new(read: Vec<Attached>, send: Vec<Attached>) -> PortSet {
        let reads = read.iter().map(|_| true).chain(send.iter().map(|_| false)).collect();
        let ports = read.into_iter().chain(send).collect();
        let mut s = PortSet { ports, reads, by_ofport: FxHashMap::default(), pfds: Vec::new() };
        s.reindex();
        s
    }

    fn reindex(&mut self) {
        self.by_ofport = self.ports.iter().enumerate().map(|(i, p)| (p.ofport, i)).collect();
        self.pfds = self
            .ports
            .iter()
            .zip(&self.reads)
            .filter(|(_, r)| **r)
            .flat_map(|(p, _)| p.io.fds())
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
    }

    /// Takes the changes waiting on `rx`, saying each is done.
    pub fn take_changes(&mut self, rx: &std::sync::mpsc::Receiver<PortChange>) {
        let waiting: Vec<PortChange> = rx.try_iter().collect();
        if waiting.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for c in waiting {
            match c {
                PortChange::Add(p, reads, tx) => {
                    self.ports.push(p);
                    self.reads.push(reads);
                    done.push(tx);
                }
                PortChange::Remove(ofport, tx) => {
                    if let Some(i) = self.ports.iter().position(|p| p.ofport == ofport) {
                        let mut p = self.ports.remove(i);
                        self.reads.remove(i);
                        p.io.flush();
                    }
                    done.push(tx);
                }
            }
        }
        self.reindex();
        for tx in done {
            let _ = tx.try_send(());
        }
    }
}

impl Switch {
    /// The switch's ports now.
    pub fn ports(&self) -> Vec<PortInfo> {
        self.ports.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The OpenFlow numbers of the switch's ports.
    fn ofports(&self) -> Vec<u32> {
        self.ports().iter().map(|p| p.ofport).collect()
    }

    /// Hands a change to each forwarding thread (`make(thread, done)`,
    /// None: nothing for that one) and waits until each has taken it.
    fn hand_over(&self, mut make: impl FnMut(usize, SyncSender<()>) -> Option<PortChange>) {
        let senders = lock(&self.port_changes).clone();
        let mut waits = Vec::new();
        for (t, to) in senders.iter().enumerate() {
            let (tx, rx) = sync_channel(1);
            if let Some(c) = make(t, tx) {
                if to.send(c).is_ok() {
                    waits.push(rx);
                }
            }
        }
        for rx in waits {
            let _ = rx.recv_timeout(HANDOVER);
        }
    }

    /// The lowest OpenFlow port number no port has, from 1.
    pub fn free_ofport(&self) -> u32 {
        let used = self.ofports();
        (1..).find(|n| !used.contains(n)).unwrap_or(1)
    }

    /// Adds a port (its number and name not in use): the forwarding thread
    /// takes it, FLOOD reaches it (with the maintenance that takes), and
    /// the controllers hear PORT_STATUS ADD.
    pub fn add_port(&self, att: Attached) -> Result<(), String> {
        let info = att.info();
        {
            let mut ps = self.ports.write().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = ps.iter().find(|p| p.ofport == info.ofport || p.name == info.name) {
                return Err(format!("port {}({}) exists already", p.ofport, p.name));
            }
            if ps.len() >= MAX_PORTS {
                return Err(format!("the switch has {MAX_PORTS} ports, the most it takes"));
            }
            ps.push(info.clone());
        }
        // The first forwarding thread reads it; the others get handles to
        // send to it (or, where the port has none, send nothing to it).
        let threads = lock(&self.port_changes).len();
        if threads == 0 {
            // Not forwarding yet: forwarding takes it when it starts.
            lock(&self.early_ports).push(att);
            return self.announce_added(info);
        }
        let mut handles: Vec<Option<Attached>> = (1..threads).map(|_| att.send_handle()).collect();
        let mut att = Some(att);
        self.hand_over(|t, tx| match t {
            0 => att.take().map(|a| PortChange::Add(a, true, tx)),
            t => handles.get_mut(t - 1)?.take().map(|a| PortChange::Add(a, false, tx)),
        });
        self.announce_added(info)
    }

    /// What follows a port's hand-over: FLOOD reaches it (with the
    /// maintenance that takes) and the controllers hear PORT_STATUS ADD.
    fn announce_added(&self, info: PortInfo) -> Result<(), String> {
        let desc = crate::openflow::ports::port_desc(&info);
        let live = crate::openflow::ports::live(&desc);
        // Neither a port set nor a liveness can be refused.
        let _ = self
            .apply(&FlowMod::Bundle(vec![FlowMod::SetPorts(self.ofports()), FlowMod::SetPortLive(info.ofport, live)]));
        self.housekeep();
        if let Some(of) = self.openflow.get() {
            lock(&of.ports_seen).push(desc.clone());
            of.outboxes.port_status(ofppr::ADD, desc);
        }
        Ok(())
    }

    /// Removes a port named by number or name: nothing is sent to or read
    /// from it any more, FLOOD no longer reaches it and fast failover
    /// counts it down (with the maintenance that takes), and the
    /// controllers hear PORT_STATUS DELETE.
    pub fn del_port(&self, which: &str) -> Result<(), String> {
        let info = {
            let mut ps = self.ports.write().unwrap_or_else(|e| e.into_inner());
            let i = ps
                .iter()
                .position(|p| p.name == which || which.parse::<u32>().is_ok_and(|n| n == p.ofport))
                .ok_or_else(|| format!("no port `{which}` (ports are named by number or name)"))?;
            ps.remove(i)
        };
        lock(&self.early_ports).retain(|p| p.ofport != info.ofport);
        self.hand_over(|_, tx| Some(PortChange::Remove(info.ofport, tx)));
        let gone = FlowMod::Bundle(vec![FlowMod::SetPorts(self.ofports()), FlowMod::SetPortLive(info.ofport, false)]);
        let _ = self.apply(&gone);
        self.housekeep();
        if let Some(of) = self.openflow.get() {
            let desc = crate::openflow::ports::port_desc(&info);
            lock(&of.ports_seen).retain(|d| d.port_no != desc.port_no);
            of.outboxes.port_status(ofppr::DELETE, desc);
        }
        Ok(())
    }
}
