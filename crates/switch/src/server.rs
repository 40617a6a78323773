//! The control socket's server: a Unix stream socket, one thread per client,
//! one JSON request per line answered by one JSON reply per line (the
//! messages are in [`crate::request`], what they do in [`crate::ctl`]).
//!
//! Invariants, whatever clients do:
//! - the socket is created owner read/write/execute and group read/execute
//!   (`srwxr-x---`, as Open vSwitch's), whatever the umask: only its owner
//!   (and root) can connect;
//! - only a stale socket at the path is ever replaced: a live one (another
//!   switch answering) or anything that is not a socket is an error naming
//!   the path, and is left as it was;
//! - at most [`Limits::clients`] connections are served at once (one more is
//!   answered with an error and closed), and the bytes of partly received
//!   requests of all clients together stay under [`Limits::buffered`];
//! - a client silent for [`Limits::idle`] between requests, or taking longer
//!   than [`Limits::slow`] to finish one, is closed;
//! - bytes that are not a request get an error reply saying what was wrong
//!   (not UTF-8: then the connection closes; not a request: it goes on).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::request::{Reply, Request};
use crate::Switch;

/// The control socket's permissions (`srwxr-x---`).
pub const SOCKET_MODE: u32 = 0o750;

/// Bounds on the clients of one control socket.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub clients: usize,
    /// Bytes of one request line (an add-flows file of about a million flows).
    pub request: u64,
    /// Bytes of partly received requests, all clients together.
    pub buffered: u64,
    /// Silence between requests after which a client is closed.
    pub idle: Duration,
    /// Time a client may take to send one request once it started it.
    pub slow: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            clients: 64,
            request: 256 << 20,
            buffered: 512 << 20,
            idle: Duration::from_secs(600),
            slow: Duration::from_secs(60),
        }
    }
}

/// What the connections share: the limits and what they use of them.
struct Shared {
    limits: Limits,
    clients: AtomicUsize,
    buffered: AtomicU64,
}

/// A running listener: its thread, and how to wake its blocking accept so
/// that it sees the stop flag.
pub struct Served {
    thread: std::thread::JoinHandle<()>,
    wake: Box<dyn Fn() + Send>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("thread", &self.thread.thread().name()).finish()
    }
}

impl Served {
    pub fn new(thread: std::thread::JoinHandle<()>, wake: Box<dyn Fn() + Send>) -> Served {
        Served { thread, wake }
    }

    /// Waits for the listener to end; call after setting its stop flag (a
    /// connection of our own wakes the accept that would otherwise wait for
    /// the next client).
    pub fn join(self) -> std::thread::Result<()> {
        (self.wake)();
        self.thread.join()
    }
}

/// Serves the control socket at `path` until `stop` is set, with the default [`Limits`].
pub fn serve(sw: Arc<Switch>, path: &Path, stop: Arc<AtomicBool>) -> std::io::Result<Served> {
    serve_with(sw, path, stop, Limits::default())
}

/// [`serve`] with the given limits. The accept blocks (no polling): a
/// client is served the moment it connects.
pub fn serve_with(sw: Arc<Switch>, path: &Path, stop: Arc<AtomicBool>, limits: Limits) -> std::io::Result<Served> {
    let listener = bind(path)?;
    let path: PathBuf = path.to_path_buf();
    let wake_path = path.clone();
    let shared = Arc::new(Shared { limits, clients: AtomicUsize::new(0), buffered: AtomicU64::new(0) });
    let thread = std::thread::Builder::new().name("kairo-ctl".into()).spawn(move || {
        for s in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match s {
                Ok(s) => admit(&sw, &shared, s),
                // Out of descriptors or the like: back off a moment rather than spin.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = std::fs::remove_file(&path);
    })?;
    Ok(Served::new(
        thread,
        Box::new(move || {
            let _ = UnixStream::connect(&wake_path);
        }),
    ))
}

/// Binds the socket at `path` with [`SOCKET_MODE`], replacing only a stale
/// socket.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let named = |kind: ErrorKind, what: &str| std::io::Error::new(kind, format!("{}: {what}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(named(ErrorKind::AddrInUse, "another switch is listening there"));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(named(ErrorKind::AlreadyExists, "exists and is not a socket; not replacing it"));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(named(e.kind(), &e.to_string())),
    }
    // The socket file is made with the process's umask: a tight one while
    // binding (no moment where others could connect), then the mode set.
    // The umask is process-wide; the switch binds once, at start.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// Serves a new connection on a thread of its own, if under the limit.
