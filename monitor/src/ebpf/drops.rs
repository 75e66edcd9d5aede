//! Packets the kernel dropped on monitored interfaces, by drop reason: the set-up of
//! the `kfree_skb` raw tracepoint program and the names of the reasons.
//!
//! The program reads the dropped packet's device from kernel memory, at offsets
//! this module looks up in the kernel's BTF. Without BTF (or with a kernel whose
//! structures lack a field), drop reasons are unavailable and everything else
//! works as before.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt as _};

use monitor_common::DropConfig;

use super::btf::Btf;

/// The enum's values are named `SKB_DROP_REASON_<NAME>`.
const REASON_PREFIX: &str = "SKB_DROP_REASON_";

/// What the drop program needs, and the reasons' names.
#[derive(Clone, Debug, Default)]
pub struct DropSetup {
    /// The offsets and namespace for the program.
    pub config: DropConfig,
    /// `enum skb_drop_reason` values → names without the prefix (`NO_SOCKET`).
    pub reasons: BTreeMap<u64, String>,
}

impl DropSetup {
    /// Reads the kernel's BTF and this process's network namespace. The error says
    /// why drop reasons are unavailable.
    pub fn from_kernel() -> Result<Self, String> {
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map_err(|err| format!("cannot read /proc/self/ns/net: {err}"))?;
        let btf = Btf::from_kernel().map_err(|err| err.to_string())?;
        Self::from_btf(&btf, netns.ino())
    }

    /// The set-up for the kernel described by `btf`, counting in namespace `netns`.
    pub fn from_btf(btf: &Btf, netns: u64) -> Result<Self, String> {
        let offset = |root: &str, path: &[&str]| {
            btf.member_offset(root, path).ok_or_else(|| {
                format!(
                    "the kernel's BTF has no struct {root} member {}",
                    path.join(".")
                )
            })
        };
        if !btf.member_is_pointer("sk_buff", "dev") {
            return Err("the kernel's struct sk_buff has no dev pointer".to_owned());
        }
        let config = DropConfig {
            enabled: 1,
            skb_dev: offset("sk_buff", &["dev"])?,
            dev_ifindex: offset("net_device", &["ifindex"])?,
            dev_net: offset("net_device", &["nd_net", "net"])?,
            net_inum: offset("net", &["ns", "inum"])?,
            netns_inum: u32::try_from(netns)
                .map_err(|_| format!("namespace inode {netns} does not fit 32 bits"))?,
        };
        let reasons = btf
            .enum_values("skb_drop_reason")
            .ok_or("the kernel's BTF has no enum skb_drop_reason")?
            .into_iter()
            .map(|(value, name)| {
                let short = name.strip_prefix(REASON_PREFIX).unwrap_or(&name).to_owned();
                (value, short)
            })
            .collect();
        Ok(Self { config, reasons })
    }

    /// The name of drop reason `code` (`NO_SOCKET`), or `reason_<code>`.
    pub fn reason_name(&self, code: u32) -> String {
        self.reasons
            .get(&u64::from(code))
            .cloned()
            .unwrap_or_else(|| format!("reason_{code}"))
    }
}
