//! A secondary whose link goes silent halfway through a striped body: the body completes,
//! every byte is read exactly once and in order (the SHA-256 matches), and the longest read
//! stall stays within `max(3 × RTT, interval × threshold) + RTT`.

use kwik_tests::failover::{Kill, run_failover};

#[test]
fn a_blackholed_secondary_costs_no_byte() {
    let out = run_failover(41, Kill::Blackhole);
    println!("{out}");
    out.check();
}
