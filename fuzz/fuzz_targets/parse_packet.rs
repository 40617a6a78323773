//! Fuzz the packet parser and the header rewrites: no input may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, mut lay) = kairo_wire::parse(data, 1);
    let mut b = data.to_vec();
    kairo_wire::rewrite::set_ipv4_dst(&mut b, &lay, 0x0a000001);
    kairo_wire::rewrite::set_ipv4_ttl(&mut b, &lay, 1);
    kairo_wire::rewrite::set_l4_src(&mut b, &lay, 1);
    kairo_wire::rewrite::push_vlan(&mut b, &mut lay, 0x1005);
    kairo_wire::rewrite::pop_vlan(&mut b, &mut lay);
    let _ = kairo_wire::parse(&b, 1);
});
