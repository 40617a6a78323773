//! Memory shared with the kernel by `mmap`: a packet socket's rings, an
//! AF_XDP socket's rings and its frame area (UMEM).
//!
//! A [`Mapping`] owns one mapping and unmaps it when dropped. Invariant:
//! every access is bounds-checked against the mapping before memory is
//! touched (a bad offset read from a ring panics in the check, never reads
//! or writes outside), and words the kernel updates concurrently (ring
//! indexes, status words) are read and written only as aligned atomics.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One mapping; unmapped on drop.
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to the
// forwarding thread moves the only handle to it.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; nothing borrows
        // the mapping past the `Mapping`'s lifetime (slices are copied out).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset`, shared, read and write.
    pub fn of_fd(fd: RawFd, len: usize, offset: u64) -> io::Result<Mapping> {
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("mapping offset out of range"))?;
        // SAFETY: a new mapping of the caller's descriptor, nothing else at
        // the address the kernel picks; the result is checked.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, off)
        };
        Mapping::checked(base, len)
    }

    /// `len` bytes of zeroed anonymous memory, populated.
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        // SAFETY: a new private anonymous mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Mapping::checked(base, len)
    }

    fn checked(base: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { base, len })
    }

    /// Where the mapping starts (to register it with the kernel).
    pub fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The u32 at `off`, shared with the kernel (status words, ring indexes).
    pub fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.checked_add(4).is_some_and(|e| e <= self.len) && off.is_multiple_of(4));
        // SAFETY: in bounds and 4-aligned (checked; the mapping is page
        // aligned), valid for the lifetime of `self`, and the kernel accesses
        // these words only atomically-compatible (aligned 32-bit stores).
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast()) }
    }

    /// The u64 at `off` (ring entries the kernel reads or writes whole).
    pub fn word64(&self, off: usize) -> &AtomicU64 {
        assert!(off.checked_add(8).is_some_and(|e| e <= self.len) && off.is_multiple_of(8));
        // SAFETY: in bounds and 8-aligned (checked), valid for the lifetime
        // of `self`; the ring protocol hands an entry to one side at a time.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast()) }
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Relaxed)
    }

    pub fn read_u16(&self, off: usize) -> u16 {
        let b = self.read_u32(off & !3).to_ne_bytes();
        let i = off & 2;
        u16::from_ne_bytes([b[i], b[i + 1]])
    }

    pub fn read_u8(&self, off: usize) -> u8 {
        self.read_u32(off & !3).to_ne_bytes()[off & 3]
    }

    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds (checked); the kernel does not write a block,
        // slot or frame while user space owns it (the rings' handshakes,
        // with Acquire on the index or status that handed it over).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len) }
    }

    pub fn write(&mut self, off: usize, data: &[u8]) {
        assert!(off.checked_add(data.len()).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds (checked); the slot or frame is ours (the ring's
        // handshake gave it to user space and it is not handed back yet).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(off), data.len()) }
    }
}
