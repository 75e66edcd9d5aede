//! `routemon watch`: the command-line front of [`crate::watch`].

use crate::{
    cli::{EventFormat, WatchArgs},
    watch::{self, WatchOptions},
};

/// Runs `watch`.
pub async fn run(args: &WatchArgs) -> anyhow::Result<()> {
    if args.listen.ip().is_unspecified() {
        tracing::warn!(
            listen = %args.listen,
            "metrics are served on every address of the node; restrict access with a firewall"
        );
    }
    watch::run(WatchOptions {
        patterns: args.interfaces.interfaces.clone(),
        primary: args.interfaces.primary.clone(),
        listen: (!args.no_listen).then_some(args.listen),
        events: args.events == EventFormat::Json,
        guard: args.guard.then(|| {
            (
                args.interfaces.primary.clone().unwrap_or_default(),
                args.metric,
            )
        }),
        pin_dir: (!args.ephemeral).then(|| args.bpffs_dir.clone()),
        keep_pinned: args.keep_attached,
        attach: args.attach,
        interval: args.interval,
        netlink_buffer: args.netlink_buffer,
        cilium_family: args.cilium_family,
    })
    .await
}
