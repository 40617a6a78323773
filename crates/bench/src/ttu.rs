//! Time-to-update of both maintenance engines on identical state: a cache of
//! exactly E megaflows (filled by real upcalls through a pipeline), then the
//! same stream of single flow-mods applied to each engine.
//!
//! The built-in pipeline is a synthetic 10-table one shaped like OF-DPA
//! (port, VLAN, termination MAC, unicast routing with next-hop select groups,
//! bridging, ACL, then register-driven tables), generated from a seed as
//! ovs-ofctl text. Every flow of the traffic gets its own megaflow (the
//! next-hop groups hash the 5-tuple), so E unique flows make E entries.

use kairo_datapath::{Datapath, DpConfig};
use kairo_flow::FlowKey;
use kairo_maintain::shared::SharedControl;
use kairo_maintain::{parse_command, Control, EngineKind, FlowMod};
use kairo_xlate::Pipeline;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{table, Machine};

/// Number of next-hop groups and routes in the synthetic pipeline.
pub const NEXT_HOPS: u32 = 64;
pub const ROUTES: u32 = 4096;

/// The synthetic 10-table pipeline: (flows, groups) in ovs-ofctl syntax.
pub fn synthetic_pipeline(seed: u64) -> (String, String) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = String::from("# next hops: select groups hashing the 5-tuple\n");
    for nh in 1..=NEXT_HOPS {
        g.push_str(&format!(
            "group_id={nh},type=select,bucket=mod_dl_dst:02:00:00:00:{:02x}:01,output:{},bucket=mod_dl_dst:02:00:00:00:{:02x}:02,output:{}\n",
            nh % 256,
            nh % 4 + 1,
            nh % 256,
            (nh + 1) % 4 + 1
        ));
    }
    let mut f = String::from("# synthetic OF-DPA-shaped pipeline, 10 tables (kairo bench ttu)\n");
    f.push_str("#@ table=40 miss=continue:50\n");
    for p in 1..=4 {
        f.push_str(&format!("table=0,priority=100,in_port={p},actions=goto_table:10\n"));
    }
    f.push_str("table=0,priority=0,actions=drop\n");
    f.push_str("table=10,priority=100,dl_vlan=0xffff,actions=goto_table:20\n");
    for v in 1..=8 {
        f.push_str(&format!("table=10,priority=100,dl_vlan={v},actions=pop_vlan,goto_table:20\n"));
    }
    f.push_str("table=20,priority=100,ip,dl_dst=00:00:00:00:aa:01,actions=goto_table:30\n");
    f.push_str("table=20,priority=0,actions=goto_table:50\n");
    // Routing: /16 aggregates and /24 routes under 10/8, a default route.
    for a in 0..16u32 {
        f.push_str(&format!(
            "table=30,priority=16,ip,nw_dst=10.{a}.0.0/16,actions=write_actions(group:{}),goto_table:40\n",
            a % NEXT_HOPS + 1
        ));
    }
    for _ in 0..ROUTES {
        let (b, c) = (rng.gen_range(0..16u32), rng.gen_range(0..256u32));
        f.push_str(&format!(
            "table=30,priority=24,ip,nw_dst=10.{b}.{c}.0/24,actions=write_actions(group:{}),goto_table:40\n",
            rng.gen_range(1..=NEXT_HOPS)
        ));
    }
    f.push_str("table=30,priority=0,ip,actions=write_actions(group:1),goto_table:40\n");
    // 40 multicast: empty, misses continue to 50.
    for i in 0..32u32 {
        f.push_str(&format!(
            "table=50,priority=100,dl_vlan={},dl_dst=00:00:00:00:{:02x}:{:02x},actions=output:{}\n",
            i % 8 + 1,
            i / 256,
            i % 256,
            i % 4 + 1
        ));
    }
    f.push_str("table=50,priority=0,actions=goto_table:60\n");
    // ACL.
    for port in [22u32, 23, 25, 3389] {
        f.push_str(&format!("table=60,priority=300,tcp,tp_dst={port},actions=clear_actions\n"));
    }
    for i in 0..64u32 {
        f.push_str(&format!("table=60,priority=200,tcp,nw_src=192.168.{i}.0/24,tp_dst=8080,actions=clear_actions\n"));
    }
    f.push_str("table=60,priority=0,actions=goto_table:70\n");
    // Register-driven tail: classify the source, then act on the class.
    for i in 0..8u32 {
        f.push_str(&format!(
            "table=70,priority=10,ip,nw_src={}.0.0.0/8,actions=load:{i}->NXM_NX_REG0[0..7],goto_table:80\n",
            192 + i % 4
        ));
    }
    f.push_str("table=70,priority=0,actions=load:0xff->NXM_NX_REG0[0..7],goto_table:80\n");
    f.push_str("table=80,priority=10,reg0=0xff/0xff,actions=goto_table:90\n");
    // (set_field needs its prerequisites in the match, as Open vSwitch
    // checks when the flow is added.)
    f.push_str("table=80,priority=5,ip,actions=set_field:8->ip_dscp,goto_table:90\n");
    f.push_str("table=80,priority=4,actions=goto_table:90\n");
    f.push_str("table=90,priority=0,actions=drop\n");
    (f, g)
}

/// The traffic: `n` unique TCP flows to routed destinations.
pub fn flows(n: usize, seed: u64) -> Vec<FlowKey> {
    flows_iter(seed).take(n).collect()
}

/// The flows of [`flows`], one at a time.
pub fn flows_iter(seed: u64) -> impl Iterator<Item = FlowKey> + Send + 'static {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xf10f);
    let mut seen = kairo_workload::SeenFlows::default();
    std::iter::from_fn(move || loop {
        let src = rng.gen::<u32>();
        let dst = (10u32 << 24) | (rng.gen_range(0..16u32) << 16) | rng.gen_range(0..65536u32);
        let sport = rng.gen_range(1024..65535u32);
        let dport = [80u32, 443, 8080, 53][rng.gen_range(0..4)];
        if !seen.insert(((src as u64) << 32) | dst as u64, ((sport as u64) << 16) | dport as u64) {
            continue;
        }
        use kairo_flow::Field;
        let port = rng.gen_range(1..=4u32);
        let k = FlowKey::ipv4(port, 0x0200_0000_0001, 0xaa01, src, dst, 6)
            .with(Field::TpSrc, sport as u64)
            .with(Field::TpDst, dport as u64);
        return Some(k);
    })
}

