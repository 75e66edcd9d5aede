//! Reference TC programs for the bench: the floor of a flow-tracking monitor on
//! the machine at hand, measured in the same run as routemon's programs so that
//! routemon's cost can be given as a ratio that means the same on any machine.
//!
//! Two references, each a few instructions assembled here (no compiler, so they
//! are exactly what they say):
//!
//! - [`Reference::InterfaceCounter`]: counts packets and bytes into a per-CPU array
//!   slot chosen by `ifindex & 255` — the cheapest exact per-interface counter.
//! - [`Reference::FlowLookup`]: the same counter, then the IPv4 5-tuple read in
//!   place (one bounds check) into a 16-byte key, looked up in a per-CPU LRU hash
//!   of 65 536 flows and counted there (created with `BPF_NOEXIST` on a miss) —
//!   what tracking flows costs at the least.
//!
//! They never change a packet and return `TC_ACT_UNSPEC`. [`Reference::Empty`] is
//! the empty program itself, for attaching beside them.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use super::test_run::bpf;

/// Which reference program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// Nothing: `return TC_ACT_UNSPEC`, what any TC program costs.
    Empty,
    /// A per-CPU array interface counter.
    InterfaceCounter,
    /// The interface counter plus one per-CPU LRU flow lookup with a 16-byte key.
    FlowLookup,
}

impl Reference {
    /// The program's name, as the bench reports it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "ref_empty",
            Self::InterfaceCounter => "ref_iface_array",
            Self::FlowLookup => "ref_flow_lookup",
        }
    }
}

/// A loaded reference program with its maps.
#[derive(Debug)]
pub struct ReferenceProgram {
    program: OwnedFd,
    interfaces: OwnedFd,
    flows: Option<OwnedFd>,
}

/// Slots of the interface counter array (`ifindex & 255`).
const INTERFACE_SLOTS: u32 = 256;
/// Capacity of the reference flow table, as routemon's.
const FLOWS: u32 = 65_536;
/// Packets and bytes, two u64.
const COUNTERS_SIZE: u32 = 16;
/// saddr, daddr, ports, protocol (as a u32).
const FLOW_KEY_SIZE: u32 = 16;

impl ReferenceProgram {
    /// Creates the maps and loads the program (the verifier's acceptance included).
    pub fn load(reference: Reference) -> io::Result<Self> {
        Self::load_as(reference, reference.name())
    }

    /// Like [`Self::load`], with another program name (at most 15 bytes are
    /// kept): one instance per hook, so the kernel's statistics tell them apart.
    pub fn load_as(reference: Reference, name: &str) -> io::Result<Self> {
        let interfaces = create_map(BPF_MAP_TYPE_PERCPU_ARRAY, 4, INTERFACE_SLOTS)?;
        let flows = match reference {
            Reference::Empty | Reference::InterfaceCounter => None,
            Reference::FlowLookup => Some(create_map(
                BPF_MAP_TYPE_LRU_PERCPU_HASH,
                FLOW_KEY_SIZE,
                FLOWS,
            )?),
        };
        let insns = match reference {
            Reference::Empty => empty_program(),
            _ => program(
                interfaces.as_raw_fd(),
                flows.as_ref().map(|fd| fd.as_raw_fd()),
            ),
        };
        let program = load_classifier(&insns, name)?;
        Ok(Self {
            program,
            interfaces,
            flows,
        })
    }

    /// The program, for [`super::test_run::test_run`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.program.as_fd()
    }

    /// Attaches the program to `ifindex` (of the calling thread's network
    /// namespace) with a TCX link, on egress or ingress; closing the returned link
    /// detaches it.
    pub fn attach_tcx(&self, ifindex: u32, egress: bool) -> io::Result<OwnedFd> {
        attach_tcx(self.fd(), ifindex, egress)
    }

    /// Packets counted for `ifindex`, summed over CPUs.
    pub fn interface_packets(&self, ifindex: u32) -> io::Result<u64> {
        let slot = ifindex & (INTERFACE_SLOTS - 1);
        lookup_packets(self.interfaces.as_fd(), &slot.to_ne_bytes())
    }

    /// Every flow key in the flow table with its packets summed over CPUs (empty
    /// for [`Reference::InterfaceCounter`]).
    pub fn flows(&self) -> io::Result<Vec<([u8; 16], u64)>> {
        let Some(flows) = &self.flows else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut key: Option<[u8; 16]> = None;
        while let Some(next) = next_key(flows.as_fd(), key.as_ref())? {
            out.push((next, lookup_packets(flows.as_fd(), &next)?));
            key = Some(next);
        }
        Ok(out)
    }
}

// ---- the programs ----

/// Registers; r10 is the frame pointer.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R10: u8 = 10;

/// `struct __sk_buff` offsets (include/uapi/linux/bpf.h).
const SKB_LEN: i16 = 0;
const SKB_IFINDEX: i16 = 40;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// Helper ids.
const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;

/// One instruction: opcode, registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64) | (src as u64) << 4) << 8
        | (off as u16 as u64) << 16
        | (imm as u32 as u64) << 32
}

