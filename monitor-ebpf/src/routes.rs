//! Route attribution: the route, and the monitored interface owning the source, of
//! a packet leaving by an interface.
//!
//! Userspace loads, per family, an LPM trie whose keys are
//! `(egress ifindex, route destination prefix)` with prefix length
//! `32 + route prefix length`. An egress packet is attributed to the longest match
//! for `(its egress ifindex, its destination address)`: the most specific route for
//! that destination that leaves by this interface, or else the default route via this
//! interface — the "default-route choice" the kernel made when it picked this device.
//! Source-based policy routing: when the packet's source matches the prefix of an
//! `ip rule from <prefix> lookup <table>` (longest prefix wins), the lookup is done
//! first in that table's slot of the trie, then in the main table's.
//!
//! Limits: the program sees the device, not the FIB lookup, so it cannot tell which
//! of two routes of the same prefix on the same device and table slot was used
//! (userspace keeps the lowest metric), rules with other selectors (fwmark, iif, to)
//! are not modelled, and traffic to prefixes no route of the interface covers is
//! counted as unattributed.
use aya_ebpf::maps::{HashMap, LpmTrie, lpm_trie::Key};
use monitor_common::{MAIN_TABLE_SLOT, NO_ROUTE, ROUTE_KEY_PREFIX_BITS, RouteId};

/// What egress looked up for a flow leaving by one interface.
#[derive(Clone, Copy)]
pub(crate) struct Resolved {
    /// Its route, or [`NO_ROUTE`].
    pub(crate) route_id: RouteId,
    /// The monitored interface owning its source, 0 when none or not looked up.
    pub(crate) source_owner: u32,
}

/// The maps of one address family that egress consults; `None` where the
/// [`DataPathConfig`](monitor_common::DataPathConfig) says the lookup cannot find anything that matters.
pub(crate) struct Tables<A: 'static, K: 'static> {
    pub(crate) owners: Option<&'static HashMap<A, u32>>,
    pub(crate) rules: Option<&'static LpmTrie<A, u32>>,
    pub(crate) routes: &'static LpmTrie<K, RouteId>,
    pub(crate) addr_bits: u32,
}

impl<A: Copy, K> Tables<A, K> {
    /// The source's owner, and the route: looked up in the table slot the source
    /// selects, then in the main table's.
    #[inline(always)]
    pub(crate) fn resolve(&self, src: &A, key: impl Fn(u32) -> K) -> Resolved {
        let source_owner = self
            .owners
            .and_then(|owners| owners.get_ptr(src))
            // SAFETY: a valid pointer into the hash map's value.
            .map_or(0, |owner| unsafe { *owner });
        let slot = self
            .rules
            .and_then(|rules| rules.get(Key::new(self.addr_bits, *src)))
            .copied();
        let lookup = |table_slot| {
            self.routes
                .get(Key::new(
                    ROUTE_KEY_PREFIX_BITS + self.addr_bits,
                    key(table_slot),
                ))
                .copied()
        };
        Resolved {
            route_id: slot
                .and_then(lookup)
                .or_else(|| lookup(MAIN_TABLE_SLOT))
                .unwrap_or(NO_ROUTE),
            source_owner,
        }
    }
}