fn admit(sw: &Arc<Switch>, shared: &Arc<Shared>, s: UnixStream) {
    let _ = s.set_nonblocking(false);
    let n = shared.clients.fetch_add(1, Ordering::SeqCst);
    if n >= shared.limits.clients {
        shared.clients.fetch_sub(1, Ordering::SeqCst);
        let mut s = s;
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let error = format!("too many clients (at most {} at once); try again later", shared.limits.clients);
        let _ = send(&mut s, &Reply::error(error));
        return;
    }
    let (sw, slot) = (sw.clone(), Slot(shared.clone()));
    // If the thread cannot be made, the closure is dropped and so is the slot.
    let _ = std::thread::Builder::new().name("kairo-ctl-conn".into()).spawn(move || connection(&sw, slot, s));
}

/// A client's place under [`Limits::clients`], given back when dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

fn send(w: &mut UnixStream, reply: &Reply) -> bool {
    let Ok(mut text) = serde_json::to_string(reply) else { return false };
    text.push('\n');
    w.write_all(text.as_bytes()).is_ok()
}

/// Why reading a request line stopped.
enum Line {
    /// A whole line (without its newline).
    Whole(Vec<u8>),
    /// The client closed the connection (or an I/O error).
    Closed,
    /// Something the client is told before the connection closes.
    Refused(String),
}

/// Bytes of partly received requests this connection holds against the
/// shared budget, given back when dropped.
struct Held<'a> {
    shared: &'a Shared,
    bytes: u64,
}

impl Held<'_> {
    /// Takes `n` more bytes of the budget, if there is room.
    fn take(&mut self, n: u64) -> bool {
        let cap = self.shared.limits.buffered;
        let ok = self
            .shared
            .buffered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_add(n).filter(|&t| t <= cap))
            .is_ok();
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.shared.buffered.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Reads one request line within the limits.
fn read_line(r: &mut BufReader<UnixStream>, shared: &Shared) -> Line {
    let limits = &shared.limits;
    let mut line = Vec::new();
    let mut held = Held { shared, bytes: 0 };
    let mut started: Option<Instant> = None;
    loop {
        let timeout = match started {
            None => limits.idle,
            Some(t) => match limits.slow.checked_sub(t.elapsed()) {
                Some(left) if !left.is_zero() => left,
                _ => return Line::Refused(format!("request not finished within {} s", limits.slow.as_secs())),
            },
        };
        if r.get_ref().set_read_timeout(Some(timeout)).is_err() {
            return Line::Closed;
        }
        let buf = match r.fill_buf() {
            Ok([]) => return Line::Closed,
            Ok(b) => b,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return match started {
                    None => Line::Refused(format!("idle for {} s; closing", limits.idle.as_secs())),
                    Some(_) => Line::Refused(format!("request not finished within {} s", limits.slow.as_secs())),
                };
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Line::Closed,
        };
        started.get_or_insert_with(Instant::now);
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() as u64 + chunk.len() as u64 > limits.request {
            return Line::Refused(format!("request longer than {} MiB; closing the connection", limits.request >> 20));
        }
        if !held.take(chunk.len() as u64) {
            return Line::Refused(format!(
                "the switch holds {} MiB of unfinished requests from its clients; closing this one",
                limits.buffered >> 20
            ));
        }
        line.extend_from_slice(chunk);
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Line::Whole(line);
        }
    }
}

/// Answers requests on one connection until the client closes it or is closed.
fn connection(sw: &Switch, slot: Slot, s: UnixStream) {
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::with_capacity(64 << 10, s);
    // Declared after the socket's halves, so dropped before them: a client
    // that sees its connection closed finds its slot already free.
    let slot = slot;
    let shared: &Shared = &slot.0;
    let _ = w.set_write_timeout(Some(shared.limits.slow));
    loop {
        let line = match read_line(&mut r, shared) {
            Line::Whole(l) => l,
            Line::Closed => return,
            Line::Refused(error) => {
                send(&mut w, &Reply::error(error));
                return;
            }
        };
        let text = match String::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                send(&mut w, &Reply::error(format!("request is not UTF-8 text (byte {at} of the line); closing")));
                return;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&text) {
            Ok(req) => match sw.handle(&req) {
                Ok(output) => Reply::output(output),
                Err(error) => Reply::error(format!("{}: {error}", req.name())),
            },
            Err(e) => Reply::error(format!("malformed request: {e}")),
        };
        if !send(&mut w, &reply) {
            return;
        }
        // Answered: now the bookkeeping an update deferred.
        sw.housekeep();
    }
}
