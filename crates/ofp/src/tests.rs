//! Codec tests: every message type round-trips in both versions, random and
//! truncated bytes never panic and always fail, and kairo's rules survive the
//! trip to the wire and back.

use proptest::prelude::*;

use crate::action::{nxast, Act, WireLearn, WireLearnDst, WireLearnSpec, WireLearnSrc, WireSub};
use crate::buf::Reader;
use crate::error::ErrorCode;
use crate::instruction::Instruction;
use crate::message::*;
use crate::multipart::*;
use crate::oxm::{ones, Oxm, OxmId, FIELDS};
use crate::{decode, encode, Version};

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1_3), Just(Version::V1_5)]
}

fn oxm() -> impl Strategy<Value = Oxm> {
    (0..FIELDS.len(), any::<u128>(), any::<u128>(), any::<bool>()).prop_map(|(i, v, m, masked)| {
        let info = &FIELDS[i];
        let full = ones(info.bytes);
        let mask = (masked && info.maskable).then_some(m & full).filter(|&m| m != full);
        let value = v & mask.unwrap_or(full);
        Oxm { id: info.id, value, mask }
    })
}

fn fields() -> impl Strategy<Value = Vec<Oxm>> {
    proptest::collection::vec(oxm(), 0..6).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|o| seen.insert(o.id));
        v
    })
}

fn sub() -> impl Strategy<Value = WireSub> {
    (0..FIELDS.len(), any::<u16>(), any::<u16>()).prop_map(|(i, a, b)| {
        let width = u16::from(FIELDS[i].bytes) * 8;
        let n_bits = 1 + a % width.min(64);
        let ofs = b % (width - n_bits + 1);
        WireSub { id: FIELDS[i].id, ofs, n_bits }
    })
}

/// A random NXAST_LEARN or NXAST_LEARN2 (specs whose source and
/// destination are valid bit ranges of the same width).
fn learn() -> impl Strategy<Value = Act> {
    let spec = (sub(), sub(), 0u8..3, any::<bool>(), any::<u64>()).prop_map(|(s, d, kind, imm, v)| {
        let n_bits = s.n_bits.min(d.n_bits);
        let imm = imm && kind != 2;
        let src = if imm {
            let n = 2 * usize::from(n_bits).div_ceil(16);
            let v = if n_bits >= 64 { v } else { v & ((1u64 << n_bits) - 1) };
            WireLearnSrc::Imm(u128::from(v).to_be_bytes()[16 - n..].to_vec())
        } else {
            WireLearnSrc::Field(s.id, s.ofs)
        };
        let dst = match kind {
            0 => WireLearnDst::Match(d.id, d.ofs),
            1 => WireLearnDst::Load(d.id, d.ofs),
            _ => WireLearnDst::Output,
        };
        WireLearnSpec { n_bits, src, dst }
    });
    (
        any::<bool>(),
        (any::<u16>(), any::<u16>(), any::<u16>(), any::<u64>(), 0u16..4, 0u8..255, any::<u16>(), any::<u16>()),
        (any::<u32>(), proptest::option::of(sub())),
        proptest::collection::vec(spec, 0..4),
    )
        .prop_map(|(v2, (idle, hard, prio, cookie, flags, table, fin_idle, fin_hard), (limit, res), specs)| {
            let result_dst = res.filter(|_| v2).map(|r| WireSub { n_bits: 1, ..r });
            Act::Learn(Box::new(WireLearn {
                v2,
                idle_timeout: idle,
                hard_timeout: hard,
                priority: prio,
                cookie,
                flags: flags | if result_dst.is_some() { 4 } else { 0 },
                table,
                fin_idle_timeout: fin_idle,
                fin_hard_timeout: fin_hard,
                limit: if v2 { limit } else { 0 },
                result_dst,
                specs,
            }))
        })
}

/// A random NXAST_NAT.
fn nat() -> impl Strategy<Value = Act> {
    (
        any::<u16>(),
        proptest::option::of((any::<u32>(), proptest::option::of(any::<u32>()))),
        proptest::option::of((any::<u128>(), proptest::option::of(any::<u128>()))),
        proptest::option::of((any::<u16>(), proptest::option::of(any::<u16>()))),
    )
        .prop_map(|(flags, ipv4, ipv6, ports)| Act::Nat { flags, ipv4, ipv6, ports })
}

/// The values a load into `d` may carry.
fn d_mask(d: &WireSub) -> u64 {
    if d.n_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << d.n_bits) - 1
    }
}

