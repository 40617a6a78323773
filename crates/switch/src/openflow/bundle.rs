//! OpenFlow bundles (OFPT_BUNDLE_CONTROL/ADD_MESSAGE in 1.5, the ONF
//! extension `ovs-ofctl --bundle` sends in 1.3): flow and group changes
//! gathered on one connection and applied as one atomic, ordered change.
//!
//! Invariants: a message is checked when it is added (an add that fails is
//! answered with its error and leaves the bundle as it was); a commit
//! applies every change or none, with one maintenance pass, through
//! [`Switch::apply`]; a connection holds at most [`MAX_BUNDLES`] bundles and
//! [`MAX_BUNDLE_BYTES`] of added messages, so a client cannot grow the
//! switch's memory without bound.

use std::collections::HashMap;

use kairo_maintain::flowmod::FlowMod as KFlowMod;
use kairo_ofp::message::{ofpbct, BundleAdd, BundleControl};
use kairo_ofp::{decode, Error, ErrorCode, Message};

use super::conn::Session;
use super::handle::{apply, flow_mod_change, group_mod_change};
use crate::Switch;

/// Bundles open at once on one connection.
pub const MAX_BUNDLES: usize = 16;
/// Bytes of added messages held by one connection's bundles.
pub const MAX_BUNDLE_BYTES: usize = 64 << 20;

#[derive(Default)]
pub struct Bundle {
    flags: u16,
    changes: Vec<KFlowMod>,
    /// Bytes of the messages added (counted against [`MAX_BUNDLE_BYTES`]).
    bytes: usize,
    closed: bool,
}

/// One connection's open bundles and the bytes they hold.
#[derive(Default)]
pub struct Bundles {
    open: HashMap<u32, Bundle>,
    bytes: usize,
}

fn reply(c: &BundleControl, ty: u16) -> Message {
    Message::BundleControl(BundleControl { bundle_id: c.bundle_id, ty, flags: c.flags })
}

fn bad_id(id: u32) -> Error {
    Error::new(ErrorCode::BUNDLE_BAD_ID, format!("bundle {id} is not open"))
}

/// A BUNDLE_CONTROL request; its reply.
pub fn control(sw: &Switch, s: &mut Session, c: &BundleControl) -> Result<Message, Error> {
    let b = &mut s.bundles;
    match c.ty {
        ofpbct::OPEN_REQUEST => {
            if b.open.contains_key(&c.bundle_id) {
                return Err(Error::new(ErrorCode::BUNDLE_EXIST, format!("bundle {} is already open", c.bundle_id)));
            }
            if b.open.len() >= MAX_BUNDLES {
                return Err(Error::new(
                    ErrorCode::OUT_OF_BUNDLES,
                    format!("{MAX_BUNDLES} bundles are open on this connection"),
                ));
            }
            b.open.insert(c.bundle_id, Bundle { flags: c.flags, ..Bundle::default() });
            Ok(reply(c, ofpbct::OPEN_REPLY))
        }
        ofpbct::CLOSE_REQUEST => {
            let bundle = b.open.get_mut(&c.bundle_id).ok_or_else(|| bad_id(c.bundle_id))?;
            if bundle.closed {
                return Err(Error::new(ErrorCode::BUNDLE_CLOSED, format!("bundle {} is already closed", c.bundle_id)));
            }
            bundle.closed = true;
            Ok(reply(c, ofpbct::CLOSE_REPLY))
        }
        ofpbct::COMMIT_REQUEST => {
            let bundle = b.open.remove(&c.bundle_id).ok_or_else(|| bad_id(c.bundle_id))?;
            if bundle.flags != c.flags {
                return Err(Error::new(
                    ErrorCode::BUNDLE_BAD_FLAGS,
                    format!(
                        "bundle {} was opened with flags {:#x}, committed with {:#x}",
                        c.bundle_id, bundle.flags, c.flags
                    ),
                ));
            }
            b.bytes -= bundle.bytes;
            apply(sw, &KFlowMod::Bundle(bundle.changes))
                .map_err(|e| Error::new(ErrorCode::BUNDLE_MSG_FAILED, format!("bundle {}: {}", c.bundle_id, e)))?;
            Ok(reply(c, ofpbct::COMMIT_REPLY))
        }
        ofpbct::DISCARD_REQUEST => {
            let bundle = b.open.remove(&c.bundle_id).ok_or_else(|| bad_id(c.bundle_id))?;
            b.bytes -= bundle.bytes;
            Ok(reply(c, ofpbct::DISCARD_REPLY))
        }
        other => Err(Error::new(ErrorCode::BUNDLE_BAD_TYPE, format!("bundle control type {other}"))),
    }
}

/// A BUNDLE_ADD_MESSAGE: the message checked and kept (nothing is sent back
/// unless it fails).
pub fn add(sw: &Switch, s: &mut Session, xid: u32, a: &BundleAdd) -> Result<(), Error> {
    let (h, m) = decode(&a.message)?;
    if h.xid != xid {
        return Err(Error::new(
            ErrorCode::BUNDLE_MSG_BAD_XID,
            format!("the bundled message's xid {:#x} is not the add's {xid:#x}", h.xid),
        ));
    }
    if h.version != s.version.wire() {
        return Err(Error::new(ErrorCode::BAD_VERSION, format!("bundled message of version {:#04x}", h.version)));
    }
    let change = match &m {
        Message::FlowMod(fm) => Some(flow_mod_change(sw, fm)?),
        Message::GroupMod(gm) => group_mod_change(sw, gm)?,
        other => {
            return Err(Error::new(
                ErrorCode::BUNDLE_MSG_UNSUP,
                format!("message type {} cannot be bundled (flow and group changes can)", other.ty()),
            ))
        }
    };
    let b = &mut s.bundles;
    if b.bytes + a.message.len() > MAX_BUNDLE_BYTES {
        return Err(Error::new(
            ErrorCode::BUNDLE_MSG_TOO_MANY,
            format!("this connection's bundles hold {} MiB, the most they may", MAX_BUNDLE_BYTES >> 20),
        ));
    }
    if !b.open.contains_key(&a.bundle_id) && b.open.len() >= MAX_BUNDLES {
        return Err(Error::new(
            ErrorCode::OUT_OF_BUNDLES,
            format!("{MAX_BUNDLES} bundles are open on this connection"),
        ));
    }
    // A bundle that is not open yet is opened by its first message, as OpenFlow allows.
    let bundle = b.open.entry(a.bundle_id).or_insert_with(|| Bundle { flags: a.flags, ..Bundle::default() });
    if bundle.closed {
        return Err(Error::new(ErrorCode::BUNDLE_CLOSED, format!("bundle {} is closed", a.bundle_id)));
    }
    if bundle.flags != a.flags {
        return Err(Error::new(
            ErrorCode::BUNDLE_BAD_FLAGS,
            format!("bundle {} has flags {:#x}, the message {:#x}", a.bundle_id, bundle.flags, a.flags),
        ));
    }
    b.bytes += a.message.len();
    bundle.bytes += a.message.len();
    bundle.changes.extend(change);
    Ok(())
}
