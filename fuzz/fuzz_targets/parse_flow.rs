//! Fuzz the ovs-ofctl flow and group parsers: no input may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = kairo_ofproto::parse_flow_file(s);
        let _ = kairo_ofproto::parse_group_file(s);
        let _ = kairo_flow::parse_key(s);
    }
});
