//! Open vSwitch as an engine of `kairo bench ttu` (`--engines ovs`): a
//! private Open vSwitch 3.1 ([`crate::ovs`]) loaded with the workload's
//! flows and groups, its cache filled with the same packets that fill
//! kairo's to the row's size, then the same update stream over OpenFlow,
//! one flow-mod (and barrier) at a time.
//!
//! What is measured per update, all in this run:
//! - **the stale window** (the row's TTU): from sending the flow-mod until
//!   the revalidation round it starts has ended, when every cached megaflow
//!   carries the new actions. Periodic rounds are held off
//!   ([`PrivateOvs::hold_revalidation`]), a `revalidator/wait` is
//!   registered before the flow-mod is sent, and its answer marks the end
//!   of the round the flow-mod started (Open vSwitch re-translates every
//!   megaflow in that round: it cannot tell which a change affects);
//! - **the round** as Open vSwitch times it (`upcall/show`'s dump duration,
//!   1 ms resolution) and per megaflow, over the megaflows it held;
//! - the barrier round trip, and ovs-vswitchd's resident memory.
//!
//! A workload of connections (Antrea's) is opened through Open vSwitch's
//! tracker as through kairo's ([`crate::connections`]): first packets,
//! the answers to what left (read from the ports' captures), next packets.
//!
//! With `--verify`, after each round a few packets of the traffic (those
//! the update re-routes first, then others) are sent in and must leave as
//! kairo's translation of the updated tables sends them: the same headers
//! out of the same ports, for one of the buckets of a select group on the
//! path (Open vSwitch hashes its own way). Not yet for workloads of
//! connections (a packet's path there depends on each tracker's state).
//!
//! Invariant: every figure is from this run's Open vSwitch, for the same
//! packets and updates as the kairo engines' rows; an update whose round
//! does not come is counted apart ([`OvsDetail::no_round`]), never a
//! figure.

use std::time::{Duration, Instant};

use kairo_flow::{Field, FlowKey};
use kairo_maintain::flowmod::{apply, FlowMod};
use kairo_ofp::Version;
use kairo_switch::openflow::client::{to_messages, Client};
use kairo_switch::openflow::Target;
use kairo_xlate::Pipeline;
use rand::seq::SliceRandom;

use crate::openflow_ovs::{alternatives, frame_hex, packet_hex, probes_for};
use crate::ovs::PrivateOvs;
use crate::ttu::{by_kind, TtuRow, Workload};

/// How long after registering `revalidator/wait` the flow-mod is sent
/// (ovs-vswitchd's main loop reads the request within a poll round).
const REGISTER: Duration = Duration::from_millis(20);
/// How long an update's round is waited for at least (and at most 20
/// times the longest round so far) before the update counts as one that
/// started none.
const ROUND_MIN: Duration = Duration::from_secs(5);
/// Packets checked after each update under `--verify`: re-routed ones
/// first, then drawn from the traffic.
const VERIFY_REROUTED: usize = 3;
const VERIFY_OTHERS: usize = 2;

/// Open vSwitch's own figures beside a row ([`TtuRow::ovs`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct OvsDetail {
    pub version: String,
    /// Packets sent to fill its cache (those that filled kairo's to the
    /// row's size), and the megaflows it then held.
    pub packets: usize,
    pub megaflows: usize,
    /// Connections its tracker held after the fill (a workload of
    /// connections opens one per packet sent).
    pub connections: u64,
    /// Its revalidation rounds as it times them (ms).
    pub round_median_ms: f64,
    pub round_p99_ms: f64,
    pub rtt_median_us: f64,
    /// Packets whose forwarding `--verify` checked after the updates.
    pub checked: usize,
    /// Updates that started no revalidation round (they changed none of
    /// its tables): not in the row's figures.
    pub no_round: usize,
}

