//! OpenFlow meters in the datapath: per meter, its bands (a rate in kb/s or
//! packets/s and a burst) as token buckets, and its counters.
//!
//! Semantics (Open vSwitch's userspace datapath, `dp_netdev_run_meter`):
//! every band's bucket refills at its rate up to its burst (the rate itself
//! when no burst is given) and starts full; a packet costs its size in bits
//! (kb/s) or one packet (packets/s); the bands whose bucket cannot pay are
//! exceeded and the one of them with the highest rate applies; a drop band
//! drops the packet. Bands not exceeded pay. A packet for a meter that does
//! not exist passes, as in OVS.
//!
//! Invariant: the table is bounded (`MAX_METERS` meters of `MAX_BANDS`
//! bands), so a client cannot grow it without bound; arithmetic saturates.

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// At most this many meters, of at most this many bands each.
pub const MAX_METERS: usize = 65_536;
pub const MAX_BANDS: usize = 8;

/// What a band does to a packet it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BandKind {
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Band {
    pub kind: BandKind,
    /// kb/s, or packets/s when the meter counts packets.
    pub rate: u32,
    /// kb or packets; 0: the rate.
    pub burst: u32,
}

/// A meter as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterConfig {
    /// Rates in packets per second (else kilobits per second).
    pub pktps: bool,
    /// Bands' burst sizes are honoured (else each band's burst is its rate).
    pub burst: bool,
    pub stats: bool,
    pub bands: Vec<Band>,
}

/// A meter's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeterCounters {
    pub packets: u64,
    pub bytes: u64,
    /// (packets, bytes) each band applied to.
    pub bands: Vec<(u64, u64)>,
    /// Seconds and nanoseconds since the meter was added.
    pub duration: (u32, u32),
}

#[derive(Debug)]
struct State {
    cfg: MeterConfig,
    /// Tokens per band: milli-packets, or bits.
    tokens: Vec<u64>,
    last: Instant,
    created: Instant,
    packets: u64,
    bytes: u64,
    band_counts: Vec<(u64, u64)>,
}

impl State {
    fn new(cfg: MeterConfig, now: Instant, created: Instant) -> State {
        let tokens = cfg.bands.iter().map(|b| capacity(&cfg, b)).collect();
        let band_counts = vec![(0, 0); cfg.bands.len()];
        State { cfg, tokens, last: now, created, packets: 0, bytes: 0, band_counts }
    }
}

/// A band's bucket size in tokens (milli-packets or bits).
fn capacity(cfg: &MeterConfig, b: &Band) -> u64 {
    let burst = if cfg.burst && b.burst > 0 { b.burst } else { b.rate };
    u64::from(burst).saturating_mul(1000)
}

/// Why a meter change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error("meter {0} already exists")]
    Exists(u32),
    #[error("meter {0} does not exist")]
    Unknown(u32),
    #[error("a meter needs between 1 and {MAX_BANDS} bands, not {0}")]
    Bands(usize),
    #[error("band rate 0")]
    ZeroRate,
    #[error("the switch holds at most {MAX_METERS} meters")]
    Full,
}

/// The meter table, shared by the control path (which configures it) and
/// the forwarding path (which runs packets through it).
#[derive(Debug, Default)]
pub struct Meters {
    map: RwLock<FxHashMap<u32, Arc<Mutex<State>>>>,
}

impl Meters {
    /// Adds meter `id` (`replace`: modifies an existing one, keeping its
    /// counters and age, as OpenFlow's MODIFY).
    pub fn set(&self, id: u32, cfg: MeterConfig, replace: bool) -> Result<(), MeterError> {
        if cfg.bands.is_empty() || cfg.bands.len() > MAX_BANDS {
            return Err(MeterError::Bands(cfg.bands.len()));
        }
        if cfg.bands.iter().any(|b| b.rate == 0) {
            return Err(MeterError::ZeroRate);
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match (map.get(&id), replace) {
            (Some(_), false) => Err(MeterError::Exists(id)),
            (None, true) => Err(MeterError::Unknown(id)),
            (Some(m), true) => {
                let mut st = m.lock().unwrap_or_else(|e| e.into_inner());
                let (created, packets, bytes) = (st.created, st.packets, st.bytes);
                *st = State::new(cfg, now, created);
                st.packets = packets;
                st.bytes = bytes;
                Ok(())
            }
            (None, false) if map.len() >= MAX_METERS => Err(MeterError::Full),
            (None, false) => {
                map.insert(id, Arc::new(Mutex::new(State::new(cfg, now, now))));
                Ok(())
            }
        }
    }

    /// Removes meter `id`; false if there was none.
    pub fn delete(&self, id: u32) -> bool {
        self.map.write().unwrap_or_else(|e| e.into_inner()).remove(&id).is_some()
    }

    /// Removes every meter.
    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn contains(&self, id: u32) -> bool {
        self.map.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id)
    }