/// The update stream: route adds and withdrawals, ACL adds and deletes,
/// next-hop changes (one flow-mod each).
pub fn updates(n: usize, seed: u64) -> Vec<(&'static str, String, String)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0bd8);
    let mut added: Vec<String> = Vec::new();
    (0..n)
        .map(|i| match i % 5 {
            0 | 1 => {
                let (b, c) = (rng.gen_range(0..16u32), rng.gen_range(0..256u32));
                let m = if rng.gen_bool(0.5) {
                    format!("nw_dst=10.{b}.{c}.0/24")
                } else {
                    format!("nw_dst=10.{b}.{c}.{}/32", rng.gen_range(0..256u32))
                };
                let plen = if m.ends_with("/24") { 25 } else { 32 };
                added.push(format!("table=30,priority={plen},ip,{m}"));
                (
                    "route add",
                    "add-flow".into(),
                    format!(
                        "table=30,priority={plen},ip,{m},actions=write_actions(group:{}),goto_table:40",
                        rng.gen_range(1..=NEXT_HOPS)
                    ),
                )
            }
            2 if !added.is_empty() => {
                let r = added.swap_remove(rng.gen_range(0..added.len()));
                ("route withdraw", "--strict del-flows".into(), r)
            }
            3 => {
                let net = rng.gen_range(0..=255u32);
                (
                    "acl add",
                    "add-flow".into(),
                    format!(
                        "table=60,priority=250,tcp,nw_src={net}.{}.0.0/16,tp_dst=443,actions=clear_actions",
                        rng.gen_range(0..256u32)
                    ),
                )
            }
            _ => {
                let nh = rng.gen_range(1..=NEXT_HOPS);
                (
                    "next-hop change",
                    "mod-group".into(),
                    format!(
                        "group_id={nh},type=select,bucket=output:{},bucket=output:{}",
                        rng.gen_range(1..=4),
                        rng.gen_range(1..=4)
                    ),
                )
            }
        })
        .collect()
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TtuRow {
    pub pipeline: String,
    pub engine: String,
    pub entries: usize,
    pub updates: usize,
    pub ttu_median_us: f64,
    pub ttu_p99_us: f64,
    pub ttu_max_us: f64,
    pub affected_median: f64,
    /// Median TTU per affected (re-translated) entry, over updates that affected any.
    pub ttu_per_affected_us: f64,
    /// Bookkeeping the engine deferred past each update's TTU (taking the
    /// registrations of evicted entries and replaced traversals out of the
    /// index), run after it: median and max.
    pub housekeeping_median_us: f64,
    pub housekeeping_max_us: f64,
    pub mismatches: usize,
    /// Memory of the engine's index, bytes per entry.
    pub index_bytes_per_entry: f64,
    /// Resident memory of the process with this cache filled, and its peak
    /// so far (MiB; Linux, 0 elsewhere).
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// Distinct traversals the cache's megaflows share (hash-consed at install).
    pub distinct_traversals: usize,
    /// Per kind of update, in the order the stream first has them.
    pub by_kind: Vec<KindRow>,
    /// Open vSwitch's own figures, on its row ([`crate::ttu_ovs`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ovs: Option<crate::ttu_ovs::OvsDetail>,
    /// DBSP's own figures, on its row ([`crate::ttu_dbsp`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbsp: Option<crate::ttu_dbsp::DbspDetail>,
}

/// One kind of update's figures in a [`TtuRow`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct KindRow {
    pub update: String,
    pub count: usize,
    pub ttu_median_us: f64,
    pub affected_median: f64,
    /// Over this kind's updates that affected any entry, the median time per
    /// affected entry spent re-translating and judging it, and applying the
    /// verdict (writing the new actions and traversal, re-indexing): the
    /// second is what a faster translation cannot remove.
    pub translate_per_affected_us: f64,
    pub apply_per_affected_us: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TtuReport {
    pub machine: Machine,
    pub rows: Vec<TtuRow>,
    /// What could not be measured, and why (an engine asked for that
    /// cannot run here).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct TtuOpts {
    pub pipeline: PipelineKind,
    pub entries: Vec<usize>,
    pub engines: Vec<EngineKind>,
    pub updates: usize,
    pub seed: u64,
    pub verify: bool,
    pub progress: bool,
    /// Apply the stream in bundles of this many flow-mods (1: one at a time).
    pub bundle: usize,
    /// Keep only these kinds of update from the stream (empty: all), to
    /// measure one kind in isolation.
    pub kinds: Vec<String>,
    /// Threads a maintenance pass may revalidate on (both engines alike).
    pub threads: usize,
    /// Also Open vSwitch, given the same packets and updates ([`crate::ttu_ovs`]).
    pub ovs: bool,
    /// Also the DBSP view, given the same cache and updates
    /// ([`crate::ttu_dbsp`]; needs the `dbsp` feature, else a note says so).
    pub dbsp: bool,
}

/// Which workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineKind {
    /// The synthetic 10-table pipeline of this module.
    Synthetic,
    /// The OF-DPA-shaped pipeline of `kairo-workload`, rules from ClassBench's of2 seed.
    Ofdpa,
    /// The Antrea-shaped pipeline of `kairo-workload` (22 tables), policies from ClassBench's acl1 seed.
    Antrea,
    /// A user's flow file (groups from the file of the same name with `.groups`,
    /// if present). Traffic: packets drawn inside its rules; updates: delete and
    /// re-add random rules.
    File(std::path::PathBuf),
}

