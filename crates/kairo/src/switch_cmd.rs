//! `kairo switch`, `kairo ctl` and `kairo replay`: argument handling over
//! the `kairo-switch` library (ports are opened, the socket served and the
//! signals caught here; forwarding and commands live in the library).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use kairo_datapath::DpConfig;
use kairo_ofproto::ports::PortSettings;
use kairo_switch::openflow::Target;
use kairo_switch::port::PortKind;
use kairo_switch::{port, Attached, PortInfo, Switch};
use kairo_xlate::Pipeline;

#[derive(Args)]
pub struct SwitchArgs {
    /// A Linux interface to attach, optionally with its OpenFlow port
    /// number, how (`type=afpacket`, the default, or `type=afxdp`: XDP
    /// sockets and an XDP program on the interface while the switch runs)
    /// and its VLAN settings for NORMAL (`veth1=3,tag=10`,
    /// `veth2,trunks=10,20`, `veth3,type=afxdp,vlan_mode=native-untagged,tag=10`).
    #[arg(long = "port", value_name = "IFNAME[=OFPORT][,SETTING...]")]
    ports: Vec<String>,
    /// A TAP device to create (or attach to), optionally with its OpenFlow
    /// port number and VLAN settings (as --port).
    #[arg(long = "tap", value_name = "NAME[=OFPORT][,SETTING...]")]
    taps: Vec<String>,
    /// Path of the control socket. It is created srwxr-x--- whatever the
    /// umask (only its owner, and root, can connect, as Open vSwitch's); a
    /// stale socket there is replaced, anything else at the path is an error.
    /// At most 64 clients at once; idle ones are closed after 10 minutes.
    #[arg(long, value_name = "SOCKET")]
    ctl: PathBuf,
    /// Flows to load at start (ovs-ofctl add-flows syntax).
    #[arg(long)]
    flows: Option<PathBuf>,
    /// Groups to load at start (ovs-ofctl add-groups syntax).
    #[arg(long)]
    groups: Option<PathBuf>,
    /// Cache maintenance engine.
    #[arg(long, value_enum, default_value_t = crate::EngineArg::Incremental)]
    engine: crate::EngineArg,
    /// Maximum number of megaflows.
    #[arg(long, default_value_t = 200_000)]
    flow_limit: usize,
    /// Megaflows idle this long (ms) expire.
    #[arg(long, default_value_t = 10_000)]
    max_idle_ms: u64,
    /// Forwarding threads, each reading its share of the ports with its own
    /// EMC and megaflow classifiers (0: one per core, at most one per port).
    #[arg(long, default_value_t = 0)]
    pmd_threads: usize,
    /// Speak OpenFlow 1.3/1.5 here (repeatable), in Open vSwitch's syntax:
    /// `ptcp:PORT[:IP]` listens (on 127.0.0.1 unless IP is given),
    /// `punix:PATH` listens on a socket made owner-only, `tcp:IP[:PORT]` and
    /// `unix:PATH` connect to a controller (reconnecting with backoff).
    /// `ovs-ofctl -O OpenFlow13 add-flow tcp:127.0.0.1:PORT ...` then works.
    #[arg(long = "openflow", value_name = "TARGET")]
    openflow: Vec<kairo_switch::openflow::Target>,
    /// The OpenFlow datapath id, in hex (default: from the lowest port address, as Open vSwitch).
    #[arg(long, value_name = "HEX", value_parser = parse_dpid)]
    dpid: Option<u64>,
}

fn parse_dpid(s: &str) -> Result<u64, String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.is_empty() || h.len() > 16 {
        return Err(format!("`{s}`: a datapath id is 1 to 16 hex digits"));
    }
    u64::from_str_radix(h, 16).map_err(|_| format!("`{s}` is not hex"))
}

