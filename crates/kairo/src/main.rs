//! The `kairo` command: a thin layer over the library crates.
//!
//! It owns only argument parsing, file reading and printing; every decision
//! about packets and rules lives in the libraries. Bad input (an unreadable
//! file, a malformed flow, an unknown field) ends the command with a message
//! naming the file, line and text, and exit status 2; it never panics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kairo_xlate::{trace, Pipeline};

mod switch_cmd;

/// mimalloc instead of glibc's malloc: with millions of small cache objects,
/// glibc's free lists made single updates cost milliseconds (`_int_malloc` and
/// `malloc_consolidate` walking fragmented bins: 30% of an update run's
/// profile); mimalloc's per-size pages keep allocation constant-time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_generic_collect` in the mimalloc (v3) that libmimalloc-sys
/// 0.1.49 builds: its place in `mi_option_e`, counted from
/// `mi_option_show_errors` = 0 (the crate exports no constant for it; the
/// dependency is pinned to that version).
const MI_OPTION_GENERIC_COLLECT: libmimalloc_sys::mi_option_t = 34;
/// That option's default, which tells the index is right.
const MI_GENERIC_COLLECT_DEFAULT: std::ffi::c_long = 10_000;
/// `mi_option_purge_delay` in the same enum (after the deprecated
/// `eager_commit_delay`, 14, which the crate does export), and its default
/// in milliseconds.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 10;

/// mimalloc walks all its pages of the thread every 10 000 slow-path
/// allocations; with a cache of millions of entries that walk lands on
/// whichever update happens to allocate then (at 1M Antrea megaflows,
/// updates of 110 us took 0.4-1.5 ms when it did). Every million instead
/// (mimalloc's maximum). Left alone if the option does not read as its
/// default (the user set MIMALLOC_GENERIC_COLLECT, or the index is wrong).
///
/// mimalloc also gives freed memory back to the OS 10 ms after it is freed
/// (purging); the next allocation there faults it back in, zeroing a whole
/// 2 MiB page where transparent huge pages are on. Housekeeping frees much
/// between updates, so the next update's first allocations paid that: at
/// 200K Antrea megaflows 0.1-0.3 ms (`clear_page_erms` under the TTU, 60%
/// of a pod-move run's profile). Never purging keeps freed memory for
/// reuse: resident memory stays at its peak, which is reported anyway.
/// Same rule: left alone if the user set MIMALLOC_PURGE_DELAY.
fn tune_allocator() {
    // SAFETY: mi_option_get and mi_option_set take no pointers and only read
    // or store one integer in mimalloc's option table, which mimalloc allows
    // at any time from any thread; an index below `_mi_option_last` (51 in
    // this version) names a valid entry of that table.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_GENERIC_COLLECT) == MI_GENERIC_COLLECT_DEFAULT {
            libmimalloc_sys::mi_option_set(MI_OPTION_GENERIC_COLLECT, 1_000_000);
        }
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

