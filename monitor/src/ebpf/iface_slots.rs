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
    IFACE_COUNTERS_MAP, IFACE_SLOT_BUCKETS, IFACE_SLOTS_MAP, IFACE_SLOTS_OVERFLOW_MAP,
    IfaceCounters, IfaceSlot, ROLE_ADDRESS_LOWER, ROLE_BOND_PORT, ROLE_VLAN_LOWER,
};

use super::EbpfError;
use crate::model::Link;

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

fn buckets(ebpf: &Ebpf) -> Result<Array<&MapData, IfaceSlot>, EbpfError> {
    let map = ebpf
        .map(IFACE_SLOTS_MAP)
        .ok_or_else(|| missing(IFACE_SLOTS_MAP))?;
    Array::try_from(map).map_err(map_error(IFACE_SLOTS_MAP))
}

fn overflow(ebpf: &Ebpf) -> Result<HashMap<&MapData, u32, IfaceSlot>, EbpfError> {
    let map = ebpf
        .map(IFACE_SLOTS_OVERFLOW_MAP)
        .ok_or_else(|| missing(IFACE_SLOTS_OVERFLOW_MAP))?;
    HashMap::try_from(map).map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))
}

fn buckets_mut(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, IfaceSlot>, EbpfError> {
    let map = ebpf
        .map_mut(IFACE_SLOTS_MAP)
        .ok_or_else(|| missing(IFACE_SLOTS_MAP))?;
    Array::try_from(map).map_err(map_error(IFACE_SLOTS_MAP))
}

fn overflow_mut(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, u32, IfaceSlot>, EbpfError> {
    let map = ebpf
        .map_mut(IFACE_SLOTS_OVERFLOW_MAP)
        .ok_or_else(|| missing(IFACE_SLOTS_OVERFLOW_MAP))?;
    HashMap::try_from(map).map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))
}

fn missing(name: &str) -> EbpfError {
    EbpfError::Other(format!("map {name} missing from the eBPF object"))
}

fn bucket_of(ifindex: u32) -> u32 {
    ifindex & (IFACE_SLOT_BUCKETS - 1)
}

/// The slots as the maps hold them, mirrored in userspace: reading them back from
/// the kernel takes a syscall per bucket (4 096), too many for every route change.
#[derive(Clone, Debug, Default)]
pub struct IfaceSlots {
    known: BTreeMap<u32, IfaceSlot>,
}

impl IfaceSlots {
    /// Reads the slots the maps hold (a previous routemon's, in pinned maps).
    pub fn read(ebpf: &Ebpf) -> Result<Self, EbpfError> {
        Ok(Self {
            known: assigned(ebpf)?,
        })
    }

    /// The monitored interfaces.
    pub fn interfaces(&self) -> std::collections::BTreeSet<u32> {
        self.known.keys().copied().collect()
    }

    /// See [`assign`].
    pub fn assign(
        &mut self,
        ebpf: &mut Ebpf,
        ifindexes: impl Iterator<Item = u32>,
    ) -> Result<(), EbpfError> {
        assign(ebpf, &mut self.known, ifindexes)
    }

    /// See [`release`].
    pub fn release(&mut self, ebpf: &mut Ebpf, ifindex: u32) -> Result<(), EbpfError> {
        release(ebpf, ifindex)?;
        self.known.remove(&ifindex);
        Ok(())
    }

    /// See [`set_stacking`].
    pub fn set_stacking(
        &mut self,
        ebpf: &mut Ebpf,
        stacking: &BTreeMap<u32, Stacking>,
    ) -> Result<(), EbpfError> {
        set_stacking(ebpf, &mut self.known, stacking)
    }

    /// See [`counters`].
    pub fn counters(&self, ebpf: &Ebpf) -> Result<BTreeMap<u32, IfaceCounters>, EbpfError> {
        counters(ebpf, &self.known)
    }
}

/// Every monitored interface with its slot, read from the maps.
fn assigned(ebpf: &Ebpf) -> Result<BTreeMap<u32, IfaceSlot>, EbpfError> {
    let mut slots = BTreeMap::new();
    for bucket in buckets(ebpf)?.iter() {
        let bucket = bucket.map_err(map_error(IFACE_SLOTS_MAP))?;
        if bucket.ifindex != 0 {
            slots.insert(bucket.ifindex, bucket);
        }
    }
    for entry in overflow(ebpf)?.iter() {
        let (ifindex, slot) = entry.map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))?;
        slots.insert(ifindex, slot);
    }
    Ok(slots)
}

