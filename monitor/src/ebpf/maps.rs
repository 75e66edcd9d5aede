//! Typed access to the eBPF maps.

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, lpm_trie::Key,
    },
    util::nr_cpus,
};
use ipnet::IpNet;
use monitor_common::{
    CONFIG_MAP, CROSS_ENI_POSSIBLE, DROPS_MAP, DataPathConfig, DropKey, FLOWS_INBOUND_MAP,
    FLOWS_INBOUND_V6_MAP, FLOWS_MAP, FLOWS_V6_MAP, FlowEntry, FlowKey, FlowKeyV4, FlowState,
    HAS_SOURCE_RULES_V4, HAS_SOURCE_RULES_V6, MAX_DROP_KEYS, MAX_INBOUND_TUPLES, MAX_SOURCE_RULES,
    MAX_TRACKED_FLOWS, PacketCounters, ROUTE_COUNTERS_MAP, ROUTE_KEY_PREFIX_BITS, ROUTES_V4_MAP,
    ROUTES_V6_MAP, RouteKeyV4, RouteKeyV6, SAMPLER_MAP, SOURCE_OWNERS_V4_MAP, SOURCE_OWNERS_V6_MAP,
    SOURCE_RULES_V4_MAP, SOURCE_RULES_V6_MAP, SamplerState, TABLE_STATS_MAP, TableStats,
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

/// Rewrites the [`DataPathConfig`] from what the maps hold now: which source-rule
/// tries have entries, and whether a packet can leave by another interface than
/// its source address's owner. Called after every change of the interfaces, the
/// owners or the rules (and at load, for maps a previous routemon pinned), so the
/// data path never skips a lookup that could find something.
pub fn refresh_config(
    ebpf: &mut Ebpf,
    interfaces: &BTreeSet<u32>,
) -> Result<DataPathConfig, EbpfError> {
    fn has_entries<K: aya::Pod>(ebpf: &Ebpf, name: &'static str) -> Result<bool, EbpfError> {
        let trie: LpmTrie<&MapData, K, u32> =
            LpmTrie::try_from(map(ebpf, name)?).map_err(map_error(name))?;
        Ok(trie.keys().next().is_some())
    }
    let mut flags = 0;
    if has_entries::<[u8; 4]>(ebpf, SOURCE_RULES_V4_MAP)? {
        flags |= HAS_SOURCE_RULES_V4;
    }
    if has_entries::<[u8; 16]>(ebpf, SOURCE_RULES_V6_MAP)? {
        flags |= HAS_SOURCE_RULES_V6;
    }
    let owners: BTreeSet<u32> = source_owners(ebpf)?.into_iter().map(|(_, o)| o).collect();
    if !owners.is_empty() && owners.union(interfaces).nth(1).is_some() {
        flags |= CROSS_ENI_POSSIBLE;
    }
    let generation = config(ebpf)?.generation;
    let mut array: Array<&mut MapData, DataPathConfig> =
        Array::try_from(map_mut(ebpf, CONFIG_MAP)?).map_err(map_error(CONFIG_MAP))?;
    // Two new generations, one after the other: a packet that read the first one
    // torn (the kernel copies the value without atomicity guarantees) cached a
    // generation that is not current once the second write is done.
    let mut written = DataPathConfig { flags, generation };
    for _ in 0..2 {
        written.generation = next_generation(written.generation);
        array.set(0, written, 0).map_err(map_error(CONFIG_MAP))?;
    }
    Ok(written)
}

/// The generation after `generation`; never 0, which marks a flow entry whose route
/// was never looked up.
fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1).max(1)
}

/// The [`DataPathConfig`] the data path reads now.
pub fn config(ebpf: &Ebpf) -> Result<DataPathConfig, EbpfError> {
    let array: Array<&MapData, DataPathConfig> =
        Array::try_from(map(ebpf, CONFIG_MAP)?).map_err(map_error(CONFIG_MAP))?;
    array.get(&0, 0).map_err(map_error(CONFIG_MAP))
}

fn zeroed<T: aya::Pod + Default>(nr_cpus: usize) -> Result<PerCpuValues<T>, EbpfError> {
    PerCpuValues::try_from(vec![T::default(); nr_cpus])
        .map_err(|err| EbpfError::Other(format!("per-CPU values: {err}")))
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(err))
            if err.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// One key of the route tries: traffic to `prefix` leaving by `ifindex`, looked up
