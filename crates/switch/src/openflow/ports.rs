//! Ports over OpenFlow: their descriptions (PORT_DESC, PORT_STATUS), PORT_MOD
//! of their configuration bits, and the watch that tells the controllers
//! when a port's link state or configuration changes, and keeps the
//! pipeline's port liveness (fast-failover groups) in line with both.
//!
//! Invariant: every connection that asks for port-status messages (its
//! async configuration) hears of every change to a port's description the
//! watch or a PORT_MOD makes, once, in the order they were seen. The
//! configuration bits act in the forwarding loop: `no_recv` drops what the
//! port receives, `no_fwd` what would leave through it, `no_packet_in` the
//! packet-ins it would cause; `port_down` does both of the first two (kairo
//! does not change the kernel interface's administrative state; Open vSwitch
//! does).

use kairo_ofp::error::{Error, ErrorCode};
use kairo_ofp::message::{ofppc, ofppr, PortDesc, PortMod, OFPPS_LINK_DOWN};
use kairo_ofp::port;
use std::sync::atomic::Ordering;

use crate::{PortInfo, Switch};

/// The configuration bits PORT_MOD may change.
pub const SETTABLE: u32 = ofppc::PORT_DOWN | ofppc::NO_RECV | ofppc::NO_FWD | ofppc::NO_PACKET_IN;

/// A port as OpenFlow describes it: its kernel interface's address and link
/// state where it has one, its configuration bits.
pub fn port_desc(p: &PortInfo) -> PortDesc {
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", p.name))
        .ok()
        .and_then(|a| kairo_flow::parse::parse_mac(a.trim()))
        .unwrap_or(0);
    let mut hw_addr = [0u8; 6];
    hw_addr.copy_from_slice(&mac.to_be_bytes()[2..]);
    // Link up: operstate "up", or "unknown" (interfaces that report no
    // carrier, as TAP devices may); "down" and "lowerlayerdown" (a veth
    // whose peer is down) are down. Ports without an interface are up.
    let up = std::fs::read_to_string(format!("/sys/class/net/{}/operstate", p.name))
        .map(|s| matches!(s.trim(), "up" | "unknown"))
        .unwrap_or(true);
    PortDesc {
        port_no: port::to_wire(p.ofport),
        hw_addr,
        name: p.name.clone(),
        config: p.counters.config.load(Ordering::Relaxed),
        state: if up { 0 } else { OFPPS_LINK_DOWN },
        curr: 0,
        advertised: 0,
        supported: 0,
        peer: 0,
        curr_speed: 0,
        max_speed: 0,
    }
}

/// A PORT_MOD, applied; the port's new description for PORT_STATUS.
pub fn port_mod(sw: &Switch, pm: &PortMod) -> Result<PortDesc, Error> {
    let ofport = port::from_wire(pm.port_no).map_err(|e| Error::new(ErrorCode::PORT_MOD_BAD_PORT, e.detail))?;
    let ports = sw.ports();
    let p = ports
        .iter()
        .find(|p| p.ofport == ofport)
        .ok_or_else(|| Error::new(ErrorCode::PORT_MOD_BAD_PORT, format!("port {ofport} does not exist")))?;
    let desc = port_desc(p);
    if desc.hw_addr != pm.hw_addr {
        return Err(Error::new(
            ErrorCode::PORT_MOD_BAD_HW_ADDR,
            format!("port {ofport}: hw_addr {:02x?} is not the port's {:02x?}", pm.hw_addr, desc.hw_addr),
        ));
    }
    if pm.mask & !SETTABLE != 0 {
        return Err(Error::new(
            ErrorCode::PORT_MOD_BAD_CONFIG,
            format!(
                "port {ofport}: config bits {:#x} (kairo sets port_down, no_recv, no_fwd, no_packet_in)",
                pm.mask & !SETTABLE
            ),
        ));
    }
    let c = &p.counters.config;
    let old = c.load(Ordering::Relaxed);
    c.store((old & !pm.mask) | (pm.config & pm.mask), Ordering::Relaxed);
    let desc = port_desc(p);
    follow_liveness(sw, ofport, &desc);
    Ok(desc)
}

/// Whether a port counts as live for fast-failover groups, as Open vSwitch
/// decides it: not configured down and its link up.
pub(crate) fn live(d: &PortDesc) -> bool {
    d.config & ofppc::PORT_DOWN == 0 && d.state & OFPPS_LINK_DOWN == 0
}

/// Brings the pipeline's idea of the port's liveness in line with its
/// description: a change is an update like any other, and maintenance
/// re-translates the entries whose fast-failover choice it can change.
fn follow_liveness(sw: &Switch, ofport: u32, d: &PortDesc) {
    let want = live(d);
    if sw.ctl.lock().pipeline().port_live(ofport) != want {
        // Setting a port's liveness cannot fail.
        let _ = sw.apply(&kairo_maintain::FlowMod::SetPortLive(ofport, want));
    }
}

/// Tells every connection that wants it that `desc` changed.
pub fn announce(sw: &Switch, desc: PortDesc) {
    if let Some(of) = sw.openflow.get() {
        of.outboxes.port_status(ofppr::MODIFY, desc.clone());
        let mut seen = crate::lock(&of.ports_seen);
        if let Some(s) = seen.iter_mut().find(|s| s.port_no == desc.port_no) {
            *s = desc;
        }
    }
}

/// Compares each port's description with the last one seen, announcing
/// the changes (a link going down or up). Called about once a second.
pub fn watch(sw: &Switch) {
    let ports = sw.ports();
    let now: Vec<PortDesc> = ports.iter().map(port_desc).collect();
    for (p, d) in ports.iter().zip(&now) {
        follow_liveness(sw, p.ofport, d);
    }
    let Some(of) = sw.openflow.get() else { return };
    let changed: Vec<PortDesc> = {
        let mut seen = crate::lock(&of.ports_seen);
        let changed = now.iter().filter(|d| !seen.contains(d)).cloned().collect();
        *seen = now;
        changed
    };
    for d in changed {
        of.outboxes.port_status(ofppr::MODIFY, d);
    }
}
