//! One virtual minute of the soak (`kwik_tests::soak`): eight sessions stripe bodies of
//! up to 2 MiB from a primary and two secondaries, over and over, while secondaries go
//! silent for 1 to 12 s at random, hostile peers send garbage or ping floods, and one
//! client reads at 50 kB/s. Every transfer must arrive intact, every honest session must
//! live, every hostile peer must be closed, and no structure may grow past its bound.

use std::time::Duration;

use kwik_tests::soak::{SoakConfig, run};

#[test]
fn a_virtual_minute_of_faults_and_hostile_peers() {
    let cfg = SoakConfig {
        seed: 7,
        sessions: 8,
        duration: Duration::from_secs(60),
        max_body: 2 << 20,
    };
    let r = run(cfg);
    println!("{r:#?}");
    assert_eq!(
        r.mismatches, 0,
        "transfers with a wrong length or a wrong byte"
    );
    assert!(
        r.sessions_lost.is_empty(),
        "honest sessions lost: {:?}",
        r.sessions_lost
    );
    assert!(
        r.blackholes >= 5,
        "the faults were driven ({} blackholes)",
        r.blackholes
    );
    assert!(r.hostile >= 5, "hostile peers came ({})", r.hostile);
    assert_eq!(
        r.hostile_closed, r.hostile,
        "hostile peers the primary closed"
    );
    // Every fast session kept transferring: at least one body per 6 s on average.
    assert!(
        r.fewest_transfers >= 10,
        "a session moved {} bodies",
        r.fewest_transfers
    );
    // Bounds: three servers' paths per session (removed ones are forgotten beyond
    // max_paths_per_session), carriers within max_carriers_per_path + 1, one stream at a
    // time, unread bytes within the session window plus one stream window, and the
    // servers hold the honest sessions once the hostile peers are gone.
    let p = &r.peaks;
    assert!(p.live_paths <= 3, "{} live paths", p.live_paths);
    assert!(p.paths <= 3 + 8, "{} paths", p.paths);
    assert!(p.carriers <= 65, "{} carriers", p.carriers);
    assert!(p.streams <= 2, "{} streams", p.streams);
    assert!(
        p.unread <= (4 << 20) + (1 << 20),
        "{} unread bytes",
        p.unread
    );
    assert!(
        p.server_sessions <= 8 + r.hostile,
        "{} server sessions",
        p.server_sessions
    );
    assert!(
        r.end_sessions <= 8,
        "{} sessions on the primary at the end",
        r.end_sessions
    );
    assert!(
        r.end_connections <= 8,
        "{} connections at the end",
        r.end_connections
    );
}