impl std::str::FromStr for PipelineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "synthetic" => Ok(PipelineKind::Synthetic),
            "ofdpa" => Ok(PipelineKind::Ofdpa),
            "antrea" => Ok(PipelineKind::Antrea),
            _ if std::path::Path::new(s).is_file() => Ok(PipelineKind::File(s.into())),
            _ => Err(format!("unknown pipeline `{s}`: expected ofdpa, antrea, synthetic or a flow file")),
        }
    }
}

/// Where a workload's traffic comes from: generated afresh on each call and
/// deterministic, so no run holds millions of keys it does not need at once.
pub type TrafficSource = Box<dyn Fn() -> Box<dyn Iterator<Item = FlowKey> + Send> + Send + Sync>;

/// A workload: the pipeline text, its traffic and an update stream.
pub struct Workload {
    pub name: &'static str,
    pub flows: String,
    pub groups: String,
    traffic: TrafficSource,
    /// How many flows the traffic has.
    pub n_keys: usize,
    /// Is each flow a connection's first packet, to be opened through a
    /// connection tracker ([`crate::connections`]) rather than sent alone?
    pub connections: bool,
    pub updates: Vec<(&'static str, String, String)>,
    /// The bridge's ports (what NORMAL and FLOOD send to; empty: none).
    pub ports: Vec<u32>,
}

impl Workload {
    /// The workload's flows and groups loaded as a pipeline, with its ports.
    pub fn pipeline(&self) -> Result<Pipeline, String> {
        let mut p = Pipeline::from_parts(
            kairo_ofproto::parse_flow_file(&self.flows).map_err(|e| e.to_string())?,
            kairo_ofproto::parse_group_file(&self.groups).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        p.set_ports(self.ports.iter().copied());
        Ok(p)
    }
}

impl Workload {
    /// The traffic's flows, unique, in a fixed order.
    pub fn keys(&self) -> impl Iterator<Item = FlowKey> + Send {
        (self.traffic)().take(self.n_keys)
    }
}

/// Builds a workload with traffic for at least `max_entries` megaflows.
/// OF-DPA's megaflows share routes (its select groups are hashed in the
/// datapath, as Open vSwitch does): about five per route the traffic
/// reaches, so its routing table grows with the cache (a route per three
/// megaflows, 4,000 at least) and its traffic draws up to five keys per
/// megaflow. Antrea's default cluster (400 pods) makes about 1.5M
/// megaflows: past 1M its cluster grows with the cache (a pod per 2500).
pub fn workload(kind: PipelineKind, max_entries: usize, updates_n: usize, seed: u64) -> Result<Workload, String> {
    let n_keys = max_entries + max_entries / 4 + 1000;
    match kind {
        PipelineKind::Ofdpa => ofdpa_workload(n_keys * 4, (max_entries / 3).max(4000), updates_n, seed),
        PipelineKind::Antrea => {
            let pods = u32::try_from(max_entries / ANTREA_ENTRIES_PER_POD).unwrap_or(u32::MAX);
            antrea_workload(n_keys, pods, updates_n, seed)
        }
        kind => workload_with_keys(kind, n_keys, updates_n, seed),
    }
}

/// Megaflows per pod of the Antrea workload's cluster past the default
/// cluster's size ([`workload`]).
const ANTREA_ENTRIES_PER_POD: usize = 2500;

/// The Antrea workload with at least `pods` pods (its default cluster's
/// otherwise).
fn antrea_workload(n_keys: usize, pods: u32, updates_n: usize, seed: u64) -> Result<Workload, String> {
    let cb = kairo_workload::classbench::builtin_seed("acl1")?;
    let mut cfg = kairo_workload::antrea::AntreaConfig::default();
    cfg.pods = cfg.pods.max(pods);
    let w = kairo_workload::antrea::generate(&cb, &cfg, seed);
    // Flows share megaflows more here (no hash over the 5-tuple on most paths):
    // the traffic is generated on demand, so a large budget costs nothing held.
    let ups = w.updates(&cb, updates_n, seed);
    let (flows, groups, ports) = (w.flows.clone(), w.groups.clone(), w.ports());
    let traffic: TrafficSource = Box::new(move || Box::new(w.traffic_iter(seed)));
    // Its pipeline tracks connections: each flow is opened (first
    // packet, answer, next packet) through the datapath's tracker.
    Ok(Workload { name: "antrea", flows, groups, traffic, n_keys: n_keys * 8, connections: true, updates: ups, ports })
}

fn ofdpa_workload(n_keys: usize, routes: usize, updates_n: usize, seed: u64) -> Result<Workload, String> {
    let cb = kairo_workload::classbench::builtin_seed("of2")?;
    let cfg = kairo_workload::ofdpa::OfdpaConfig { routes, ..kairo_workload::ofdpa::OfdpaConfig::default() };
    let w = kairo_workload::ofdpa::generate(&cb, &cfg, seed);
    let ups = w.updates(&cb, updates_n, seed);
    let (flows, groups) = (w.flows.clone(), w.groups.clone());
    let traffic: TrafficSource = Box::new(move || Box::new(w.traffic_iter(seed)));
    Ok(Workload { name: "ofdpa", flows, groups, traffic, n_keys, connections: false, updates: ups, ports: Vec::new() })
}

/// A workload with `n_keys` traffic keys (Antrea draws up to eight times as many:
/// its flows share megaflows more).
pub fn workload_with_keys(kind: PipelineKind, n_keys: usize, updates_n: usize, seed: u64) -> Result<Workload, String> {
    match kind {
        PipelineKind::Synthetic => {
            let (f, g) = synthetic_pipeline(seed);
            Ok(Workload {
                name: "synthetic-10",
                flows: f,
                groups: g,
                traffic: Box::new(move || Box::new(flows_iter(seed))),
                n_keys,
                connections: false,
                updates: updates(updates_n, seed),
                ports: Vec::new(),
            })
        }
        PipelineKind::Ofdpa => {
            ofdpa_workload(n_keys, kairo_workload::ofdpa::OfdpaConfig::default().routes, updates_n, seed)
        }
        PipelineKind::Antrea => antrea_workload(n_keys, 0, updates_n, seed),
        PipelineKind::File(path) => file_workload(&path, n_keys, updates_n, seed),
    }
}

/// A workload from a user's flow file: traffic drawn inside its rules, and
/// an update stream that deletes and re-adds random rules.
fn file_workload(path: &std::path::Path, n_keys: usize, updates_n: usize, seed: u64) -> Result<Workload, String> {
    use kairo_flow::Field;
    let flows = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let gpath = path.with_extension("groups");
    let groups = if gpath.is_file() {
        std::fs::read_to_string(&gpath).map_err(|e| format!("cannot read {}: {e}", gpath.display()))?
    } else {
        String::new()
    };
    let ff = kairo_ofproto::parse_flow_file(&flows).map_err(|e| format!("{}: {e}", path.display()))?;
    if ff.rules.is_empty() {
        return Err(format!("{}: no rules", path.display()));
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0xf11e);
    let first = ff.rules.iter().map(|r| r.table).min().unwrap_or(0);
    let entry_rules: Vec<&kairo_ofproto::Rule> = ff.rules.iter().filter(|r| r.table == first).collect();
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::with_capacity(n_keys);
    let mut tries = 0usize;
    while keys.len() < n_keys && tries < n_keys.saturating_mul(20) + 1000 {
        tries += 1;
        // A plausible TCP/UDP packet, then the bits a random first-table rule fixes.
        let mut k = FlowKey::ZERO;
        k.set(Field::InPort, rng.gen_range(1..=4u64));
        k.set(Field::EthSrc, rng.gen::<u64>() & 0xfeff_ffff_ffff);
        k.set(Field::EthDst, rng.gen::<u64>() & 0xfeff_ffff_ffff);
        k.set(Field::EthType, 0x0800);
        k.set(Field::IpProto, if rng.gen_bool(0.7) { 6 } else { 17 });
        k.set(Field::IpSrc, rng.gen::<u32>() as u64);
        k.set(Field::IpDst, rng.gen::<u32>() as u64);
        k.set(Field::IpTtl, 64);
        k.set(Field::TpSrc, rng.gen::<u16>() as u64);
        k.set(Field::TpDst, rng.gen::<u16>() as u64);
        let r = entry_rules[rng.gen_range(0..entry_rules.len())];
        for i in 0..k.w.len() {
            k.w[i] = (k.w[i] & !r.m.mask().w[i]) | r.m.key().w[i];
        }
        for f in Field::all().filter(|f| f.pipeline_only()) {
            k.set(f, 0);
        }
        if seen.insert(k) {
            keys.push(k);
        }
    }
    let mut ups = Vec::with_capacity(updates_n);
    let mut pending: Option<String> = None;
    while ups.len() < updates_n {
        match pending.take() {
            Some(line) => ups.push(("rule re-add", "add-flow".to_string(), line)),
            None => {
                let r = &ff.rules[rng.gen_range(0..ff.rules.len())];
                let m = r.m.to_string();
                let sel = if m.is_empty() {
                    format!("table={},priority={}", r.table, r.priority)
                } else {
                    format!("table={},priority={},{m}", r.table, r.priority)
                };
                ups.push(("rule delete", "--strict del-flows".to_string(), sel.clone()));
                pending = Some(format!("{sel},actions={}", r.inst));
            }
        }
    }
    let n_keys = keys.len();
    let traffic: TrafficSource = Box::new(move || Box::new(keys.clone().into_iter()));
    Ok(Workload { name: "file", flows, groups, traffic, n_keys, connections: false, updates: ups, ports: Vec::new() })
}

/// Entries the reference checks after each update under `--verify`, and
/// packets drawn inside each: the reference shares no code with the
/// engines (`kairo-oracle`), and a linear scan over OF-DPA's 10K-rule
/// tables is slow, so it samples (the recomputation oracle, `verify`,
/// walks every entry).
const REFERENCE_ENTRIES: usize = 64;
const REFERENCE_PACKETS: usize = 8;

/// Disagreements of the reference with `REFERENCE_ENTRIES` entries drawn at random.
fn reference_check(c: &kairo_maintain::Control, rng: &mut rand::rngs::StdRng) -> usize {
    use rand::seq::SliceRandom;
    let reference = kairo_oracle::Reference::new(&c.pipeline());
    let entries = c.engine.entries();
    entries
        .choose_multiple(rng, REFERENCE_ENTRIES)
        .filter(|uk| {
            let learned: Vec<_> = uk.traversal().learned.iter().flatten().map(|l| l.rule.clone()).collect();
            kairo_oracle::check_entry(
                &reference,
                &uk.rep,
                &uk.mask,
                &uk.actions(),
                Some(&learned),
                REFERENCE_PACKETS,
                rng,
            )
            .is_some()
        })
        .count()
}

/// A datapath to fill with `n` megaflows: room for `n` and no more,
/// nothing admitted to the EMC, nothing idling out, and room for `n`
/// connections (every connection opened makes a megaflow at least: the
/// tracker's limit never decides what the cache holds).
pub(crate) fn fill_datapath(n: usize) -> Datapath {
    let dp = Datapath::new(DpConfig {
        flow_limit: n,
        emc_insert_inv_prob: 0,
        max_idle_ms: u64::MAX / 4,
        ..DpConfig::default()
    });
    {
        let mut ct = dp.ct();
        let most = ct.max_conns();
        ct.set_max_conns(n.max(most));
    }
    dp
}

/// Gives `dp` one key of the traffic as a fill does: sent alone (its
/// passes followed at the level of keys), or opened as a connection.
pub(crate) fn fill_with<S: kairo_datapath::SlowPath + ?Sized>(
    dp: &mut Datapath,
    slow: &mut S,
    k: &FlowKey,
    connections: bool,
) {
    if connections {
        crate::connections::open(dp, slow, k, 0);
    } else {
        dp.process_key_passes(k, 64, 0, slow);
    }
}

/// Fills a cache of exactly `n` megaflows through upcalls: each key sent
/// alone (its passes followed at the level of keys), or with `connections`
/// opened as a connection through the datapath's tracker.
pub fn fill(
    p: Pipeline,
    kind: EngineKind,
    keys: impl IntoIterator<Item = FlowKey>,
    connections: bool,
    n: usize,
    show: bool,
) -> Result<(Datapath, SharedControl), String> {
    let mut dp = fill_datapath(n);
    let mut sc = SharedControl::new(Control::new(p, kind));
    let pb = crate::progress_bar(show, n as u64, format!("fill {n} megaflows ({})", sc.lock().engine.name()));
    for k in keys {
        if dp.n_flows() >= n {
            break;
        }
        fill_with(&mut dp, &mut sc, &k, connections);
        if dp.n_flows().is_multiple_of(4096) {
            pb.set_position(dp.n_flows() as u64);
            // As a switch does between upcalls: the engine's deferred work
            // (the incremental engine chooses its cell anchors here once the
            // cache is large enough to tell).
            sc.lock().housekeep();
        }
    }
    pb.finish_and_clear();
    if dp.n_flows() < n {
        return Err(format!("the traffic made only {} megaflows, fewer than {n}", dp.n_flows()));
    }
    Ok((dp, sc))
}

/// The updates of the kinds asked for (all when none is named), in stream
/// order. A kind the workload's stream does not have is an error naming the
/// kinds it has.
fn only_kinds(
    stream: &[(&'static str, String, String)],
    kinds: &[String],
) -> Result<Vec<(&'static str, String, String)>, String> {
    if kinds.is_empty() {
        return Ok(stream.to_vec());
    }
    let mut has: Vec<&str> = stream.iter().map(|u| u.0).collect();
    has.sort_unstable();
    has.dedup();
    if let Some(k) = kinds.iter().find(|k| !has.contains(&k.as_str())) {
        return Err(format!("--kinds: this stream has no update of kind `{k}` (it has: {})", has.join(", ")));
    }
    Ok(stream.iter().filter(|u| kinds.iter().any(|k| k == u.0)).cloned().collect())
}

/// Runs the TTU benchmark on the built-in synthetic pipeline.
pub fn run(opts: &TtuOpts) -> Result<TtuReport, String> {
    let max = opts.entries.iter().copied().max().unwrap_or(0);
    let wl = workload(opts.pipeline.clone(), max, opts.updates, opts.seed)?;
    // (Built before anything is filled, so that a bad workload fails
    // first; the first run fills this one, each later run builds its own,
    // so that none is held beside the one it fills: a 10M-megaflow
    // routing table is gigabytes.)
    let mut first = Some(wl.pipeline()?);
    let stream = &only_kinds(&wl.updates, &opts.kinds)?;
    let mods: Vec<FlowMod> = stream
        .iter()
        .map(|(_, c, a)| parse_command(c, a).map_err(|e| format!("{c} {a}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut kinds: Vec<&'static str> = stream.iter().map(|(k, _, _)| *k).collect();
    let mods = if opts.bundle > 1 {
        kinds = kinds.chunks(opts.bundle).map(|_| "bundle").collect();
        mods.chunks(opts.bundle).map(|c| FlowMod::Bundle(c.to_vec())).collect()
    } else {
        mods
    };
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    for &n in &opts.entries {
        for &kind in &opts.engines {
            let p = match first.take() {
                Some(p) => p,
                None => wl.pipeline()?,
            };
            let (_dp, sc) = fill(p, kind, wl.keys(), wl.connections, n, opts.progress)?;
            sc.lock().engine.set_threads(opts.threads);
            let distinct_traversals = sc.lock().installed_traversals();
            let mib = |b: Option<u64>| b.unwrap_or(0) as f64 / (1024.0 * 1024.0);
            let rss_mib = mib(crate::resident_bytes());
            let mut c = sc.lock();
            let index_bytes = c.engine.index_bytes() as f64 / n as f64;
            let pb = crate::progress_bar(
                opts.progress,
                mods.len() as u64,
                format!("{} updates, {n} entries ({})", mods.len(), c.engine.name()),
            );
            let mut ttus = Vec::with_capacity(mods.len());
            let mut affected = Vec::with_capacity(mods.len());
            // Per update, microseconds per affected entry re-translating and applying.
            let mut per_entry: Vec<Option<(f64, f64)>> = Vec::with_capacity(mods.len());
            let mut mismatches = 0;
            let mut sample_rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(opts.seed ^ n as u64);
            // Deferred bookkeeping after each update (between updates, as a
            // switch does it after acknowledging one), timed apart from the TTU.
            let mut after = Vec::with_capacity(mods.len());
            for fm in &mods {
                let rep = c.apply(fm).map_err(|e| e.to_string())?;
                let (_, hk) = c.housekeep();
                after.push(hk.as_secs_f64() * 1e6);
                ttus.push(rep.ttu.as_secs_f64() * 1e6);
                affected.push(rep.examined as f64);
                per_entry.push((rep.examined > 0).then(|| {
                    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / rep.examined as f64;
                    (per(rep.translate), per(rep.apply))
                }));
                if tracing::enabled!(target: "kairo::ttu", tracing::Level::DEBUG) {
                    tracing::debug!(
                        target: "kairo::ttu",
                        "{:>10.1} us (pipeline {:>6.1}, find {:>8.1}, translate {:>9.1}, apply {:>9.1}; then {:>9.1} housekeeping)  examined {:>6}  probed {:>6}  updated {:>6}  evicted {:>6}  shared {:>6}  cells {:>4}  RSS {:>6} MiB",
                        rep.ttu.as_secs_f64() * 1e6,
                        rep.pipeline.as_secs_f64() * 1e6,
                        rep.find.as_secs_f64() * 1e6,
                        rep.translate.as_secs_f64() * 1e6,
                        rep.apply.as_secs_f64() * 1e6,
                        hk.as_secs_f64() * 1e6,
                        rep.examined,
                        rep.probed,
                        rep.updated,
                        rep.evicted,
                        rep.shared,
                        rep.cells,
                        crate::resident_bytes().unwrap_or(0) >> 20
                    );
                }
                if opts.verify {
                    mismatches += c.verify().len();
                    mismatches += reference_check(&c, &mut sample_rng);
                }
                pb.inc(1);
            }
            pb.finish_and_clear();
            let by_kind = by_kind(&kinds, &ttus, &affected, &per_entry);
            let mut per: Vec<f64> = ttus.iter().zip(&affected).filter(|(_, a)| **a > 0.0).map(|(t, a)| t / a).collect();
            let mut t2 = ttus.clone();
            rows.push(TtuRow {
                pipeline: wl.name.into(),
                engine: c.engine.name().into(),
                entries: n,
                updates: mods.len(),
                ttu_median_us: crate::quantile(&mut t2, 0.5),
                ttu_p99_us: crate::quantile(&mut t2, 0.99),
                ttu_max_us: crate::quantile(&mut t2, 1.0),
                affected_median: crate::quantile(&mut affected, 0.5),
                ttu_per_affected_us: crate::quantile(&mut per, 0.5),
                housekeeping_median_us: crate::quantile(&mut after, 0.5),
                housekeeping_max_us: crate::quantile(&mut after, 1.0),
                mismatches,
                index_bytes_per_entry: index_bytes,
                rss_mib,
                peak_rss_mib: mib(crate::peak_resident_bytes()),
                distinct_traversals,
                by_kind,
                ovs: None,
                dbsp: None,
            });
        }
        if opts.dbsp {
            dbsp_row(&wl, &wl.pipeline()?, &mods, &kinds, n, opts, &mut rows, &mut notes)?;
        }
        if opts.ovs {
            if !crate::ovs::available() {
                notes.push("Open vSwitch: not installed here (scripts/ovs/install-ovs.sh installs it)".into());
            } else {
                rows.push(crate::ttu_ovs::row(
                    &wl,
                    &wl.pipeline()?,
                    &mods,
                    &kinds,
                    n,
                    opts.verify,
                    opts.seed,
                    opts.progress,
                )?);
            }
        }
    }
    // Each note once (one per size would repeat them), in first-seen order.
    let mut seen = std::collections::HashSet::new();
    notes.retain(|n| seen.insert(n.clone()));
    Ok(TtuReport { machine: Machine::detect(), rows, notes })
}

/// The DBSP row at `n`, or a note saying why there is none.
#[allow(clippy::too_many_arguments)]
fn dbsp_row(
    wl: &Workload,
    p: &Pipeline,
    mods: &[FlowMod],
    kinds: &[&'static str],
    n: usize,
    opts: &TtuOpts,
    rows: &mut Vec<TtuRow>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    #[cfg(feature = "dbsp")]
    match crate::ttu_dbsp::refusal(p, mods) {
        Some(why) => notes.push(why),
        None => rows.push(crate::ttu_dbsp::row(wl, p, mods, kinds, n, opts.verify, opts.progress)?),
    }
    #[cfg(not(feature = "dbsp"))]
    {
        let _ = (wl, p, mods, kinds, n, opts, rows);
        notes.push(
            "DBSP: this kairo was built without the `dbsp` feature (cargo build --release --features dbsp)".into(),
        );
    }
    Ok(())
}

/// Per kind of update (in the order the stream first has them), the
/// medians of `ttus`, `affected` and the per-entry costs of the updates of
/// that kind (all four lists in stream order).
pub(crate) fn by_kind(
    kinds: &[&'static str],
    ttus: &[f64],
    affected: &[f64],
    per_entry: &[Option<(f64, f64)>],
) -> Vec<KindRow> {
    let mut names: Vec<&'static str> = Vec::new();
    for k in kinds {
        if !names.contains(k) {
            names.push(k);
        }
    }
    let mut out = Vec::new();
    for kind in names {
        let of =
            |v: &[f64]| -> Vec<f64> { v.iter().zip(kinds).filter(|(_, k)| **k == kind).map(|(t, _)| *t).collect() };
        let (mut t, mut a) = (of(ttus), of(affected));
        let (mut tr, mut ap): (Vec<f64>, Vec<f64>) =
            per_entry.iter().zip(kinds).filter(|(_, k)| **k == kind).filter_map(|(e, _)| *e).unzip();
        if !t.is_empty() {
            out.push(KindRow {
                update: kind.to_string(),
                count: t.len(),
                ttu_median_us: crate::quantile(&mut t, 0.5),
                affected_median: crate::quantile(&mut a, 0.5),
                translate_per_affected_us: crate::quantile(&mut tr, 0.5),
                apply_per_affected_us: crate::quantile(&mut ap, 0.5),
            });
        }
    }
    out
}

impl TtuReport {
    /// Writes TTU (median and p99, log scale) against the cache size, one line per engine, as SVG.
    #[cfg(feature = "plot")]
    pub fn plot(&self, path: &std::path::Path) -> Result<(), String> {
        use plotters::prelude::*;
        let e = |x: &dyn std::fmt::Display| x.to_string();
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let xs: Vec<f64> = self.rows.iter().map(|r| r.entries as f64).collect();
        let (xlo, xhi) = crate::log_span(xs.iter().copied());
        let ys = self.rows.iter().flat_map(|r| [r.ttu_median_us, r.ttu_p99_us]);
        let (ylo, yhi) = ys.fold((f64::MAX, 1.0f64), |(a, b), y| (a.min(y), b.max(y)));
        let pipeline = self.rows.first().map(|r| r.pipeline.clone()).unwrap_or_default();
        let mut c = ChartBuilder::on(&root)
            .caption(format!("Time-to-update vs cache size ({pipeline}, {})", self.machine.cpu), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d((xlo * 0.8..xhi * 1.25).log_scale(), (ylo.max(0.1) / 2.0..yhi * 2.0).log_scale())
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc("megaflows")
            .y_desc("TTU us (log)")
            .x_labels(5)
            .x_label_formatter(&crate::size_label)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|x| e(&x))?;
        for (engine, color) in [("full", RED), ("ovs", BLUE), ("dbsp", MAGENTA), ("incremental", GREEN)] {
            let rows: Vec<&TtuRow> = self.rows.iter().filter(|r| r.engine == engine).collect();
            if rows.is_empty() {
                continue;
            }
            c.draw_series(LineSeries::new(
                rows.iter().map(|r| (r.entries as f64, r.ttu_median_us)),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(format!("{engine} median"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            c.draw_series(LineSeries::new(rows.iter().map(|r| (r.entries as f64, r.ttu_p99_us)), color.mix(0.4)))
                .map_err(|x| e(&x))?
                .label(format!("{engine} p99"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.4)));
        }
        c.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
        Ok(())
    }

    /// Built without the `plot` feature: says so.
    #[cfg(not(feature = "plot"))]
    pub fn plot(&self, path: &std::path::Path) -> Result<(), String> {
        Err(format!("{}: kairo was built without the `plot` feature", path.display()))
    }

    pub fn to_table(&self) -> String {
        let mut s = format!("machine: {}\n\n", self.machine);
        // Each other engine's median TTU over the incremental engine's at
        // the same size.
        let ratio = |r: &TtuRow| {
            if r.engine == "incremental" {
                return "-".to_string();
            }
            self.rows
                .iter()
                .find(|i| i.engine == "incremental" && i.entries == r.entries)
                .map(|i| format!("{:.0}x", r.ttu_median_us / i.ttu_median_us.max(1e-3)))
                .unwrap_or_else(|| "-".into())
        };
        let or_dash = |v: f64, digits: usize| if v.is_finite() { format!("{v:.digits$}") } else { "-".into() };
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.entries.to_string(),
                    r.engine.clone(),
                    format!("{:.1}", r.ttu_median_us),
                    format!("{:.1}", r.ttu_p99_us),
                    format!("{:.1}", r.ttu_max_us),
                    format!("{:.0}", r.affected_median),
                    format!("{:.2}", r.ttu_per_affected_us),
                    ratio(r),
                    r.mismatches.to_string(),
                    if r.ovs.is_some() || r.dbsp.is_some() {
                        "-".into()
                    } else {
                        format!("{:.1}", r.housekeeping_max_us)
                    },
                    or_dash(r.index_bytes_per_entry, 0),
                    format!("{:.0}", r.rss_mib),
                    format!("{:.0}", r.peak_rss_mib),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "entries",
                "engine",
                "TTU median us",
                "p99 us",
                "max us",
                "affected median",
                "us/affected",
                "vs incremental",
                "mismatches",
                "housekeeping max us",
                "index B/entry",
                "RSS MiB",
                "peak MiB",
            ],
            &rows,
        ));
        let kinds: Vec<Vec<String>> = self
            .rows
            .iter()
            .flat_map(|r| {
                r.by_kind.iter().map(move |k| {
                    let per = |v: f64| if k.affected_median > 0.0 { format!("{v:.2}") } else { "-".into() };
                    vec![
                        r.entries.to_string(),
                        r.engine.clone(),
                        k.update.clone(),
                        k.count.to_string(),
                        format!("{:.1}", k.ttu_median_us),
                        format!("{:.0}", k.affected_median),
                        per(k.translate_per_affected_us),
                        per(k.apply_per_affected_us),
                    ]
                })
            })
            .collect();
        let ovs: Vec<Vec<String>> = self
            .rows
            .iter()
            .filter_map(|r| {
                let o = r.ovs.as_ref()?;
                Some(vec![
                    r.entries.to_string(),
                    o.version.clone(),
                    o.packets.to_string(),
                    o.megaflows.to_string(),
                    format!("{:.0}", o.round_median_ms),
                    format!("{:.0}", o.round_p99_ms),
                    format!("{:.0}", o.rtt_median_us),
                    o.checked.to_string(),
                    o.no_round.to_string(),
                ])
            })
            .collect();
        if !ovs.is_empty() {
            s.push_str("\nOpen vSwitch (its TTU: flow-mod sent until the revalidation round it starts ends; affected: the megaflows it re-translated, all it held):\n");
            s.push_str(&table(
                &[
                    "entries (kairo)",
                    "version",
                    "packets sent",
                    "its megaflows",
                    "round median ms",
                    "round p99 ms",
                    "barrier RTT us",
                    "packets verified",
                    "updates without a round",
                ],
                &ovs,
            ));
        }
        let dbsp: Vec<Vec<String>> = self
            .rows
            .iter()
            .filter_map(|r| {
                let d = r.dbsp.as_ref()?;
                Some(vec![
                    r.entries.to_string(),
                    d.version.to_string(),
                    d.owners.to_string(),
                    d.rows.to_string(),
                    d.key_words.to_string(),
                    format!("{:.1}", d.load_s),
                    format!("{:.0}", d.view_mib),
                    format!("{:.1}", d.step_median_us),
                    d.checked.to_string(),
                ])
            })
            .collect();
        if !dbsp.is_empty() {
            s.push_str("\nDBSP (the KAIRO poster's engine: its TTU is the flow-mod to the view's changed rows folded in; affected: megaflows whose traversal changed; index B/entry and RSS growth: what the process grew by for the view, a lower bound after earlier rows freed memory):\n");
            s.push_str(&table(
                &[
                    "entries",
                    "dbsp crate",
                    "megaflows (owners)",
                    "view rows",
                    "key words",
                    "load s",
                    "RSS growth MiB",
                    "step median us",
                    "owners verified",
                ],
                &dbsp,
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("\nnote: {n}\n"));
        }
        s.push_str("\nby kind of update:\n");
        s.push_str(&table(
            &[
                "entries",
                "engine",
                "update",
                "count",
                "TTU median us",
                "affected median",
                "translate us/entry",
                "apply us/entry",
            ],
            &kinds,
        ));
        s
    }
}

impl Workload {
    /// Writes the workload for people and other switches: `NAME.flows` and
    /// `NAME.groups` (ovs-ofctl add-flows/add-groups syntax, loadable into
    /// Open vSwitch), `NAME.updates` (the update stream as `kairo ctl bundle`
    /// / ovs-ofctl `--bundle` lines, one update a line) and the traffic as
    /// packets, one pcap per ingress port (`NAME-traffic/in-N.pcap`, one
    /// frame per flow; `kairo replay --input NAME-traffic` reads them all).
    /// Returns the files written.
    pub fn write_files(&self, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
        use kairo_flow::Field;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut written = Vec::new();
        let mut put = |name: String, text: &str| -> Result<(), String> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            written.push(p);
            Ok(())
        };
        put(format!("{}.flows", self.name), &self.flows)?;
        put(format!("{}.groups", self.name), &self.groups)?;
        let mut ups = String::new();
        for (kind, cmd, arg) in &self.updates {
            let line = kairo_switch::ctl::bundle_line(cmd, arg)
                .ok_or_else(|| format!("update `{cmd} {arg}` has no bundle form"))?;
            ups += &format!("# {kind}\n{line}\n");
        }
        put(format!("{}.updates", self.name), &ups)?;
        let mut by_port: std::collections::BTreeMap<u64, Vec<(std::time::Duration, Vec<u8>)>> = Default::default();
        for (i, k) in self.keys().enumerate() {
            let ts = std::time::Duration::from_micros(i as u64);
            by_port.entry(k.get(Field::InPort)).or_default().push((ts, kairo_wire::emit::frame(&k, &[0u8; 18])));
        }
        let traffic = dir.join(format!("{}-traffic", self.name));
        std::fs::create_dir_all(&traffic).map_err(|e| format!("cannot create {}: {e}", traffic.display()))?;
        for (port, frames) in by_port {
            let p = traffic.join(format!("in-{port}.pcap"));
            kairo_switch::replay::write_pcap(&p, &frames)?;
            written.push(p);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(pipeline: PipelineKind) -> TtuOpts {
        TtuOpts {
            pipeline,
            entries: vec![1500],
            engines: vec![EngineKind::Full, EngineKind::Incremental],
            updates: 12,
            seed: 3,
            verify: true,
            progress: false,
            bundle: 1,
            kinds: Vec::new(),
            threads: 1,
            ovs: false,
            dbsp: false,
        }
    }

    #[test]
    fn kinds_keep_only_the_named_updates_and_an_unknown_kind_is_named() {
        let mut o = small(PipelineKind::Antrea);
        o.engines = vec![EngineKind::Incremental];
        o.kinds = vec!["pod move".into()];
        let rep = run(&o).unwrap();
        let kinds: Vec<&str> = rep.rows[0].by_kind.iter().map(|k| k.update.as_str()).collect();
        assert_eq!(kinds, ["pod move"], "only pod moves were applied");
        assert!(rep.rows[0].updates > 0 && rep.rows[0].updates < 12, "{} of the 12 updates", rep.rows[0].updates);
        o.kinds = vec!["route add".into()];
        let e = run(&o).unwrap_err();
        assert!(e.contains("`route add`") && e.contains("pod move"), "{e}");
    }

    #[test]
    fn json_has_the_documented_keys_and_no_mismatches() {
        let ex = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/l3-router.flows");
        for kind in [PipelineKind::Synthetic, PipelineKind::Ofdpa, PipelineKind::Antrea, PipelineKind::File(ex)] {
            let rep = run(&small(kind.clone())).unwrap();
            let v = serde_json::to_value(&rep).unwrap();
            assert!(v.get("machine").is_some());
            let rows = v["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 2);
            for r in rows {
                for k in [
                    "pipeline",
                    "engine",
                    "entries",
                    "updates",
                    "ttu_median_us",
                    "ttu_p99_us",
                    "ttu_max_us",
                    "affected_median",
                    "mismatches",
                ] {
                    assert!(r.get(k).is_some(), "missing {k}");
                }
                assert_eq!(r["mismatches"], 0);
                assert_eq!(r["entries"], 1500);
            }
            // The incremental engine examined fewer entries than full revalidation.
            assert!(rep.rows[1].affected_median < rep.rows[0].affected_median);
        }
    }

    #[test]
    fn bundles_and_the_plot() {
        let mut o = small(PipelineKind::Ofdpa);
        o.bundle = 4;
        o.entries = vec![800, 1600];
        let rep = run(&o).unwrap();
        assert_eq!(rep.rows[0].updates, 3, "12 updates in bundles of 4");
        assert!(rep.rows.iter().all(|r| r.mismatches == 0));
        let path = std::env::temp_dir().join(format!("kairo-ttu-{}.svg", std::process::id()));
        rep.plot(&path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("polyline"));
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(not(feature = "dbsp"))]
    #[test]
    fn dbsp_asked_of_a_kairo_built_without_it_is_a_note() {
        let mut o = small(PipelineKind::Synthetic);
        (o.engines, o.dbsp, o.updates, o.verify) = (Vec::new(), true, 2, false);
        o.entries = vec![1500, 1600];
        let r = run(&o).unwrap();
        assert!(r.rows.is_empty());
        // Said once, though asked at each size.
        assert_eq!(r.notes.iter().filter(|n| n.contains("without the `dbsp` feature")).count(), 1, "{:?}", r.notes);
    }

    #[test]
    fn verify_catches_a_corrupted_cache() {
        let wl = workload(PipelineKind::Ofdpa, 500, 1, 3).unwrap();
        let p = wl.pipeline().unwrap();
        let (_dp, sc) = fill(p.clone(), EngineKind::Incremental, wl.keys(), wl.connections, 500, false).unwrap();
        assert!(sc.lock().verify().is_empty());
        let victim = sc.lock().engine.entries()[17].clone();
        let _ = victim.set_actions(vec![kairo_xlate::DpAction::Output(99)], (*victim.traversal()).clone());
        let mm = sc.lock().verify();
        assert_eq!(mm.len(), 1, "{mm:?}");
        assert!(mm[0].found.contains("99"));
    }

    #[test]
    fn unknown_pipeline_is_a_clear_error() {
        let e = "antrea2".parse::<PipelineKind>().unwrap_err();
        assert!("ofdpa".parse::<PipelineKind>().is_ok());
        assert!(e.contains("antrea2") && e.contains("ofdpa"), "{e}");
    }
}
