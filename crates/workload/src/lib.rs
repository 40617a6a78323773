//! Workloads for benchmarks: ClassBench seeds and the rule sets drawn from
//! them ([`classbench`]), and generated pipelines with their traffic and
//! update streams ([`ofdpa`]).
//!
//! Invariant: every generator is deterministic in its seed, and what it
//! generates is ovs-ofctl text that loads.

pub mod antrea;
pub mod classbench;
pub mod ofdpa;

#[cfg(test)]
mod tests;

/// Remembers which flows a traffic generator has given, in 8 bytes of hash
/// per flow instead of the flow itself (generators yield millions). Two
/// distinct flows share a 64-bit hash with probability about n^2 / 2^65
/// (3e-6 at 10M flows); a collision only skips a flow.
#[derive(Default)]
pub struct SeenFlows(std::collections::HashSet<u64, std::hash::BuildHasherDefault<IdentityHasher>>);

impl SeenFlows {
    /// True if (a, b) was not seen before (and records it).
    pub fn insert(&mut self, a: u64, b: u64) -> bool {
        self.0.insert(mix(a ^ mix(b ^ 0x9e37_79b9_7f4a_7c15)))
    }
}

/// splitmix64's finaliser: a strong 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The values hashed are already mixed: use them as they are.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}