fn act(v: Version) -> impl Strategy<Value = Act> {
    let set = oxm().prop_map(move |mut o| {
        if v < Version::V1_5 {
            o.value &= o.mask.unwrap_or(u128::MAX);
            o.mask = None;
        }
        Act::SetField(o)
    });
    let common = prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(port, max_len)| Act::Output { port, max_len }),
        Just(Act::CopyTtlOut),
        Just(Act::CopyTtlIn),
        any::<u8>().prop_map(Act::SetMplsTtl),
        Just(Act::DecMplsTtl),
        any::<u16>().prop_map(Act::PushVlan),
        Just(Act::PopVlan),
        any::<u16>().prop_map(Act::PushMpls),
        any::<u16>().prop_map(Act::PopMpls),
        any::<u32>().prop_map(Act::SetQueue),
        any::<u32>().prop_map(Act::Group),
        any::<u8>().prop_map(Act::SetNwTtl),
        Just(Act::DecNwTtl),
        set,
        any::<u16>().prop_map(Act::PushPbb),
        Just(Act::PopPbb),
    ];
    let nx = prop_oneof![
        (any::<u16>(), proptest::option::of(any::<u8>()), any::<bool>())
            .prop_map(|(in_port, table, ct)| { Act::Resubmit { in_port, table, ct: ct && table.is_some() } }),
        (sub(), sub()).prop_map(|(s, d)| {
            let n = s.n_bits.min(d.n_bits);
            Act::RegMove { src: WireSub { n_bits: n, ..s }, dst: WireSub { n_bits: n, ..d } }
        }),
        (sub(), any::<u64>()).prop_map(|(d, v)| {
            let d = WireSub { n_bits: d.n_bits.min(64), ..d };
            let v = if d.n_bits >= 64 { v } else { v & ((1 << d.n_bits) - 1) };
            Act::RegLoad { dst: d, value: v }
        }),
        oxm().prop_map(Act::RegLoad2),
        (sub(), any::<u16>()).prop_map(|(s, max_len)| Act::OutputReg { src: s, max_len }),
        (sub(), any::<u16>()).prop_map(|(s, max_len)| Act::OutputReg2 { src: s, max_len }),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|mut n| {
            // A note's body fills its action to a multiple of 8 (OVS keeps the padding).
            let len = (10 + n.len()).div_ceil(8) * 8 - 10;
            n.resize(len.max(6), 0);
            Act::Note(n)
        }),
        Just(Act::NxDecTtl),
        Just(Act::Exit),
        (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(max_len, id, reason)| Act::Controller {
            max_len,
            id,
            reason
        }),
        any::<u64>().prop_map(Act::SetTunnel64),
        Just(Act::CtClear),
        (2u8..=64, any::<u8>(), any::<u32>()).prop_map(|(n, c, id)| Act::Conjunction {
            clause: c % n,
            n_clauses: n,
            id
        }),
        learn(),
        (any::<u16>(), any::<u16>()).prop_map(|(idle, hard)| Act::FinTimeout { idle, hard }),
        (any::<u16>(), sub()).prop_map(|(pkt_len, s)| Act::CheckPktLarger { pkt_len, dst: WireSub { n_bits: 1, ..s } }),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
            any::<bool>(),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(max_len, controller_id, reason, userdata, pause, meter_id)| Act::Controller2(
                Box::new(crate::action::WireController2 { max_len, controller_id, reason, userdata, pause, meter_id })
            )),
        (
            any::<u16>(),
            proptest::option::of(sub()),
            any::<u16>(),
            any::<u8>(),
            any::<u16>(),
            proptest::collection::vec(
                prop_oneof![
                    nat(),
                    (sub(), any::<u64>()).prop_map(|(d, v)| Act::RegLoad { dst: d, value: v & d_mask(&d) })
                ],
                0..3
            )
        )
            .prop_map(|(flags, zone_src, imm, table, alg, actions)| Act::Ct {
                flags,
                zone_imm: if zone_src.is_some() { 0 } else { imm },
                zone_src,
                table,
                alg,
                actions
            }),
        nat(),
    ];
    let v15 = (sub(), sub(), any::<u32>()).prop_map(move |(s, d, m)| {
        let n = s.n_bits.min(d.n_bits);
        if m % 2 == 0 {
            Act::CopyField { n_bits: n, src_ofs: s.ofs, dst_ofs: d.ofs, src: s.id, dst: d.id }
        } else {
            Act::Meter(m)
        }
    });
    prop_oneof![common, nx, v15].prop_filter("1.5-only actions", move |a| {
        v >= Version::V1_5 || !matches!(a, Act::CopyField { .. } | Act::Meter(_))
    })
}

