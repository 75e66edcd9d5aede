//! Which slot of the per-CPU interface counter array each monitored interface
//! counts in.
//!
//! The data path finds an interface's slot in `IFACE_SLOTS` at
//! `ifindex % IFACE_SLOT_BUCKETS` (an array read the kernel inlines), or, when
//! another monitored ifindex holds that bucket, in the `IFACE_SLOTS_OVERFLOW` hash.
//! Both maps are pinned with the counters, so a restarted daemon finds the slots
//! the previous one gave and its counts continue.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use monitor_common::{
    DEFAULT_MAX_INTERFACES, IFACE_COUNTERS_MAP, IFACE_SLOT_BUCKETS, IFACE_SLOTS_MAP,
    IFACE_SLOTS_OVERFLOW_MAP, IfaceCounters, IfaceSlot,
};

use super::EbpfError;

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

fn buckets(ebpf: &Ebpf) -> Result<Array<&MapData, IfaceSlot>, EbpfError> {
    let map = ebpf
        .map(IFACE_SLOTS_MAP)
        .ok_or_else(|| missing(IFACE_SLOTS_MAP))?;
    Array::try_from(map).map_err(map_error(IFACE_SLOTS_MAP))
}

fn overflow(ebpf: &Ebpf) -> Result<HashMap<&MapData, u32, u32>, EbpfError> {
    let map = ebpf
        .map(IFACE_SLOTS_OVERFLOW_MAP)
        .ok_or_else(|| missing(IFACE_SLOTS_OVERFLOW_MAP))?;
    HashMap::try_from(map).map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))
}

fn missing(name: &str) -> EbpfError {
    EbpfError::Other(format!("map {name} missing from the eBPF object"))
}

fn bucket_of(ifindex: u32) -> u32 {
    ifindex & (IFACE_SLOT_BUCKETS - 1)
}

/// Every monitored interface with its slot.
pub fn assigned(ebpf: &Ebpf) -> Result<BTreeMap<u32, u32>, EbpfError> {
    let mut slots = BTreeMap::new();
    for bucket in buckets(ebpf)?.iter() {
        let bucket = bucket.map_err(map_error(IFACE_SLOTS_MAP))?;
        if bucket.ifindex != 0 {
            slots.insert(bucket.ifindex, bucket.slot);
        }
    }
    for entry in overflow(ebpf)?.iter() {
        let (ifindex, slot) = entry.map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))?;
        slots.insert(ifindex, slot);
    }
    Ok(slots)
}

/// Gives each interface a slot with zeroed counters; an interface that has one
/// (from a previous routemon, in pinned maps) keeps it and its counts.
pub fn assign(ebpf: &mut Ebpf, ifindexes: impl Iterator<Item = u32>) -> Result<(), EbpfError> {
    let mut slots = assigned(ebpf)?;
    for ifindex in ifindexes {
        if slots.contains_key(&ifindex) {
            continue;
        }
        let used: std::collections::BTreeSet<u32> = slots.values().copied().collect();
        let slot = (0..DEFAULT_MAX_INTERFACES)
            .find(|slot| !used.contains(slot))
            .ok_or_else(|| {
                EbpfError::Other(format!(
                    "cannot monitor interface {ifindex}: routemon counts at most \
                     {DEFAULT_MAX_INTERFACES} interfaces at once; narrow --interface"
                ))
            })?;
        zero_counters(ebpf, slot)?;
        // The counters are zero before the data path can find the slot.
        let bucket_index = bucket_of(ifindex);
        let bucket = buckets(ebpf)?
            .get(&bucket_index, 0)
            .map_err(map_error(IFACE_SLOTS_MAP))?;
        if bucket.ifindex == 0 {
            let map = ebpf
                .map_mut(IFACE_SLOTS_MAP)
                .ok_or_else(|| missing(IFACE_SLOTS_MAP))?;
            let mut array: Array<&mut MapData, IfaceSlot> =
                Array::try_from(map).map_err(map_error(IFACE_SLOTS_MAP))?;
            array
                .set(bucket_index, IfaceSlot { ifindex, slot }, 0)
                .map_err(map_error(IFACE_SLOTS_MAP))?;
        } else {
            let map = ebpf
                .map_mut(IFACE_SLOTS_OVERFLOW_MAP)
                .ok_or_else(|| missing(IFACE_SLOTS_OVERFLOW_MAP))?;
            let mut hash: HashMap<&mut MapData, u32, u32> =
                HashMap::try_from(map).map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))?;
            hash.insert(ifindex, slot, 0)
                .map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))?;
        }
        slots.insert(ifindex, slot);
    }
    Ok(())
}

