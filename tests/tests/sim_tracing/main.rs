//! The engine's tracing spans and events, in virtual time. A binary of its own: it installs
//! a tracing subscriber.

mod tracing_spans;