/// Writes an interface's [`IfaceSlot`]: in its bucket when that is free or its
/// own, else in the overflow hash.
fn write(ebpf: &mut Ebpf, entry: IfaceSlot) -> Result<(), EbpfError> {
    let bucket_index = bucket_of(entry.ifindex);
    let bucket = buckets(ebpf)?
        .get(&bucket_index, 0)
        .map_err(map_error(IFACE_SLOTS_MAP))?;
    if bucket.ifindex == 0 || bucket.ifindex == entry.ifindex {
        buckets_mut(ebpf)?
            .set(bucket_index, entry, 0)
            .map_err(map_error(IFACE_SLOTS_MAP))
    } else {
        overflow_mut(ebpf)?
            .insert(entry.ifindex, entry, 0)
            .map_err(map_error(IFACE_SLOTS_OVERFLOW_MAP))
    }
}

/// Sets every monitored interface's stack role and lower device (interfaces not in
/// `stacking` get none).
fn set_stacking(
    ebpf: &mut Ebpf,
    slots: &mut BTreeMap<u32, IfaceSlot>,
    stacking: &BTreeMap<u32, Stacking>,
) -> Result<(), EbpfError> {
    for current in slots.values_mut() {
        let wanted = stacking.get(&current.ifindex).copied().unwrap_or_default();
        if current.role != wanted.role || current.lower != wanted.lower {
            let updated = IfaceSlot {
                role: wanted.role,
                lower: wanted.lower,
                ..*current
            };
            write(ebpf, updated)?;
            *current = updated;
        }
    }
    Ok(())
}

/// A monitored device's place in a stack of monitored devices (see
/// [`IfaceSlot::role`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stacking {
    /// `ROLE_*` bits.
    pub role: u32,
    /// The monitored device it is stacked on, or 0.
    pub lower: u32,
}

/// The stack roles of the monitored `links`: a bond or team port whose master is
/// monitored, the lower device of a monitored VLAN, macvlan or ipvlan (and the
/// upper's `lower`). Devices stacked on unmonitored ones have no role: each of their
/// packets is counted once, on them.
pub fn stacking(links: &[&Link]) -> BTreeMap<u32, Stacking> {
    let by_index: BTreeMap<u32, &Link> = links.iter().map(|l| (l.index, *l)).collect();
    let mut out: BTreeMap<u32, Stacking> = BTreeMap::new();
    for link in links {
        let controller_kind = link
            .controller
            .and_then(|c| by_index.get(&c))
            .and_then(|c| c.kind.as_deref());
        if matches!(controller_kind, Some("bond" | "team")) {
            out.entry(link.index).or_default().role |= ROLE_BOND_PORT;
        }
        let Some(lower) = link.lower.filter(|lower| by_index.contains_key(lower)) else {
            continue;
        };
        out.entry(link.index).or_default().lower = lower;
        out.entry(lower).or_default().role |= if link.kind.as_deref() == Some("vlan") {
            ROLE_VLAN_LOWER
        } else {
            ROLE_ADDRESS_LOWER
        };
    }
    out
}

/// Gives each interface a slot with zeroed counters; an interface that has one
/// (from a previous routemon, in pinned maps) keeps it and its counts.
fn assign(
    ebpf: &mut Ebpf,
    slots: &mut BTreeMap<u32, IfaceSlot>,
    ifindexes: impl Iterator<Item = u32>,
) -> Result<(), EbpfError> {
    let capacity = {
        let map = ebpf
            .map(IFACE_COUNTERS_MAP)
            .ok_or_else(|| missing(IFACE_COUNTERS_MAP))?;
        PerCpuArray::<&MapData, IfaceCounters>::try_from(map)
            .map_err(map_error(IFACE_COUNTERS_MAP))?
            .len()
    };
    for ifindex in ifindexes {
        if slots.contains_key(&ifindex) {
            continue;
        }
        let used: std::collections::BTreeSet<u32> = slots.values().map(|s| s.slot).collect();
        let slot = (0..capacity)
            .find(|slot| !used.contains(slot))
            .ok_or_else(|| {
                EbpfError::Other(format!(
                    "cannot monitor interface {ifindex}: this routemon counts at most \
                     {capacity} interfaces at once; narrow --interface"
                ))
            })?;
        zero_counters(ebpf, slot)?;
        // The counters are zero before the data path can find the slot.
        let entry = IfaceSlot {
            ifindex,
            slot,
            ..IfaceSlot::default()
        };
        write(ebpf, entry)?;
        slots.insert(ifindex, entry);
    }
    Ok(())
}

