//! Typed access to the eBPF maps.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, lpm_trie::Key},
    util::nr_cpus,
};
use ipnet::IpNet;
use monitor_common::{
    IFACE_COUNTERS_MAP, IfaceCounters, MAX_SOURCE_RULES, PacketCounters, ROUTE_COUNTERS_MAP,
    ROUTE_KEY_PREFIX_BITS, ROUTES_V4_MAP, ROUTES_V6_MAP, RouteKeyV4, RouteKeyV6, SAMPLER_MAP,
    SOURCE_OWNERS_V4_MAP, SOURCE_OWNERS_V6_MAP, SOURCE_RULES_V4_MAP, SOURCE_RULES_V6_MAP,
    SamplerState,
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

fn fill_trie<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    entries: impl Iterator<Item = (u32, K, u32)>,
) -> Result<(), EbpfError> {
    let mut trie: LpmTrie<&mut MapData, K, u32> =
        LpmTrie::try_from(map_mut(ebpf, name)?).map_err(map_error(name))?;
    for (prefix_len, key, route_id) in entries {
        trie.insert(&Key::new(prefix_len, key), route_id, 0)
            .map_err(map_error(name))?;
    }
    Ok(())
}

/// Writes the plan's entries into the per-family LPM tries.
pub fn load_routes(ebpf: &mut Ebpf, plan: &AttributionPlan) -> Result<(), EbpfError> {
    let bits = |prefix_len: u8| ROUTE_KEY_PREFIX_BITS + u32::from(prefix_len);
    let v4 = plan.entries.iter().filter_map(|e| match e.prefix {
        IpNet::V4(net) => {
            let key = RouteKeyV4 {
                ifindex: e.ifindex,
                table_slot: e.table_slot,
                addr: net.network().octets(),
            };
            Some((bits(net.prefix_len()), key, e.route_id))
        }
        IpNet::V6(_) => None,
    });
    fill_trie(ebpf, ROUTES_V4_MAP, v4)?;
    let v6 = plan.entries.iter().filter_map(|e| match e.prefix {
        IpNet::V6(net) => {
            let key = RouteKeyV6 {
                ifindex: e.ifindex,
                table_slot: e.table_slot,
                addr: net.network().octets(),
            };
            Some((bits(net.prefix_len()), key, e.route_id))
        }
        IpNet::V4(_) => None,
    });
    fill_trie(ebpf, ROUTES_V6_MAP, v6)?;

    let rules = plan.source_rules.iter().take(MAX_SOURCE_RULES as usize);
    if plan.source_rules.len() > MAX_SOURCE_RULES as usize {
        tracing::warn!(
            "{} source rules; only the first {MAX_SOURCE_RULES} are used for route attribution",
            plan.source_rules.len()
        );
    }
    let v4 = rules.clone().filter_map(|r| match r.prefix {
        IpNet::V4(net) => Some((
            u32::from(net.prefix_len()),
            net.network().octets(),
            r.table_slot,
        )),
        IpNet::V6(_) => None,
    });
    fill_trie(ebpf, SOURCE_RULES_V4_MAP, v4)?;
    let v6 = rules.filter_map(|r| match r.prefix {
        IpNet::V6(net) => Some((
            u32::from(net.prefix_len()),
            net.network().octets(),
            r.table_slot,
        )),
        IpNet::V4(_) => None,
    });
    fill_trie(ebpf, SOURCE_RULES_V6_MAP, v6)
}

/// Records which interface owns each address, for the cross-ENI check.
pub fn register_source_owners(
    ebpf: &mut Ebpf,
    owners: &[(std::net::IpAddr, u32)],
) -> Result<(), EbpfError> {
    owners
        .iter()
        .try_for_each(|(addr, ifindex)| set_source_owner(ebpf, *addr, Some(*ifindex)))
}

/// Records (`Some(ifindex)`) or forgets (`None`) the owner of one address.
pub fn set_source_owner(
    ebpf: &mut Ebpf,
    addr: std::net::IpAddr,
    owner: Option<u32>,
) -> Result<(), EbpfError> {
    use std::net::IpAddr;
    fn apply<K: aya::Pod>(
        ebpf: &mut Ebpf,
        name: &'static str,
        key: K,
        owner: Option<u32>,
    ) -> Result<(), EbpfError> {
        let mut map: HashMap<&mut MapData, K, u32> =
            HashMap::try_from(map_mut(ebpf, name)?).map_err(map_error(name))?;
        match owner {
            Some(ifindex) => map.insert(key, ifindex, 0).map_err(map_error(name)),
            // Removing an address routemon never recorded is not an error.
            None => match map.remove(&key) {
                Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
                Err(err) => Err(map_error(name)(err)),
            },
        }
    }
    match addr {
        IpAddr::V4(v4) => apply(ebpf, SOURCE_OWNERS_V4_MAP, v4.octets(), owner),
        IpAddr::V6(v6) => apply(ebpf, SOURCE_OWNERS_V6_MAP, v6.octets(), owner),
    }
}

/// Reads a per-CPU hash of packet counters (plain or LRU), summed over CPUs.
pub fn summed_counters<K: aya::Pod + Ord>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<BTreeMap<K, PacketCounters>, EbpfError> {
    let counters: PerCpuHashMap<&MapData, K, PacketCounters> =
        PerCpuHashMap::try_from(map(ebpf, name)?).map_err(map_error(name))?;
    let mut out = BTreeMap::new();
    for item in counters.iter() {
        let (key, per_cpu) = item.map_err(map_error(name))?;
        let mut total = PacketCounters::default();
        per_cpu.iter().for_each(|c| total.accumulate(c));
        out.insert(key, total);
    }
    Ok(out)
}

/// Reads the sampler's per-CPU counts, summed.
pub fn sampler_totals(ebpf: &Ebpf) -> Result<SamplerState, EbpfError> {
    let state: PerCpuArray<&MapData, SamplerState> =
        PerCpuArray::try_from(map(ebpf, SAMPLER_MAP)?).map_err(map_error(SAMPLER_MAP))?;
    let per_cpu = state.get(&0, 0).map_err(map_error(SAMPLER_MAP))?;
    let mut total = SamplerState::default();
    per_cpu.iter().for_each(|s| total.accumulate(s));
    Ok(total)
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
pub fn route_counters(ebpf: &Ebpf, count: usize) -> Result<Vec<PacketCounters>, EbpfError> {
    let counters: PerCpuArray<&MapData, PacketCounters> =
        PerCpuArray::try_from(map(ebpf, ROUTE_COUNTERS_MAP)?)
            .map_err(map_error(ROUTE_COUNTERS_MAP))?;
    counters
        .iter()
        .take(count)
        .map(|per_cpu| {
            let per_cpu = per_cpu.map_err(map_error(ROUTE_COUNTERS_MAP))?;
            let mut total = PacketCounters::default();
            per_cpu.iter().for_each(|c| total.accumulate(c));
            Ok(total)
        })
        .collect()
}
