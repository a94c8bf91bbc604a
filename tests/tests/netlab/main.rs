//! A real network of hosts in network namespaces (`netlab`): needs root; elsewhere each
//! test prints why it is skipped and passes.

mod netlab_striping;
