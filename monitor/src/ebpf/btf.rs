//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to find where a
//! field lives in a kernel struct and what an enum's values are called.
//!
//! The drop-reason program reads `skb->dev->ifindex` and the device's network
//! namespace with `bpf_probe_read_kernel`; the offsets differ between kernels, so
//! they are looked up here at load time instead of being compiled in. Every read
//! is bounds-checked: a truncated or corrupt file gives an error, never a panic.

use std::collections::BTreeMap;

use thiserror::Error;

/// Where the running kernel publishes its BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Types followed through when resolving a member's type (qualifiers, typedefs).
const TRANSPARENT: [u32; 6] = [
    KIND_TYPEDEF,
    KIND_VOLATILE,
    KIND_CONST,
    KIND_RESTRICT,
    KIND_TYPE_TAG,
    KIND_DECL_TAG,
];
/// Anonymous members nested deeper than this are not searched.
const MAX_NESTING: usize = 16;
/// Members looked at in one search, at most (`struct sk_buff` needs about 60).
const MAX_MEMBERS_VISITED: usize = 100_000;

/// A BTF blob that cannot be read.
#[derive(Debug, Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data is not BTF or is cut short.
    #[error("not valid BTF: {0}")]
    Invalid(&'static str),
}

/// One type's header; its kind-specific data follows at `data`.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    data: usize,
}

/// A parsed BTF blob (native byte order, as the kernel writes it).
pub struct Btf {
    bytes: Blob,
    strings: std::ops::Range<usize>,
    /// Where each type's header starts (index = type id − 1); the headers are
    /// decoded when needed, which keeps the index at 4 bytes a type.
    types: Vec<u32>,
}

impl Btf {
    /// Reads the running kernel's BTF (several MiB) into memory of its own, which
    /// goes back to the system when the [`Btf`] is dropped: read into the heap, it
    /// would stay in a daemon's RSS (glibc keeps freed heap memory for reuse).
    pub fn from_kernel() -> Result<Self, BtfError> {
        let fail = |source| BtfError::Read {
            path: KERNEL_BTF.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(KERNEL_BTF).map_err(fail)?;
        let len = file.metadata().map_err(fail)?.len();
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len > 0)
            .ok_or(BtfError::Invalid("empty or oversized kernel BTF"))?;
        let mut map = memmap2::MmapMut::map_anon(len).map_err(fail)?;
        std::io::Read::read_exact(&mut file, &mut map).map_err(fail)?;
        Self::parse_blob(Blob::Mapped(map))
    }

