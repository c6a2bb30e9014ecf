//! Unit tests that need no cluster: synthetic watcher events, manifests, pool logic.

mod cidr_pool;
mod file_source;
mod manifests;
mod stores;
