//! routemon's objects on the BPF filesystem, so a restarted daemon continues
//! counting where the previous one stopped.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/routemon`):
//! - `maps-v<N>/<MAP>`: the counter and lookup maps. `N` is
//!   [`MAP_LAYOUT_VERSION`]; a routemon with another layout replaces them.
//! - `links/<ifname>@<ifindex>-<egress|ingress>`: TCX links. A pinned link keeps
//!   its program attached after the process exits; the next daemon swaps its own
//!   program into the link atomically (`BPF_LINK_UPDATE`), so no packet goes
//!   uncounted and nothing is attached twice.

use std::{
    ffi::CString,
    fs, io,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use monitor_common::{
    ASYMMETRIC_FLOWS_MAP, AsymmetricKey, CROSS_ENI_MAP, CrossEniKey, DROPS_MAP, DropKey,
    FLOWS_INBOUND_MAP, FLOWS_INBOUND_V6_MAP, FLOWS_MAP, FLOWS_V6_MAP, FlowEntry, FlowKey,
    FlowKeyV4, IFACE_COUNTERS_MAP, IFACE_SLOT_BUCKETS, IFACE_SLOTS_MAP, IFACE_SLOTS_OVERFLOW_MAP,
    IfaceCounters, IfaceSlot, PacketCounters, ROUTE_COUNTERS_MAP, ROUTES_V4_MAP, ROUTES_V6_MAP,
    RouteKeyV4, RouteKeyV6, SAMPLER_MAP, SOURCE_OWNERS_V4_MAP, SOURCE_OWNERS_V6_MAP,
    SOURCE_RULES_V4_MAP, SOURCE_RULES_V6_MAP, SamplerState, TABLE_STATS_MAP, TableStats,
};

use super::{Direction, EbpfError};

/// Bumped whenever a pinned map's meaning changes without its sizes changing.
pub const MAP_LAYOUT_VERSION: u32 = 3;

/// The default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/routemon";

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Route ids a long-running monitor can count (per-CPU array entries).
pub const PERSISTENT_ROUTE_IDS: u32 = 4096;

/// One map as routemon expects to find it pinned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapLayout {
    /// Map name in the object.
    pub name: &'static str,
    /// Kernel map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Capacity.
    pub max_entries: u32,
}

/// LPM keys carry a 4-byte prefix length before the data.
const fn lpm_key<K>() -> usize {
    4 + size_of::<K>()
}

/// Every map routemon pins, with the layout it must have. The sample ring buffer
/// is not pinned: samples are a live view, not state.
pub fn pinned_maps() -> [MapLayout; 19] {
    use monitor_common::{
        DEFAULT_MAX_INTERFACES, DEFAULT_MAX_OWNED_ADDRESSES, DEFAULT_MAX_ROUTES,
        MAX_ASYMMETRIC_FLOWS, MAX_CROSS_ENI_PAIRS, MAX_INBOUND_TUPLES, MAX_SOURCE_RULES,
        MAX_TRACKED_FLOWS,
    };
    let layout = |name, map_type, key_size, value_size, max_entries| MapLayout {
        name,
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    [
        layout(
            IFACE_COUNTERS_MAP,
            MapType::PerCpuArray,
            4,
            size_of::<IfaceCounters>(),
            DEFAULT_MAX_INTERFACES,
        ),
        layout(
            IFACE_SLOTS_MAP,
            MapType::Array,
            4,
            size_of::<IfaceSlot>(),
            IFACE_SLOT_BUCKETS,
        ),
        layout(
            IFACE_SLOTS_OVERFLOW_MAP,
            MapType::Hash,
            4,
            size_of::<IfaceSlot>(),
            DEFAULT_MAX_INTERFACES,
        ),
        layout(
            ROUTE_COUNTERS_MAP,
            MapType::PerCpuArray,
            4,
            size_of::<PacketCounters>(),
            PERSISTENT_ROUTE_IDS,
        ),
        layout(
            ROUTES_V4_MAP,
            MapType::LpmTrie,
            lpm_key::<RouteKeyV4>(),
            4,
            DEFAULT_MAX_ROUTES,
        ),
        layout(
            ROUTES_V6_MAP,
            MapType::LpmTrie,
            lpm_key::<RouteKeyV6>(),
            4,
            DEFAULT_MAX_ROUTES,
        ),
        layout(
            SOURCE_RULES_V4_MAP,
            MapType::LpmTrie,
            lpm_key::<[u8; 4]>(),
            4,
            MAX_SOURCE_RULES,
        ),
        layout(
            SOURCE_RULES_V6_MAP,
            MapType::LpmTrie,
            lpm_key::<[u8; 16]>(),
            4,
            MAX_SOURCE_RULES,
        ),
        layout(
            SOURCE_OWNERS_V4_MAP,
            MapType::Hash,
            4,
            4,
            DEFAULT_MAX_OWNED_ADDRESSES,
        ),
        layout(
            SOURCE_OWNERS_V6_MAP,
            MapType::Hash,
            16,
            4,
            DEFAULT_MAX_OWNED_ADDRESSES,
        ),
        layout(
            CROSS_ENI_MAP,
            MapType::PerCpuHash,
            size_of::<CrossEniKey>(),
            size_of::<PacketCounters>(),
            MAX_CROSS_ENI_PAIRS,
        ),
        layout(
            FLOWS_MAP,
            MapType::LruHash,
            size_of::<FlowKeyV4>(),
            size_of::<FlowEntry>(),
            MAX_TRACKED_FLOWS,
        ),
        layout(
            FLOWS_V6_MAP,
            MapType::LruHash,
            size_of::<FlowKey>(),
            size_of::<FlowEntry>(),
            MAX_TRACKED_FLOWS,
        ),
        layout(
            FLOWS_INBOUND_MAP,
            MapType::LruHash,
            size_of::<FlowKeyV4>(),
            size_of::<FlowEntry>(),
            MAX_INBOUND_TUPLES,
        ),
        layout(
            FLOWS_INBOUND_V6_MAP,
            MapType::LruHash,
            size_of::<FlowKey>(),
            size_of::<FlowEntry>(),
            MAX_INBOUND_TUPLES,
        ),
        layout(
            ASYMMETRIC_FLOWS_MAP,
            MapType::LruPerCpuHash,
            size_of::<AsymmetricKey>(),
            size_of::<PacketCounters>(),
            MAX_ASYMMETRIC_FLOWS,
        ),
        layout(
            SAMPLER_MAP,
            MapType::PerCpuArray,
            4,
            size_of::<SamplerState>(),
            1,
        ),
        layout(
            TABLE_STATS_MAP,
            MapType::PerCpuArray,
            4,
            size_of::<TableStats>(),
            1,
        ),
        layout(
            DROPS_MAP,
            MapType::PerCpuHash,
            size_of::<DropKey>(),
            8,
            monitor_common::MAX_DROP_KEYS,
        ),
    ]
}

/// Where routemon pins, and the operations on it.
#[derive(Clone, Debug)]
pub struct PinStore {
    dir: PathBuf,
}

/// What was found pinned when a store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedState {
    /// Maps reused with their contents.
    pub reused_maps: Vec<&'static str>,
    /// Maps replaced because their layout differed.
    pub replaced_maps: Vec<&'static str>,
}

