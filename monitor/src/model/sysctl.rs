//! Kernel settings of the current network namespace that change routing outcomes,
//! read from `/proc/sys/net` (which shows the reading process's namespace).

use std::{collections::BTreeMap, fs};

use super::Link;

fn read_u8(path: &str) -> Option<u8> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The effective IPv4 `rp_filter` of each link: the kernel applies the larger of
/// `conf/all/rp_filter` and `conf/<link>/rp_filter`.
pub fn rp_filter<'a>(links: impl Iterator<Item = &'a Link>) -> BTreeMap<u32, u8> {
    let all = read_u8("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap_or(0);
    links
        .filter_map(|link| {
            let own = read_u8(&format!("/proc/sys/net/ipv4/conf/{}/rp_filter", link.name))?;
            Some((link.index, own.max(all)))
        })
        .collect()
}
