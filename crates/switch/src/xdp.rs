//! The kernel side of AF_XDP ports: a map from receive queue to socket (an
//! `XSKMAP`) and a five-instruction XDP program that redirects every frame
//! arriving on a queue to the socket in that queue's slot (and lets the
//! kernel's stack have it where the slot is empty), attached to one
//! interface through a BPF link.
//!
//! Written by hand over the `bpf(2)` system call: the program is five
//! instructions, and a BPF toolchain (aya with bpf-linker, or libbpf/libxdp
//! and clang) would cost a compiler this machine does not have, or minutes
//! of build, for them. The instructions are assembled below from the
//! encoding in the kernel's `linux/bpf.h`, each with what it does.
//!
//! Invariant: the program is attached exactly while the [`XdpProgram`]
//! lives. The BPF link is a file descriptor the value owns, and the kernel
//! detaches the program when the last descriptor to the link closes, also
//! when the switch dies: no interface is left redirecting its frames into a
//! socket nobody reads. A failure at any step closes what the steps before
//! made (every descriptor is an `OwnedFd`).
//!
//! The `unsafe` here is the system call itself and the `setsockopt`-like
//! passing of the kernel's attribute unions; each use says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `bpf(2)` commands (linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_MAP_TYPE_XSKMAP` (`enum bpf_map_type`).
const MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_PROG_TYPE_XDP` (`enum bpf_prog_type`).
const PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` (`enum bpf_attach_type`).
const ATTACH_XDP: u32 = 37;
/// `XDP_FLAGS_SKB_MODE` and `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// The most receive queues a port reads (slots in the map).
pub const MAX_QUEUES: u32 = 64;

/// `union bpf_attr` for BPF_MAP_CREATE (the leading fields; the kernel
/// takes a shorter attribute and treats the rest as zero).
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM / BPF_MAP_DELETE_ELEM.
#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE, the leading fields.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Runs `bpf(cmd, attr)`; a non-negative result is a new descriptor (for
/// the commands that make one) or 0.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed repr(C) prefix of
    // `union bpf_attr` for `cmd`, and the size passed is its own; the kernel
    // reads at most that many bytes (and writes none back for the commands
    // used here). Pointers inside it (instructions, license, log, key,
    // value) point to memory the caller keeps alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, (attr as *mut T).cast::<u8>(), std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A descriptor `bpf` returned, owned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let raw = RawFd::try_from(fd).map_err(|_| io::Error::other("bpf returned no descriptor"))?;
    // SAFETY: the kernel just returned `raw` as a new descriptor of this
    // process; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// One BPF instruction (`struct bpf_insn`): opcode, destination and source
