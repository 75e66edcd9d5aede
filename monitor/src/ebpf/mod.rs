//! Loading routemon's eBPF object, filling its maps, attaching its TC programs,
//! and reading the counters back.

mod attach;
mod batch;
pub mod btf;
#[cfg(feature = "debug-log")]
mod debug_log;
pub mod drops;
mod iface_slots;
use iface_slots::IfaceSlots;
mod maps;
pub mod orphans;
pub mod pinning;
pub mod reference;
pub mod test_run;
pub mod usage;

use std::{collections::BTreeMap, net::IpAddr};

use aya::{
    Ebpf, EbpfLoader,
    programs::{RawTracePoint, SchedClassifier},
};
use drops::DropSetup;
use monitor_common::{
    ASYMMETRIC_FLOWS_MAP, AsymmetricKey, CROSS_ENI_MAP, CrossEniKey, DROP_CONFIG_GLOBAL,
    DROP_TRACEPOINT, FEATURES_ALL, FEATURES_GLOBAL, IFACE_COUNTERS_MAP, IfaceCounters,
    PacketCounters, ROUTE_COUNTERS_MAP, ROUTES_V4_MAP, ROUTES_V6_MAP, SAMPLES_MAP,
    SOURCE_OWNERS_V4_MAP, SOURCE_OWNERS_V6_MAP, SampleEvent, program,
};
use thiserror::Error;

pub use attach::{AttachMode, AttachedVia, Attachment, Direction, remove_clsact_if_unused};
pub use maps::TrieKey;
use pinning::PinStore;

use crate::{attribution::AttributionPlan, model::Link};

/// The eBPF object built from `monitor-ebpf` by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/routemon"));

/// Room left in the route maps beyond what the current routes need.
const ROUTE_HEADROOM: u32 = 1024;

/// Failures of the kernel side.
#[derive(Debug, Error)]
pub enum EbpfError {
    /// The object could not be loaded (maps created, relocations).
    #[error(
        "loading routemon's eBPF object failed: {0}. Check that the kernel has BPF enabled \
         (CONFIG_BPF_SYSCALL) and that routemon runs with CAP_BPF and CAP_NET_ADMIN"
    )]
    Object(#[source] aya::EbpfError),
    /// The verifier or the kernel rejected a program.
    #[error("the kernel rejected the eBPF program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// The error, with the verifier log when there is one.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Attaching to an interface failed.
    #[error("attaching {program} to {interface} ({direction}) failed: {reason}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Interface name.
        interface: String,
        /// Ingress or egress.
        direction: Direction,
        /// What went wrong, with a hint.
        reason: String,
    },
    /// Reading or writing a map failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// routemon's programs loaded in the kernel, with what they are attached to.
pub struct Monitor {
    ebpf: Ebpf,
    /// Which interfaces count in which slot (mirrored from the maps).
    slots: IfaceSlots,
    attachments: Vec<Attachment>,
    pins: Option<PinStore>,
    /// Drop-reason counting: its set-up, or why it is unavailable.
    drops: Result<DropSetup, String>,
    /// Whether the drop program is attached.
    drops_attached: bool,
}

impl Monitor {
    /// Loads the object with maps sized for `plan`, fills the maps, and loads the
    /// programs. Nothing is attached yet.
    pub fn load(
        plan: &AttributionPlan,
        interfaces: &[&Link],
        source_owners: &[(IpAddr, u32)],
    ) -> Result<Self, EbpfError> {
        Self::load_with_features(plan, interfaces, source_owners, FEATURES_ALL)
    }

