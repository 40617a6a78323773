//! The Open vSwitch column of `kairo bench openflow`: the same update stream
//! over the same kind of OpenFlow connection to a private Open vSwitch
//! ([`crate::ovs`]) whose cache holds the same traffic, measuring per update
//! the barrier round trip and the stale window: from sending the flow-mod
//! until a packet of a cached flow that the update re-routes leaves by its
//! new port.
//!
//! How the stale window is probed: before each update, kairo's translator
//! (on a copy of the pipeline, before and after the update) picks packets
//! of the filled traffic whose forwarding the update changes, with every
//! port each can leave by afterwards (every bucket of a select group, which
//! Open vSwitch hashes its own way). Each is sent into Open vSwitch
//! (`netdev-dummy/receive`) once before the update to see where it goes
//! there (its transmit counters, `ovs-ofctl dump-ports`); the first that
//! leaves by none of its new ports is the probe. After sending the
//! update, the packet is sent again and again until a new port's counter
//! moves. Each probe costs two tool runs (a few milliseconds): that is the
//! resolution, and it is reported. Updates that re-route no packet of the
//! traffic that way have no probe and no stale window.
//!
//! Invariant: a stale window is reported only for an update whose probe
//! packet was seen leaving by the new port (or, after the time limit,
//! counted as reaching it), and every figure is from this run.

use std::time::{Duration, Instant};

use kairo_flow::{Field, FlowKey};
use kairo_maintain::flowmod::{apply, FlowMod};
use kairo_ofp::{Message, Version};
use kairo_switch::openflow::client::Client;
use kairo_switch::openflow::Target;
use kairo_xlate::Pipeline;

use crate::ovs::PrivateOvs;
use crate::quantile;

/// How long a stale window is probed at most.
pub const STALE_LIMIT: Duration = Duration::from_secs(3);

/// Open vSwitch given the same stream.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OvsRow {
    pub version: String,
    /// Packets of the workload's traffic sent to fill its cache, and the
    /// megaflows it then held.
    pub packets: usize,
    pub megaflows: usize,
    /// The megaflows kairo's datapath holds for the same packets (every
    /// pass of each, from an empty cache without a flow limit).
    pub kairo_megaflows: usize,
    pub rules: usize,
    pub updates: usize,
    pub rtt_median_us: f64,
    pub rtt_p99_us: f64,
    /// Updates that re-routed a cached packet (probed), and of those how
    /// many were still stale at the time limit.
    pub probed: usize,
    pub timed_out: usize,
    pub stale_median_ms: f64,
    pub stale_p99_ms: f64,
    /// Median time of one probe (the resolution of the stale window).
    pub probe_median_ms: f64,
}

/// The megaflows kairo's datapath makes for `keys` sent as frames (parsed
/// back, as Open vSwitch gets them), every pass of each, from an empty
/// cache without a flow limit.
fn kairo_megaflows(p: &Pipeline, keys: &[FlowKey]) -> usize {
    let cfg = kairo_datapath::DpConfig { flow_limit: usize::MAX, emc_insert_inv_prob: 0, ..Default::default() };
    let mut dp = kairo_datapath::Datapath::new(cfg);
    let mut slow = kairo_maintain::shared::Translate(p);
    for k in keys {
        let frame = kairo_wire::emit::frame(k, &[0; 16]);
        let key = kairo_wire::parse(&frame, k.get(Field::InPort) as u32).0;
        dp.process_key_passes(&key, frame.len() as u64, 0, &mut slow);
    }
    dp.n_flows()
}

/// How many ports (1..N) a bridge needs for `keys`: every port they come
/// in on, the first 2,000 go out of, or a group's bucket outputs to.
pub(crate) fn ports_used(p: &Pipeline, keys: &[FlowKey]) -> u32 {
    let buckets = p.groups().flat_map(|g| g.buckets.iter()).flat_map(|b| b.actions.iter()).filter_map(|a| match a {
        kairo_ofproto::Action::Output(port) => Some(*port),
        _ => None,
    });
    keys.iter()
        .map(|k| k.get(Field::InPort) as u32)
        .chain(keys.iter().take(2000).flat_map(|k| out_ports(p, k)))
        .chain(buckets)
        .filter(|&n| n < 0xff00)
        .max()
        .unwrap_or(1)
}

/// A key's packet as `netdev-dummy/receive` takes it: the frame in hex.
pub(crate) fn packet_hex(k: &FlowKey) -> String {
    frame_hex(&kairo_wire::emit::frame(k, &[0; 16]))
}