impl PinStore {
    /// Opens (creating it if needed) the pin directory, mounting the BPF filesystem
    /// on `/sys/fs/bpf` if the directory is beneath it and nothing is mounted.
    /// Pinned maps whose layout differs from this routemon's are removed, as are
    /// map directories of other layout versions.
    pub fn open(dir: &Path) -> Result<(Self, PinnedState), EbpfError> {
        ensure_bpffs(dir)?;
        let store = Self {
            dir: dir.to_path_buf(),
        };
        for sub in [store.maps_dir(), store.links_dir()] {
            fs::create_dir_all(&sub).map_err(|err| {
                EbpfError::Other(format!("cannot create {}: {err}", sub.display()))
            })?;
        }
        store.remove_other_layouts();
        let mut state = PinnedState::default();
        for layout in &pinned_maps() {
            let path = store.map_path(layout.name);
            if !path.exists() {
                continue;
            }
            match MapInfo::from_pin(&path) {
                Ok(info) if matches_layout(&info, layout) => state.reused_maps.push(layout.name),
                found => {
                    let why = match found {
                        Ok(info) => format!(
                            "type {:?}, key {} B, value {} B, {} entries",
                            info.map_type().ok(),
                            info.key_size(),
                            info.value_size(),
                            info.max_entries()
                        ),
                        Err(err) => err.to_string(),
                    };
                    tracing::warn!(
                        map = layout.name,
                        "the pinned map does not have routemon's layout ({why}); replacing it"
                    );
                    remove_file(&path)?;
                    state.replaced_maps.push(layout.name);
                }
            }
        }
        Ok((store, state))
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of this layout's maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join(format!("maps-v{MAP_LAYOUT_VERSION}"))
    }

    /// The directory of pinned links.
    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Where the link of one interface and direction is pinned.
    pub fn link_path(&self, interface: &str, ifindex: u32, direction: Direction) -> PathBuf {
        self.links_dir()
            .join(format!("{interface}@{ifindex}-{direction}"))
    }

    /// Pinned links whose interface no longer exists (deleted, or its index reused
    /// by another name); their pins are removed. Returns how many.
    pub fn remove_orphan_links(&self) -> usize {
        let mut removed = 0;
        for name in Self::pinned_links(&self.dir) {
            let alive = parse_link_name(&name)
                .is_some_and(|(ifname, ifindex)| super::attach::interface_exists(ifindex, ifname));
            if !alive && fs::remove_file(self.links_dir().join(&name)).is_ok() {
                tracing::info!(link = %name, "removed the pin of a link whose interface is gone");
                removed += 1;
            }
        }
        removed
    }

