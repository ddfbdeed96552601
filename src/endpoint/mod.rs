//! Endpoints: where records are delivered. `registry`: endpoints as data, from a compacted topic.

pub mod registry;
