//! Running a loaded program on a frame in the kernel, without attaching it:
//! `BPF_PROG_TEST_RUN`. The bench uses it to measure a program's own cost, with
//! no network stack around it; the robustness tests use it to check that a
//! program hands every frame back unchanged.

use std::{io, os::fd::AsRawFd as _, os::fd::BorrowedFd};

/// `BPF_PROG_TEST_RUN` command of the `bpf(2)` syscall.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Room for the frame the kernel hands back: the largest frame a TC program sees
/// in a test run is one page minus the skb's headroom and tail.
const MAX_FRAME: usize = 4096;

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so the padding the kernel checks for zero is initialised.
    pad: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; the syscall's non-negative result.
///
/// # Safety
/// `attr` must be the `union bpf_attr` member of `cmd` (padding included, zeroed),
/// and every pointer in it valid for what the kernel reads or writes.
pub(super) unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: upheld by the caller; the size passed is the attribute's own.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// What one test run returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (the TC verdict).
    pub verdict: i32,
    /// Mean time of one run in nanoseconds, as the kernel measured it.
    pub mean_ns: u32,
    /// The frame after the program ran.
    pub output: Vec<u8>,
}

/// Runs the program `fd` on `frame` (an Ethernet frame for TC programs) `repeat`
/// times in the kernel. The skb's device is the loopback of the caller's network
/// namespace, so `skb->ifindex` is 1.
pub fn test_run(fd: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    let size_in = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut output = vec![0u8; MAX_FRAME.max(frame.len())];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        data_size_in: size_in,
        data_size_out: u32::try_from(output.len()).unwrap_or(u32::MAX),
        data_in: frame.as_ptr() as u64,
        data_out: output.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: the kernel reads `frame` (data_size_in bytes) and writes at most
    // data_size_out bytes into `output`, both alive for the call.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    output.truncate(attr.data_size_out as usize);
    Ok(TestRun {
        verdict: attr.retval as i32,
        mean_ns: attr.duration,
        output,
    })
}

/// Loads a TC program that only returns `TC_ACT_UNSPEC` (`r0 = -1; exit`). Its
/// test-run time is the fixed cost of running any TC program: what a measured
/// program adds is its time minus this one's.
pub fn load_empty_classifier() -> io::Result<std::os::fd::OwnedFd> {
    super::reference::load_classifier(&super::reference::empty_program(), "routemon_none")
}