fn instructions(v: Version) -> impl Strategy<Value = Vec<Instruction>> {
    (
        proptest::option::of(any::<u8>()),
        proptest::option::of((any::<u64>(), any::<u64>())),
        proptest::option::of(proptest::collection::vec(act(v), 0..4)),
        proptest::option::of(proptest::collection::vec(act(v), 0..4)),
        any::<bool>(),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(move |(goto, meta, write, apply, clear, meter)| {
            let mut out = Vec::new();
            if let Some(a) = apply {
                out.push(Instruction::ApplyActions(a));
            }
            if clear {
                out.push(Instruction::ClearActions);
            }
            if let Some(a) = write {
                out.push(Instruction::WriteActions(a));
            }
            if let Some((value, mask)) = meta {
                out.push(Instruction::WriteMetadata { value, mask });
            }
            if let Some(t) = goto {
                out.push(Instruction::GotoTable(t));
            }
            if let (Some(m), true) = (meter, v < Version::V1_5) {
                out.push(Instruction::Meter(m));
            }
            out
        })
}

fn flow_mod(v: Version) -> impl Strategy<Value = FlowMod> {
    (any::<[u64; 2]>(), any::<[u16; 6]>(), any::<[u32; 3]>(), 0u8..5, fields(), instructions(v)).prop_map(
        move |(c, s, p, command, fields, instructions)| FlowMod {
            cookie: c[0],
            cookie_mask: c[1],
            table_id: s[0] as u8,
            command,
            idle_timeout: s[1],
            hard_timeout: s[2],
            priority: s[3],
            buffer_id: p[0],
            out_port: p[1],
            out_group: p[2],
            flags: s[4],
            importance: if v >= Version::V1_5 { s[5] } else { 0 },
            fields,
            instructions,
        },
    )
}

fn bucket(v: Version) -> impl Strategy<Value = WireBucket> {
    (any::<u32>(), any::<u16>(), any::<u32>(), any::<u32>(), proptest::collection::vec(act(v), 0..3)).prop_map(
        |(bucket_id, weight, watch_port, watch_group, actions)| WireBucket {
            bucket_id,
            weight,
            watch_port,
            watch_group,
            actions,
        },
    )
}

/// Buckets as a version carries them: 1.3 numbers them in order.
fn buckets(v: Version) -> impl Strategy<Value = Vec<WireBucket>> {
    proptest::collection::vec(bucket(v), 0..4).prop_map(move |mut bs| {
        if v < Version::V1_5 {
            for (i, b) in bs.iter_mut().enumerate() {
                b.bucket_id = i as u32;
            }
        }
        bs
    })
}

fn port_desc() -> impl Strategy<Value = PortDesc> {
    (any::<u32>(), any::<[u8; 6]>(), "[a-z0-9]{0,15}", any::<[u32; 8]>()).prop_map(|(port_no, hw_addr, name, x)| {
        PortDesc {
            port_no,
            hw_addr,
            name,
            config: x[0],
            state: x[1],
            curr: x[2],
            advertised: x[3],
            supported: x[4],
            peer: x[5],
            curr_speed: x[6],
            max_speed: x[7],
        }
    })
}

fn flow_stats(v: Version) -> impl Strategy<Value = FlowStats> {
    (any::<u8>(), any::<[u32; 2]>(), any::<[u16; 5]>(), any::<[u64; 3]>(), fields(), instructions(v)).prop_map(
        move |(table_id, d, s, c, fields, instructions)| FlowStats {
            table_id,
            duration_sec: d[0],
            duration_nsec: d[1],
            priority: s[0],
            idle_timeout: s[1],
            hard_timeout: s[2],
            flags: s[3],
            importance: if v >= Version::V1_5 { s[4] } else { 0 },
            cookie: c[0],
            packet_count: c[1],
            byte_count: c[2],
            fields,
            instructions,
        },
    )
}

fn flow_request() -> impl Strategy<Value = FlowStatsRequest> {
    (any::<u8>(), any::<[u32; 2]>(), any::<[u64; 2]>(), fields()).prop_map(|(table_id, p, c, fields)| {
        FlowStatsRequest { table_id, out_port: p[0], out_group: p[1], cookie: c[0], cookie_mask: c[1], fields }
    })
}

fn mp_request(v: Version) -> impl Strategy<Value = MpRequest> {
    prop_oneof![
        Just(MpRequest::Desc),
        flow_request().prop_map(MpRequest::Flow),
        flow_request().prop_map(MpRequest::Aggregate),
        Just(MpRequest::Table),
        any::<u32>().prop_map(MpRequest::PortStats),
        any::<u32>().prop_map(move |p| MpRequest::PortDesc(if v >= Version::V1_5 { p } else { crate::port::OFPP_ANY })),
        any::<u32>().prop_map(MpRequest::Group),
        any::<u32>().prop_map(move |g| MpRequest::GroupDesc(if v >= Version::V1_5 { g } else { OFPG_ALL })),
        Just(MpRequest::GroupFeatures),
        any::<u32>().prop_map(MpRequest::Meter),
        any::<u32>().prop_map(MpRequest::MeterConfig),
        Just(MpRequest::MeterFeatures),
    ]
}

fn meter_bands() -> impl Strategy<Value = Vec<crate::meter::Band>> {
    proptest::collection::vec((1u16..3, any::<u32>(), any::<u32>(), any::<u8>()), 0..4).prop_map(|bs| {
        bs.into_iter()
            .map(|(ty, rate, burst_size, p)| crate::meter::Band {
                ty,
                rate,
                burst_size,
                prec_level: if ty == crate::meter::ofpmbt::DSCP_REMARK { p } else { 0 },
            })
            .collect()
    })
}

fn port_stats() -> impl Strategy<Value = PortStats> {
    (any::<u32>(), any::<[u64; 12]>(), any::<[u32; 2]>()).prop_map(|(port_no, c, d)| PortStats {
        port_no,
        rx_packets: c[0],
        tx_packets: c[1],
        rx_bytes: c[2],
        tx_bytes: c[3],
        rx_dropped: c[4],
        tx_dropped: c[5],
        rx_errors: c[6],
        tx_errors: c[7],
        rx_frame_err: c[8],
        rx_over_err: c[9],
        rx_crc_err: c[10],
        collisions: c[11],
        duration_sec: d[0],
        duration_nsec: d[1],
    })
}

fn mp_reply(v: Version) -> impl Strategy<Value = MpReply> {
    prop_oneof![
        ("[ -~]{0,40}", "[ -~]{0,31}").prop_map(|(a, b)| MpReply::Desc(Desc {
            mfr: a.clone(),
            hw: b.clone(),
            sw: a,
            serial: b.clone(),
            dp: b
        })),
        proptest::collection::vec(flow_stats(v), 0..3).prop_map(MpReply::Flow),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(p, b, f)| MpReply::Aggregate(Aggregate {
            packet_count: p,
            byte_count: b,
            flow_count: f
        })),
        proptest::collection::vec((any::<u8>(), any::<u32>(), any::<u64>(), any::<u64>()), 0..4).prop_map(|t| {
            MpReply::Table(
                t.into_iter()
                    .map(|(table_id, active_count, lookup_count, matched_count)| TableStats {
                        table_id,
                        active_count,
                        lookup_count,
                        matched_count,
                    })
                    .collect(),
            )
        }),
        proptest::collection::vec(port_stats(), 0..3).prop_map(MpReply::PortStats),
        proptest::collection::vec(port_desc(), 0..3).prop_map(MpReply::PortDesc),
        proptest::collection::vec(
            (any::<[u32; 4]>(), any::<[u64; 2]>(), proptest::collection::vec(any::<(u64, u64)>(), 0..3)),
            0..3
        )
        .prop_map(|g| MpReply::Group(
            g.into_iter()
                .map(|(a, c, buckets)| GroupStats {
                    group_id: a[0],
                    ref_count: a[1],
                    packet_count: c[0],
                    byte_count: c[1],
                    duration_sec: a[2],
                    duration_nsec: a[3],
                    buckets
                })
                .collect()
        )),
        (any::<[u32; 10]>()).prop_map(|x| MpReply::GroupFeatures(GroupFeatures {
            types: x[0],
            capabilities: x[1],
            max_groups: [x[2], x[3], x[4], x[5]],
            actions: [x[6], x[7], x[8], x[9]]
        })),
        proptest::collection::vec(
            (any::<[u32; 4]>(), any::<[u64; 2]>(), proptest::collection::vec(any::<(u64, u64)>(), 0..3)),
            0..3
        )
        .prop_map(|m| MpReply::Meter(
            m.into_iter()
                .map(|(a, c, bands)| crate::meter::MeterStats {
                    meter_id: a[0],
                    flow_count: a[1],
                    packet_in_count: c[0],
                    byte_in_count: c[1],
                    duration_sec: a[2],
                    duration_nsec: a[3],
                    bands
                })
                .collect()
        )),
        proptest::collection::vec((any::<u16>(), any::<u32>(), meter_bands()), 0..3).prop_map(
            |m| MpReply::MeterConfig(
                m.into_iter()
                    .map(|(flags, meter_id, bands)| crate::meter::MeterConfig { flags, meter_id, bands })
                    .collect()
            )
        ),
        (any::<[u32; 3]>(), any::<[u8; 2]>()).prop_map(|(a, b)| MpReply::MeterFeatures(crate::meter::MeterFeatures {
            max_meter: a[0],
            band_types: a[1],
            capabilities: a[2],
            max_bands: b[0],
            max_color: b[1]
        })),
    ]
    .boxed()
}

