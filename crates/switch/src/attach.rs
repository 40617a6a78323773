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

/// A change for the forwarding thread, with where to say it is done.
pub(crate) enum PortChange {
    Add(Attached, SyncSender<()>),
    Remove(u32, SyncSender<()>),
}

/// The forwarding thread's ports: the ports themselves, where each is by
/// OpenFlow number, and what it polls.
pub(crate) struct PortSet {
    pub ports: Vec<Attached>,
    pub by_ofport: FxHashMap<u32, usize>,
    pub pfds: Vec<libc::pollfd>,
}

impl PortSet {
    pub fn new(ports: Vec<Attached>) -> PortSet {
        let mut s = PortSet { ports, by_ofport: FxHashMap::default(), pfds: Vec::new() };
        s.reindex();
        s
    }

    fn reindex(&mut self) {
        self.by_ofport = self.ports.iter().enumerate().map(|(i, p)| (p.ofport, i)).collect();
        self.pfds = self
            .ports
            .iter()
            .filter_map(|p| p.io.fd())
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
    }

    /// Takes the changes waiting, saying each is done.
    pub fn take_changes(&mut self, sw: &Switch) {
        let waiting: Vec<PortChange> = {
            let rx = lock(&sw.port_changes.1);
            std::iter::from_fn(|| rx.try_recv().ok()).collect()
        };
        if waiting.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for c in waiting {
            match c {
                PortChange::Add(p, tx) => {
                    self.ports.push(p);
                    done.push(tx);
                }
                PortChange::Remove(ofport, tx) => {
                    if let Some(i) = self.ports.iter().position(|p| p.ofport == ofport) {
                        let mut p = self.ports.remove(i);
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

    /// Hands a change to the forwarding thread and waits until it is taken.
    fn hand_over(&self, make: impl FnOnce(SyncSender<()>) -> PortChange) {
        let (tx, rx) = sync_channel(1);
        if self.port_changes.0.send(make(tx)).is_ok() {
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
        self.hand_over(|tx| PortChange::Add(att, tx));
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
        self.hand_over(|tx| PortChange::Remove(info.ofport, tx));
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
