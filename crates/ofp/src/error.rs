//! OpenFlow error types and codes, and the codec's error: what was wrong,
//! where in the message, and which OpenFlow error a switch replies with.
//!
//! Invariant: every rejection the codec or the mapping makes carries the
//! (type, code) pair OpenFlow 1.3 defines for it (1.5 keeps the same numbers
//! for everything kairo sends), so a switch never has to guess its reply.

/// An OpenFlow error (type, code), as sent in an OFPT_ERROR message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode {
    pub ty: u16,
    pub code: u16,
}

macro_rules! codes {
    ($($name:ident = ($t:expr, $c:expr), $text:literal;)*) => {
        impl ErrorCode {
            $(pub const $name: ErrorCode = ErrorCode { ty: $t, code: $c };)*

            /// OpenFlow's name for the error, as `ovs-ofctl` prints it.
            pub fn name(&self) -> String {
                match (self.ty, self.code) {
                    $(($t, $c) => $text.to_string(),)*
                    (t, c) => format!("type {t} code {c}"),
                }
            }
        }
    };
}

codes! {
    HELLO_INCOMPATIBLE = (0, 0), "OFPHFC_INCOMPATIBLE";
    HELLO_EPERM = (0, 1), "OFPHFC_EPERM";
    BAD_VERSION = (1, 0), "OFPBRC_BAD_VERSION";
    BAD_TYPE = (1, 1), "OFPBRC_BAD_TYPE";
    BAD_MULTIPART = (1, 2), "OFPBRC_BAD_MULTIPART";
    BAD_EXPERIMENTER = (1, 3), "OFPBRC_BAD_EXPERIMENTER";
    BAD_EXP_TYPE = (1, 4), "OFPBRC_BAD_EXP_TYPE";
    REQUEST_EPERM = (1, 5), "OFPBRC_EPERM";
    BAD_LEN = (1, 6), "OFPBRC_BAD_LEN";
    BUFFER_UNKNOWN = (1, 8), "OFPBRC_BUFFER_UNKNOWN";
    BAD_TABLE_ID = (1, 9), "OFPBRC_BAD_TABLE_ID";
    IS_SLAVE = (1, 10), "OFPBRC_IS_SLAVE";
    BAD_PORT = (1, 11), "OFPBRC_BAD_PORT";
    BAD_PACKET = (1, 12), "OFPBRC_BAD_PACKET";
    MULTIPART_BUFFER_OVERFLOW = (1, 13), "OFPBRC_MULTIPART_BUFFER_OVERFLOW";
    BAD_ACTION_TYPE = (2, 0), "OFPBAC_BAD_TYPE";
    BAD_ACTION_LEN = (2, 1), "OFPBAC_BAD_LEN";
    BAD_ACTION_EXPERIMENTER = (2, 2), "OFPBAC_BAD_EXPERIMENTER";
    BAD_ACTION_EXP_TYPE = (2, 3), "OFPBAC_BAD_EXP_TYPE";
    BAD_OUT_PORT = (2, 4), "OFPBAC_BAD_OUT_PORT";
    BAD_ACTION_ARGUMENT = (2, 5), "OFPBAC_BAD_ARGUMENT";
    TOO_MANY_ACTIONS = (2, 7), "OFPBAC_TOO_MANY";
    BAD_OUT_GROUP = (2, 9), "OFPBAC_BAD_OUT_GROUP";
    MATCH_INCONSISTENT = (2, 10), "OFPBAC_MATCH_INCONSISTENT";
    BAD_SET_TYPE = (2, 13), "OFPBAC_BAD_SET_TYPE";
    BAD_SET_LEN = (2, 14), "OFPBAC_BAD_SET_LEN";
    BAD_SET_ARGUMENT = (2, 15), "OFPBAC_BAD_SET_ARGUMENT";
    UNKNOWN_INST = (3, 0), "OFPBIC_UNKNOWN_INST";
    UNSUP_INST = (3, 1), "OFPBIC_UNSUP_INST";
    INST_BAD_TABLE_ID = (3, 2), "OFPBIC_BAD_TABLE_ID";
    INST_BAD_LEN = (3, 7), "OFPBIC_BAD_LEN";
    DUP_INST = (3, 9), "OFPBIC_DUP_INST";
    BAD_MATCH_TYPE = (4, 0), "OFPBMC_BAD_TYPE";
    BAD_MATCH_LEN = (4, 1), "OFPBMC_BAD_LEN";
    BAD_WILDCARDS = (4, 5), "OFPBMC_BAD_WILDCARDS";
    BAD_FIELD = (4, 6), "OFPBMC_BAD_FIELD";
    BAD_VALUE = (4, 7), "OFPBMC_BAD_VALUE";
    BAD_MASK = (4, 8), "OFPBMC_BAD_MASK";
    BAD_PREREQ = (4, 9), "OFPBMC_BAD_PREREQ";
    DUP_FIELD = (4, 10), "OFPBMC_DUP_FIELD";
    FLOW_MOD_UNKNOWN = (5, 0), "OFPFMFC_UNKNOWN";
    TABLE_FULL = (5, 1), "OFPFMFC_TABLE_FULL";
    FLOW_BAD_TABLE_ID = (5, 2), "OFPFMFC_BAD_TABLE_ID";
    OVERLAP = (5, 3), "OFPFMFC_OVERLAP";
    FLOW_EPERM = (5, 4), "OFPFMFC_EPERM";
    BAD_TIMEOUT = (5, 5), "OFPFMFC_BAD_TIMEOUT";
    BAD_COMMAND = (5, 6), "OFPFMFC_BAD_COMMAND";
    BAD_FLAGS = (5, 7), "OFPFMFC_BAD_FLAGS";
    GROUP_EXISTS = (6, 0), "OFPGMFC_GROUP_EXISTS";
    INVALID_GROUP = (6, 1), "OFPGMFC_INVALID_GROUP";
    OUT_OF_BUCKETS = (6, 4), "OFPGMFC_OUT_OF_BUCKETS";
    GROUP_LOOP = (6, 7), "OFPGMFC_LOOP";
    UNKNOWN_GROUP = (6, 8), "OFPGMFC_UNKNOWN_GROUP";
    CHAINED_GROUP = (6, 9), "OFPGMFC_CHAINED_GROUP";
    BAD_GROUP_TYPE = (6, 10), "OFPGMFC_BAD_TYPE";
    BAD_GROUP_COMMAND = (6, 11), "OFPGMFC_BAD_COMMAND";
    BAD_BUCKET = (6, 12), "OFPGMFC_BAD_BUCKET";
    BAD_WATCH = (6, 13), "OFPGMFC_BAD_WATCH";
    PORT_MOD_BAD_PORT = (7, 0), "OFPPMFC_BAD_PORT";
    PORT_MOD_BAD_HW_ADDR = (7, 1), "OFPPMFC_BAD_HW_ADDR";
    PORT_MOD_BAD_CONFIG = (7, 2), "OFPPMFC_BAD_CONFIG";
    SWITCH_CONFIG_BAD_FLAGS = (10, 0), "OFPSCFC_BAD_FLAGS";
    ROLE_STALE = (11, 0), "OFPRRFC_STALE";
    ROLE_UNSUP = (11, 1), "OFPRRFC_UNSUP";
    BAD_ROLE = (11, 2), "OFPRRFC_BAD_ROLE";
    METER_UNKNOWN = (12, 0), "OFPMMFC_UNKNOWN";
    METER_EXISTS = (12, 1), "OFPMMFC_METER_EXISTS";
    METER_INVALID = (12, 2), "OFPMMFC_INVALID_METER";
    METER_UNKNOWN_METER = (12, 3), "OFPMMFC_UNKNOWN_METER";
    METER_BAD_COMMAND = (12, 4), "OFPMMFC_BAD_COMMAND";
    METER_BAD_FLAGS = (12, 5), "OFPMMFC_BAD_FLAGS";
    METER_BAD_RATE = (12, 6), "OFPMMFC_BAD_RATE";
    METER_BAD_BURST = (12, 7), "OFPMMFC_BAD_BURST";
    METER_BAD_BAND = (12, 8), "OFPMMFC_BAD_BAND";
    METER_BAD_BAND_VALUE = (12, 9), "OFPMMFC_BAD_BAND_VALUE";
    METER_OUT_OF_METERS = (12, 10), "OFPMMFC_OUT_OF_METERS";
    METER_OUT_OF_BANDS = (12, 11), "OFPMMFC_OUT_OF_BANDS";
    BAD_PROPERTY_TYPE = (14, 0), "OFPBPC_BAD_TYPE";
    BUNDLE_UNKNOWN = (17, 0), "OFPBFC_UNKNOWN";
    BUNDLE_EPERM = (17, 1), "OFPBFC_EPERM";
    BUNDLE_BAD_ID = (17, 2), "OFPBFC_BAD_ID";
    BUNDLE_EXIST = (17, 3), "OFPBFC_BUNDLE_EXIST";
    BUNDLE_CLOSED = (17, 4), "OFPBFC_BUNDLE_CLOSED";
    OUT_OF_BUNDLES = (17, 5), "OFPBFC_OUT_OF_BUNDLES";
    BUNDLE_BAD_TYPE = (17, 6), "OFPBFC_BAD_TYPE";
    BUNDLE_BAD_FLAGS = (17, 7), "OFPBFC_BAD_FLAGS";
    BUNDLE_MSG_BAD_LEN = (17, 8), "OFPBFC_MSG_BAD_LEN";
    BUNDLE_MSG_BAD_XID = (17, 9), "OFPBFC_MSG_BAD_XID";
    BUNDLE_MSG_UNSUP = (17, 10), "OFPBFC_MSG_UNSUP";
    BUNDLE_MSG_TOO_MANY = (17, 12), "OFPBFC_MSG_TOO_MANY";
    BUNDLE_MSG_FAILED = (17, 13), "OFPBFC_MSG_FAILED";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// A rejected message: the OpenFlow error to answer with and what was wrong
/// where, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Error {
    pub code: ErrorCode,
    pub detail: String,
}

impl Error {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Error {
        Error { code, detail: detail.into() }
    }
}
