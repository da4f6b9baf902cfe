//! Replica membership through etcd.
//!
//! A replica holds a [`Registration`]: its key (say `/brisk/replicas/<id>`) with an opaque
//! value (JSON written by the caller), attached to a lease that a background task keeps
//! alive. A router calls [`watch`] on the prefix and gets the membership as a
//! [`MembershipEvent::Snapshot`] followed by `Put`/`Delete` changes. A replica that dies
//! without deregistering disappears when its lease expires, after at most its TTL.
//!
//! Both sides outlive etcd outages and restarts, even ones that lose etcd's data: the
//! registration re-registers under a new lease, and the watcher re-lists and sends a fresh
//! snapshot. Nothing here knows what the values mean.

#![deny(missing_docs)]

mod backoff;
mod endpoint;
mod error;
mod registration;
mod watch;

pub use endpoint::parse_endpoints;
pub use error::DiscoveryError;
pub use registration::Registration;
pub use watch::{watch, MembershipEvent, WatchHandle};