    /// The meters' ids, in order.
    pub fn ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.map.read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Meter `id`'s configuration.
    pub fn config(&self, id: u32) -> Option<MeterConfig> {
        let m = self.map.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()?;
        let st = m.lock().unwrap_or_else(|e| e.into_inner());
        Some(st.cfg.clone())
    }

    /// Meter `id`'s counters.
    pub fn counters(&self, id: u32) -> Option<MeterCounters> {
        let m = self.map.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()?;
        let st = m.lock().unwrap_or_else(|e| e.into_inner());
        let age = st.created.elapsed();
        Some(MeterCounters {
            packets: st.packets,
            bytes: st.bytes,
            bands: st.band_counts.clone(),
            duration: (u32::try_from(age.as_secs()).unwrap_or(u32::MAX), age.subsec_nanos()),
        })
    }

    /// Runs a packet of `len` bytes through meter `id` at `now`: true if
    /// it goes on, false if a drop band applies.
    pub fn admit(&self, id: u32, len: usize, now: Instant) -> bool {
        let Some(m) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned() else {
            return true;
        };
        let mut st = m.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        let us = u64::try_from(now.saturating_duration_since(st.last).as_micros()).unwrap_or(u64::MAX);
        st.last = now.max(st.last);
        st.packets += 1;
        st.bytes += len as u64;
        let cost = if st.cfg.pktps { 1000 } else { (len as u64).saturating_mul(8) };
        // Refill: rate per second is rate/1000 tokens per microsecond in both units.
        let mut applied: Option<usize> = None;
        for (i, b) in st.cfg.bands.iter().enumerate() {
            let cap = capacity(&st.cfg, b);
            let t = st.tokens[i].saturating_add(u64::from(b.rate).saturating_mul(us) / 1000).min(cap);
            if t < cost {
                st.tokens[i] = t;
                if applied.is_none_or(|a| st.cfg.bands[a].rate < b.rate) {
                    applied = Some(i);
                }
            } else {
                st.tokens[i] = t - cost;
            }
        }
        match applied {
            Some(i) => {
                let c = &mut st.band_counts[i];
                c.0 += 1;
                c.1 += len as u64;
                match st.cfg.bands[i].kind {
                    BandKind::Drop => false,
                }
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(pktps: bool, rate: u32, burst: u32) -> MeterConfig {
        MeterConfig { pktps, burst: burst > 0, stats: true, bands: vec![Band { kind: BandKind::Drop, rate, burst }] }
    }

    #[test]
    fn packet_rate_with_burst() {
        let m = Meters::default();
        m.set(1, cfg(true, 100, 10), false).unwrap();
        let t0 = Instant::now();
        // A burst of 50 at one instant: the bucket holds 10.
        let passed = (0..50).filter(|_| m.admit(1, 64, t0)).count();
        assert_eq!(passed, 10);
        // 100 ms later: 10 more tokens.
        let t1 = t0 + Duration::from_millis(100);
        let passed = (0..50).filter(|_| m.admit(1, 64, t1)).count();
        assert_eq!(passed, 10);
        // A steady 100 packets per second for 2 s all pass.
        let passed = (0..200).filter(|i| m.admit(1, 64, t1 + Duration::from_millis(10 * (i + 1)))).count();
        assert_eq!(passed, 200);
        let c = m.counters(1).unwrap();
        assert_eq!((c.packets, c.bands[0].0), (300, 80));
        // An unknown meter passes everything.
        assert!(m.admit(2, 64, t1));
    }

    #[test]
    fn kilobit_rate_and_highest_exceeded_band() {
        let m = Meters::default();
        // 80 kb/s, burst = rate: 80,000 bits = 10,000 bytes at once.
        m.set(7, cfg(false, 80, 0), false).unwrap();
        let t0 = Instant::now();
        let passed = (0..20).filter(|_| m.admit(7, 1000, t0)).count();
        assert_eq!(passed, 10);
        // Modify keeps counters, refills buckets.
        m.set(7, cfg(false, 8, 0), true).unwrap();
        assert_eq!(m.counters(7).unwrap().packets, 20);
        assert!(m.admit(7, 1000, t0));
        assert!(!m.admit(7, 1000, t0));
        assert_eq!(m.set(7, cfg(true, 1, 0), false), Err(MeterError::Exists(7)));
        assert_eq!(m.set(8, cfg(true, 1, 0), true), Err(MeterError::Unknown(8)));
        assert_eq!(m.set(8, cfg(true, 0, 0), false), Err(MeterError::ZeroRate));
        assert!(m.delete(7) && !m.delete(7));
    }
}