/// registers (4 bits each), offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let regs = (src << 4) | (dst & 0xf);
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// The program, with `map_fd` as its map:
/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`
fn program(map_fd: RawFd) -> [u64; 6] {
    // Opcodes (linux/bpf.h): class | size | mode.
    const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_IMM_DW: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW (two slots)
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const PSEUDO_MAP_FD: u8 = 1; // src_reg of a map load by descriptor
    const RX_QUEUE_INDEX: i16 = 16; // offsetof(struct xdp_md, rx_queue_index)
    const HELPER_REDIRECT_MAP: i32 = 51; // BPF_FUNC_redirect_map
    const XDP_PASS: i32 = 2; // the action where the slot is empty
    [
        insn(LDX_MEM_W, 2, 1, RX_QUEUE_INDEX, 0),     // r2 = ctx->rx_queue_index
        insn(LD_IMM_DW, 1, PSEUDO_MAP_FD, 0, map_fd), // r1 = &xsks (low half)
        insn(0, 0, 0, 0, 0),                          // (high half of the address)
        insn(MOV64_K, 3, 0, 0, XDP_PASS),             // r3 = XDP_PASS (flags)
        insn(CALL, 0, 0, 0, HELPER_REDIRECT_MAP),     // r0 = bpf_redirect_map(r1, r2, r3)
        insn(EXIT, 0, 0, 0, 0),                       // return r0
    ]
}

/// How the program runs on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (the interface's own XDP support).
    Native,
    /// On socket buffers, after the driver (any interface).
    Generic,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// The redirecting program attached to one interface, with its map.
#[derive(Debug)]
pub struct XdpProgram {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    pub mode: XdpMode,
}

impl XdpProgram {
    /// Loads the program and attaches it to interface `ifindex`: in the
    /// driver where the interface takes it, else generic.
    pub fn attach(ifindex: u32) -> io::Result<XdpProgram> {
        let ctx = |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let mut mc =
            MapCreate { map_type: MAP_TYPE_XSKMAP, key_size: 4, value_size: 4, max_entries: MAX_QUEUES, map_flags: 0 };
        let map = owned(bpf(BPF_MAP_CREATE, &mut mc).map_err(ctx("creating the XSKMAP (needs CAP_BPF)"))?)?;
        let insns = program(map.as_raw_fd());
        let license = b"GPL\0";
        let mut name = [0u8; 16];
        name[..10].copy_from_slice(b"kairo_xsks");
        let mut log = vec![0u8; 4096];
        let mut load = ProgLoad {
            prog_type: PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: ATTACH_XDP,
            ..ProgLoad::default()
        };
        let prog = match bpf(BPF_PROG_LOAD, &mut load) {
            Ok(fd) => owned(fd)?,
            Err(e) => {
                // Again with the verifier's log, for the error.
                load.log_level = 1;
                load.log_size = log.len() as u32;
                load.log_buf = log.as_mut_ptr() as u64;
                let _ = bpf(BPF_PROG_LOAD, &mut load);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let said = String::from_utf8_lossy(&log[..end]).trim().replace('\n', "; ");
                return Err(io::Error::new(e.kind(), format!("loading the XDP program: {e} ({said})")));
            }
        };
        let mut last = None;
        for (flags, mode) in [(XDP_FLAGS_DRV_MODE, XdpMode::Native), (XDP_FLAGS_SKB_MODE, XdpMode::Generic)] {
            let mut lc = LinkCreate {
                prog_fd: prog.as_raw_fd() as u32,
                target_ifindex: ifindex,
                attach_type: ATTACH_XDP,
                flags,
            };
            match bpf(BPF_LINK_CREATE, &mut lc) {
                Ok(fd) => return Ok(XdpProgram { map, _prog: prog, _link: owned(fd)?, mode }),
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::other("no mode"));
        Err(io::Error::new(
            e.kind(),
            format!("attaching the XDP program (is another one attached to the interface?): {e}"),
        ))
    }

    /// Puts socket `xsk` in queue `queue`'s slot: frames arriving on that
    /// queue go to it from now on.
    pub fn set_socket(&self, queue: u32, xsk: RawFd) -> io::Result<()> {
        let (key, value) = (queue, xsk as u32);
        let mut e = MapElem {
            map_fd: self.map.as_raw_fd() as u32,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            ..MapElem::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut e).map(|_| ())
    }

    /// Empties queue `queue`'s slot (its frames go to the kernel's stack).
    pub fn clear_socket(&self, queue: u32) {
        let key = queue;
        let mut e =
            MapElem { map_fd: self.map.as_raw_fd() as u32, key: &key as *const u32 as u64, ..MapElem::default() };
        let _ = bpf(BPF_MAP_DELETE_ELEM, &mut e);
    }
}

/// Why XDP sockets cannot be used here (None: they can): the kernel must
/// make an XSKMAP and an AF_XDP socket for this process.
pub fn unavailable() -> Option<String> {
    let mut mc = MapCreate { map_type: MAP_TYPE_XSKMAP, key_size: 4, value_size: 4, max_entries: 1, map_flags: 0 };
    if let Err(e) = bpf(BPF_MAP_CREATE, &mut mc).and_then(owned) {
        return Some(format!("the kernel refuses an XSKMAP ({e}; needs root or CAP_BPF)"));
    }
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    if let Err(e) = socket_with(AddressFamily::XDP, SocketType::RAW, SocketFlags::CLOEXEC, None) {
        return Some(format!("the kernel refuses an AF_XDP socket ({e})"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r2 = *(u32 *)(r1 + 16): opcode 0x61, dst 2, src 1, off 16.
        let b = insn(0x61, 2, 1, 16, 0).to_ne_bytes();
        assert_eq!(b, [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        // call 51
        assert_eq!(insn(0x85, 0, 0, 0, 51).to_ne_bytes(), [0x85, 0, 0, 0, 51, 0, 0, 0]);
        let p = program(7);
        assert_eq!(p[1].to_ne_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[2], 0);
        assert_eq!(p.len(), 6);
    }
}