/// in `table_slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrieKey {
    /// Egress interface.
    pub ifindex: u32,
    /// Table slot.
    pub table_slot: u32,
    /// Destination prefix (network address).
    pub prefix: IpNet,
}

impl From<&crate::attribution::TrieEntry> for TrieKey {
    fn from(entry: &crate::attribution::TrieEntry) -> Self {
        Self {
            ifindex: entry.ifindex,
            table_slot: entry.table_slot,
            prefix: entry.prefix,
        }
    }
}

fn trie<'a, K: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<LpmTrie<&'a mut MapData, K, u32>, EbpfError> {
    LpmTrie::try_from(map_mut(ebpf, name)?).map_err(map_error(name))
}

/// Writes (`Some(id)`) or removes (`None`) route trie entries.
pub fn update_route_entries(
    ebpf: &mut Ebpf,
    changes: &[(TrieKey, Option<u32>)],
) -> Result<(), EbpfError> {
    fn apply<K: aya::Pod>(
        ebpf: &mut Ebpf,
        name: &'static str,
        lpm: &Key<K>,
        id: Option<u32>,
    ) -> Result<(), EbpfError> {
        let mut map = trie::<K>(ebpf, name)?;
        match id {
            Some(id) => map.insert(lpm, id, 0),
            None => ignore_missing(map.remove(lpm)),
        }
        .map_err(map_error(name))
    }
    let bits = |prefix_len: u8| ROUTE_KEY_PREFIX_BITS + u32::from(prefix_len);
    for (key, id) in changes {
        match key.prefix {
            IpNet::V4(net) => {
                let data = RouteKeyV4 {
                    ifindex: key.ifindex,
                    table_slot: key.table_slot,
                    addr: net.network().octets(),
                };
                apply(
                    ebpf,
                    ROUTES_V4_MAP,
                    &Key::new(bits(net.prefix_len()), data),
                    *id,
                )?;
            }
            IpNet::V6(net) => {
                let data = RouteKeyV6 {
                    ifindex: key.ifindex,
                    table_slot: key.table_slot,
                    addr: net.network().octets(),
                };
                apply(
                    ebpf,
                    ROUTES_V6_MAP,
                    &Key::new(bits(net.prefix_len()), data),
                    *id,
                )?;
            }
        }
    }
    Ok(())
}

/// Reads every route trie entry.
pub fn route_entries(ebpf: &Ebpf) -> Result<Vec<(TrieKey, u32)>, EbpfError> {
    let mut out = Vec::new();
    let prefix = |bits: u32| u8::try_from(bits.saturating_sub(ROUTE_KEY_PREFIX_BITS)).ok();
    let v4: LpmTrie<&MapData, RouteKeyV4, u32> =
        LpmTrie::try_from(map(ebpf, ROUTES_V4_MAP)?).map_err(map_error(ROUTES_V4_MAP))?;
    for item in v4.iter() {
        let (key, id) = item.map_err(map_error(ROUTES_V4_MAP))?;
        let data = key.data();
        let net = prefix(key.prefix_len())
            .and_then(|len| ipnet::Ipv4Net::new(data.addr.into(), len).ok());
        if let Some(net) = net {
            out.push((
                TrieKey {
                    ifindex: data.ifindex,
                    table_slot: data.table_slot,
                    prefix: IpNet::V4(net),
                },
                id,
            ));
        }
    }
    let v6: LpmTrie<&MapData, RouteKeyV6, u32> =
        LpmTrie::try_from(map(ebpf, ROUTES_V6_MAP)?).map_err(map_error(ROUTES_V6_MAP))?;
    for item in v6.iter() {
        let (key, id) = item.map_err(map_error(ROUTES_V6_MAP))?;
        let data = key.data();
        let net = prefix(key.prefix_len())
            .and_then(|len| ipnet::Ipv6Net::new(data.addr.into(), len).ok());
        if let Some(net) = net {
            out.push((
                TrieKey {
                    ifindex: data.ifindex,
                    table_slot: data.table_slot,
                    prefix: IpNet::V6(net),
                },
                id,
            ));
        }
    }
    Ok(out)
}

/// Zeroes one route id's counters.
pub fn reset_route_counter(ebpf: &mut Ebpf, id: u32) -> Result<(), EbpfError> {
    let nr_cpus = cpus()?;
    let mut counters: PerCpuArray<&mut MapData, PacketCounters> =
        PerCpuArray::try_from(map_mut(ebpf, ROUTE_COUNTERS_MAP)?)
            .map_err(map_error(ROUTE_COUNTERS_MAP))?;
    counters
        .set(id, zeroed(nr_cpus)?, 0)
        .map_err(map_error(ROUTE_COUNTERS_MAP))
}

