#!/usr/bin/env bash
# Runs a command (as root) in a view of this machine that is as close to a new
# machine as a root process can make it, without changing the machine for anyone
# else. CI runs the README's test command through it, because CI runs on the
# machine the work was done on, which has state a new machine lacks.
#
# In a private mount namespace:
#   - no BPF filesystem on /sys/fs/bpf (every stacked mount is removed);
#   - /var/lib/routemon, /run/routemon, /etc/systemd/network: empty where they exist
#     (a new Debian machine has only an empty /etc/systemd/network);
#   - tmux: a fresh socket directory, so no running server is reused.
# System-wide, restored at exit: kernel.bpf_stats_enabled=0.
#
# What it cannot simulate: Debian packages, toolchains and cargo tools installed
# earlier (bpf-linker, cargo-fuzz) stay installed; cargo's download cache stays.
#
# Usage: scripts/as-new-machine.sh COMMAND [ARG…]
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "as-new-machine: needs root (it makes a mount namespace)" >&2
    exit 77
fi
if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi

if [ -z "${ROUTEMON_AS_NEW_MACHINE:-}" ]; then
    stats=/proc/sys/kernel/bpf_stats_enabled
    before=$(cat "$stats")
    echo 0 >"$stats"
    status=0
    ROUTEMON_AS_NEW_MACHINE=1 unshare --mount --propagation private "$0" "$@" || status=$?
    echo "$before" >"$stats"
    exit "$status"
fi

# Inside the private mount namespace.
while mountpoint -q /sys/fs/bpf; do
    umount /sys/fs/bpf
done
for dir in /var/lib/routemon /run/routemon /etc/systemd/network; do
    if [ -d "$dir" ]; then
        mount -t tmpfs -o mode=0755 tmpfs "$dir"
    fi
done
TMUX_TMPDIR=$(mktemp -d)
export TMUX_TMPDIR
unset TMUX

echo "as-new-machine: /sys/fs/bpf $(mountpoint -q /sys/fs/bpf && echo mounted || echo 'not mounted'), \
kernel.bpf_stats_enabled=$(cat /proc/sys/kernel/bpf_stats_enabled), routemon's default paths empty"
exec "$@"