    /// [`Self::load`] with only some of the data path's features (a `FEATURES_*`
    /// level of `monitor_common`): the bench's ablation, which shows what each
    /// feature costs per packet. Counting with less than [`FEATURES_ALL`] reports
    /// less than routemon does.
    pub fn load_with_features(
        plan: &AttributionPlan,
        interfaces: &[&Link],
        source_owners: &[(IpAddr, u32)],
        features: u32,
    ) -> Result<Self, EbpfError> {
        raise_memlock_limit();
        let (v4, v6) = plan.entry_counts();
        let capacity = |n: usize| {
            u32::try_from(n)
                .unwrap_or(u32::MAX)
                .saturating_add(ROUTE_HEADROOM)
        };
        let iface_capacity = u32::try_from(interfaces.len())
            .unwrap_or(u32::MAX)
            .saturating_add(64);
        let drops = DropSetup::from_kernel();
        let mut loader = loader(&drops);
        if features != FEATURES_ALL {
            loader.override_global(FEATURES_GLOBAL, &features, true);
        }
        let mut ebpf = loader
            .map_max_entries(ROUTES_V4_MAP, capacity(v4))
            .map_max_entries(ROUTES_V6_MAP, capacity(v6))
            .map_max_entries(ROUTE_COUNTERS_MAP, capacity(plan.route_ids.len()))
            .map_max_entries(IFACE_COUNTERS_MAP, iface_capacity)
            .map_max_entries(SOURCE_OWNERS_V4_MAP, capacity(source_owners.len()))
            .map_max_entries(SOURCE_OWNERS_V6_MAP, capacity(source_owners.len()))
            .load(OBJECT)
            .map_err(EbpfError::Object)?;

        let mut slots = IfaceSlots::default();
        slots.assign(&mut ebpf, interfaces.iter().map(|l| l.index))?;
        slots.set_stacking(&mut ebpf, &iface_slots::stacking(interfaces))?;
        maps::load_routes(&mut ebpf, plan)?;
        maps::register_source_owners(&mut ebpf, source_owners)?;
        maps::refresh_config(&mut ebpf, &slots.interfaces())?;

        load_programs(&mut ebpf)?;
        Ok(Self {
            ebpf,
            slots,
            attachments: Vec::new(),
            pins: None,
            drops,
            drops_attached: false,
        })
    }

    /// Loads the object for a long-running monitor: fixed capacities, maps pinned
    /// in `pins` if given (reused with their counts when a previous routemon left
    /// them), programs loaded, nothing attached and no route entries written yet.
    pub fn load_long_running(pins: Option<PinStore>) -> Result<Self, EbpfError> {
        raise_memlock_limit();
        let layouts = pinning::pinned_maps();
        let paths: Vec<(&'static str, std::path::PathBuf)> = pins
            .iter()
            .flat_map(|store| layouts.iter().map(|l| (l.name, store.map_path(l.name))))
            .collect();
        let drops = DropSetup::from_kernel();
        let mut loader = loader(&drops);
        for layout in &layouts {
            loader.map_max_entries(layout.name, layout.max_entries);
        }
        if pins.is_some() {
            for (name, path) in &paths {
                loader.map_pin_path(name, path.as_path());
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(EbpfError::Object)?;
        // Pinned maps of a previous routemon may hold interfaces, owners and rules.
        let slots = IfaceSlots::read(&ebpf)?;
        maps::refresh_config(&mut ebpf, &slots.interfaces())?;
        load_programs(&mut ebpf)?;
        Ok(Self {
            ebpf,
            slots,
            attachments: Vec::new(),
            pins,
            drops,
            drops_attached: false,
        })
    }

    /// Starts counting kernel drops on the registered interfaces by reason (the
    /// `kfree_skb` raw tracepoint). Unavailable without the kernel's BTF: the error
    /// says why, and nothing else depends on it.
    pub fn attach_drop_counter(&mut self) -> Result<(), EbpfError> {
        if self.drops_attached {
            return Ok(());
        }
        if let Err(why) = &self.drops {
            return Err(EbpfError::Other(format!("drop reasons unavailable: {why}")));
        }
        let name = program::DROPS;
        let fail = |source| EbpfError::Program {
            program: name,
            source,
        };
        let program: &mut RawTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| {
                EbpfError::Other(format!("program {name} missing from the eBPF object"))
            })?
            .try_into()
            .map_err(fail)?;
        program.load().map_err(fail)?;
        program.attach(DROP_TRACEPOINT).map_err(fail)?;
        self.drops_attached = true;
        Ok(())
    }

    /// Whether drops are being counted.
    pub fn counts_drops(&self) -> bool {
        self.drops_attached
    }

    /// Packets dropped per (interface, reason name), summed over CPUs.
    pub fn drop_counters(&self) -> Result<BTreeMap<(u32, String), u64>, EbpfError> {
        let Ok(setup) = &self.drops else {
            return Ok(BTreeMap::new());
        };
        Ok(maps::drop_counters(&self.ebpf)?
            .into_iter()
            .map(|(key, n)| ((key.ifindex, setup.reason_name(key.reason)), n))
            .collect())
    }

    /// Attaches the egress and ingress programs that fit the link's framing.
    pub fn attach(&mut self, link: &Link, mode: AttachMode) -> Result<(), EbpfError> {
        let (egress, ingress) = if link.link_layer == crate::model::LinkLayer::None {
            (program::EGRESS_L3, program::INGRESS_L3)
        } else {
            (program::EGRESS, program::INGRESS)
        };
        for (name, direction) in [(egress, Direction::Egress), (ingress, Direction::Ingress)] {
            let program = classifier(&mut self.ebpf, name)?;
            let attachment = match (&self.pins, mode) {
                (Some(pins), AttachMode::Auto | AttachMode::Tcx) => attach::attach_pinned(
                    program,
                    name,
                    link,
                    direction,
                    &pins.link_path(&link.name, link.index, direction),
                )?,
                _ => attach::attach(program, name, link, direction, mode)?,
            };
            self.attachments.push(attachment);
        }
        Ok(())
    }

    /// Forgets the attachments of an interface that was deleted (the kernel already
    /// detached them) and returns its final counters, removing them from the map.
    pub fn release_interface(&mut self, ifindex: u32) -> Result<IfaceCounters, EbpfError> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.attachments)
            .into_iter()
            .partition(|a| a.ifindex == ifindex);
        self.attachments = kept;
        for attachment in gone {
            if let Some(path) = attachment.pin_path() {
                let _ = std::fs::remove_file(path);
            }
        }
        let last = self
            .slots
            .counters(&self.ebpf)?
            .remove(&ifindex)
            .unwrap_or_default();
        self.slots.release(&mut self.ebpf, ifindex)?;
        self.refresh_config()?;
        Ok(last)
    }

