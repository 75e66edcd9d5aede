//! `routemon watch`: the command-line front of [`crate::watch`].

use std::sync::Arc;

use crate::{
    cli::{EventFormat, UsageError, WatchArgs},
    watch::{self, WatchOptions},
    web_config::WebConfig,
};

/// Runs `watch`.
pub async fn run(args: &WatchArgs) -> anyhow::Result<()> {
    // A file that cannot be honoured stops routemon before it attaches anything.
    let web = match &args.web_config_file {
        Some(path) => {
            Some(Arc::new(WebConfig::load(path).map_err(|err| {
                UsageError(format!("--web-config-file {err}"))
            })?))
        }
        None => None,
    };
    let protected = web
        .as_ref()
        .is_some_and(|w| w.tls.is_some() || w.requires_auth());
    if args.listen.ip().is_unspecified() && !args.no_listen && !protected {
        tracing::warn!(
            listen = %args.listen,
            "metrics are served on every address of the node without TLS or authentication; \
             restrict access with a firewall or --web-config-file"
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
        web,
    })
    .await
}