/// A frame as `netdev-dummy/receive` takes it: in hex.
pub(crate) fn frame_hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a key's packet leaves, over every pass it takes (recirculations
/// followed): each port and the packet sent there.
fn forwarding(p: &Pipeline, k: &FlowKey) -> Vec<kairo_xlate::odp::Emitted> {
    kairo_xlate::recirc::follow(p, k)
        .iter()
        .flat_map(|pass| kairo_xlate::odp::apply(&pass.result.actions, &pass.key))
        .filter(|(port, _)| *port != kairo_xlate::odp::RECIRC_PORT)
        .collect()
}

/// The ports a key's packet leaves by (every pass).
fn out_ports(p: &Pipeline, k: &FlowKey) -> Vec<u32> {
    let mut v: Vec<u32> = forwarding(p, k).into_iter().map(|(port, _)| port).filter(|&p| p != u32::MAX).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Every way a key's packet can leave: its forwarding, or where it goes
/// through a select group of several buckets (Open vSwitch hashes its
/// packets with its own hash, so it may choose other buckets than kairo),
/// its forwarding with each bucket in turn. `None` for paths through two
/// such groups.
pub(crate) fn alternatives(p: &Pipeline, k: &FlowKey) -> Option<Vec<Vec<kairo_xlate::odp::Emitted>>> {
    let mut hashed: Vec<u32> = kairo_xlate::recirc::follow(p, k)
        .iter()
        .flat_map(|pass| pass.result.traversal.groups.iter().map(|g| g.group).collect::<Vec<_>>())
        .filter(|&g| p.group(g).is_some_and(|gr| gr.ty == kairo_ofproto::GroupType::Select && gr.buckets.len() > 1))
        .collect();
    hashed.sort_unstable();
    hashed.dedup();
    match hashed.as_slice() {
        [] => Some(vec![forwarding(p, k)]),
        [g] => {
            let group = p.group(*g)?;
            let mut all = Vec::new();
            for b in &group.buckets {
                let mut one = (**group).clone();
                one.buckets = vec![b.clone()];
                let mut q = p.clone();
                q.set_group(one).ok()?;
                all.push(forwarding(&q, k));
            }
            Some(all)
        }
        _ => None,
    }
}

/// Every port a key's packet can leave by ([`alternatives`]). `None` for
/// paths through two select groups, and where a bucket sends the packet
/// nowhere (back to its own port, say: it would hide the new path from a
/// probe).
pub(crate) fn possible_ports(p: &Pipeline, k: &FlowKey) -> Option<Vec<u32>> {
    let alts = alternatives(p, k)?;
    let ports_of = |e: &[kairo_xlate::odp::Emitted]| -> Vec<u32> {
        let mut v: Vec<u32> = e.iter().map(|(port, _)| *port).filter(|&p| p != u32::MAX).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if alts.len() > 1 && alts.iter().any(|a| ports_of(a).is_empty()) {
        return None;
    }
    let mut ports: Vec<u32> = alts.iter().flat_map(|a| ports_of(a)).collect();
    ports.sort_unstable();
    ports.dedup();
    Some(ports)
}

/// Up to eight packets of `keys` whose forwarding `fm` changes, each with
/// every port it can leave by after the update.
pub(crate) fn probes_for(before: &Pipeline, fm: &FlowMod, keys: &[FlowKey]) -> Vec<(FlowKey, Vec<u32>)> {
    let mut after = before.clone();
    if apply(&mut after, fm).is_err() {
        return Vec::new();
    }
    keys.iter()
        .filter(|k| forwarding(before, k) != forwarding(&after, k))
        .filter_map(|k| Some((*k, possible_ports(&after, k).filter(|n| !n.is_empty())?)))
        .take(8)
        .collect()
}

/// Every port's transmit counter, by asking the switch.
fn tx_all(ovs: &PrivateOvs, target: &str) -> std::collections::BTreeMap<u32, u64> {
    let text = ovs.run("ovs-ofctl", &["-O", "OpenFlow13", "dump-ports", target]).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    let mut port = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("port ") {
            port = rest.split(':').next().and_then(|n| n.trim().parse::<u32>().ok());
        } else if let (Some(p), Some(rest)) = (port, l.strip_prefix("tx pkts=")) {
            if let Some(n) = rest.split(',').next().and_then(|n| n.parse().ok()) {
                out.insert(p, n);
            }
        }
    }
    out
}

/// Injects `hex` on port `name` and waits (up to 200 ms) until some port's
/// transmit counter moves: the ports the packet left by (empty if none did).
fn egress(ovs: &PrivateOvs, target: &str, name: &str, hex: &str) -> Result<Vec<u32>, String> {
    let before = tx_all(ovs, target);
    ovs.appctl(&["netdev-dummy/receive", name, hex])?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(200) {
        let now = tx_all(ovs, target);
        let moved: Vec<u32> =
            now.iter().filter(|(p, n)| before.get(p).is_none_or(|b| *n > b)).map(|(p, _)| *p).collect();
        if !moved.is_empty() {
            return Ok(moved);
        }
    }
    Ok(Vec::new())
}

/// Runs the stream against a private Open vSwitch whose cache holds the
/// first `fill` packets of `keys`; `msgs[i]` is `mods[i]` on the wire.
#[allow(clippy::too_many_arguments)]
pub fn run(
    wl: &crate::ttu::Workload,
    p: &Pipeline,
    mods: &[FlowMod],
    msgs: &[Vec<Message>],
    keys: &[FlowKey],
    v: Version,
    progress: bool,
) -> Result<OvsRow, String> {
    if !crate::ovs::available() {
        return Err("Open vSwitch is not installed here (scripts/ovs/install-ovs.sh installs it)".into());
    }
    let ovs = PrivateOvs::start()?;
    // Every port the traffic comes in on or the pipeline sends to.
    let n_ports = ports_used(p, keys);
    let mgmt = ovs.bridge("br0", &wl.flows, &wl.groups, n_ports)?;
    let target = format!("unix:{}", mgmt.display());
    crate::ttu_ovs::fill(&ovs, keys, progress)?;
    let megaflows = ovs.megaflows();
    let kairo_megaflows = kairo_megaflows(p, keys);
    // Each update's candidate probes, chosen before the connection opens (a
    // connection quiet for a minute is closed: choosing over every packet
    // and pass can take that long). The pipeline each is chosen on had
    // every earlier update (an update Open vSwitch accepted applies here
    // too: kairo's switch accepted the same stream).
    let mut pipeline = p.clone();
    let mut candidates = Vec::with_capacity(mods.len());
    for fm in mods {
        candidates.push(probes_for(&pipeline, fm, keys));
        let _ = apply(&mut pipeline, fm);
    }
    let mut client = Client::connect(&Target::ActiveUnix(mgmt), v).map_err(|e| format!("Open vSwitch: {e}"))?;
    let pb = crate::progress_bar(progress, msgs.len() as u64, format!("{} updates to Open vSwitch", msgs.len()));
    let (mut rtts, mut stale, mut probes) = (Vec::new(), Vec::new(), Vec::new());
    let mut timed_out = 0;
    for (i, m) in msgs.iter().enumerate() {
        // The probe, and where Open vSwitch sends it before the update
        // (observed): a probe whose new ports it already reaches tells nothing.
        let mut probe = None;
        for (k, new) in std::mem::take(&mut candidates[i]) {
            let old = egress(&ovs, &target, &format!("p{}", k.get(Field::InPort)), &packet_hex(&k))?;
            if !old.is_empty() && !old.iter().any(|p| new.contains(p)) {
                probe = Some((k, new));
                break;
            }
        }
        let base = tx_all(&ovs, &target);
        let t0 = Instant::now();
        client
            .call(m)
            .map_err(|e| format!("Open vSwitch, update {i} ({}): {e}{}", wl.updates[i].0, ovs.last_complaint()))?;
        rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        if let Some((k, new)) = probe {
            let (name, hex) = (format!("p{}", k.get(Field::InPort)), packet_hex(&k));
            let reached = |now: &std::collections::BTreeMap<u32, u64>| {
                new.iter().any(|p| now.get(p).copied().unwrap_or(0) > base.get(p).copied().unwrap_or(0))
            };
            loop {
                let tp = Instant::now();
                ovs.appctl(&["netdev-dummy/receive", &name, &hex])?;
                let now = tx_all(&ovs, &target);
                probes.push(tp.elapsed().as_secs_f64() * 1e3);
                if reached(&now) {
                    stale.push(t0.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                if t0.elapsed() > STALE_LIMIT {
                    timed_out += 1;
                    stale.push(t0.elapsed().as_secs_f64() * 1e3);
                    break;
                }
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let rules = ovs
        .run("ovs-ofctl", &["-O", "OpenFlow13", "dump-aggregate", &target])
        .ok()
        .and_then(|t| t.split("flow_count=").nth(1).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0);
    let q = |v: &mut Vec<f64>, x| if v.is_empty() { f64::NAN } else { quantile(v, x) };
    Ok(OvsRow {
        version: crate::ovs::version().unwrap_or_default(),
        packets: keys.len(),
        megaflows,
        kairo_megaflows,
        rules,
        updates: rtts.len(),
        rtt_median_us: q(&mut rtts.clone(), 0.5),
        rtt_p99_us: q(&mut rtts, 0.99),
        probed: stale.len(),
        timed_out,
        stale_median_ms: q(&mut stale.clone(), 0.5),
        stale_p99_ms: q(&mut stale, 0.99),
        probe_median_ms: q(&mut probes, 0.5),
    })
}