/// Frees an interface's slot (its counters are zeroed when the slot is given again).
fn release(ebpf: &mut Ebpf, ifindex: u32) -> Result<(), EbpfError> {
    let bucket_index = bucket_of(ifindex);
    let bucket = buckets(ebpf)?
        .get(&bucket_index, 0)
        .map_err(map_error(IFACE_SLOTS_MAP))?;
    if bucket.ifindex == ifindex {
        return buckets_mut(ebpf)?
            .set(bucket_index, IfaceSlot::default(), 0)
            .map_err(map_error(IFACE_SLOTS_MAP));
    }
    match overflow_mut(ebpf)?.remove(&ifindex) {
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
fn counters(
    ebpf: &Ebpf,
    slots: &BTreeMap<u32, IfaceSlot>,
) -> Result<BTreeMap<u32, IfaceCounters>, EbpfError> {
    let map = ebpf
        .map(IFACE_COUNTERS_MAP)
        .ok_or_else(|| missing(IFACE_COUNTERS_MAP))?;
    let array: PerCpuArray<&MapData, IfaceCounters> =
        PerCpuArray::try_from(map).map_err(map_error(IFACE_COUNTERS_MAP))?;
    let mut out = BTreeMap::new();
    for (ifindex, slot) in slots {
        let per_cpu = array
            .get(&slot.slot, 0)
            .map_err(map_error(IFACE_COUNTERS_MAP))?;
        let mut total = IfaceCounters::default();
        per_cpu.iter().for_each(|c| total.accumulate(c));
        out.insert(*ifindex, total);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::model_with_links;

    /// ifindex: 1 ens5, 2 ens5mv (macvlan on ens5), 3 bond0, 4 ens6 (port of
    /// bond0), 5 ens5.7 (VLAN on ens5), 6 ens7 (nothing stacked).
    fn stacked_links() -> Vec<Link> {
        let mut model = model_with_links(&["ens5", "ens5mv", "bond0", "ens6", "ens5.7", "ens7"]);
        let mut set = |index: u32, kind: Option<&str>, lower: Option<u32>, controller| {
            let link = model.links.get_mut(&index).unwrap();
            link.kind = kind.map(str::to_owned);
            link.lower = lower;
            link.controller = controller;
        };
        set(2, Some("macvlan"), Some(1), None);
        set(3, Some("bond"), None, None);
        set(4, None, None, Some(3));
        set(5, Some("vlan"), Some(1), None);
        model.links.into_values().collect()
    }

    #[test]
    fn roles_follow_the_monitored_stacks() {
        let links = stacked_links();
        let all: Vec<&Link> = links.iter().collect();
        let roles = stacking(&all);
        assert_eq!(
            roles.get(&1),
            Some(&Stacking {
                role: ROLE_ADDRESS_LOWER | ROLE_VLAN_LOWER,
                lower: 0
            })
        );
        assert_eq!(roles[&2], Stacking { role: 0, lower: 1 });
        assert_eq!(roles[&5], Stacking { role: 0, lower: 1 });
        assert_eq!(
            roles[&4],
            Stacking {
                role: ROLE_BOND_PORT,
                lower: 0
            }
        );
        assert!(!roles.contains_key(&3) && !roles.contains_key(&6));
    }

    #[test]
    fn a_device_stacked_on_an_unmonitored_one_has_no_role() {
        let links = stacked_links();
        // Neither ens5 nor bond0 monitored: the macvlan, the VLAN and the port count
        // every packet as their own.
        let monitored: Vec<&Link> = links.iter().filter(|l| !matches!(l.index, 1 | 3)).collect();
        assert!(stacking(&monitored).is_empty());
    }
}
