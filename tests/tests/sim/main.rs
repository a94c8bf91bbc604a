//! Scenarios in virtual time, on the deterministic network simulator: honest peers, lossy
//! and failing links, several servers. One module per scenario.

mod buffer_limits;
mod carrier_sharing;
mod concurrent_streams;
mod delegation_failover;
mod drain;
mod echo;
mod joins_under_loss;
mod key_rotation;
mod lossy_transfer;
mod metrics;
mod path_recovery;
mod primary_lost_multi;
mod primary_path_lost;
mod raw_datagrams;
mod raw_per_path;
mod same_peer_multipath;
mod secondary_blackholed;
mod secondary_closed;
mod session_limit;
mod slow_links_stay_alive;
mod slow_reader;
mod soak_sim;
mod stalled_process;
mod stream_limit;
mod stripe_copies;
mod stripe_grid;
mod stripe_three_servers;
mod ticket_lifetime;