/// A tiny assembler: instructions and forward jumps to named labels.
#[derive(Default)]
struct Asm {
    insns: Vec<u64>,
    /// (instruction index, label) of jumps to patch.
    jumps: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.insns.push(insn(code, dst, src, off, imm));
        self
    }
    fn mov(&mut self, dst: u8, src: u8) -> &mut Self {
        self.op(0xbf, dst, src, 0, 0)
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0xb7, dst, 0, 0, imm)
    }
    fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x07, dst, 0, 0, imm)
    }
    /// `dst = r10 + off`: a pointer to the stack slot at `off`.
    fn frame_pointer(&mut self, dst: u8, off: i32) -> &mut Self {
        self.mov(dst, R10).add_imm(dst, off)
    }
    fn add(&mut self, dst: u8, src: u8) -> &mut Self {
        self.op(0x0f, dst, src, 0, 0)
    }
    fn and_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.op(0x57, dst, 0, 0, imm)
    }
    /// `dst = *(size *)(src + off)`; size code 0x61 W, 0x69 H, 0x71 B, 0x79 DW.
    fn load(&mut self, code: u8, dst: u8, src: u8, off: i16) -> &mut Self {
        self.op(code, dst, src, off, 0)
    }
    /// `*(size *)(dst + off) = src`; 0x63 W, 0x7b DW.
    fn store(&mut self, code: u8, dst: u8, off: i16, src: u8) -> &mut Self {
        self.op(code, dst, src, off, 0)
    }
    /// `*(u64 *)(dst + off) = imm`.
    fn store_dw_imm(&mut self, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.op(0x7a, dst, 0, off, imm)
    }
    /// `dst = map fd` (a 16-byte `ld_imm64` with `BPF_PSEUDO_MAP_FD`).
    fn map(&mut self, dst: u8, fd: i32) -> &mut Self {
        self.op(0x18, dst, 1, 0, fd).op(0, 0, 0, 0, 0)
    }
    fn call(&mut self, helper: i32) -> &mut Self {
        self.op(0x85, 0, 0, 0, helper)
    }
    /// A conditional or plain jump (`code`: 0x2d JGT reg, 0x55 JNE imm, 0x15 JEQ
    /// imm, 0x05 JA) to `label`, defined later.
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, label: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.op(code, dst, src, 0, imm)
    }
    fn label(&mut self, label: &'static str) -> &mut Self {
        self.labels.push((label, self.insns.len()));
        self
    }
    fn finish(mut self) -> Vec<u64> {
        for (at, label) in std::mem::take(&mut self.jumps) {
            let target = self
                .labels
                .iter()
                .find(|(name, _)| *name == label)
                .map(|(_, index)| *index)
                .expect("every jump's label is defined");
            let off = i16::try_from(target as isize - at as isize - 1).expect("short program");
            self.insns[at] = (self.insns[at] & !(0xffff << 16)) | u64::from(off as u16) << 16;
        }
        self.insns
    }
}

/// Adds one packet of `skb->len` bytes to the counters `r0` points to.
fn count_into_r0(asm: &mut Asm) {
    asm.load(0x79, R1, R0, 0)
        .add_imm(R1, 1)
        .store(0x7b, R0, 0, R1)
        .load(0x61, R1, R6, SKB_LEN)
        .load(0x79, R2, R0, 8)
        .add(R2, R1)
        .store(0x7b, R0, 8, R2);
}

/// `r0 = TC_ACT_UNSPEC; exit`.
pub(super) fn empty_program() -> Vec<u64> {
    let mut asm = Asm::default();
    asm.mov_imm(R0, -1).op(0x95, 0, 0, 0, 0);
    asm.finish()
}

/// The program: the interface counter, then (with `flows`) the flow lookup.
fn program(interfaces: i32, flows: Option<i32>) -> Vec<u64> {
    let mut asm = Asm::default();
    asm.mov(R6, R1)
        .load(0x61, R1, R6, SKB_IFINDEX)
        .and_imm(R1, (INTERFACE_SLOTS - 1) as i32)
        .store(0x63, R10, -4, R1)
        .map(R1, interfaces)
        .frame_pointer(R2, -4)
        .call(MAP_LOOKUP_ELEM)
        .jump(0x15, R0, 0, 0, "flow");
    count_into_r0(&mut asm);
    asm.label("flow");
    if let Some(flows) = flows {
        // Ethernet + IPv4 (5 words) + ports: 38 bytes, one bounds check.
        asm.load(0x61, R2, R6, SKB_DATA)
            .load(0x61, R3, R6, SKB_DATA_END)
            .mov(R4, R2)
            .add_imm(R4, 38)
            .jump(0x2d, R4, R3, 0, "out")
            // Ethertype 0x0800 as read little-endian.
            .load(0x69, R5, R2, 12)
            .jump(0x55, R5, 0, 0x0008, "out")
            .load(0x71, R5, R2, 14)
            .and_imm(R5, 0x0f)
            .jump(0x55, R5, 0, 5, "out")
            .load(0x61, R5, R2, 26)
            .store(0x63, R10, -16, R5)
            .load(0x61, R5, R2, 30)
            .store(0x63, R10, -12, R5)
            .load(0x61, R5, R2, 34)
            .store(0x63, R10, -8, R5)
            .load(0x71, R5, R2, 23)
            .store(0x63, R10, -4, R5)
            .map(R1, flows)
            .frame_pointer(R2, -16)
            .call(MAP_LOOKUP_ELEM)
            .jump(0x15, R0, 0, 0, "insert");
        count_into_r0(&mut asm);
        asm.jump(0x05, 0, 0, 0, "out")
            .label("insert")
            .store_dw_imm(R10, -32, 1)
            .load(0x61, R1, R6, SKB_LEN)
            .store(0x7b, R10, -24, R1)
            .map(R1, flows)
            .frame_pointer(R2, -16)
            .frame_pointer(R3, -32)
            .mov_imm(R4, 1) // BPF_NOEXIST
            .call(MAP_UPDATE_ELEM);
    }
    asm.label("out")
        .mov_imm(R0, -1) // TC_ACT_UNSPEC
        .op(0x95, 0, 0, 0, 0);
    asm.finish()
}