    /// Parses a BTF blob.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, BtfError> {
        Self::parse_blob(Blob::Owned(bytes))
    }

    fn parse_blob(bytes: Blob) -> Result<Self, BtfError> {
        let u32_at = |at: usize| read_u32(&bytes, at).ok_or(BtfError::Invalid("short header"));
        if bytes.len() < HEADER_LEN || u16::from_ne_bytes([bytes[0], bytes[1]]) != MAGIC {
            return Err(BtfError::Invalid("bad magic (wrong byte order or not BTF)"));
        }
        let header_len = u32_at(4)? as usize;
        let section = |off: usize, len: usize| {
            let start = header_len
                .checked_add(u32_at(off)? as usize)
                .ok_or(BtfError::Invalid("section offset overflows"))?;
            let end = start
                .checked_add(u32_at(len)? as usize)
                .filter(|end| *end <= bytes.len())
                .ok_or(BtfError::Invalid("section beyond the end of the data"))?;
            Ok::<_, BtfError>(start..end)
        };
        let type_section = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut types = Vec::new();
        let mut at = type_section.start;
        while at < type_section.end {
            let word =
                |i: usize| read_u32(&bytes, at + 4 * i).ok_or(BtfError::Invalid("type cut short"));
            let info = word(1)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                0..=19 => 0,
                _ => return Err(BtfError::Invalid("unknown type kind")),
            };
            word(2)?;
            types.push(u32::try_from(at).map_err(|_| BtfError::Invalid("BTF over 4 GiB"))?);
            at += 12 + extra;
        }
        if at > type_section.end {
            return Err(BtfError::Invalid("last type cut short"));
        }
        Ok(Self {
            bytes,
            strings,
            types,
        })
    }

    fn name(&self, offset: u32) -> &str {
        let start = self.strings.start.saturating_add(offset as usize);
        let Some(tail) = self.bytes.get(start..self.strings.end) else {
            return "";
        };
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Decodes the type header at `at` (checked when parsing).
    fn decode(&self, at: u32) -> Option<Type> {
        let at = at as usize;
        let info = read_u32(&self.bytes, at + 4)?;
        Some(Type {
            name_off: read_u32(&self.bytes, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: read_u32(&self.bytes, at + 8)?,
            data: at + 12,
        })
    }

    fn by_id(&self, id: u32) -> Option<Type> {
        self.decode(*self.types.get((id as usize).checked_sub(1)?)?)
    }

    fn named(&self, kind: u32, name: &str) -> Option<Type> {
        self.types
            .iter()
            .filter_map(|at| self.decode(*at))
            .find(|t| t.kind == kind && self.name(t.name_off) == name)
    }

    /// The type behind typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..MAX_NESTING {
            let ty = self.by_id(id)?;
            if !TRANSPARENT.contains(&ty.kind) {
                return Some(ty);
            }
            id = ty.size_or_type;
        }
        None
    }

    /// (name, type id, byte offset) of each member of a struct or union.
    fn members(&self, ty: &Type) -> impl Iterator<Item = (&str, u32, Option<u32>)> {
        (0..ty.vlen).filter_map(move |i| {
            let at = ty.data + 12 * i;
            let (name_off, type_id, offset) = (
                read_u32(&self.bytes, at)?,
                read_u32(&self.bytes, at + 4)?,
                read_u32(&self.bytes, at + 8)?,
            );
            // With kind_flag the low 24 bits hold the bit offset (bitfield size above).
            let bits = if ty.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            let bytes = (bits % 8 == 0).then_some(bits / 8);
            Some((self.name(name_off), type_id, bytes))
        })
    }

    /// Byte offset and type of `member` in the struct or union `ty`, looking
    /// through anonymous structs and unions as C does.
    fn member(&self, ty: &Type, member: &str) -> Option<(u32, u32)> {
        let mut budget = MAX_MEMBERS_VISITED;
        self.member_within(ty, member, 0, &mut budget)
    }

    /// [`Self::member`], at `depth` of anonymous nesting, visiting at most `budget`
    /// more members: a crafted blob whose anonymous members refer back to their
    /// own struct must not make the search exponential.
    fn member_within(
        &self,
        ty: &Type,
        member: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Option<(u32, u32)> {
        if depth > MAX_NESTING || !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for (name, type_id, offset) in self.members(ty) {
            *budget = budget.checked_sub(1)?;
            if name == member {
                return Some((offset?, type_id));
            }
            if name.is_empty() {
                let Some(inner) = self.resolve(type_id) else {
                    continue;
                };
                if let Some((inner_offset, inner_type)) =
                    self.member_within(&inner, member, depth + 1, budget)
                {
                    return Some((offset?.checked_add(inner_offset)?, inner_type));
                }
            }
        }
        None
    }

    /// The byte offset of `path` inside `struct root`: `["dev"]` in `sk_buff`, or
    /// `["nd_net", "net"]` in `net_device` (members of embedded structs, not
    /// through pointers).
    pub fn member_offset(&self, root: &str, path: &[&str]) -> Option<u32> {
        let mut ty = self.named(KIND_STRUCT, root)?;
        let mut total = 0u32;
        for (i, member) in path.iter().enumerate() {
            let (offset, type_id) = self.member(&ty, member)?;
            total = total.checked_add(offset)?;
            if i + 1 < path.len() {
                ty = self.resolve(type_id)?;
            }
        }
        Some(total)
    }

    /// The values of `enum name` with their names.
    pub fn enum_values(&self, name: &str) -> Option<BTreeMap<u64, String>> {
        let ty = self
            .named(KIND_ENUM, name)
            .or_else(|| self.named(KIND_ENUM64, name))?;
        let stride = if ty.kind == KIND_ENUM { 8 } else { 12 };
        (0..ty.vlen)
            .map(|i| {
                let at = ty.data + stride * i;
                let name = self.name(read_u32(&self.bytes, at)?).to_owned();
                let low = u64::from(read_u32(&self.bytes, at + 4)?);
                let value = if ty.kind == KIND_ENUM64 {
                    low | u64::from(read_u32(&self.bytes, at + 8)?) << 32
                } else {
                    low
                };
                Some((value, name))
            })
            .collect()
    }

    /// Whether `struct name` exists with the pointer member `member` (used to check
    /// that an offset points at a pointer before reading through it).
    pub fn member_is_pointer(&self, root: &str, member: &str) -> bool {
        self.named(KIND_STRUCT, root)
            .and_then(|ty| self.member(&ty, member))
            .and_then(|(_, type_id)| self.resolve(type_id))
            .is_some_and(|ty| ty.kind == KIND_PTR)
    }
}