    /// Rewrites the [`DataPathConfig`] and moves the routing generation on, after a
    /// change of what the data path looks up.
    fn refresh_config(&mut self) -> Result<(), EbpfError> {
        maps::refresh_config(&mut self.ebpf, &self.slots.interfaces()).map(drop)
    }

    /// Whether routemon's programs are attached to this interface.
    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.attachments.iter().any(|a| a.ifindex == ifindex)
    }

    /// Creates zeroed counters for an interface; existing counters (of a previous
    /// routemon, in pinned maps) are kept.
    pub fn register_interface(&mut self, ifindex: u32) -> Result<(), EbpfError> {
        self.slots
            .assign(&mut self.ebpf, std::iter::once(ifindex))?;
        self.refresh_config()
    }

    /// Records which monitored devices are stacked on which (`links`: every monitored
    /// link), so a packet crossing an upper and its lower counts as a flow and to a
    /// route once, on the upper.
    pub fn set_stacking(&mut self, links: &[&Link]) -> Result<(), EbpfError> {
        self.slots
            .set_stacking(&mut self.ebpf, &iface_slots::stacking(links))
    }

    /// The route entries in the kernel's tries, with their route ids.
    pub fn route_entries(&self) -> Result<Vec<(TrieKey, u32)>, EbpfError> {
        maps::route_entries(&self.ebpf)
    }

    /// Writes (`Some(id)`) or removes (`None`) route trie entries.
    pub fn update_route_entries(
        &mut self,
        changes: &[(TrieKey, Option<u32>)],
    ) -> Result<(), EbpfError> {
        maps::update_route_entries(&mut self.ebpf, changes)?;
        // Flows cached the routes they were counted to: the next packet of each
        // looks its route up again.
        self.refresh_config()
    }

    /// Replaces the source rules (prefix → table slot).
    pub fn replace_source_rules(
        &mut self,
        rules: &[crate::attribution::SourceRule],
    ) -> Result<(), EbpfError> {
        maps::replace_source_rules(&mut self.ebpf, rules)?;
        self.refresh_config()
    }

    /// Zeroes the counters of a route id before it is given to another route.
    pub fn reset_route_counter(&mut self, id: u32) -> Result<(), EbpfError> {
        maps::reset_route_counter(&mut self.ebpf, id)
    }

    /// Every address → owner entry of the cross-ENI map.
    pub fn source_owners(&self) -> Result<Vec<(IpAddr, u32)>, EbpfError> {
        maps::source_owners(&self.ebpf)
    }

    /// Time spent in and runs of each loaded program, when the kernel collects
    /// statistics (`kernel.bpf_stats_enabled`): (program, nanoseconds, runs).
    pub fn program_stats(&self) -> Vec<(&'static str, u64, u64)> {
        PROGRAMS
            .iter()
            .filter_map(|name| {
                let program: &SchedClassifier = self.ebpf.program(name)?.try_into().ok()?;
                let info = program.info().ok()?;
                let nanos = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
                Some((*name, nanos, info.run_count()))
            })
            .collect()
    }

    /// The size of a loaded program as the kernel reports it: (bytes after the
    /// verifier, bytes of machine code, instructions the verifier processed).
    pub fn program_size(&self, name: &'static str) -> Result<(u32, u32, u32), EbpfError> {
        let program = self.ebpf.program(name).ok_or_else(|| {
            EbpfError::Other(format!("program {name} missing from the eBPF object"))
        })?;
        let info = program.info().map_err(|source| EbpfError::Program {
            program: name,
            source,
        })?;
        Ok((
            info.size_translated().unwrap_or(0),
            info.size_jitted(),
            info.verified_instruction_count().unwrap_or(0),
        ))
    }

    /// Runs the loaded program `name` on `frame` `repeat` times in the kernel,
    /// without attaching it (see [`test_run`]).
    pub fn test_run(
        &self,
        name: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<test_run::TestRun, EbpfError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or_else(|| {
                EbpfError::Other(format!("program {name} missing from the eBPF object"))
            })?
            .try_into()
            .map_err(|source| EbpfError::Program {
                program: name,
                source,
            })?;
        let fd = program.fd().map_err(|source| EbpfError::Program {
            program: name,
            source,
        })?;
        test_run::test_run(std::os::fd::AsFd::as_fd(fd), frame, repeat)
            .map_err(|err| EbpfError::Other(format!("test run of {name}: {err}")))
    }

    /// Ends this monitor but leaves pinned links attached and pinned maps in place,
    /// for the next routemon to adopt. Unpinned attachments are detached.
    pub async fn keep_pinned(
        mut self,
        netlink: &crate::model::dump::Netlink,
    ) -> Result<(), EbpfError> {
        self.detach_where(netlink, |a| a.pin_path().is_none()).await
    }

    /// Everything attached so far.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Counters of every registered interface, summed over CPUs.
    pub fn interface_counters(&self) -> Result<BTreeMap<u32, IfaceCounters>, EbpfError> {
        self.slots.counters(&self.ebpf)
    }

    /// Counters of every route id, summed over CPUs; index = route id. Read in one
    /// batch where the kernel can (5.6+).
    pub fn route_counters(&self, count: usize) -> Result<Vec<PacketCounters>, EbpfError> {
        maps::route_counters(&self.ebpf, count)
    }

    /// [`Self::route_counters`] read entry by entry: what older kernels get, and
    /// what the batch read is checked against.
    pub fn route_counters_one_by_one(
        &self,
        count: usize,
    ) -> Result<Vec<PacketCounters>, EbpfError> {
        maps::route_counters_one_by_one(&self.ebpf, count)
    }

    /// Keeps the address → owner map current: `Some(ifindex)` when an address is
    /// added to a monitored interface, `None` when it is removed.
    pub fn set_source_owner(&mut self, addr: IpAddr, owner: Option<u32>) -> Result<(), EbpfError> {
        maps::set_source_owner(&mut self.ebpf, addr, owner)?;
        self.refresh_config()
    }

    /// What the data path skips now ([`DataPathConfig`]).
    pub fn data_path_config(&self) -> Result<monitor_common::DataPathConfig, EbpfError> {
        maps::config(&self.ebpf)
    }

    /// Cross-ENI egress counters, summed over CPUs.
    pub fn cross_eni_counters(&self) -> Result<BTreeMap<CrossEniKey, PacketCounters>, EbpfError> {
        maps::summed_counters(&self.ebpf, CROSS_ENI_MAP)
    }

    /// Asymmetric-flow counters, summed over CPUs (the most recently active
    /// [`monitor_common::MAX_ASYMMETRIC_FLOWS`] flows).
    pub fn asymmetric_flows(&self) -> Result<BTreeMap<AsymmetricKey, PacketCounters>, EbpfError> {
        maps::summed_counters(&self.ebpf, ASYMMETRIC_FLOWS_MAP)
    }

    /// Takes the ring buffer of sampled packets; call once.
    pub fn take_samples(&mut self) -> Result<SampleReader, EbpfError> {
        let map = self
            .ebpf
            .take_map(SAMPLES_MAP)
            .ok_or_else(|| EbpfError::Other(format!("map {SAMPLES_MAP} missing or taken")))?;
        let ring = aya::maps::RingBuf::try_from(map).map_err(|source| EbpfError::Map {
            map: SAMPLES_MAP,
            source,
        })?;
        Ok(SampleReader { ring })
    }

    /// Every flow in the kernel's flow table.
    pub fn flows(
        &self,
    ) -> Result<Vec<(monitor_common::FlowKey, monitor_common::FlowState)>, EbpfError> {
        maps::flows(&self.ebpf)
    }

    /// How full the bounded kernel tables are and what they dropped;
    /// `flow_entries` as in [`usage::read`].
    pub fn table_usage(
        &self,
        flow_entries: Option<usage::FlowEntries>,
    ) -> Result<usage::TableUsage, EbpfError> {
        usage::read(&self.ebpf, flow_entries)
    }

    /// Detaches every program, then removes the clsact qdiscs routemon created (if
    /// nothing else uses them). Attempts every step and reports the first failure.
    pub async fn detach(mut self, netlink: &crate::model::dump::Netlink) -> Result<(), EbpfError> {
        self.detach_where(netlink, |_| true).await
    }

    /// Detaches routemon from one interface (it stays, but is no longer monitored).
    pub async fn detach_interface(
        &mut self,
        netlink: &crate::model::dump::Netlink,
        ifindex: u32,
    ) -> Result<(), EbpfError> {
        self.detach_where(netlink, |a| a.ifindex == ifindex).await
    }

    async fn detach_where(
        &mut self,
        netlink: &crate::model::dump::Netlink,
        selected: impl Fn(&Attachment) -> bool,
    ) -> Result<(), EbpfError> {
        let mut first_error = None;
        let mut created_clsact = Vec::new();
        let (chosen, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.attachments)
            .into_iter()
            .partition(|a| selected(a));
        self.attachments = kept;
        for attachment in chosen {
            if attachment.created_clsact {
                created_clsact.push((attachment.ifindex, attachment.interface.clone()));
            }
            let (ifindex, interface) = (attachment.ifindex, attachment.interface.clone());
            let result = classifier(&mut self.ebpf, attachment.program)
                .and_then(|program| attach::detach(program, attachment));
            match result {
                Ok(()) => {}
                // An interface deleted while attached takes its filters and links with it.
                Err(err) if !attach::interface_exists(ifindex, &interface) => {
                    tracing::debug!(%interface, "interface is gone; nothing to detach ({err})");
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        for (ifindex, interface) in created_clsact {
            attach::remove_clsact_if_unused(netlink, ifindex, &interface).await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Reads sampled packets from the kernel's ring buffer.
pub struct SampleReader {
    ring: aya::maps::RingBuf<aya::maps::MapData>,
}

impl SampleReader {
    /// Returns every sample waiting in the ring buffer.
    pub fn drain(&mut self) -> Vec<SampleEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<SampleEvent>() {
                // SAFETY: the kernel wrote a SampleEvent (plain #[repr(C)] data, any bit
                // pattern valid); read_unaligned copes with the ring's alignment.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SampleEvent>()) });
            }
        }
        out
    }
}

/// routemon's TC programs.
const PROGRAMS: [&str; 4] = [
    program::EGRESS,
    program::INGRESS,
    program::EGRESS_L3,
    program::INGRESS_L3,
];

/// A loader that skips aya's own use of the kernel's BTF: the programs have no
/// CO-RE relocation to resolve (the drop program gets its few offsets from
/// [`DropSetup`] instead), and aya's BTF parsing would only slow every start.
fn loader(drops: &Result<DropSetup, String>) -> EbpfLoader<'_> {
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    if let Ok(setup) = drops {
        loader.override_global(DROP_CONFIG_GLOBAL, &setup.config, true);
    }
    loader
}

fn load_programs(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    for name in PROGRAMS {
        classifier(ebpf, name)?
            .load()
            .map_err(|source| EbpfError::Program {
                program: name,
                source,
            })?;
    }
    #[cfg(feature = "debug-log")]
    debug_log::relay(ebpf);
    Ok(())
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, EbpfError> {
    ebpf.program_mut(name)
        .ok_or_else(|| EbpfError::Other(format!("program {name} missing from the eBPF object")))?
        .try_into()
        .map_err(|source| EbpfError::Program {
            program: name,
            source,
        })
}

/// Lifts RLIMIT_MEMLOCK for kernels before 5.11, which charge BPF maps to it
/// (newer kernels use memcg accounting and ignore it).
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!(
            "could not lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
