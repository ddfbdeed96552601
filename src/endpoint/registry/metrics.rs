//! The registry's metrics and the events that are both logged and counted.

use crate::observe::metrics::get;

/// The series at 0 from start-up, and the file's count.
pub fn init(file_endpoints: usize) {
    let m = get();
    m.registry_endpoints.with_label_values(&["file"]).set(file_endpoints as i64);
    m.registry_endpoints.with_label_values(&["registry"]).set(0);
    for result in ["applied", "refused"] {
        m.registry_updates.with_label_values(&[result]).inc_by(0);
    }
}

/// A record was applied.
pub fn applied(name: &str, partition: i32, offset: i64, endpoints: usize, delete: bool) {
    let m = get();
    m.registry_updates.with_label_values(&["applied"]).inc();
    m.registry_endpoints.with_label_values(&["registry"]).set(endpoints as i64);
    tracing::debug!(endpoint = name, partition, offset, delete, "registry record applied");
}

/// A record was refused; the previous spec of `name` stays.
pub fn refused(name: &str, partition: i32, offset: i64, why: &str) {
    get().registry_updates.with_label_values(&["refused"]).inc();
    tracing::warn!(endpoint = name, partition, offset, error = why, "registry record refused, previous spec kept");
}

/// The applied position of a partition.
pub fn position(partition: i32, next: i64) {
    get().registry_offset.with_label_values(&[&partition.to_string()]).set(next);
}

pub fn up(up: bool) {
    get().registry_up.with_label_values(&[] as &[&str]).set(i64::from(up));
}