// ---- the syscalls ----

/// `BPF_PROG_LOAD` command of the `bpf(2)` syscall.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_SCHED_CLS`.
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// The program-load member of `union bpf_attr`, up to the program name.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;

/// The map-create member of `union bpf_attr`, up to the map name.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    /// Explicit, so the padding the kernel checks for zero is initialised.
    pad: u32,
}

/// The element member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value_or_next: u64,
    flags: u64,
}

/// The link-create member of `union bpf_attr` for TCX (no relative program, any
/// revision), zero-padded.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative: u32,
    pad: u32,
    expected_revision: u64,
    rest: [u64; 4],
}

/// Attaches the TC program `program` to `ifindex` with a TCX link (Linux 6.6+);
/// closing the link detaches it.
pub fn attach_tcx(program: BorrowedFd<'_>, ifindex: u32, egress: bool) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(program.as_raw_fd()).map_err(|_| io::Error::other("fd"))?,
        target_ifindex: ifindex,
        attach_type: if egress {
            BPF_TCX_EGRESS
        } else {
            BPF_TCX_INGRESS
        },
        ..LinkCreateAttr::default()
    };
    // SAFETY: a zero-padded link-create attribute with no pointers.
    owned(unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?)
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn create_map(map_type: u32, key_size: u32, max_entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size: COUNTERS_SIZE,
        max_entries,
        ..MapCreateAttr::default()
    };
    // SAFETY: a zero-padded map-create attribute with no pointers.
    owned(unsafe { bpf(BPF_MAP_CREATE, &mut attr) }?)
}

/// Loads `insns` as a TC program named `name` (at most 15 bytes are kept).
pub(super) fn load_classifier(insns: &[u64], name: &str) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::other("long program"))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..ProgLoadAttr::default()
    };
    // SAFETY: the kernel reads the instructions and the license, both alive for
    // the call.
    owned(unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?)
}

/// The packets of a per-CPU [packets, bytes] value, summed over CPUs.
fn lookup_packets(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<u64> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(path, err)| io::Error::other(format!("counting CPUs from {path}: {err}")))?;
    let mut values = vec![0u64; 2 * cpus];
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).map_err(|_| io::Error::other("fd"))?,
        key: key.as_ptr() as u64,
        value_or_next: values.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    // SAFETY: the kernel reads the key and writes one 16-byte value per possible
    // CPU into `values`, sized for that.
    unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }?;
    Ok(values.chunks(2).map(|c| c[0]).sum())
}

/// The key after `key` (the first with `None`), or `None` at the end.
fn next_key(map: BorrowedFd<'_>, key: Option<&[u8; 16]>) -> io::Result<Option<[u8; 16]>> {
    let mut next = [0u8; 16];
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).map_err(|_| io::Error::other("fd"))?,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        value_or_next: next.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    // SAFETY: the kernel reads the key (if any) and writes the next one into `next`.
    match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
        Ok(_) => Ok(Some(next)),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r0 = -1; exit — the empty classifier's bytes.
        assert_eq!(
            insn(0xb7, 0, 0, 0, -1).to_le_bytes(),
            [0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        // *(u32 *)(r10 - 4) = r1: dst r10, src r1, off -4.
        assert_eq!(
            insn(0x63, 10, 1, -4, 0).to_le_bytes(),
            [0x63, 0x1a, 0xfc, 0xff, 0, 0, 0, 0]
        );
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let mut asm = Asm::default();
        asm.jump(0x05, 0, 0, 0, "end")
            .mov_imm(R0, 1)
            .label("end")
            .mov_imm(R0, -1);
        let insns = asm.finish();
        // From instruction 0 over one instruction: offset 1.
        assert_eq!((insns[0] >> 16) & 0xffff, 1);
    }
}
