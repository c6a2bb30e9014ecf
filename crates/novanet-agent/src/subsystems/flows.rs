//! Flow events from the datapath's ring buffer, aggregated for `novanetctl` and metrics. The flows issue
//! fills this in; until then it is inactive.

use super::Inactive;

pub fn start() -> Inactive {
    Inactive::new("flows", "flow events and metrics are not in this build")
}