#[derive(Parser)]
#[command(
    name = "kairo",
    version,
    about = "A userspace virtual switch whose flow caches stay correct after every policy change"
)]
struct Cli {
    /// Lock the process's memory (as `ovs-vswitchd --mlockall` does), so
    /// that the kernel never reclaims, pages out or splits the pages of the
    /// caches: with many gigabytes of megaflows, a page the kernel took
    /// away is a fault on some later update's path. Needs root (or
    /// CAP_IPC_LOCK, or an unlimited RLIMIT_MEMLOCK); otherwise a warning,
    /// and the run goes on unlocked.
    #[arg(long, global = true)]
    mlockall: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Locks current and future pages as they are faulted in (MCL_ONFAULT:
/// memory reserved but never touched stays unlocked and unbacked). Only
/// where nothing caps locked memory, which would otherwise make a later
/// allocation fail instead of this call. Returns why not, if not.
fn lock_memory() -> Result<(), String> {
    use rustix::process::{geteuid, getrlimit, Resource};
    let capped = getrlimit(Resource::Memlock).current.is_some();
    if !geteuid().is_root() && capped {
        return Err("locked memory is capped for this user (not root, RLIMIT_MEMLOCK not unlimited)".into());
    }
    use rustix::mm::{mlockall, MlockAllFlags};
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|e| std::io::Error::from(e).to_string())
}

#[derive(Subcommand)]
enum Cmd {
    /// Trace packets through a pipeline, like `ovs-appctl ofproto/trace`.
    Trace {
        /// Flow file in ovs-ofctl add-flows syntax.
        #[arg(long)]
        flows: PathBuf,
        /// Group file in ovs-ofctl add-groups syntax.
        #[arg(long)]
        groups: Option<PathBuf>,
        /// Print one JSON list per packet, of its passes (the first, then
        /// each recirculated one), instead of text.
        #[arg(long)]
        json: bool,
        /// The switch's ports (what FLOOD sends to), comma-separated
        /// [default: those of --port-config, else 1,2,3,4].
        #[arg(long, value_delimiter = ',')]
        ports: Option<Vec<u32>>,
        /// The bridge's ports, one a line: `OFPORT NAME [SETTING ...]` (or
        /// `LOCAL NAME`), `#` starting a comment; settings as `ovs-vsctl set
        /// port` takes them (`tag=N`, `trunks=N,M`, `vlan_mode=MODE`) and
        /// OpenFlow port-config words as `ovs-ofctl mod-port` takes them
        /// (`no-flood`, `no-forward`, `no-receive`, `no-packet-in`, `down`). Flows, groups
        /// and packets may then give ports by name (`in_port=pod1`,
        /// `output:"antrea-gw0"`), as ovs-ofctl does against a running bridge.
        #[arg(long = "port-config", value_name = "FILE")]
        port_config: Option<PathBuf>,
        /// A packet sent through the bridge before the traced ones, so that
        /// NORMAL learns its source MAC and its `learn` actions add their
        /// flows, as a packet through the switch would (repeatable, in
        /// order; ofproto/trace itself learns nothing).
        #[arg(long, value_name = "PACKET")]
        learn: Vec<String>,
        /// The ct_state the next pass recirculated after a `ct` sees, as
        /// `ofproto/trace --ct-next`: flags such as `trk,est` or `+trk+est`;
        /// repeat it for later passes (the default is `trk,new`).
        #[arg(long = "ct-next", value_name = "FLAGS")]
        ct_next: Vec<String>,
        /// Packets, in ovs-ofctl flow syntax: 'in_port=1,tcp,nw_dst=10.0.0.1,tp_dst=80'.
        #[arg(required = true)]
        packets: Vec<String>,
    },
    /// Run the switch on Linux interfaces (AF_PACKET rings) and TAP devices,
    /// programmed through a control socket (`kairo ctl`). Needs root.
    Switch(switch_cmd::SwitchArgs),
    /// Send one command to a running switch, like ovs-ofctl: add-flow,
    /// add-flows, mod-flows, del-flows, add-group, add-groups, mod-group,
    /// del-groups, bundle, dump-flows, dump-groups, dump-megaflows, show,
    /// stats, trace, help.
    Ctl(switch_cmd::CtlArgs),
    /// Replay pcap files through a pipeline offline; write what each port sends as pcap.
    Replay(switch_cmd::ReplayArgs),
    /// Write a generated workload: the OF-DPA or Antrea pipeline (flows and
    /// groups in ovs-ofctl syntax, loadable into Open vSwitch), its update
    /// stream (bundle lines for `kairo ctl bundle`) and its traffic as pcap
    /// files per ingress port (for `kairo replay`).
    Gen {
        /// The pipeline to write.
        #[arg(long, value_enum, default_value_t = GenPipeline::Ofdpa)]
        pipeline: GenPipeline,
        /// Unique flows in the traffic.
        #[arg(long, default_value = "10k")]
        flows: String,
        /// Updates in the stream.
        #[arg(long, default_value_t = 100)]
        updates: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long, default_value = "workload")]
        out: PathBuf,
    },
    /// Benchmarks, each figure beside its baseline measured in the same run.
    /// With no subcommand: the KAIRO poster's Table 1 (time-to-update at 100K,
    /// 150K and 200K megaflows on the OF-DPA pipeline, both engines, verified).
    Bench {
        #[command(subcommand)]
        what: Option<BenchCmd>,
    },
}