/// Frees an interface's slot (its counters are zeroed when the slot is given again).
pub fn release(ebpf: &mut Ebpf, ifindex: u32) -> Result<(), EbpfError> {
    let bucket_index = bucket_of(ifindex);
    let bucket = buckets(ebpf)?
        .get(&bucket_index, 0)
        .map_err(map_error(IFACE_SLOTS_MAP))?;
    if bucket.ifindex == ifindex {
        let map = ebpf
            .map_mut(IFACE_SLOTS_MAP)
            .ok_or_else(|| missing(IFACE_SLOTS_MAP))?;
        let mut array: Array<&mut MapData, IfaceSlot> =
            Array::try_from(map).map_err(map_error(IFACE_SLOTS_MAP))?;
        array
            .set(bucket_index, IfaceSlot::default(), 0)
            .map_err(map_error(IFACE_SLOTS_MAP))?;
        return Ok(());
    }
    let map = ebpf
        .map_mut(IFACE_SLOTS_OVERFLOW_MAP)
        .ok_or_else(|| missing(IFACE_SLOTS_OVERFLOW_MAP))?;
    let mut hash: HashMap<&mut MapData, u32, u32> =
        HashMap::try_from(map).map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))?;
    match hash.remove(&ifindex) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(err))
            if err.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(err) => Err(map_error(IFACE_SLOTS_OVERFLOW_MAP)(err)),
    }
}

fn zero_counters(ebpf: &mut Ebpf, slot: u32) -> Result<(), EbpfError> {
    let cpus = nr_cpus()
        .map_err(|(path, err)| EbpfError::Other(format!("cannot count CPUs from {path}: {err}")))?;
    let zeroed = PerCpuValues::try_from(vec![IfaceCounters::default(); cpus])
        .map_err(|err| EbpfError::Other(format!("per-CPU values: {err}")))?;
    let map = ebpf
        .map_mut(IFACE_COUNTERS_MAP)
        .ok_or_else(|| missing(IFACE_COUNTERS_MAP))?;
    let mut counters: PerCpuArray<&mut MapData, IfaceCounters> =
        PerCpuArray::try_from(map).map_err(map_error(IFACE_COUNTERS_MAP))?;
    counters
        .set(slot, zeroed, 0)
        .map_err(map_error(IFACE_COUNTERS_MAP))
}

/// Every monitored interface's counters, summed over CPUs.
pub fn counters(ebpf: &Ebpf) -> Result<BTreeMap<u32, IfaceCounters>, EbpfError> {
    let map = ebpf
        .map(IFACE_COUNTERS_MAP)
        .ok_or_else(|| missing(IFACE_COUNTERS_MAP))?;
    let array: PerCpuArray<&MapData, IfaceCounters> =
        PerCpuArray::try_from(map).map_err(map_error(IFACE_COUNTERS_MAP))?;
    let mut out = BTreeMap::new();
    for (ifindex, slot) in assigned(ebpf)? {
        let per_cpu = array.get(&slot, 0).map_err(map_error(IFACE_COUNTERS_MAP))?;
        let mut total = IfaceCounters::default();
        per_cpu.iter().for_each(|c| total.accumulate(c));
        out.insert(ifindex, total);
    }
    Ok(out)
}
