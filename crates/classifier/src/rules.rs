//! One subtable's rules by masked key: a hash table whose keys are hashed
//! and compared on the words the subtable's mask has bits in, and nowhere
//! else.
//!
//! A flow key is 37 words; a subtable's mask uses a handful. Keyed by the
//! whole masked key (a `HashMap<FlowKey, _>`), every probe built the masked
//! key, hashed all its words and compared all of them on a hit (a lookup in
//! an EndpointDNAT-shaped table took about twice as long,
//! `examples/lookup_probe`). Here a probe reads only the mask's words of the
//! (unmasked) key. Hand-written over
//! `hashbrown::HashTable` because std's map cannot look up by a hash and a
//! comparison of the caller's choosing.
//!
//! An entry keeps only the mask's words of its key (a few words, not the
//! key's 38: a rule table of millions holds one entry per distinct match),
//! inline (`smallvec`) when they are few.
//!
//! Invariant: every entry's words are its key's words under the mask the
//! table was made for, in the mask's order, no two entries have the same
//! words, and no entry's rule list is empty (the classifier removes a list
//! when its last rule goes).

use hashbrown::HashTable;
use kairo_flow::{FlowKey, FlowMask};

use crate::ClsRule;

/// The hash of masked words, in the mask's order.
#[inline]
fn hash_vals(vals: impl Iterator<Item = u64>) -> u64 {
    let mut h = 0u64;
    for v in vals {
        h = (h.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    // Both ends of the hash are used (the table's slot and its tag).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// `key`'s words under the mask `words` describes (each word's index
/// and mask bits), in the mask's order.
#[inline]
fn masked<'a>(words: &'a [(u8, u64)], key: &'a FlowKey) -> impl Iterator<Item = u64> + 'a {
    words.iter().map(|&(i, m)| key.w[i as usize] & m)
}

/// The hash of `key` on `words`.
#[inline]
fn hash_words(words: &[(u8, u64)], key: &FlowKey) -> u64 {
    hash_vals(masked(words, key))
}

/// A masked key's words: inline up to four (most masks: a probe that hits
/// compares them in the table's own slot; behind a pointer, translation
/// took a quarter longer), on the heap past that.
type Vals = smallvec::SmallVec<[u64; 4]>;

/// One masked key (its words under the mask) and its rules, best first.
#[derive(Clone, Debug)]
struct Entry<R> {
    vals: Vals,
    rules: Vec<ClsRule<R>>,
}

#[derive(Clone, Debug)]
pub(crate) struct Rules<R> {
    /// The words the mask has bits in, and the mask's bits there.
    words: Box<[(u8, u64)]>,
    table: HashTable<Entry<R>>,
}

impl<R> Rules<R> {
    pub(crate) fn new(mask: &FlowMask) -> Rules<R> {
        let words = (0..mask.w.len()).filter(|&i| mask.w[i] != 0).map(|i| (i as u8, mask.w[i])).collect();
        Rules { words, table: HashTable::new() }
    }

    /// The hash of `key` masked (the key need not be masked).
    #[inline]
    fn hash(&self, key: &FlowKey) -> u64 {
        hash_words(&self.words, key)
    }

    /// Does `e`'s key equal `key` masked?
    #[inline]
    fn same(words: &[(u8, u64)], e: &Entry<R>, key: &FlowKey) -> bool {
        words.iter().zip(e.vals.iter()).all(|(&(i, m), &v)| v == key.w[i as usize] & m)
    }

    /// The rules whose masked key is `key` masked, best first.
    #[inline]
    pub(crate) fn get(&self, key: &FlowKey) -> Option<&Vec<ClsRule<R>>> {
        let words = &self.words;
        self.table.find(self.hash(key), |e| Self::same(words, e, key)).map(|e| &e.rules)
    }

    pub(crate) fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Vec<ClsRule<R>>> {
        let h = self.hash(key);
        let words = &self.words;
        self.table.find_mut(h, |e| Self::same(words, e, key)).map(|e| &mut e.rules)
    }

    /// The rule list of masked key `key`, made empty if there was none.
    pub(crate) fn entry(&mut self, key: &FlowKey) -> &mut Vec<ClsRule<R>> {
        let h = self.hash(key);
        let words = &self.words;
        let e = self.table.entry(h, |e| Self::same(words, e, key), |e| hash_vals(e.vals.iter().copied()));
        &mut e.or_insert_with(|| Entry { vals: masked(words, key).collect(), rules: Vec::new() }).into_mut().rules
    }

    /// Removes masked key `key` and its rules.
    pub(crate) fn remove(&mut self, key: &FlowKey) {
        let h = self.hash(key);
        let words = &self.words;
        if let Ok(e) = self.table.find_entry(h, |e| Self::same(words, e, key)) {
            e.remove();
        }
    }

    /// Every rule list.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Vec<ClsRule<R>>> {
        self.table.iter().map(|e| &e.rules)
    }
}