/// Replaces the source-rule tries' content with `rules`.
pub fn replace_source_rules(
    ebpf: &mut Ebpf,
    rules: &[crate::attribution::SourceRule],
) -> Result<(), EbpfError> {
    fn clear<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), EbpfError> {
        let mut map = trie::<K>(ebpf, name)?;
        let keys: Vec<Key<K>> = map.keys().filter_map(Result::ok).collect();
        for key in keys {
            ignore_missing(map.remove(&key)).map_err(map_error(name))?;
        }
        Ok(())
    }
    clear::<[u8; 4]>(ebpf, SOURCE_RULES_V4_MAP)?;
    clear::<[u8; 16]>(ebpf, SOURCE_RULES_V6_MAP)?;
    fill_source_rules(ebpf, rules)
}

/// Every address → owner entry.
pub fn source_owners(ebpf: &Ebpf) -> Result<Vec<(std::net::IpAddr, u32)>, EbpfError> {
    let mut out = Vec::new();
    let v4: HashMap<&MapData, [u8; 4], u32> = HashMap::try_from(map(ebpf, SOURCE_OWNERS_V4_MAP)?)
        .map_err(map_error(SOURCE_OWNERS_V4_MAP))?;
    for item in v4.iter() {
        let (addr, owner) = item.map_err(map_error(SOURCE_OWNERS_V4_MAP))?;
        out.push((std::net::IpAddr::from(addr), owner));
    }
    let v6: HashMap<&MapData, [u8; 16], u32> = HashMap::try_from(map(ebpf, SOURCE_OWNERS_V6_MAP)?)
        .map_err(map_error(SOURCE_OWNERS_V6_MAP))?;
    for item in v6.iter() {
        let (addr, owner) = item.map_err(map_error(SOURCE_OWNERS_V6_MAP))?;
        out.push((std::net::IpAddr::from(addr), owner));
    }
    Ok(out)
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
    let entries: Vec<(TrieKey, Option<u32>)> = plan
        .entries
        .iter()
        .map(|e| (TrieKey::from(e), Some(e.route_id)))
        .collect();
    update_route_entries(ebpf, &entries)?;
    fill_source_rules(ebpf, &plan.source_rules)
}