/// Where the blob's bytes live.
enum Blob {
    Owned(Vec<u8>),
    Mapped(memmap2::MmapMut),
}

impl std::ops::Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(bytes) => bytes,
            Self::Mapped(map) => map,
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(word.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncations_are_errors_not_panics() {
        assert!(Btf::parse(Vec::new()).is_err());
        assert!(Btf::parse(vec![0xff; 64]).is_err());
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC.to_ne_bytes());
        header.extend_from_slice(&[1, 0]);
        for word in [24u32, 0, 1000, 0, 0] {
            header.extend_from_slice(&word.to_ne_bytes());
        }
        assert!(Btf::parse(header).is_err(), "type section beyond the end");
    }

    /// A small blob (the fuzz seed) with the shapes of the real structs: an
    /// anonymous union, a typedef'd struct, an enum.
    #[test]
    fn offsets_are_found_through_anonymous_members_and_typedefs() {
        let seed = include_bytes!("../../../fuzz/corpus/btf/drop-structs.btf");
        let btf = Btf::parse(seed.to_vec()).unwrap();
        assert_eq!(btf.member_offset("sk_buff", &["dev"]), Some(0));
        assert_eq!(btf.member_offset("sk_buff", &["len"]), Some(16));
        assert!(btf.member_is_pointer("sk_buff", "dev"));
        assert!(!btf.member_is_pointer("sk_buff", "len"));
        assert_eq!(btf.member_offset("net_device", &["nd_net", "net"]), Some(8));
        assert_eq!(btf.member_offset("net", &["ns", "inum"]), Some(8));
        let setup = crate::ebpf::drops::DropSetup::from_btf(&btf, 7).unwrap();
        assert_eq!(setup.config.dev_net, 8);
        assert_eq!(setup.config.netns_inum, 7);
        assert_eq!(setup.reason_name(16), "IP_RPFILTER");
        assert_eq!(setup.reason_name(99), "reason_99");
        // Cut anywhere, it is an error or a smaller set of types, never a panic.
        for len in 0..seed.len() {
            let _ =
                Btf::parse(seed[..len].to_vec()).map(|b| b.member_offset("net", &["ns", "inum"]));
        }
    }

    /// The running kernel's BTF (the CI machine has it, as `preflight` requires for
    /// drop reasons): the offsets the drop-reason program needs are found, and
    /// the drop reasons have their kernel names.
    #[test]
    fn the_running_kernels_btf_has_what_drop_reasons_need() {
        let Ok(btf) = Btf::from_kernel() else {
            eprintln!("no kernel BTF here; skipped");
            return;
        };
        let dev = btf.member_offset("sk_buff", &["dev"]).unwrap();
        assert_eq!(dev % 8, 0);
        assert!(btf.member_is_pointer("sk_buff", "dev"));
        assert!(btf.member_offset("net_device", &["ifindex"]).is_some());
        assert!(
            btf.member_offset("net_device", &["nd_net", "net"])
                .is_some()
        );
        assert!(btf.member_offset("net", &["ns", "inum"]).is_some());
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert_eq!(
            reasons
                .values()
                .find(|n| n.ends_with("_IP_RPFILTER"))
                .map(String::as_str),
            Some("SKB_DROP_REASON_IP_RPFILTER")
        );
        assert_eq!(
            btf.member_offset("sk_buff", &["no_such_field"]),
            None,
            "unknown members are None"
        );
    }
}