fn message(v: Version) -> BoxedStrategy<Message> {
    let group_desc = proptest::collection::vec((0u8..4, any::<u32>(), buckets(v)), 0..3).prop_map(|g| {
        MpReply::GroupDesc(g.into_iter().map(|(ty, group_id, buckets)| GroupDesc { ty, group_id, buckets }).collect())
    });
    let group_mod = (0u16..3, 0u8..4, any::<u32>(), any::<u32>(), buckets(v)).prop_map(
        move |(command, ty, group_id, cb, buckets)| {
            let command_bucket_id = if v < Version::V1_5 { OFPG_BUCKET_ALL } else { cb };
            Message::GroupMod(GroupMod { command, ty, group_id, command_bucket_id, buckets })
        },
    );
    let v13_only = prop_oneof![any::<[u32; 6]>().prop_map(|x| Message::SetAsync(AsyncConfig {
        packet_in: [x[0], x[1]],
        port_status: [x[2], x[3]],
        flow_removed: [x[4], x[5]]
    })),];
    let common =
        prop_oneof![
            proptest::option::of(any::<u32>()).prop_map(|bitmap| Message::Hello { bitmap }),
            (any::<u16>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
                move |(ty, code, data)| {
                    // 1.3 has no error type 17: its bundle errors travel as ONF
                    // experimenter errors (0..=15), so those are the 1.3 forms.
                    let (ty, code) = match (v, ty % 20) {
                        (Version::V1_3, 17) => (17, code % 16),
                        (Version::V1_3, _) if ty == 0xffff => (1, code),
                        _ => (ty, code),
                    };
                    Message::Error { code: ErrorCode { ty, code }, data }
                }
            ),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(Message::EchoRequest),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(Message::EchoReply),
            Just(Message::FeaturesRequest),
            (any::<u64>(), any::<u32>(), any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(d, n, t, a, c)| {
                Message::FeaturesReply(Features {
                    datapath_id: d,
                    n_buffers: n,
                    n_tables: t,
                    auxiliary_id: a,
                    capabilities: c,
                })
            }),
            Just(Message::GetConfigRequest),
            any::<[u16; 2]>().prop_map(|c| Message::SetConfig(SwitchConfig { flags: c[0], miss_send_len: c[1] })),
            any::<[u16; 2]>().prop_map(|c| Message::GetConfigReply(SwitchConfig { flags: c[0], miss_send_len: c[1] })),
            (
                any::<[u32; 1]>(),
                any::<u16>(),
                any::<[u8; 2]>(),
                any::<u64>(),
                fields(),
                proptest::collection::vec(any::<u8>(), 0..80)
            )
                .prop_map(|(b, total_len, r, cookie, fields, data)| Message::PacketIn(PacketIn {
                    buffer_id: b[0],
                    total_len,
                    reason: r[0],
                    table_id: r[1],
                    cookie,
                    fields,
                    data
                })),
            (0u8..3, port_desc()).prop_map(|(reason, desc)| Message::PortStatus { reason, desc }),
            (
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(act(v), 0..4),
                proptest::collection::vec(any::<u8>(), 0..80)
            )
                .prop_map(|(buffer_id, in_port, actions, data)| Message::PacketOut(PacketOut {
                    buffer_id,
                    in_port,
                    actions,
                    data
                })),
            flow_mod(v).prop_map(Message::FlowMod),
            (any::<u16>(), mp_request(v)).prop_map(|(f, body)| Message::MultipartRequest { flags: f & MORE, body }),
            (any::<u16>(), mp_reply(v)).prop_map(|(f, body)| Message::MultipartReply { flags: f & MORE, body }),
            Just(Message::BarrierRequest),
            Just(Message::BarrierReply),
            (any::<u32>(), any::<u64>())
                .prop_map(|(role, generation_id)| Message::RoleRequest(Role { role, generation_id })),
            (any::<u32>(), any::<u64>())
                .prop_map(|(role, generation_id)| Message::RoleReply(Role { role, generation_id })),
            Just(Message::GetAsyncRequest),
            (any::<u64>(), any::<[u16; 3]>(), any::<[u8; 2]>(), any::<[u32; 2]>(), any::<[u64; 2]>(), fields())
                .prop_map(|(cookie, s, b, d, c, fields)| Message::FlowRemoved(FlowRemoved {
                    cookie,
                    priority: s[0],
                    reason: b[0],
                    table_id: b[1],
                    duration_sec: d[0],
                    duration_nsec: d[1],
                    idle_timeout: s[1],
                    hard_timeout: s[2],
                    packet_count: c[0],
                    byte_count: c[1],
                    fields
                })),
            group_mod,
            (any::<u32>(), any::<[u8; 6]>(), any::<[u32; 3]>()).prop_map(|(port_no, hw_addr, c)| Message::PortMod(
                PortMod { port_no, hw_addr, config: c[0], mask: c[1], advertise: c[2] }
            )),
            (0u16..3, any::<u16>(), any::<u32>(), meter_bands()).prop_map(|(command, flags, meter_id, bands)| {
                Message::MeterMod(crate::meter::MeterMod { command, flags, meter_id, bands })
            }),
            (any::<u32>(), 0u16..8, 0u16..4).prop_map(|(bundle_id, ty, flags)| Message::BundleControl(BundleControl {
                bundle_id,
                ty,
                flags
            })),
            (any::<u32>(), 0u16..4, flow_mod(v)).prop_map(move |(bundle_id, flags, fm)| Message::BundleAdd(
                BundleAdd { bundle_id, flags, message: encode(v, 9, &Message::FlowMod(fm)).expect("fits") }
            )),
            group_desc.prop_map(|body| Message::MultipartReply { flags: 0, body }),
            any::<u32>().prop_map(Message::SetPacketInFormat),
            any::<u16>().prop_map(Message::SetControllerId),
            (
                proptest::collection::vec(any::<u8>(), 0..80),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
                any::<u8>(),
                proptest::option::of(any::<u64>()),
                0u8..6,
                fields(),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            )
                .prop_map(|(data, full_len, buffer_id, table_id, cookie, reason, metadata, userdata)| {
                    Message::PacketIn2(PacketIn2 {
                        data,
                        full_len,
                        buffer_id,
                        table_id,
                        cookie,
                        reason,
                        metadata,
                        userdata,
                    })
                }),
        ];
    if v < Version::V1_5 {
        prop_oneof![4 => common, 1 => v13_only].boxed()
    } else {
        common.boxed()
    }
}

