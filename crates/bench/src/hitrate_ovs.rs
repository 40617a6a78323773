//! Open vSwitch in `kairo bench hitrate` (`--engines ovs`): the KAIRO
//! poster's Figure 2 was measured in Open vSwitch, and here it is measured
//! in this run's own, beside kairo's engines, for the same stream.
//!
//! For each cache limit a private Open vSwitch 3.1 ([`crate::ovs`]) is
//! loaded with the workload's flows and groups, its EMC off (every hit a
//! megaflow's, as kairo's figure), its datapath flow limit set to the limit
//! and periodic revalidation held off (so nothing is evicted and the limit
//! does not move: Open vSwitch, like kairo's datapath, forwards a miss
//! without installing once full). The stream goes in as frames, in its
//! order within windows of [`WINDOW`] frames (a window is sent port by port
//! and taken whole before the next: with a limit, order decides which flows
//! get in). Hits and misses are its datapath's lookup counters (a miss at
//! the limit is forwarded without a megaflow and counted `lost` by Open
//! vSwitch: a miss here too). Its limit is approximate: its handlers read
//! the datapath's flow count at most every 100 ms, so a fast stream
//! overshoots it (the entries column says by how much); the stream pauses
//! [`SETTLE`] between windows so that they read it, and the overshoot is
//! at most about a window (sent at once, a stream of a few windows could
//! go in whole before the first read). Then the
//! same update stream goes over OpenFlow, each update's stale window
//! measured as `kairo bench ttu --engines ovs` does
//! (`ttu_ovs::update_round`).
//!
//! Invariant: every figure of a point is from that point's Open vSwitch,
//! given the same packets and updates as kairo's engines at that limit.

use kairo_flow::{Field, FlowKey};
use kairo_maintain::FlowMod;
use kairo_ofp::Version;
use kairo_switch::openflow::client::{to_messages, Client};
use kairo_switch::openflow::Target;
use kairo_xlate::Pipeline;

use crate::openflow_ovs::packet_hex;
use crate::ovs::PrivateOvs;
use crate::ttu::Workload;

/// Frames per window of the stream (see the module doc).
pub const WINDOW: usize = 1000;

/// The pause between windows: longer than the 100 ms within which Open
/// vSwitch's handlers read the datapath's flow count again.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(120);

/// Open vSwitch at one cache limit.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OvsPoint {
    /// Megaflows its datapath held after the stream.
    pub entries: usize,
    /// Of its lookups (every pass of every packet), those that hit.
    pub hit_rate_pct: f64,
    /// Lookups that missed (upcalls), installed or not.
    pub misses: u64,
    /// Of those, upcalls not installed (the limit reached: Open vSwitch's
    /// `lost`, though the packet is forwarded).
    pub not_installed: u64,
    /// Median stale window of the updates that started a revalidation round.
    pub ttu_median_us: f64,
    /// Updates that started no round (counted apart, not a figure).
    pub no_round: usize,
}

/// Runs `stream` and then `mods` through a private Open vSwitch whose
/// datapath holds at most `limit` megaflows.
pub fn point(
    wl: &Workload,
    p: &Pipeline,
    stream: &[FlowKey],
    limit: usize,
    mods: &[FlowMod],
    progress: bool,
) -> Result<OvsPoint, String> {
    let ovs = PrivateOvs::start()?;
    let n_ports = crate::openflow_ovs::ports_used(p, stream);
    let mgmt = ovs.bridge("br0", &wl.flows, &wl.groups, n_ports)?;
    ovs.emc_off()?;
    ovs.hold_revalidation(limit)?;
    let (hit0, missed0, lost0) = ovs.lookups()?;
    let frames: Vec<(String, String)> =
        stream.iter().map(|k| (format!("p{}", k.get(Field::InPort)), packet_hex(k))).collect();
    let pb = crate::progress_bar(
        progress,
        frames.len() as u64,
        format!("{} packets into Open vSwitch, limit {limit}", frames.len()),
    );
    ovs.receive_in_order(&frames, WINDOW, SETTLE, &|n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let (hit, missed, lost) = ovs.lookups()?;
    let (hits, not_installed) = (hit - hit0, lost - lost0);
    let misses = missed - missed0 + not_installed;
    let entries = ovs.megaflows();
    let v = Version::V1_3;
    let mut client = Client::connect(&Target::ActiveUnix(mgmt), v).map_err(|e| format!("Open vSwitch: {e}"))?;
    let (mut stale, mut rounds, mut no_round) = (Vec::new(), Vec::new(), 0);
    for (i, fm) in mods.iter().enumerate() {
        let m = to_messages(fm, v).map_err(|e| e.to_string())?;
        let longest = rounds.iter().copied().fold(0.0, f64::max);
        match crate::ttu_ovs::update_round(&ovs, &mut client, &m, longest)
            .map_err(|e| format!("Open vSwitch, update {i} at limit {limit}: {e}"))?
            .1
        {
            Some((us, ms)) => {
                stale.push(us);
                rounds.push(ms);
            }
            None => no_round += 1,
        }
    }
    Ok(OvsPoint {
        entries,
        hit_rate_pct: 100.0 * hits as f64 / (hits + misses).max(1) as f64,
        misses,
        not_installed,
        ttu_median_us: if stale.is_empty() { f64::NAN } else { crate::quantile(&mut stale, 0.5) },
        no_round,
    })
}
