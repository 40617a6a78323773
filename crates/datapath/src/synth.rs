//! Synthetic megaflow caches and traffic for benchmarks: a cache of N
//! megaflows spread over S masks (subtables) on one ingress port, and lookup
//! keys that hit it with uniform or Zipf popularity.
//!
//! Invariant: megaflows of different subtables never overlap (each subtable
//! has its own `nw_proto` value), so every generated key hits exactly the
//! megaflow it was drawn from, whatever the subtable order.

use std::sync::Arc;

use kairo_flow::{Field, FlowKey, FlowMask};
use kairo_odp::DpAction;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

use crate::{Datapath, Megaflow};

/// The mask of subtable `i`: in_port, dl_type, nw_proto, an nw_dst prefix of
/// a length that depends on `i`, and for some `i` tp_dst or an nw_src prefix.
pub fn mask(i: usize) -> FlowMask {
    let mut m = FlowMask::ZERO;
    m.exact(Field::InPort);
    m.exact(Field::RecircId);
    m.exact(Field::EthType);
    m.exact(Field::IpProto);
    m.exact(Field::IpFrag);
    m.set(Field::IpDst, kairo_flow::parse::prefix_mask(8 + (i % 25) as u32, 32));
    // An exact source address gives every subtable room for millions of megaflows.
    m.exact(Field::IpSrc);
    if (i / 25) % 2 == 1 {
        m.exact(Field::TpDst);
    }
    m
}

/// A random key inside subtable `i` (nw_proto = i + 1 keeps subtables disjoint).
pub fn key_in(rng: &mut StdRng, i: usize, port: u32) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set(Field::InPort, port as u64);
    k.set(Field::EthType, 0x0800);
    k.set(Field::IpProto, (i + 1) as u64);
    k.set(Field::IpSrc, rng.gen::<u32>() as u64);
    k.set(Field::IpDst, rng.gen::<u32>() as u64);
    k.set(Field::TpSrc, rng.gen::<u16>() as u64);
    k.set(Field::TpDst, rng.gen::<u16>() as u64);
    k.set(Field::EthSrc, rng.gen::<u64>() & 0xffff_ffff_ffff);
    k.set(Field::IpTtl, 64);
    k
}

/// Fills `dp` with `n` megaflows over `subtables` masks on port 1. Entry `j`
/// goes to subtable `j % subtables`. Returns the megaflows in creation order
/// (fewer than `n` only if the masks cannot hold that many distinct flows).
pub fn fill(
    dp: &mut Datapath,
    n: usize,
    subtables: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Vec<Arc<Megaflow>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let masks: Vec<FlowMask> = (0..subtables).map(mask).collect();
    let mut out = Vec::with_capacity(n);
    let mut j = 0usize;
    // Collisions are rare (exact source addresses); the bound only stops a
    // mask set without room for `n` from looping forever.
    while out.len() < n && j < n.saturating_mul(4) + 1000 {
        let st = j % subtables;
        j += 1;
        let k = key_in(&mut rng, st, 1);
        let actions = vec![DpAction::Output((out.len() % 4) as u32 + 2)];
        if let Some(mf) = dp.insert_megaflow(&k, &masks[st], actions, 0) {
            out.push(mf);
            if out.len().is_multiple_of(65536) {
                progress(out.len());
            }
        }
    }
    progress(out.len());
    out
}

/// Traffic popularity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Popularity {
    Uniform,
    /// Zipf with this exponent; the most popular flows are the last created
    /// (so subtable ranking has something to find).
    Zipf(f64),
}

impl std::fmt::Display for Popularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Popularity::Uniform => write!(f, "uniform"),
            Popularity::Zipf(a) => write!(f, "zipf-{a}"),
        }
    }
}

/// `count` lookup keys drawn from `flows` (each inside its megaflow, with
/// random bits outside the mask).
pub fn keys(flows: &[Arc<Megaflow>], count: usize, pop: Popularity, seed: u64) -> Vec<FlowKey> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let n = flows.len();
    let zipf = match pop {
        Popularity::Zipf(a) => rand_distr::Zipf::new(n as u64, a).ok(),
        Popularity::Uniform => None,
    };
    (0..count)
        .map(|_| {
            let idx = match &zipf {
                Some(z) => n - z.sample(&mut rng) as usize, // rank 1 = last created
                None => rng.gen_range(0..n),
            };
            let mf = &flows[idx.min(n - 1)];
            let mut k = mf.key();
            let noise = rng.gen::<u64>();
            // Random low bits of fields outside the mask (the key stays inside the megaflow).
            for f in [Field::TpSrc, Field::EthSrc, Field::IpDst, Field::TpDst] {
                let free = !mf.mask.get(f) & f.ones();
                k.set(f, (k.get(f) & !free) | (noise & free));
            }
            k
        })
        .collect()
}
