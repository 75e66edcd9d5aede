//! Reading a whole per-CPU array in one `bpf(2)` call (`BPF_MAP_LOOKUP_BATCH`,
//! Linux 5.6), which aya 0.14 does not offer: a scrape of `watch` reads its 4 096
//! route counters with a few calls instead of 4 096.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Pod, maps::MapData};

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads entries `0..count` of the per-CPU array `map`, each summed over the
/// possible CPUs with `add`. Fails with the kernel's error (e.g. `EINVAL` before
/// 5.6); the caller then reads entry by entry.
pub fn per_cpu_array_sums<T: Pod + Default>(
    map: &MapData,
    count: usize,
    add: impl Fn(&mut T, &T),
) -> io::Result<Vec<T>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, err)| err)?;
    // The kernel lays out each CPU's value at an 8-byte stride.
    let stride = size_of::<T>().next_multiple_of(8);
    let fd = map
        .info()
        .and_then(|info| info.fd())
        .map_err(io::Error::other)?;
    let mut sums = vec![T::default(); count];
    let mut keys = vec![0u32; count];
    let mut values = vec![0u8; count * cpus * stride];
    let mut next: u32 = 0;
    let mut done = 0usize;
    while done < count {
        let mut attr = BatchAttr {
            // NULL on the first call: start at the beginning.
            in_batch: if done == 0 {
                0
            } else {
                (&raw const next) as u64
            },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(count - done).unwrap_or(u32::MAX),
            map_fd: u32::try_from(fd.as_fd().as_raw_fd()).map_err(io::Error::other)?,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` of its size; `keys` holds
        // `attr.count` u32 keys and `values` `attr.count × cpus × stride` bytes, the
        // most the kernel writes; `next` outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let end = if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(err);
            }
            true // the array ended; attr.count says how many were filled
        } else {
            false
        };
        let filled = attr.count as usize;
        for (i, key) in keys.iter().take(filled).enumerate() {
            let Some(sum) = sums.get_mut(*key as usize) else {
                continue;
            };
            for cpu in 0..cpus {
                let offset = (i * cpus + cpu) * stride;
                // SAFETY: `offset + size_of::<T>()` is inside `values` (i < filled ≤
                // the count asked for), and `T: Pod` accepts any bytes.
                let value: T =
                    unsafe { std::ptr::read_unaligned(values.as_ptr().add(offset).cast::<T>()) };
                add(sum, &value);
            }
        }
        done += filled;
        if end || filled == 0 {
            break;
        }
    }
    Ok(sums)
}