/// The packets of `keys` that fill a cache of `n` megaflows in kairo's
/// datapath (every pass of each followed; with `connections`, each opened
/// as a connection through its tracker, as the kairo rows fill), in order.
fn filling_keys(p: &Pipeline, keys: impl Iterator<Item = FlowKey>, connections: bool, n: usize) -> Vec<FlowKey> {
    let mut dp = crate::ttu::fill_datapath(n);
    let mut slow = kairo_maintain::shared::Translate(p);
    let mut used = Vec::with_capacity(n);
    for k in keys {
        if dp.n_flows() >= n {
            break;
        }
        crate::ttu::fill_with(&mut dp, &mut slow, &k, connections);
        used.push(k);
    }
    used
}

/// Opens each of `keys` as a connection through Open vSwitch (and its
/// connection tracker), as [`crate::connections::open`] does through
/// kairo's: first packets in, the answer to every copy that left (from the
/// port it left by, read from the ports' captures), then the originators'
/// next packets; in groups, each step once the ports have taken the one
/// before.
fn open_connections(ovs: &PrivateOvs, ports: &[String], keys: &[FlowKey], progress: bool) -> Result<(), String> {
    const GROUP: usize = 8192;
    let pb =
        crate::progress_bar(progress, keys.len() as u64, format!("{} connections through Open vSwitch", keys.len()));
    let by_port = |frames: Vec<(u64, Vec<u8>)>| {
        let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (port, f) in frames {
            m.entry(format!("p{port}")).or_default().push(frame_hex(&f));
        }
        m
    };
    for group in keys.chunks(GROUP) {
        let marks: Vec<u64> = ports.iter().map(|n| ovs.tx_mark(n)).collect();
        let firsts = group.iter().map(|k| (k.get(Field::InPort), crate::connections::first_frame(k))).collect();
        ovs.receive(&by_port(firsts), &|_| {})?;
        let mut answers = Vec::new();
        for (i, name) in ports.iter().enumerate() {
            let port = i as u32 + 1;
            for f in ovs.sent_since(name, marks[i]).0 {
                answers.push((u64::from(port), crate::connections::answer_frame(port, &f).1));
            }
        }
        ovs.receive(&by_port(answers), &|_| {})?;
        let nexts = group.iter().map(|k| (k.get(Field::InPort), crate::connections::next_frame(k))).collect();
        ovs.receive(&by_port(nexts), &|_| {})?;
        pb.inc(group.len() as u64);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Sends one update (its messages and barrier) and waits for the
/// revalidation round it starts: the barrier round trip (us) and, if a
/// round came, the stale window (us, from sending to the round's end) and
/// the round as Open vSwitch timed it (ms). An update that changes none of
/// its tables starts no round: past a wait far longer than the longest
/// round so far (`longest_ms`), the cache was right at the barrier.
pub(crate) fn update_round(
    ovs: &PrivateOvs,
    client: &mut Client,
    m: &[kairo_ofp::Message],
    longest_ms: f64,
) -> Result<(f64, Option<(f64, f64)>), String> {
    let mut round = ovs.after_next_round()?;
    std::thread::sleep(REGISTER);
    let t0 = Instant::now();
    client.call(m).map_err(|e| format!("{e}{}", ovs.last_complaint()))?;
    let rtt = t0.elapsed().as_secs_f64() * 1e6;
    let limit = ROUND_MIN.max(Duration::from_secs_f64(longest_ms * 20e-3));
    match round.reply_within(limit).map_err(|e| format!("{e}{}", ovs.last_complaint()))? {
        Some(_) => {
            let stale = t0.elapsed().as_secs_f64() * 1e6;
            Ok((rtt, Some((stale, ovs.last_round_ms().unwrap_or(f64::NAN)))))
        }
        None => Ok((rtt, None)),
    }
}

/// Sends `keys` into Open vSwitch as frames by their input ports, and
/// waits until its datapath has taken every one.
pub(crate) fn fill(ovs: &PrivateOvs, keys: &[FlowKey], progress: bool) -> Result<(), String> {
    let pb = crate::progress_bar(progress, keys.len() as u64, format!("{} packets into Open vSwitch", keys.len()));
    let mut by_port: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for k in keys {
        by_port.entry(format!("p{}", k.get(Field::InPort))).or_default().push(packet_hex(k));
    }
    ovs.receive(&by_port, &|n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    Ok(())
}

/// A packet as it leaves, compared by its headers (the port it left by
/// apart).
fn headers(port: u32, k: &FlowKey) -> (u32, FlowKey) {
    let mut h = kairo_xlate::odp::packet_fields(k);
    h.set(Field::InPort, 0);
    (port, h)
}

/// Does Open vSwitch send `k` as the updated tables `p` say: the same
/// packets (headers) out of the same ports, for one of the buckets a
/// select group on its path can choose? `None` when kairo's answer has a
/// path it cannot state that way (two hashed groups, the controller).
fn forwards_as_kairo(ovs: &PrivateOvs, ports: &[String], p: &Pipeline, k: &FlowKey) -> Result<Option<bool>, String> {
    let Some(alts) = alternatives(p, k) else { return Ok(None) };
    let mut want: Vec<Vec<(u32, FlowKey)>> = Vec::new();
    for alt in alts {
        if alt.iter().any(|(port, _)| *port == u32::MAX || *port as usize > ports.len()) {
            return Ok(None);
        }
        let mut a: Vec<(u32, FlowKey)> = alt.iter().map(|(port, k)| headers(*port, k)).collect();
        a.sort_by_key(|(p, k)| (*p, k.w));
        want.push(a);
    }
    let marks: Vec<u64> = ports.iter().map(|n| ovs.tx_mark(n)).collect();
    ovs.appctl(&["netdev-dummy/receive", &format!("p{}", k.get(Field::InPort)), &packet_hex(k)])?;
    // What left within 200 ms (a packet that leaves at all does within
    // a few: the datapath handles it before the next command).
    let most = want.iter().map(Vec::len).max().unwrap_or(0);
    let t = Instant::now();
    let mut got = Vec::new();
    while t.elapsed() < Duration::from_millis(200) {
        got.clear();
        for (i, name) in ports.iter().enumerate() {
            let port = i as u32 + 1;
            let frames = ovs.sent_since(name, marks[i]).0;
            got.extend(frames.iter().map(|f| headers(port, &kairo_wire::parse(f, port).0)));
        }
        if got.len() >= most && most > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    got.sort_by_key(|(p, k)| (*p, k.w));
    Ok(Some(want.contains(&got)))
}

/// Open vSwitch's row at size `n`: `mods` (named `kinds`) applied one at
/// a time after a fill with the packets that fill kairo's cache to `n`.
#[allow(clippy::too_many_arguments)]
pub fn row(
    wl: &Workload,
    p: &Pipeline,
    mods: &[FlowMod],
    kinds: &[&'static str],
    n: usize,
    verify: bool,
    seed: u64,
    progress: bool,
) -> Result<TtuRow, String> {
    let t = Instant::now();
    let keys = filling_keys(p, wl.keys(), wl.connections, n);
    tracing::debug!(target: "kairo::ttu", "ovs: {} packets chosen in {:?}", keys.len(), t.elapsed());
    let ovs = PrivateOvs::start()?;
    let n_ports = crate::openflow_ovs::ports_used(p, &keys);
    let mgmt = ovs.bridge("br0", &wl.flows, &wl.groups, n_ports)?;
    tracing::debug!(target: "kairo::ttu", "ovs: bridge of {n_ports} ports loaded at {:?}", t.elapsed());
    let ports: Vec<String> = (1..=n_ports).map(|i| format!("p{i}")).collect();
    if verify || wl.connections {
        ovs.capture_tx(&ports.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    // Room for every megaflow the traffic makes.
    ovs.hold_revalidation(keys.len().max(200_000))?;
    if wl.connections {
        open_connections(&ovs, &ports, &keys, progress)?;
    } else {
        fill(&ovs, &keys, progress)?;
    }
    let megaflows = ovs.megaflows();
    let connections = ovs.conntrack_total();
    tracing::debug!(target: "kairo::ttu", "ovs: loaded and filled ({megaflows} megaflows) in {:?}", t.elapsed());
    let v = Version::V1_3;
    let msgs: Vec<_> = mods.iter().map(|m| to_messages(m, v).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let mut client = Client::connect(&Target::ActiveUnix(mgmt), v).map_err(|e| format!("Open vSwitch: {e}"))?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ n as u64);
    let mut pipeline = p.clone();
    let pb = crate::progress_bar(
        progress,
        msgs.len() as u64,
        format!("{} updates to Open vSwitch, {n} entries", msgs.len()),
    );
    let (mut stale, mut rounds, mut rtts, mut held) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Per update, the round's time per megaflow held (none if it held none).
    let mut per_entry: Vec<Option<(f64, f64)>> = Vec::new();
    let (mut mismatches, mut checked, mut no_round) = (0, 0, 0);
    // The kinds of the updates that started a round, in order.
    let mut stream_kinds: Vec<&'static str> = Vec::new();
    // (Not for workloads of connections yet: a packet's path there depends
    // on the state of each switch's tracker, which translation alone does
    // not model.)
    let verify = verify && !wl.connections;
    for (i, (fm, m)) in mods.iter().zip(&msgs).enumerate() {
        let rerouted = if verify { probes_for(&pipeline, fm, &keys) } else { Vec::new() };
        let longest = rounds.iter().copied().fold(0.0, f64::max);
        let (rtt, round) = update_round(&ovs, &mut client, m, longest)
            .map_err(|e| format!("Open vSwitch, update {i} ({kinds:?}): {e}"))?;
        rtts.push(rtt);
        match round {
            Some((stale_us, ms)) => {
                stale.push(stale_us);
                let now = ovs.megaflows();
                rounds.push(ms);
                held.push(now as f64);
                per_entry.push((now > 0).then(|| (ms * 1e3 / now as f64, 0.0)));
                stream_kinds.push(kinds[i]);
            }
            None => no_round += 1,
        }
        let _ = apply(&mut pipeline, fm);
        if verify {
            let mut sample: Vec<FlowKey> = rerouted.into_iter().map(|(k, _)| k).take(VERIFY_REROUTED).collect();
            sample.extend(keys.choose_multiple(&mut rng, VERIFY_OTHERS).copied());
            for k in &sample {
                match forwards_as_kairo(&ovs, &ports, &pipeline, k)? {
                    Some(true) => checked += 1,
                    Some(false) => {
                        checked += 1;
                        mismatches += 1;
                    }
                    None => {}
                }
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    tracing::debug!(target: "kairo::ttu", "ovs: {} updates done at {:?}", msgs.len(), t.elapsed());
    let (rss_mib, peak_rss_mib) = ovs.vswitchd_memory_mib().unwrap_or((0.0, 0.0));
    let q = |v: &mut Vec<f64>, x| if v.is_empty() { f64::NAN } else { crate::quantile(v, x) };
    let by_kind = by_kind(&stream_kinds, &stale, &held, &per_entry);
    let mut per: Vec<f64> = per_entry.iter().flatten().map(|(t, _)| *t).collect();
    Ok(TtuRow {
        pipeline: wl.name.into(),
        engine: "ovs".into(),
        entries: n,
        updates: stale.len(),
        ttu_median_us: q(&mut stale.clone(), 0.5),
        ttu_p99_us: q(&mut stale.clone(), 0.99),
        ttu_max_us: q(&mut stale, 1.0),
        affected_median: q(&mut held, 0.5),
        ttu_per_affected_us: q(&mut per, 0.5),
        housekeeping_median_us: 0.0,
        housekeeping_max_us: 0.0,
        mismatches,
        index_bytes_per_entry: f64::NAN,
        rss_mib,
        peak_rss_mib,
        distinct_traversals: 0,
        by_kind,
        dbsp: None,
        ovs: Some(OvsDetail {
            version: crate::ovs::version().unwrap_or_default(),
            packets: keys.len(),
            megaflows,
            connections,
            round_median_ms: q(&mut rounds.clone(), 0.5),
            round_p99_ms: q(&mut rounds, 0.99),
            rtt_median_us: q(&mut rtts, 0.5),
            checked,
            no_round,
        }),
    })
}
