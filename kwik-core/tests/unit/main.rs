//! In-process checks of the engine without a network: table tests of its pure policies
//! (health, rate, same-peer scheduler, stripe scheduler) and the source contract.

mod contract;
mod health_policy;
mod rate_policy;
mod scheduler_policy;
mod stripe_policy;