#[derive(Args)]
pub struct CtlArgs {
    /// Path of the switch's control socket.
    #[arg(long, value_name = "SOCKET")]
    ctl: PathBuf,
    /// The command (see `kairo ctl --ctl SOCKET help`).
    command: String,
    /// Its arguments; for add-flows, add-groups and bundle a file (`-` for stdin).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Flow file (ovs-ofctl add-flows syntax).
    #[arg(long)]
    flows: PathBuf,
    #[arg(long)]
    groups: Option<PathBuf>,
    /// A pcap file and the port its packets arrive on (port 1 if not given), or a directory
    /// of in-N.pcap files (port N), as `kairo gen` writes; repeatable.
    #[arg(long = "input", value_name = "FILE[=PORT]|DIR", required = true)]
    inputs: Vec<String>,
    /// The switch's ports (what FLOOD sends to), comma-separated; the input ports are added.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    ports: Vec<u32>,
    /// Directory for port-N.pcap, one per port that sends.
    #[arg(long, default_value = "replay-out")]
    out: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The VLAN settings given for ports, by OpenFlow port number.
type VlanSettings = Vec<(u32, PortSettings)>;

/// Opens the ports, numbering those without a number from the lowest free
/// one; returns them with the VLAN settings given for them.
fn open_ports(a: &SwitchArgs) -> Result<(Vec<Attached>, VlanSettings)> {
    let mut specs = Vec::new();
    let mut settings = Vec::new();
    for (s, tap) in a.ports.iter().map(|s| (s, false)).chain(a.taps.iter().map(|s| (s, true))) {
        let spec = port::parse_port_spec(s)?;
        let kind = match (tap, spec.kind) {
            (true, Some(k)) if k != PortKind::Tap => bail!("--tap {s}: a TAP port takes no other `type=`"),
            (true, _) => PortKind::Tap,
            (false, k) => k.unwrap_or(PortKind::AfPacket),
        };
        specs.push((spec.name, spec.ofport, kind));
        settings.push(spec.settings);
    }
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (name, num, _) in &specs {
        if !names.insert(name) {
            bail!("port `{name}` given twice");
        }
        if let Some(n) = num {
            if !used.insert(*n) {
                bail!("OpenFlow port {n} given twice");
            }
        }
    }
    let mut next = 1;
    let mut out = Vec::new();
    let mut vlans = Vec::new();
    for ((name, num, kind), set) in specs.into_iter().zip(settings) {
        let ofport = match num {
            Some(n) => n,
            None => {
                while used.contains(&next) {
                    next += 1;
                }
                used.insert(next);
                next
            }
        };
        let io = kind.open(&name)?;
        vlans.extend(set.map(|s| (ofport, s)));
        out.push(Attached { ofport, name, io, counters: Default::default() });
    }
    Ok((out, vlans))
}

pub fn switch(a: SwitchArgs) -> Result<()> {
    if a.ports.is_empty() && a.taps.is_empty() {
        bail!("no ports: give at least one --port IFNAME or --tap NAME");
    }
    let engine = a.engine.into();
    if a.flows.is_none() && a.groups.is_some() {
        bail!("--groups needs --flows");
    }
    let (ports, vlans) = open_ports(&a)?;
    let info: Vec<PortInfo> = ports.iter().map(Attached::info).collect();
    // Flows and groups may give the ports by their interface names.
    let mut names = kairo_ofproto::PortNames::default();
    for p in &info {
        let _ = names.insert(&p.name, p.ofport);
    }
    let mut pipeline = match &a.flows {
        Some(f) => crate::load_pipeline_in(f, a.groups.as_deref(), &names)?,
        None => Pipeline::new(),
    };
    for (port, s) in vlans {
        // As `set-port` does: VLAN settings only (port-config bits are PORT_MOD's).
        let fm = kairo_maintain::flowmod::FlowMod::SetPortSettings(port, Some(s));
        kairo_maintain::flowmod::apply(&mut pipeline, &fm)
            .with_context(|| format!("--port settings of port {port}"))?;
    }
    let cfg = DpConfig { flow_limit: a.flow_limit, max_idle_ms: a.max_idle_ms, ..DpConfig::default() };
    let mut sw = Switch::new(pipeline, engine, cfg, info);
    if let Some(d) = a.dpid {
        sw.dpid = d;
    }
    let threads = match a.pmd_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    sw.pmd_threads.store(threads, Ordering::Relaxed);
    let sw = Arc::new(sw);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handlers")?;
    }
    let server = kairo_switch::ctl::serve(sw.clone(), &a.ctl, stop.clone())
        .with_context(|| format!("control socket {}", a.ctl.display()))?;
    let mut listeners = Vec::new();
    for t in &a.openflow {
        let served = kairo_switch::openflow::serve(sw.clone(), t, stop.clone(), Default::default())
            .with_context(|| format!("OpenFlow target {t:?}"))?;
        // Listeners are joined at stop (their socket files go); a connection
        // to a controller ends with the process.
        if matches!(t, Target::PassiveTcp(_) | Target::PassiveUnix(_)) {
            listeners.push(served);
        }
    }
    let names: Vec<String> = sw.ports().iter().map(|p| format!("{}({}, {})", p.ofport, p.name, p.kind)).collect();
    eprintln!(
        "kairo switch: ports {}; {} forwarding thread(s); {} rules; control socket {}; OpenFlow {}; dpid {:016x}; SIGINT or SIGTERM stops",
        names.join(", "),
        threads.clamp(1, names.len().max(1)),
        sw.ctl.lock().pipeline().n_rules(),
        a.ctl.display(),
        if a.openflow.is_empty() { "off".to_string() } else { format!("{:?}", a.openflow) },
        sw.dpid
    );
    sw.forward(ports, &stop);
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    for l in listeners {
        let _ = l.join();
    }
    let s = sw.dp_totals().0;
    eprintln!(
        "kairo switch: stopped after {} packets (emc {}, megaflow {}, upcalls {})",
        s.packets, s.emc_hits, s.megaflow_hits, s.misses
    );
    Ok(())
}

pub fn ctl(a: CtlArgs) -> Result<()> {
    let mut args = a.args;
    if kairo_switch::ctl::takes_file(&a.command) {
        let [file] = &args[..] else { bail!("`{}` takes one file argument (`-` for stdin)", a.command) };
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
            s
        } else {
            crate::read(std::path::Path::new(file))?
        };
        args = vec![text];
    }
    let req = kairo_switch::request::Request::parse(&a.command, &args).map_err(anyhow::Error::msg)?;
    let mut c = kairo_switch::ctl::Client::connect(&a.ctl)?;
    let reply = c.call(&req)?;
    if !reply.ok {
        bail!("{}", reply.error);
    }
    print!("{}", reply.output);
    Ok(())
}

pub fn replay(a: ReplayArgs) -> Result<()> {
    let mut pipeline = crate::load_pipeline(&a.flows, a.groups.as_deref())?;
    let mut inputs = Vec::new();
    for s in &a.inputs {
        inputs.extend(kairo_switch::replay::parse_inputs(s).map_err(anyhow::Error::msg)?);
    }
    pipeline.set_ports(a.ports.iter().copied().chain(inputs.iter().map(|i| i.in_port)));
    let rep = kairo_switch::replay::run(&pipeline, &inputs, &a.out, DpConfig::default()).map_err(anyhow::Error::msg)?;
    crate::emit(&rep, rep.to_table(), a.json.as_deref())
}
