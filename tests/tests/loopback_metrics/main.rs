//! Real UDP sockets on loopback, on both runtimes, under a `metrics` recorder. A binary of
//! its own: the recorder is process-wide, and other scenarios' sessions would count in it.

mod loopback_striping;
