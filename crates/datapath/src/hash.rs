//! Hashes for the exact-match cache: the Toeplitz hash that NICs compute for
//! RSS (so a NIC-supplied hash can index the EMC, as in the KVS seed), and a
//! fast multiplicative hash of the whole key for when there is none.
//!
//! Invariant: [`Toeplitz::hash_ipv4`] equals the Microsoft RSS specification's
//! verification values with its standard key.

use kairo_flow::{Field, FlowKey};

/// The standard 40-byte RSS key (Microsoft's verification suite).
pub const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// Table-driven Toeplitz hash over up to 12 input bytes (IPv4 addresses and ports).
pub struct Toeplitz {
    table: Box<[[u32; 256]; 12]>,
}

impl Toeplitz {
    pub fn new(key: &[u8; 40]) -> Toeplitz {
        // The 32-bit window of the key starting at bit `b`.
        let window = |b: usize| -> u32 {
            let mut w = 0u32;
            for i in 0..32 {
                let bit = b + i;
                let byte = key[bit / 8];
                w = (w << 1) | ((byte >> (7 - bit % 8)) & 1) as u32;
            }
            w
        };
        let mut table = Box::new([[0u32; 256]; 12]);
        for (i, row) in table.iter_mut().enumerate() {
            for (v, cell) in row.iter_mut().enumerate() {
                let mut h = 0;
                for j in 0..8 {
                    if v & (0x80 >> j) != 0 {
                        h ^= window(i * 8 + j);
                    }
                }
                *cell = h;
            }
        }
        Toeplitz { table }
    }

    /// Hash of `bytes` (at most 12).
    #[inline]
    pub fn hash(&self, bytes: &[u8]) -> u32 {
        bytes.iter().take(12).enumerate().fold(0, |h, (i, &b)| h ^ self.table[i][b as usize])
    }

    /// RSS hash of an IPv4 packet: addresses, and ports for TCP/UDP (as NICs do).
    pub fn hash_ipv4(&self, k: &FlowKey) -> u32 {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&(k.get(Field::IpSrc) as u32).to_be_bytes());
        b[4..8].copy_from_slice(&(k.get(Field::IpDst) as u32).to_be_bytes());
        if k.has_ports() {
            b[8..10].copy_from_slice(&(k.get(Field::TpSrc) as u16).to_be_bytes());
            b[10..12].copy_from_slice(&(k.get(Field::TpDst) as u16).to_be_bytes());
            self.hash(&b)
        } else {
            self.hash(&b[..8])
        }
    }
}

impl Default for Toeplitz {
    fn default() -> Self {
        Toeplitz::new(&RSS_KEY)
    }
}

/// A fast hash of every word of the key.
#[inline]
pub fn key_hash(k: &FlowKey) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &w in k.w.iter() {
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23);
    }
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_rss_verification_vectors() {
        let t = Toeplitz::default();
        let k = |src: &str, dst: &str, sp: u64, dp: u64| {
            kairo_flow::parse_key(&format!("tcp,nw_src={src},nw_dst={dst},tp_src={sp},tp_dst={dp}")).unwrap()
        };
        // (destination, source) pairs from the RSS specification's IPv4 table.
        assert_eq!(t.hash_ipv4(&k("66.9.149.187", "161.142.100.80", 2794, 1766)), 0x51cc_c178);
        assert_eq!(t.hash_ipv4(&k("199.92.111.2", "65.69.140.83", 14230, 4739)), 0xc626_b0ea);
        assert_eq!(t.hash_ipv4(&k("24.19.198.95", "12.22.207.184", 12898, 38024)), 0x5c2b_394a);
        // addresses only
        let ip = kairo_flow::parse_key("ip,nw_src=66.9.149.187,nw_dst=161.142.100.80").unwrap();
        assert_eq!(t.hash_ipv4(&ip), 0x323e_8fc2);
    }
}
