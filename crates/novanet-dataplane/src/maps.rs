//! Typed access to the pinned maps.

use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use novanet_common::{
    COUNTERS_MAP, Counter, CounterValue, ENDPOINTS_MAP, EndpointInfo, EndpointKey, FlowKey, MAX_ENDPOINTS, NAT_FLOWS_MAP,
};

use crate::DataplaneError;

fn map_err(map: &'static str, operation: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, operation, source: Box::new(source) }
}

fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    }
}

fn endpoints_mut(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, EndpointKey, EndpointInfo>, DataplaneError> {
    let map =
        ebpf.map_mut(ENDPOINTS_MAP).ok_or(DataplaneError::MissingInObject { kind: "map", name: ENDPOINTS_MAP })?;
    HashMap::try_from(map).map_err(map_err(ENDPOINTS_MAP, "opening"))
}

fn endpoints_ref(ebpf: &Ebpf) -> Result<HashMap<&MapData, EndpointKey, EndpointInfo>, DataplaneError> {
    let map = ebpf.map(ENDPOINTS_MAP).ok_or(DataplaneError::MissingInObject { kind: "map", name: ENDPOINTS_MAP })?;
    HashMap::try_from(map).map_err(map_err(ENDPOINTS_MAP, "opening"))
}

pub(crate) fn upsert_endpoint(ebpf: &mut Ebpf, ip: Ipv4Addr, info: &EndpointInfo) -> Result<(), DataplaneError> {
    let mut map = endpoints_mut(ebpf)?;
    map.insert(EndpointKey::from_octets(ip.octets()), info, 0).map_err(|e| {
        if errno(&e) == Some(libc::E2BIG) {
            DataplaneError::MapFull { map: ENDPOINTS_MAP, max_entries: MAX_ENDPOINTS }
        } else {
            map_err(ENDPOINTS_MAP, "inserting")(e)
        }
    })
}

pub(crate) fn remove_endpoint(ebpf: &mut Ebpf, ip: Ipv4Addr) -> Result<bool, DataplaneError> {
    let mut map = endpoints_mut(ebpf)?;
    match map.remove(&EndpointKey::from_octets(ip.octets())) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(map_err(ENDPOINTS_MAP, "removing")(e)),
    }
}

/// Removes every flow of `ip` from [`NAT_FLOWS_MAP`] (its endpoint is going away); returns how many.
pub(crate) fn forget_flows(ebpf: &mut Ebpf, ip: Ipv4Addr) -> Result<usize, DataplaneError> {
    let map =
        ebpf.map_mut(NAT_FLOWS_MAP).ok_or(DataplaneError::MissingInObject { kind: "map", name: NAT_FLOWS_MAP })?;
    let mut flows: HashMap<&mut MapData, FlowKey, u32> =
        HashMap::try_from(map).map_err(map_err(NAT_FLOWS_MAP, "opening"))?;
    let wanted = u32::from_ne_bytes(ip.octets());
    let mut keys = Vec::new();
    for key in flows.keys() {
        let key = key.map_err(map_err(NAT_FLOWS_MAP, "iterating"))?;
        if key.ip == wanted {
            keys.push(key);
        }
    }
    let mut removed = 0;
    for key in keys {
        match flows.remove(&key) {
            Ok(()) => removed += 1,
            // Evicted by the LRU meanwhile.
            Err(MapError::KeyNotFound) => {}
            Err(e) if errno(&e) == Some(libc::ENOENT) => {}
            Err(e) => return Err(map_err(NAT_FLOWS_MAP, "removing")(e)),
        }
    }
    Ok(removed)
}

pub(crate) fn endpoints(ebpf: &Ebpf) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DataplaneError> {
    let map = endpoints_ref(ebpf)?;
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, info) = entry.map_err(map_err(ENDPOINTS_MAP, "iterating"))?;
        out.push((Ipv4Addr::from(key.octets()), info));
    }
    out.sort_by_key(|(ip, _)| *ip);
    Ok(out)
}

pub(crate) fn counters(ebpf: &Ebpf) -> Result<Vec<(Counter, CounterValue)>, DataplaneError> {
    let map = ebpf.map(COUNTERS_MAP).ok_or(DataplaneError::MissingInObject { kind: "map", name: COUNTERS_MAP })?;
    let array: PerCpuArray<&MapData, CounterValue> =
        PerCpuArray::try_from(map).map_err(map_err(COUNTERS_MAP, "opening"))?;
    Counter::ALL
        .iter()
        .map(|&counter| {
            let per_cpu = array.get(&(counter as u32), 0).map_err(map_err(COUNTERS_MAP, "reading"))?;
            Ok((counter, sum(per_cpu.iter())))
        })
        .collect()
}

/// The flows of [`NAT_FLOWS_MAP`] as (pod address, pod port in host order, IP protocol), sorted.
pub(crate) fn nat_flows(ebpf: &Ebpf) -> Result<Vec<(Ipv4Addr, u16, u8)>, DataplaneError> {
    let map = ebpf.map(NAT_FLOWS_MAP).ok_or(DataplaneError::MissingInObject { kind: "map", name: NAT_FLOWS_MAP })?;
    let flows: HashMap<&MapData, FlowKey, u32> = HashMap::try_from(map).map_err(map_err(NAT_FLOWS_MAP, "opening"))?;
    let mut out = Vec::new();
    for key in flows.keys() {
        let key = key.map_err(map_err(NAT_FLOWS_MAP, "iterating"))?;
        out.push((Ipv4Addr::from(key.ip.to_ne_bytes()), u16::from_be(key.port), key.proto));
    }
    out.sort_unstable();
    Ok(out)
}

/// Sums per-CPU slots (wrapping, like the kernel-side counters themselves).
pub(crate) fn sum<'a>(slots: impl Iterator<Item = &'a CounterValue>) -> CounterValue {
    slots.fold(CounterValue::default(), |acc, v| CounterValue {
        packets: acc.packets.wrapping_add(v.packets),
        bytes: acc.bytes.wrapping_add(v.bytes),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn endpoint_key_keeps_network_byte_order() {
        let ip = Ipv4Addr::new(10, 244, 1, 7);
        let key = EndpointKey::from_octets(ip.octets());
        // The datapath reads the destination straight out of the packet into a native u32.
        assert_eq!(key.ip, u32::from_ne_bytes([10, 244, 1, 7]));
        assert_eq!(Ipv4Addr::from(key.octets()), ip);
    }

    #[test]
    fn sum_adds_every_cpu_slot() {
        let slots =
            [CounterValue { packets: 1, bytes: 100 }, CounterValue { packets: 2, bytes: 50 }, CounterValue::default()];
        assert_eq!(sum(slots.iter()), CounterValue { packets: 3, bytes: 150 });
    }
}
