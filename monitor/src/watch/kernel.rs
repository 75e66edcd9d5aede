//! What the reconcile steps ([`super::reconcile`]) need of the kernel side, as a
//! narrow interface: attach to and release interfaces, record address owners and
//! stacking, and rewrite the route tries. [`Kernel`] implements it with routemon's
//! loaded programs; unit tests implement it with a recorder, so the reconcile logic
//! is tested on model fixtures without root.

use std::net::IpAddr;

use monitor_common::IfaceCounters;

use crate::{
    attribution::SourceRule,
    ebpf::{AttachMode, EbpfError, Monitor, TrieKey},
    model::{Link, dump::Netlink},
};

/// How an interface was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// `tcx` or `clsact`.
    pub via: String,
    /// Whether a previous routemon's pinned links were taken over.
    pub adopted: bool,
}

/// The kernel-facing operations of `watch`'s reconcile steps.
#[allow(async_fn_in_trait)] // used with concrete types only, never as `dyn`
pub trait DataPath {
    /// Gives `link` a counter slot and attaches the programs to it.
    fn attach(&mut self, link: &Link, mode: AttachMode) -> Result<Attached, EbpfError>;
    /// Detaches the programs from a device that is still there.
    async fn detach(&mut self, ifindex: u32) -> Result<(), EbpfError>;
    /// Frees the interface's counter slot and returns its last counters.
    fn release(&mut self, ifindex: u32) -> Result<IfaceCounters, EbpfError>;
    /// Records which monitored devices are stacked on which.
    fn set_stacking(&mut self, links: &[&Link]) -> Result<(), EbpfError>;
    /// Records (`Some`) or forgets (`None`) the interface that owns an address.
    fn set_source_owner(&mut self, addr: IpAddr, owner: Option<u32>) -> Result<(), EbpfError>;
    /// Writes (`Some(id)`) or removes (`None`) route trie entries.
    fn update_route_entries(&mut self, changes: &[(TrieKey, Option<u32>)])
    -> Result<(), EbpfError>;
    /// Zeroes a route id's counters before it is given to another route.
    fn reset_route_counter(&mut self, id: u32) -> Result<(), EbpfError>;
    /// Replaces the source rules (prefix → table slot).
    fn replace_source_rules(&mut self, rules: &[SourceRule]) -> Result<(), EbpfError>;
}

/// routemon's loaded programs, with the netlink socket detaching needs.
pub struct Kernel<'a> {
    /// The loaded programs and maps.
    pub monitor: &'a mut Monitor,
    /// For detaching qdisc filters.
    pub netlink: &'a Netlink,
}

impl DataPath for Kernel<'_> {
    fn attach(&mut self, link: &Link, mode: AttachMode) -> Result<Attached, EbpfError> {
        self.monitor.register_interface(link.index)?;
        self.monitor.attach(link, mode)?;
        let mine: Vec<_> = self
            .monitor
            .attachments()
            .iter()
            .filter(|a| a.ifindex == link.index)
            .collect();
        Ok(Attached {
            via: mine.first().map_or_else(String::new, |a| a.via.to_string()),
            adopted: !mine.is_empty() && mine.iter().all(|a| a.adopted),
        })
    }

    async fn detach(&mut self, ifindex: u32) -> Result<(), EbpfError> {
        self.monitor.detach_interface(self.netlink, ifindex).await
    }

    fn release(&mut self, ifindex: u32) -> Result<IfaceCounters, EbpfError> {
        self.monitor.release_interface(ifindex)
    }

    fn set_stacking(&mut self, links: &[&Link]) -> Result<(), EbpfError> {
        self.monitor.set_stacking(links)
    }

    fn set_source_owner(&mut self, addr: IpAddr, owner: Option<u32>) -> Result<(), EbpfError> {
        self.monitor.set_source_owner(addr, owner)
    }

    fn update_route_entries(
        &mut self,
        changes: &[(TrieKey, Option<u32>)],
    ) -> Result<(), EbpfError> {
        self.monitor.update_route_entries(changes)
    }

    fn reset_route_counter(&mut self, id: u32) -> Result<(), EbpfError> {
        self.monitor.reset_route_counter(id)
    }

    fn replace_source_rules(&mut self, rules: &[SourceRule]) -> Result<(), EbpfError> {
        self.monitor.replace_source_rules(rules)
    }
}