fn versioned_message() -> impl Strategy<Value = (Version, Message)> {
    version().prop_flat_map(|v| message(v).prop_map(move |m| (v, m)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// decode(encode(m)) == m for every message type kairo reads or writes.
    #[test]
    fn every_message_round_trips((v, m) in versioned_message(), xid in any::<u32>()) {
        let bytes = encode(v, xid, &m).expect("fits 64 KiB");
        let (h, back) = decode(&bytes).unwrap_or_else(|e| panic!("{e} decoding {m:?} in {v}: {bytes:02x?}"));
        prop_assert_eq!(h.xid, xid);
        prop_assert_eq!(usize::from(h.length), bytes.len());
        prop_assert_eq!(back, m);
    }

    /// Every proper prefix of a valid message (with its length field set to the
    /// prefix's) is refused; nothing panics.
    #[test]
    fn truncated_messages_are_refused((v, m) in versioned_message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(v, 1, &m).expect("fits");
        let n = cut.index(bytes.len());
        let mut short = bytes[..n].to_vec();
        if short.len() >= 4 {
            let l = short.len() as u16;
            short[2..4].copy_from_slice(&l.to_be_bytes());
        }
        if let Ok((_, back)) = decode(&short) {
            // Only bodies that end in free-form bytes may shrink and still parse.
            // Lists may end early at an element boundary: a meter's bands, and
            // OpenFlow 1.5's PORT_MOD properties (all optional) after its fixed 32 bytes,
            // and NXT_PACKET_IN2's properties (each optional but the packet).
            let list_end = matches!(back, Message::MeterMod(_) | Message::PacketIn2(_))
                || (v >= Version::V1_5 && n == 32 && matches!(back, Message::PortMod(_)));
            prop_assert!(list_end || matches!(back, Message::EchoRequest(_) | Message::EchoReply(_) | Message::Error { .. }
                | Message::PacketIn(_) | Message::PacketOut(_) | Message::Hello { .. }
                | Message::MultipartReply { .. } | Message::FlowMod(_) | Message::GroupMod(_)
                | Message::MultipartRequest { .. } | Message::FlowRemoved(_)),
                "{:?} from a prefix of {:?}", back, m);
        }
    }

    /// Random bytes, with a plausible header or not, never panic.
    #[test]
    fn random_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..300), fix in any::<bool>(), v in version(), ty in 0u8..40) {
        if fix && b.len() >= 8 {
            b[0] = v.wire();
            b[1] = ty;
            let l = b.len() as u16;
            b[2..4].copy_from_slice(&l.to_be_bytes());
        }
        let _ = decode(&b);
    }

    /// Flipping one byte of a valid message never panics.
    #[test]
    fn corrupted_messages_never_panic((v, m) in versioned_message(), at in any::<prop::sample::Index>(), x in any::<u8>()) {
        let mut bytes = encode(v, 1, &m).expect("fits");
        let i = at.index(bytes.len());
        bytes[i] ^= x | 1;
        let _ = decode(&bytes);
    }
}

