//! Typed access to the eBPF maps.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, lpm_trie::Key},
    util::nr_cpus,
};
use ipnet::IpNet;
use monitor_common::{
    IFACE_COUNTERS_MAP, IFINDEX_PREFIX_BITS, IfaceCounters, ROUTE_COUNTERS_MAP, ROUTES_V4_MAP,
    ROUTES_V6_MAP, RouteCounters, RouteId, RouteKeyV4, RouteKeyV6,
};

use super::EbpfError;
use crate::attribution::AttributionPlan;

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, EbpfError> {
    ebpf.map_mut(name)
        .ok_or_else(|| EbpfError::Other(format!("map {name} missing from the eBPF object")))
}

fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, EbpfError> {
    ebpf.map(name)
        .ok_or_else(|| EbpfError::Other(format!("map {name} missing from the eBPF object")))
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

fn cpus() -> Result<usize, EbpfError> {
    nr_cpus()
        .map_err(|(path, err)| EbpfError::Other(format!("cannot count CPUs from {path}: {err}")))
}

/// Creates zeroed counters for each interface, so the data path only ever looks up.
pub fn register_interfaces(
    ebpf: &mut Ebpf,
    ifindexes: impl Iterator<Item = u32>,
) -> Result<(), EbpfError> {
    let nr_cpus = cpus()?;
    let mut counters: PerCpuHashMap<&mut MapData, u32, IfaceCounters> =
        PerCpuHashMap::try_from(map_mut(ebpf, IFACE_COUNTERS_MAP)?)
            .map_err(map_error(IFACE_COUNTERS_MAP))?;
    for ifindex in ifindexes {
        let zero = PerCpuValues::try_from(vec![IfaceCounters::default(); nr_cpus])
            .map_err(|err| EbpfError::Other(format!("per-CPU values: {err}")))?;
        counters
            .insert(ifindex, zero, 0)
            .map_err(map_error(IFACE_COUNTERS_MAP))?;
    }
    Ok(())
}

/// Writes the plan's entries into the per-family LPM tries.
pub fn load_routes(ebpf: &mut Ebpf, plan: &AttributionPlan) -> Result<(), EbpfError> {
    let mut v4: LpmTrie<&mut MapData, RouteKeyV4, RouteId> =
        LpmTrie::try_from(map_mut(ebpf, ROUTES_V4_MAP)?).map_err(map_error(ROUTES_V4_MAP))?;
    for entry in &plan.entries {
        if let IpNet::V4(net) = entry.prefix {
            let key = RouteKeyV4 {
                ifindex: entry.ifindex,
                addr: net.network().octets(),
            };
            let prefix_len = IFINDEX_PREFIX_BITS + u32::from(net.prefix_len());
            v4.insert(&Key::new(prefix_len, key), entry.route_id, 0)
                .map_err(map_error(ROUTES_V4_MAP))?;
        }
    }
    let mut v6: LpmTrie<&mut MapData, RouteKeyV6, RouteId> =
        LpmTrie::try_from(map_mut(ebpf, ROUTES_V6_MAP)?).map_err(map_error(ROUTES_V6_MAP))?;
    for entry in &plan.entries {
        if let IpNet::V6(net) = entry.prefix {
            let key = RouteKeyV6 {
                ifindex: entry.ifindex,
                addr: net.network().octets(),
            };
            let prefix_len = IFINDEX_PREFIX_BITS + u32::from(net.prefix_len());
            v6.insert(&Key::new(prefix_len, key), entry.route_id, 0)
                .map_err(map_error(ROUTES_V6_MAP))?;
        }
    }
    Ok(())
}

/// Reads every interface's counters, summed over CPUs.
pub fn interface_counters(ebpf: &Ebpf) -> Result<BTreeMap<u32, IfaceCounters>, EbpfError> {
    let counters: PerCpuHashMap<&MapData, u32, IfaceCounters> =
        PerCpuHashMap::try_from(map(ebpf, IFACE_COUNTERS_MAP)?)
            .map_err(map_error(IFACE_COUNTERS_MAP))?;
    let mut out = BTreeMap::new();
    for item in counters.iter() {
        let (ifindex, per_cpu) = item.map_err(map_error(IFACE_COUNTERS_MAP))?;
        let mut total = IfaceCounters::default();
        per_cpu.iter().for_each(|c| total.accumulate(c));
        out.insert(ifindex, total);
    }
    Ok(out)
}

/// Reads the counters of route ids `0..count`, summed over CPUs.
pub fn route_counters(ebpf: &Ebpf, count: usize) -> Result<Vec<RouteCounters>, EbpfError> {
    let counters: PerCpuArray<&MapData, RouteCounters> =
        PerCpuArray::try_from(map(ebpf, ROUTE_COUNTERS_MAP)?)
            .map_err(map_error(ROUTE_COUNTERS_MAP))?;
    counters
        .iter()
        .take(count)
        .map(|per_cpu| {
            let per_cpu = per_cpu.map_err(map_error(ROUTE_COUNTERS_MAP))?;
            let mut total = RouteCounters::default();
            per_cpu.iter().for_each(|c| total.accumulate(c));
            Ok(total)
        })
        .collect()
}