/// Output and seed options of the benchmarks that draw a figure.
#[derive(clap::Args)]
struct FigureArgs {
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the figure as SVG to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The pipelines `kairo gen` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum GenPipeline {
    /// OF-DPA shape, ClassBench of2 rules.
    Ofdpa,
    /// Antrea's 22 tables, ClassBench acl1 policies.
    Antrea,
    /// A synthetic 10-table pipeline.
    Synthetic,
}

impl From<GenPipeline> for kairo_bench::ttu::PipelineKind {
    fn from(p: GenPipeline) -> Self {
        match p {
            GenPipeline::Ofdpa => kairo_bench::ttu::PipelineKind::Ofdpa,
            GenPipeline::Antrea => kairo_bench::ttu::PipelineKind::Antrea,
            GenPipeline::Synthetic => kairo_bench::ttu::PipelineKind::Synthetic,
        }
    }
}

/// A cache maintenance engine.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EngineArg {
    /// Full revalidation: every entry after every change (Open vSwitch's way).
    Full,
    /// Incremental maintenance: only the entries a change can affect.
    #[value(alias = "incr")]
    Incremental,
}

impl From<EngineArg> for kairo_maintain::EngineKind {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Full => kairo_maintain::EngineKind::Full,
            EngineArg::Incremental => kairo_maintain::EngineKind::Incremental,
        }
    }
}

/// An engine of `kairo bench ttu`: kairo's two, or Open vSwitch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TtuEngineArg {
    /// Full revalidation: every entry after every change (Open vSwitch's way).
    Full,
    /// Incremental maintenance: only the entries a change can affect.
    #[value(alias = "incr")]
    Incremental,
    /// Open vSwitch 3.1 (userspace, private instance), the same packets and updates.
    Ovs,
    /// The KAIRO poster's approach: the cache's traversals as a view DBSP maintains (a kairo built with `--features dbsp`).
    Dbsp,
}

/// What a hit-rate stream feeds the caches.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FeedArg {
    /// Flow keys straight into the caches.
    Keys,
    /// Ethernet frames built from the keys, parsed and forwarded in batches.
    Packets,
}

impl From<FeedArg> for kairo_bench::hitrate::Feed {
    fn from(f: FeedArg) -> Self {
        match f {
            FeedArg::Keys => kairo_bench::hitrate::Feed::Keys,
            FeedArg::Packets => kairo_bench::hitrate::Feed::Packets,
        }
    }
}

/// `--pipeline` of `bench ttu`: a named pipeline or a flow file.
fn parse_port_kind(s: &str) -> Result<kairo_switch::port::PortKind, String> {
    match kairo_switch::port::PortKind::parse(s)? {
        kairo_switch::port::PortKind::Tap => Err("`tap`: the benchmark's links are veths (afpacket or afxdp)".into()),
        k => Ok(k),
    }
}

fn parse_pipeline(s: &str) -> Result<kairo_bench::ttu::PipelineKind, String> {
    s.parse()
}

/// Cache sizes given as `10k,1m,...`.
fn parse_sizes(list: &[String]) -> Result<Vec<usize>> {
    list.iter().map(|s| kairo_bench::parse_size(s).map_err(anyhow::Error::msg)).collect()
}