/// Writes source rules into the per-family source tries.
fn fill_source_rules(
    ebpf: &mut Ebpf,
    rules_in: &[crate::attribution::SourceRule],
) -> Result<(), EbpfError> {
    let rules = rules_in.iter().take(MAX_SOURCE_RULES as usize);
    if rules_in.len() > MAX_SOURCE_RULES as usize {
        tracing::warn!(
            "{} source rules; only the first {MAX_SOURCE_RULES} are used for route attribution",
            rules_in.len()
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

/// Reads the first entry of the per-CPU array `name`, summed over CPUs with `add`.
fn summed_first<T: aya::Pod + Default>(
    ebpf: &Ebpf,
    name: &'static str,
    add: fn(&mut T, &T),
) -> Result<T, EbpfError> {
    let array: PerCpuArray<&MapData, T> =
        PerCpuArray::try_from(map(ebpf, name)?).map_err(map_error(name))?;
    let per_cpu = array.get(&0, 0).map_err(map_error(name))?;
    let mut total = T::default();
    per_cpu.iter().for_each(|v| add(&mut total, v));
    Ok(total)
}

/// Reads the drop counters, summed over CPUs.
pub fn drop_counters(ebpf: &Ebpf) -> Result<BTreeMap<DropKey, u64>, EbpfError> {
    let counters: PerCpuHashMap<&MapData, DropKey, u64> =
        PerCpuHashMap::try_from(map(ebpf, DROPS_MAP)?).map_err(map_error(DROPS_MAP))?;
    let mut out = BTreeMap::new();
    for item in counters.iter().take(MAX_DROP_KEYS as usize) {
        let (key, per_cpu) = item.map_err(map_error(DROPS_MAP))?;
        out.insert(key, per_cpu.iter().sum());
    }
    Ok(out)
}

/// Reads every flow of the flow tables and of the unanswered-tuple tables (at most
/// each table's capacity: see [`key_count`]), IPv4 keys in the family-independent
/// form. What arrived of an answered flow after its entry took over its tuple's
/// counts is added to it; an unanswered tuple is a flow of its own.
pub fn flows(ebpf: &Ebpf) -> Result<Vec<(FlowKey, FlowState)>, EbpfError> {
    fn read<K: aya::Pod>(
        ebpf: &Ebpf,
        name: &'static str,
        capacity: u32,
        key: fn(K) -> FlowKey,
    ) -> Result<Vec<(FlowKey, FlowState)>, EbpfError> {
        let table: HashMap<&MapData, K, FlowEntry> =
            HashMap::try_from(map(ebpf, name)?).map_err(map_error(name))?;
        // An entry evicted while a table is read is skipped, not an error.
        Ok(table
            .iter()
            .take(capacity as usize)
            .filter_map(Result::ok)
            .map(|(k, entry)| (key(k), entry.state()))
            .collect())
    }
    let v4_key = |k: FlowKeyV4| k.flow_key();
    let v6_key = |k: FlowKey| k;
    let mut flows: std::collections::HashMap<FlowKey, FlowState> =
        read(ebpf, FLOWS_MAP, MAX_TRACKED_FLOWS, v4_key)?
            .into_iter()
            .chain(read(ebpf, FLOWS_V6_MAP, MAX_TRACKED_FLOWS, v6_key)?)
            .collect();
    let inbound = read(ebpf, FLOWS_INBOUND_MAP, MAX_INBOUND_TUPLES, v4_key)?
        .into_iter()
        .chain(read(
            ebpf,
            FLOWS_INBOUND_V6_MAP,
            MAX_INBOUND_TUPLES,
            v6_key,
        )?);
    for (key, arrived) in inbound {
        if arrived.ingress.packets == 0 {
            // All of it moved into the flow's entry.
            continue;
        }
        let flow = flows.entry(key).or_default();
        flow.ingress.accumulate(&arrived.ingress);
        if flow.arrived_on == 0 {
            flow.arrived_on = arrived.arrived_on;
        }
    }
    Ok(flows.into_iter().collect())
}

/// Reads the sampler's per-CPU counts, summed.
pub fn sampler_totals(ebpf: &Ebpf) -> Result<SamplerState, EbpfError> {
    summed_first(ebpf, SAMPLER_MAP, SamplerState::accumulate)
}

/// Reads the bounded tables' per-CPU statistics, summed.
pub fn table_stats(ebpf: &Ebpf) -> Result<TableStats, EbpfError> {
    summed_first(ebpf, TABLE_STATS_MAP, TableStats::accumulate)
}

/// Counts the keys of the hash map `name` (plain or LRU, per-CPU or not), reading
/// at most `limit`: a table that changes while it is walked can make the kernel
/// restart the walk, so the count is capped at the table's capacity.
pub fn key_count<K: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    name: &'static str,
    per_cpu: bool,
    limit: u32,
) -> Result<u64, EbpfError> {
    let map = map(ebpf, name)?;
    let limit = limit as usize;
    let count = if per_cpu {
        let table: PerCpuHashMap<&MapData, K, V> =
            PerCpuHashMap::try_from(map).map_err(map_error(name))?;
        table.keys().take(limit).filter(Result::is_ok).count()
    } else {
        let table: HashMap<&MapData, K, V> = HashMap::try_from(map).map_err(map_error(name))?;
        table.keys().take(limit).filter(Result::is_ok).count()
    };
    Ok(count as u64)
}

/// Reads the counters of route ids `0..count`, summed over CPUs: in one batch
/// (`BPF_MAP_LOOKUP_BATCH`), or entry by entry where the kernel cannot batch.
pub fn route_counters(ebpf: &Ebpf, count: usize) -> Result<Vec<PacketCounters>, EbpfError> {
    if let aya::maps::Map::PerCpuArray(data) = map(ebpf, ROUTE_COUNTERS_MAP)? {
        match super::batch::per_cpu_array_sums(data, count, PacketCounters::accumulate) {
            Ok(sums) => return Ok(sums),
            Err(err) => tracing::debug!("batch read of the route counters: {err}; one by one"),
        }
    }
    route_counters_one_by_one(ebpf, count)
}

/// [`route_counters`] entry by entry, one `bpf(2)` call each.
pub fn route_counters_one_by_one(
    ebpf: &Ebpf,
    count: usize,
) -> Result<Vec<PacketCounters>, EbpfError> {
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
