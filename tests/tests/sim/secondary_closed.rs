//! A secondary that closes its connection halfway through a striped body: the body
//! completes, every byte is read exactly once and in order (the SHA-256 matches), and the
//! longest read stall stays within `max(3 × RTT, interval × threshold) + RTT`.

use kwik_tests::failover::{Kill, run_failover};

#[test]
fn a_closing_secondary_costs_no_byte() {
    let out = run_failover(42, Kill::Close);
    println!("{out}");
    out.check();
}