/// Writes the JSON report and prints the table, then draws the figure if asked.
fn emit_figure<T: serde::Serialize>(
    report: &T,
    table: String,
    out: &FigureArgs,
    plot: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<()> {
    emit(report, table, out.json.as_deref())?;
    if let Some(path) = &out.plot {
        plot(path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Fast-path lookup rates: EMC, megaflow classifier (1/8/32 subtables), end to end.
    Lookup {
        /// Cache sizes (megaflows), comma-separated: 10k,1m.
        #[arg(long, value_delimiter = ',', default_value = "10k,1m")]
        entries: Vec<String>,
        /// Also run 10M megaflows (needs about 5 GiB and a minute or two).
        #[arg(long)]
        large: bool,
        /// Subtable counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        subtables: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 0.4)]
        secs: f64,
        /// Unique flows in the end-to-end scenario.
        #[arg(long, default_value = "100k")]
        e2e_flows: String,
        /// Write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// How forwarding scales with threads, on in-memory ports (packets from
    /// memory through the whole forwarding loop): packets per second for
    /// each thread count.
    Threads {
        /// Thread counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        pmd_threads: Vec<usize>,
        /// Seconds per count.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Distinct flows per source port.
        #[arg(long, default_value_t = 1000)]
        flows: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Does forwarding wait while an update runs? Packets offered at a
    /// fixed rate over a filled OF-DPA cache while updates re-translate it
    /// (full engine), with misses parked (kairo) and with upcalls that wait
    /// for the lock (before): latency of hits and of new flows.
    Stall {
        /// Megaflows in the cache (k and m suffixes allowed).
        #[arg(long, default_value = "100k")]
        entries: String,
        /// Updates applied one after the other.
        #[arg(long, default_value_t = 4)]
        updates: usize,
        /// Packets offered per second.
        #[arg(long, default_value = "50k")]
        pps: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// What the EMC should take in: EMC hit rate and packets per second,
    /// end to end, under uniform and Zipf 0.9 / 0.95 / 0.99 traffic, for Open
    /// vSwitch's random insertion (1/100), always-insert, and the hot-flow
    /// filter (Count-Min sketch and Bloom filter).
    Emc {
        /// Distinct flows in the traffic (k and m suffixes allowed).
        #[arg(long, default_value = "100k")]
        flows: String,
        /// Packets in the replayed stream.
        #[arg(long, default_value = "256k")]
        packets: String,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 0.5)]
        secs: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Connection tracking on the data path: TCP connections set up per
    /// second, new UDP connections, established packets, expiry, and the
    /// memory each connection holds (a stateful firewall pipeline).
    Conntrack {
        /// Connections per scenario.
        #[arg(long, default_value = "100k")]
        conns: String,
        /// Write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The KAIRO poster's Figure 2: hit rate, misses and time-to-update against the cache limit.
    Hitrate {
        /// Cache limits (megaflows), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10k,50k,100k,200k")]
        limits: Vec<String>,
        /// Unique flows.
        #[arg(long, default_value = "1m")]
        flows: String,
        /// What the stream feeds the caches.
        #[arg(long, value_enum, default_value_t = FeedArg::Keys)]
        feed: FeedArg,
        /// Packets in the stream.
        #[arg(long, default_value = "1m")]
        packets: String,
        /// Zipf exponent of flow popularity (0.9, 0.95, 0.99 as in NetCache); 0 for uniform.
        #[arg(long, default_value_t = 0.99)]
        zipf: f64,
        #[arg(long, default_value_t = 10)]
        updates: usize,
        /// Measure Open vSwitch 3.1 too, given the same stream and updates: a
        /// private instance per limit (userspace, EMC off, flow limit = the
        /// cache limit). Adds minutes: the stream goes in as frames.
        #[arg(long)]
        ovs: bool,
        #[command(flatten)]
        out: FigureArgs,
    },
    /// Packets per second forwarded between two veth ports by kairo switch,
    /// beside the Linux bridge and Open vSwitch's userspace datapath (when
    /// installed) on the same ports (needs root).
    Switch {
        /// Seconds of traffic per forwarder.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Distinct UDP flows in the traffic (k and m suffixes allowed).
        #[arg(long, default_value = "64")]
        flows: String,
        /// Frame length in bytes (60 to 2000).
        #[arg(long, default_value_t = 60)]
        size: usize,
        /// Run a stateful firewall (ct, commit of new connections) with every
        /// frame a new connection sent once: connections set up per second
        /// (use --flows for how many, e.g. 1m).
        #[arg(long)]
        conntrack: bool,
        /// kairo's forwarding threads, comma-separated: a row for each.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        pmd_threads: Vec<usize>,
        /// How kairo attaches to the links, comma-separated: afpacket,
        /// afxdp (XDP sockets; a note instead of rows where the kernel
        /// refuses them). A row for each, with each thread count.
        #[arg(long, value_delimiter = ',', default_value = "afpacket,afxdp", value_parser = parse_port_kind)]
        port_types: Vec<kairo_switch::port::PortKind>,
        /// Paced 1 s runs that search each kairo row's sustained rate (the
        /// highest offered rate at which it drops nothing itself); 0: none.
        #[arg(long, default_value_t = 6)]
        sustained_trials: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time-to-update of the full and incremental engines on identical caches, and of their peers (Open vSwitch, DBSP).
    Ttu {
        /// Pipeline: ofdpa (OF-DPA shape, ClassBench of2 rules), antrea (22 tables, acl1
        /// policies), synthetic, or a flow file (groups from FILE with the
        /// extension .groups, if present).
        #[arg(long, default_value = "ofdpa", value_parser = parse_pipeline, value_name = "ofdpa|antrea|synthetic|FILE")]
        pipeline: kairo_bench::ttu::PipelineKind,
        /// Cache sizes (megaflows), comma-separated: 10k,100k,1m.
        #[arg(long, value_delimiter = ',', default_value = "10k,100k")]
        entries: Vec<String>,
        /// Engines, comma-separated: full, incremental, ovs (a private Open
        /// vSwitch given the same packets and updates, when installed) and
        /// dbsp (the KAIRO poster's approach on DBSP, given the same cache
        /// and updates, in a kairo built with `--features dbsp`).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "full,incremental")]
        engines: Vec<TtuEngineArg>,
        /// Threads a maintenance pass may revalidate a large affected set on
        /// (both engines alike). More re-translate faster, at about 0.5 KB
        /// more memory per re-translated entry.
        #[arg(long, env = "KAIRO_MAINTAIN_THREADS", default_value_t = kairo_maintain::DEFAULT_THREADS)]
        maintain_threads: usize,
        /// Updates applied to each engine.
        #[arg(long, default_value_t = 100)]
        updates: usize,
        /// Run the oracle after every update (a mismatch fails the run).
        #[arg(long)]
        verify: bool,
        /// Apply the updates in bundles of this many flow-mods (one maintenance pass each).
        #[arg(long, default_value_t = 1)]
        bundle: usize,
        /// Keep only these kinds of update from the stream, comma-separated as
        /// the per-kind table names them (e.g. 'pod move,endpoint change').
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        #[command(flatten)]
        out: FigureArgs,
    },
    /// The update stream over a real OpenFlow 1.3 connection to kairo's
    /// switch end (FLOW_MOD/GROUP_MOD + BARRIER each), the cache filled to
    /// each size: the round trip to the barrier reply beside the engine's TTU.
    Openflow {
        /// Pipeline, as for `kairo bench ttu`.
        #[arg(long, default_value = "ofdpa", value_parser = parse_pipeline, value_name = "ofdpa|antrea|synthetic|FILE")]
        pipeline: kairo_bench::ttu::PipelineKind,
        /// Cache sizes (megaflows), comma-separated: 100k,1m.
        #[arg(long, value_delimiter = ',', default_value = "10k,100k")]
        entries: Vec<String>,
        /// Updates sent.
        #[arg(long, default_value_t = 200)]
        updates: usize,
        /// Cache maintenance engine of the switch.
        #[arg(long, value_enum, default_value_t = EngineArg::Incremental)]
        engine: EngineArg,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Peers given the same stream in the same run: `ovs` (a private
        /// Open vSwitch, where installed) or `none`.
        #[arg(long, default_value = "ovs", value_parser = ["ovs", "none"])]
        peers: String,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// A text file's contents; a file that is not UTF-8 is an error naming the
/// line and the byte in it where the text stops being UTF-8.
pub(crate) fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let byte = at - before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        anyhow::anyhow!("{}: line {line}, byte {byte}: not UTF-8 text", path.display())
    })
}

/// Loads a flow file and an optional group file into a pipeline, all or nothing.
pub fn load_pipeline(flows: &Path, groups: Option<&Path>) -> Result<Pipeline> {
    load_pipeline_in(flows, groups, &kairo_ofproto::PortNames::NONE)
}

/// [`load_pipeline`] with ports that flows and groups may give by name.
pub fn load_pipeline_in(flows: &Path, groups: Option<&Path>, names: &kairo_ofproto::PortNames) -> Result<Pipeline> {
    let ff =
        kairo_ofproto::parse_flow_file_in(&read(flows)?, names).with_context(|| format!("in {}", flows.display()))?;
    let gs = match groups {
        Some(g) => {
            kairo_ofproto::parse_group_file_in(&read(g)?, names).with_context(|| format!("in {}", g.display()))?
        }
        None => Vec::new(),
    };
    Pipeline::from_parts(ff, gs).with_context(|| format!("loading {}", flows.display()))
}

/// A packet spec with its `in_port` given by name put as a number.
fn packet_ports(spec: &str, names: &kairo_ofproto::PortNames) -> Result<String> {
    let mut out = Vec::new();
    for tok in spec.split(',') {
        match tok.trim().strip_prefix("in_port=") {
            Some(v) => match names.resolve(v).with_context(|| format!("packet `{spec}`"))? {
                Some(p) => out.push(format!("in_port={p}")),
                None => out.push(tok.to_string()),
            },
            None => out.push(tok.to_string()),
        }
    }
    Ok(out.join(","))
}

/// Writes the JSON report (first, so a failure to print loses nothing), then prints the table.
fn emit<T: serde::Serialize>(report: &T, table: String, json: Option<&Path>) -> Result<()> {
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{table}");
    if let Some(path) = json {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Switch(a) => switch_cmd::switch(a),
        Cmd::Gen { pipeline, flows, updates, seed, out } => {
            let kind = pipeline.into();
            let n = kairo_bench::parse_size(&flows).map_err(anyhow::Error::msg)?;
            let w = kairo_bench::ttu::workload_with_keys(kind, n, updates, seed).map_err(anyhow::Error::msg)?;
            for p in w.write_files(&out).map_err(anyhow::Error::msg)? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Cmd::Ctl(a) => switch_cmd::ctl(a),
        Cmd::Replay(a) => switch_cmd::replay(a),
        Cmd::Trace { flows, groups, json, ports, port_config, learn, ct_next, packets } => {
            let (config, names) = match &port_config {
                Some(f) => {
                    kairo_ofproto::ports::parse_port_config(&read(f)?).with_context(|| format!("in {}", f.display()))?
                }
                None => Default::default(),
            };
            let mut p = load_pipeline_in(&flows, groups.as_deref(), &names)?;
            p.set_ports(match ports {
                Some(ports) => ports,
                None if port_config.is_some() => config.iter().map(|l| l.port).collect(),
                None => vec![1, 2, 3, 4],
            });
            for l in &config {
                p.set_port_settings(l.port, Some(l.settings.clone()));
                // A port set down is not live for fast-failover groups.
                if l.settings.config.has(kairo_ofproto::ports::PortConfig::DOWN) {
                    p.set_port_live(l.port, false);
                }
            }
            for spec in &learn {
                let key =
                    kairo_flow::parse_key(&packet_ports(spec, &names)?).with_context(|| format!("--learn `{spec}`"))?;
                let r = kairo_xlate::translate(&p, &key);
                for l in r.learn {
                    p.macs_mut().learn(l.vlan, l.mac, l.port, 0);
                }
                if let Some(flows) = r.traversal.learned {
                    let fm = kairo_maintain::flowmod::FlowMod::LearnFlows(flows.into_vec());
                    kairo_maintain::flowmod::apply(&mut p, &fm).with_context(|| format!("--learn `{spec}`"))?;
                }
            }
            let ct_next = ct_next
                .iter()
                .map(|s| kairo_flow::parse::parse_ct_flags(s).with_context(|| format!("--ct-next `{s}`")))
                .collect::<anyhow::Result<Vec<u64>>>()?;
            for (i, spec) in packets.iter().enumerate() {
                let key =
                    kairo_flow::parse_key(&packet_ports(spec, &names)?).with_context(|| format!("packet `{spec}`"))?;
                // The packet's first pass and every pass its recirculations lead to.
                let passes = kairo_xlate::recirc::follow_ct(&p, &key, &ct_next);
                if json {
                    println!("{}", trace::trace_passes_json(&p, &passes));
                } else {
                    if i > 0 {
                        println!();
                    }
                    print!("{}", trace::trace_passes_text(&p, &passes));
                }
            }
            Ok(())
        }
        Cmd::Bench { what: Some(BenchCmd::Lookup { entries, large, subtables, secs, e2e_flows, json, seed }) } => {
            let mut sizes = parse_sizes(&entries)?;
            if large && !sizes.contains(&10_000_000) {
                sizes.push(10_000_000);
            }
            if subtables.iter().any(|&s| s == 0 || s > 64) {
                anyhow::bail!("--subtables: each count must be between 1 and 64");
            }
            if secs.is_nan() || secs <= 0.0 {
                anyhow::bail!("--secs must be positive");
            }
            let e2e_flows = kairo_bench::parse_size(&e2e_flows).map_err(anyhow::Error::msg)?;
            let opts = kairo_bench::lookup::LookupOpts { sizes, subtables, secs, e2e_flows, seed, progress: true };
            let report = kairo_bench::lookup::run(&opts).map_err(anyhow::Error::msg)?;
            emit(&report, report.to_table(), json.as_deref())?;
            Ok(())
        }
        Cmd::Bench { what: Some(BenchCmd::Threads { pmd_threads, secs, flows, json }) } => {
            if pmd_threads.is_empty() || pmd_threads.iter().any(|&t| t == 0 || t > 64) {
                anyhow::bail!("--pmd-threads: each count must be between 1 and 64");
            }
            if secs.is_nan() || secs <= 0.0 || flows == 0 {
                anyhow::bail!("--secs must be positive and --flows at least 1");
            }
            let opts = kairo_bench::threads::ThreadsOpts { threads: pmd_threads, secs, flows, progress: true };
            let report = kairo_bench::threads::run(&opts).map_err(anyhow::Error::msg)?;
            emit(&report, report.to_table(), json.as_deref())
        }
        Cmd::Bench { what: Some(BenchCmd::Stall { entries, updates, pps, seed, json }) } => {
            let size = |s: &str| kairo_bench::parse_size(s).map_err(anyhow::Error::msg);
            let (entries, pps) = (size(&entries)?, size(&pps)? as u64);
            if updates == 0 {
                anyhow::bail!("--updates must be at least 1");
            }
            let opts = kairo_bench::stall::StallOpts { entries, updates, pps, seed, progress: true };
            let report = kairo_bench::stall::run(&opts).map_err(anyhow::Error::msg)?;
            emit(&report, report.to_table(), json.as_deref())
        }
        Cmd::Bench { what: Some(BenchCmd::Emc { flows, packets, secs, seed, json }) } => {
            let size = |s: &str| kairo_bench::parse_size(s).map_err(anyhow::Error::msg);
            let (flows, packets) = (size(&flows)?, size(&packets)?);
            if secs.is_nan() || secs <= 0.0 || flows == 0 || packets == 0 {
                anyhow::bail!("--secs must be positive, --flows and --packets at least 1");
            }
            let opts = kairo_bench::emc::EmcOpts { flows, packets, secs, seed, progress: true };
            let report = kairo_bench::emc::run(&opts).map_err(anyhow::Error::msg)?;
            emit(&report, report.to_table(), json.as_deref())
        }
        Cmd::Bench { what: Some(BenchCmd::Conntrack { conns, json, seed }) } => {
            let conns = kairo_bench::parse_size(&conns).map_err(anyhow::Error::msg)?;
            let opts = kairo_bench::conntrack::CtOpts { conns, seed, progress: true };
            let report = kairo_bench::conntrack::run_all(&opts).map_err(anyhow::Error::msg)?;
            emit(&report, report.to_table(), json.as_deref())?;
            Ok(())
        }
        Cmd::Bench { what: Some(BenchCmd::Hitrate { limits, flows, feed, packets, zipf, updates, ovs, out }) } => {
            let size = |s: &str| kairo_bench::parse_size(s).map_err(anyhow::Error::msg);
            let limits = parse_sizes(&limits)?;
            if zipf.is_nan() || zipf < 0.0 {
                anyhow::bail!("--zipf must be 0 (uniform popularity) or positive");
            }
            let opts = kairo_bench::hitrate::HitrateOpts {
                feed: feed.into(),
                limits,
                flows: size(&flows)?,
                packets: size(&packets)?,
                zipf,
                updates,
                seed: out.seed,
                progress: true,
                ovs,
            };
            let report = kairo_bench::hitrate::run(&opts).map_err(anyhow::Error::msg)?;
            emit_figure(&report, report.to_table(), &out, |p| report.plot(p))
        }
        Cmd::Bench {
            what:
                Some(BenchCmd::Switch { secs, flows, size, conntrack, pmd_threads, port_types, sustained_trials, json }),
        } => {
            let flows = kairo_bench::parse_size(&flows).map_err(anyhow::Error::msg)?;
            if secs.is_nan() || secs <= 0.0 || flows == 0 {
                anyhow::bail!("--secs must be positive and --flows at least 1");
            }
            if pmd_threads.is_empty() || pmd_threads.iter().any(|&t| t == 0 || t > 64) {
                anyhow::bail!("--pmd-threads: each count must be between 1 and 64");
            }
            let opts = kairo_bench::fwd::FwdOpts {
                secs,
                flows,
                frame_len: size,
                conntrack,
                threads: pmd_threads,
                port_kinds: port_types,
                sustained_trials,
                progress: true,
            };
            let report = kairo_bench::fwd::run(&opts).map_err(anyhow::Error::msg)?;
            emit(&report, report.to_table(), json.as_deref())
        }
        Cmd::Bench { what: Some(BenchCmd::Openflow { pipeline, entries, updates, engine, seed, peers, json }) } => {
            if updates == 0 {
                anyhow::bail!("--updates must be at least 1");
            }
            let opts = kairo_bench::openflow::OfOpts {
                pipeline,
                entries: parse_sizes(&entries)?,
                updates,
                engine: engine.into(),
                seed,
                progress: true,
                ovs: peers == "ovs",
            };
            let report = kairo_bench::openflow::run(&opts).map_err(anyhow::Error::msg)?;
            emit(&report, report.to_table(), json.as_deref())
        }
        Cmd::Bench { what: None } => {
            println!("Table 1 of the KAIRO poster, on this machine: OF-DPA pipeline (ClassBench of2 rules), kairo's two engines on identical caches, Open vSwitch given the same packets and updates, and DBSP (the poster's engine; in a kairo built with `--features dbsp`) given the same cache, verified after every update.\n");
            let opts = kairo_bench::ttu::TtuOpts {
                pipeline: kairo_bench::ttu::PipelineKind::Ofdpa,
                entries: vec![100_000, 150_000, 200_000],
                engines: vec![kairo_maintain::EngineKind::Full, kairo_maintain::EngineKind::Incremental],
                updates: 20,
                seed: 1,
                verify: true,
                progress: true,
                bundle: 1,
                kinds: Vec::new(),
                threads: kairo_maintain::DEFAULT_THREADS,
                ovs: true,
                dbsp: true,
            };
            let report = kairo_bench::ttu::run(&opts).map_err(anyhow::Error::msg)?;
            print!("{}", report.to_table());
            println!("\nKAIRO poster (Table 1): full revalidation 335 / 503 / 670 ms, KAIRO (DBSP) 2.72 / 3.01 / 3.20 ms at 100K / 150K / 200K megaflows.");
            let bad: usize = report.rows.iter().map(|r| r.mismatches).sum();
            if bad > 0 {
                anyhow::bail!("the oracle found {bad} mismatches between the cache and full recomputation");
            }
            Ok(())
        }
        Cmd::Bench {
            what:
                Some(BenchCmd::Ttu { pipeline, entries, engines, maintain_threads, updates, verify, bundle, kinds, out }),
        } => {
            let sizes = parse_sizes(&entries)?;
            let ovs = engines.contains(&TtuEngineArg::Ovs);
            let dbsp = engines.contains(&TtuEngineArg::Dbsp);
            let engines = engines
                .into_iter()
                .filter_map(|e| match e {
                    TtuEngineArg::Full => Some(kairo_maintain::EngineKind::Full),
                    TtuEngineArg::Incremental => Some(kairo_maintain::EngineKind::Incremental),
                    TtuEngineArg::Ovs | TtuEngineArg::Dbsp => None,
                })
                .collect();
            if maintain_threads == 0 {
                anyhow::bail!("--maintain-threads must be at least 1");
            }
            if updates == 0 {
                anyhow::bail!("--updates must be at least 1");
            }
            if bundle == 0 {
                anyhow::bail!("--bundle must be at least 1");
            }
            let opts = kairo_bench::ttu::TtuOpts {
                pipeline,
                entries: sizes,
                engines,
                updates,
                seed: out.seed,
                verify,
                progress: true,
                bundle,
                kinds: kinds.iter().map(|k| k.trim().to_string()).collect(),
                threads: maintain_threads,
                ovs,
                dbsp,
            };
            let report = kairo_bench::ttu::run(&opts).map_err(anyhow::Error::msg)?;
            emit_figure(&report, report.to_table(), &out, |p| report.plot(p))?;
            let bad: usize = report.rows.iter().map(|r| r.mismatches).sum();
            if bad > 0 {
                anyhow::bail!("--verify found {bad} mismatches between the cache and full recomputation");
            }
            Ok(())
        }
    }
}

/// `KAIRO_TTU_TRACE` (any value) shows the libraries' diagnostics on
/// stderr: each update's time by phase (`kairo::ttu`) and the shared action
/// cells' choices and phases (`kairo::cells`).
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if std::env::var_os("KAIRO_TTU_TRACE").is_none() {
        return;
    }
    let only_kairo = tracing_subscriber::filter::Targets::new().with_target("kairo", tracing::Level::DEBUG);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).without_time().with_target(false);
    // Fails only if a subscriber is already set, which nothing else does.
    let _ = tracing_subscriber::registry().with(fmt).with(only_kairo).try_init();
}

fn main() -> ExitCode {
    tune_allocator();
    init_tracing();
    let cli = Cli::parse();
    if cli.mlockall {
        if let Err(why) = lock_memory() {
            eprintln!("kairo: warning: --mlockall: memory not locked: {why}");
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kairo: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