#[test]
fn errors_name_the_field_and_offset() {
    // A FLOW_MOD whose match claims 200 bytes.
    let m = Message::FlowMod(FlowMod {
        cookie: 0,
        cookie_mask: 0,
        table_id: 0,
        command: ofpfc::ADD,
        idle_timeout: 0,
        hard_timeout: 0,
        priority: 1,
        buffer_id: NO_BUFFER,
        out_port: 0,
        out_group: 0,
        flags: 0,
        importance: 0,
        fields: vec![],
        instructions: vec![],
    });
    let mut b = encode(Version::V1_3, 7, &m).unwrap();
    b[50..52].copy_from_slice(&200u16.to_be_bytes());
    let e = decode(&b).unwrap_err();
    assert_eq!(e.code, ErrorCode::BAD_MATCH_LEN, "{e}");
    assert!(e.detail.contains("match fields") && e.detail.contains("offset 52"), "{e}");

    // An unknown OXM field.
    let mut w = crate::buf::Writer::default();
    w.u32((0x8000u32 << 16) | (100 << 9) | 4);
    w.u32(0);
    let e = Oxm::decode(&mut Reader::new(&w.buf)).unwrap_err();
    assert_eq!(e.code, ErrorCode::BAD_FIELD);
    assert!(e.detail.contains("field 100"), "{e}");

    // A masked non-maskable field.
    let mut w = crate::buf::Writer::default();
    w.u32(OxmId::basic(5).header(true, 4));
    w.u32(0x0800_ffff);
    let e = Oxm::decode(&mut Reader::new(&w.buf)).unwrap_err();
    assert_eq!(e.code, ErrorCode::BAD_MASK, "{e}");

    // Version 1.0 is refused with BAD_VERSION; HELLO of any version is read.
    let e = decode(&[1, 14, 0, 8, 0, 0, 0, 1]).unwrap_err();
    assert_eq!(e.code, ErrorCode::BAD_VERSION);
    assert!(decode(&[1, 0, 0, 8, 0, 0, 0, 1]).is_ok());

    // A message longer than 64 KiB is not encoded.
    let big = Message::EchoRequest(vec![0; 70_000]);
    assert_eq!(encode(Version::V1_3, 1, &big).unwrap_err().code, ErrorCode::BAD_LEN);
}