    fn remove_other_layouts(&self) {
        let current = self.maps_dir();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_maps = entry.file_name().to_string_lossy().starts_with("maps-v");
            if is_maps && path != current {
                tracing::warn!(dir = %path.display(), "removing maps of another routemon layout");
                if let Err(err) = fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), "could not remove: {err}");
                }
            }
        }
    }

    /// Names of the links pinned under `dir` (none when it does not exist).
    pub fn pinned_links(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join("links"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Removes routemon's pins under `dir` — links named like routemon's and the
    /// `maps-v*` directories — then `dir` itself if nothing else is in it. Other
    /// pins are never touched, whatever directory is given. Links whose pins go
    /// away are detached by the kernel once no process holds them.
    pub fn remove_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        if !dir.exists() {
            return Ok(removed);
        }
        for entry in fs::read_dir(dir)? {
            let sub = entry?.path();
            let name = sub
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ours: fn(&str) -> bool = match name.as_str() {
                "links" => |f| parse_link_name(f).is_some(),
                n if n.starts_with("maps-v") => |_| true,
                _ => continue,
            };
            if !sub.is_dir() {
                continue;
            }
            for file in fs::read_dir(&sub)? {
                let path = file?.path();
                if path.file_name().is_some_and(|f| ours(&f.to_string_lossy())) {
                    fs::remove_file(&path)?;
                    removed.push(path);
                }
            }
            remove_dir_if_empty(&sub)?;
        }
        remove_dir_if_empty(dir)?;
        Ok(removed)
    }
}

/// Removes `dir` unless something is left in it.
fn remove_dir_if_empty(dir: &Path) -> io::Result<()> {
    match fs::remove_dir(dir) {
        Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) => {
            tracing::info!(dir = %dir.display(), "kept: it holds pins that are not routemon's");
            Ok(())
        }
        other => other,
    }
}

/// `<ifname>@<ifindex>-<direction>` → (ifname, ifindex).
pub fn parse_link_name(name: &str) -> Option<(&str, u32)> {
    let (interface, rest) = name.rsplit_once('@')?;
    let (ifindex, direction) = rest.split_once('-')?;
    matches!(direction, "egress" | "ingress").then_some(())?;
    Some((interface, ifindex.parse().ok()?))
}

fn matches_layout(info: &MapInfo, layout: &MapLayout) -> bool {
    info.map_type().ok() == Some(layout.map_type)
        && usize::try_from(info.key_size()).ok() == Some(layout.key_size)
        && usize::try_from(info.value_size()).ok() == Some(layout.value_size)
        && info.max_entries() == layout.max_entries
}

fn remove_file(path: &Path) -> Result<(), EbpfError> {
    fs::remove_file(path)
        .map_err(|err| EbpfError::Other(format!("cannot remove {}: {err}", path.display())))
}

/// Mounts the BPF filesystem on `/sys/fs/bpf` when `dir` is beneath it and it is
/// not mounted; fails when `dir` is not on a BPF filesystem.
fn ensure_bpffs(dir: &Path) -> Result<(), EbpfError> {
    let bpffs_root = Path::new("/sys/fs/bpf");
    if dir.starts_with(bpffs_root) && !is_bpffs(bpffs_root) {
        tracing::info!("mounting the BPF filesystem on /sys/fs/bpf");
        let target = CString::new("/sys/fs/bpf").expect("no NUL");
        let fstype = CString::new("bpf").expect("no NUL");
        // SAFETY: valid NUL-terminated strings; no data argument.
        let ret = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if ret != 0 {
            return Err(EbpfError::Other(format!(
                "the BPF filesystem is not mounted on /sys/fs/bpf and mounting it failed: {}. \
                 Mount it (`mount -t bpf bpf /sys/fs/bpf`), or run with --ephemeral",
                io::Error::last_os_error()
            )));
        }
    }
    let probe = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(probe) {
        return Err(EbpfError::Other(format!(
            "{} is not on a BPF filesystem; choose a --bpffs-dir under /sys/fs/bpf \
             (or run with --ephemeral)",
            dir.display()
        )));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid path.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let ret = unsafe { libc::statfs(path.as_ptr(), &raw mut stat) };
    #[allow(clippy::unnecessary_cast, reason = "f_type's width differs by target")]
    let fs_type = stat.f_type as i64;
    ret == 0 && fs_type == BPF_FS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_round_trip() {
        assert_eq!(parse_link_name("ens5@2-egress"), Some(("ens5", 2)));
        assert_eq!(parse_link_name("we@ird@14-ingress"), Some(("we@ird", 14)));
        assert_eq!(parse_link_name("ens5@2-sideways"), None);
        assert_eq!(parse_link_name("ens5-egress"), None);
    }
}