#[test]
fn versions_are_negotiated_as_openflow_says() {
    let ours = [Version::V1_3, Version::V1_5];
    assert_eq!(Version::negotiate(&ours, 6, Some(Version::bitmap(&ours))), Some(Version::V1_5));
    assert_eq!(Version::negotiate(&ours, 6, Some(1 << 4)), Some(Version::V1_3));
    assert_eq!(Version::negotiate(&ours, 4, None), Some(Version::V1_3));
    assert_eq!(Version::negotiate(&ours, 5, None), Some(Version::V1_3));
    assert_eq!(Version::negotiate(&ours, 1, None), None);
    assert_eq!(Version::negotiate(&ours, 6, Some(1 << 1)), None);
}

mod mapping {
    use super::*;
    use crate::map::*;
    use kairo_ofproto::parse_flow;

    /// kairo rule -> wire -> bytes -> wire -> kairo rule is the identity, for
    /// the random rules the engine proptests use.
    #[test]
    fn random_rules_survive_the_wire() {
        let cfg = kairo_testkit::GenConfig::default();
        let mut rng = kairo_testkit::rng(7);
        let mut n = 0;
        for i in 0..3000 {
            let t = (i % 4) as u8;
            let line = kairo_testkit::gen_flow_line(&mut rng, &cfg, t, &[1, 2, 3]);
            let rule = parse_flow(&line, Some(true)).unwrap().into_rule().unwrap();
            for v in Version::ALL {
                let has_vlan = kairo_ofproto::action::match_has_vlan(&rule.m);
                let fm = FlowMod {
                    cookie: rule.cookie,
                    cookie_mask: 0,
                    table_id: rule.table,
                    command: ofpfc::ADD,
                    idle_timeout: rule.idle_timeout,
                    hard_timeout: rule.hard_timeout,
                    priority: rule.priority,
                    buffer_id: NO_BUFFER,
                    out_port: crate::port::OFPP_ANY,
                    out_group: OFPG_ANY,
                    flags: 0,
                    importance: 0,
                    fields: match_to_wire(&rule.m, v).unwrap_or_else(|e| panic!("{line}: {e}")),
                    instructions: instructions_to_wire(&rule.inst, v, &rule.m).unwrap(),
                };
                let bytes = encode(v, 1, &Message::FlowMod(fm)).unwrap();
                let Ok((_, Message::FlowMod(back))) = decode(&bytes) else { panic!("{line}: not a flow mod") };
                let m = match_from_wire(&back.fields).unwrap_or_else(|e| panic!("{line} in {v}: {e}"));
                let mut inst = instructions_from_wire(&back.instructions).unwrap_or_else(|e| panic!("{line}: {e}"));
                kairo_ofproto::action::normalize_vlan(&mut inst.apply, has_vlan);
                kairo_ofproto::action::normalize_vlan(&mut inst.write, has_vlan);
                assert_eq!(m, rule.m, "{line} in {v}");
                assert_eq!(inst.to_string(), rule.inst.to_string(), "{line} in {v}");
                n += 1;
            }
        }
        assert_eq!(n, 6000);
    }

    #[test]
    fn fields_outside_the_key_and_unsupported_actions_get_their_errors() {
        let exthdr = Oxm::exact(OxmId::basic(39), 1);
        let e = match_from_wire(&[Oxm::exact(OxmId::basic(5), 0x86dd), exthdr]).unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_FIELD);
        assert!(e.detail.contains("OXM_OF_IPV6_EXTHDR"), "{e}");
        // IPv6 addresses are 128-bit fields of the key; without eth_type=0x86dd a prerequisite error.
        let src = Oxm { id: OxmId::basic(26), value: 0x2001_0db8 << 96, mask: Some(u128::MAX << 96) };
        let m = match_from_wire(&[Oxm::exact(OxmId::basic(5), 0x86dd), src]).unwrap();
        assert_eq!(m.to_string(), "ipv6,ipv6_src=2001:db8::/32");
        assert_eq!(match_from_wire(&[src]).unwrap_err().code, ErrorCode::BAD_PREREQ);
        // A move across both halves of a 128-bit field is refused by name.
        let sub = WireSub { id: OxmId::basic(26), ofs: 32, n_bits: 64 };
        let e = action_from_wire(&Act::RegMove { src: sub, dst: sub }).unwrap_err();
        assert!(e.detail.contains("one 64-bit half"), "{e}");
        // tcp_dst without ip_proto=6.
        let e = match_from_wire(&[Oxm::exact(OxmId::basic(5), 0x800), Oxm::exact(OxmId::basic(14), 80)]).unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_PREREQ, "{e}");
        // udp_dst with ip_proto=6.
        let e = match_from_wire(&[
            Oxm::exact(OxmId::basic(5), 0x800),
            Oxm::exact(OxmId::basic(10), 6),
            Oxm::exact(OxmId::basic(16), 53),
        ])
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_PREREQ, "{e}");
        let e = action_from_wire(&Act::Nicira { subtype: nxast::CT, body: vec![0; 14] }).unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_ACTION_EXP_TYPE);
        assert!(e.detail.contains("`ct`"), "{e}");
        let e = action_from_wire(&Act::PushMpls(0x0800)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_ACTION_ARGUMENT);
        let e = action_from_wire(&Act::CopyTtlOut).unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_ACTION_TYPE);
        assert_eq!(
            action_from_wire(&Act::Output { port: crate::port::OFPP_NORMAL, max_len: 0 }),
            Ok(kairo_ofproto::Action::Normal)
        );
        let e = action_from_wire(&Act::Output { port: 0xffff_0000, max_len: 0 }).unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_OUT_PORT);
        // NXAST_OUTPUT_REG2 is output:FIELD as NXAST_OUTPUT_REG is.
        let src = WireSub { id: OxmId::by_name("NXM_NX_REG1").unwrap().id, ofs: 0, n_bits: 16 };
        assert_eq!(
            action_from_wire(&Act::OutputReg2 { src, max_len: 64 }),
            action_from_wire(&Act::OutputReg { src, max_len: 64 })
        );
        assert!(action_from_wire(&Act::OutputReg2 { src, max_len: 64 }).is_ok());
    }
}

/// `check_pkt_larger` on the wire byte for byte as ovs-ofctl 3.1 encodes
/// it (NXAST_CHECK_PKT_LARGER: the length, the bit's offset, the field's
/// header, zeros to 24 bytes), and back; a wider destination is refused.
#[test]
fn check_pkt_larger_is_encoded_as_open_vswitch_encodes_it() {
    let a = kairo_ofproto::Action::parse("check_pkt_larger(100)->reg0[0]").unwrap();
    let wire = crate::map::actions_to_wire(std::slice::from_ref(&a), Version::V1_3, &Default::default()).unwrap();
    let mut w = crate::buf::Writer::default();
    crate::action::encode_actions(&mut w, &wire);
    let ovs = [
        0xff, 0xff, 0x00, 0x18, 0x00, 0x00, 0x23, 0x20, 0x00, 0x31, 0x00, 0x64, 0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 0,
        0, 0, 0, 0, 0,
    ];
    assert_eq!(w.buf, ovs);
    let back = crate::action::decode_actions(&mut Reader::new(&ovs), Version::V1_3).unwrap();
    assert_eq!(crate::map::action_from_wire(&back[0]), Ok(a));
    // Not all zeros after the header: refused, naming the action.
    let mut bad = ovs;
    bad[20] = 1;
    let e = crate::action::decode_actions(&mut Reader::new(&bad), Version::V1_3).unwrap_err();
    assert!(e.detail.contains("check_pkt_larger"), "{e}");
}

/// Bits of a transport port in an action take the match's protocol's name
/// on the wire (Open vSwitch refuses tcp_dst read under a UDP match with
/// OFPBAC_MATCH_INCONSISTENT), as a set_field's do.
#[test]
fn transport_port_bits_in_actions_take_the_match_s_protocol() {
    let r = kairo_ofproto::parse_flow(
        "udp,actions=output:NXM_OF_UDP_DST[0..1],move:NXM_OF_UDP_SRC[0..3]->NXM_NX_REG0[0..3],push:NXM_OF_UDP_DST[]",
        Some(true),
    )
    .unwrap()
    .into_rule()
    .unwrap();
    let wire = crate::map::actions_to_wire(&r.inst.apply, Version::V1_3, &r.m).unwrap();
    let names: Vec<String> = wire
        .iter()
        .map(|a| match a {
            Act::OutputReg { src, .. } | Act::RegMove { src, .. } | Act::StackPush(src) => src.id.name(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["OXM_OF_UDP_DST", "OXM_OF_UDP_SRC", "OXM_OF_UDP_DST"]);
}
