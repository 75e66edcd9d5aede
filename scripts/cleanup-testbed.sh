#!/usr/bin/env bash
# Removes network namespaces left by routemon's testbed (names start with "rmt") —
# for example after a test run was killed with SIGKILL — and lists any routemon BPF
# program still loaded. The next test run does the namespace part by itself; this is
# for doing it by hand.
set -euo pipefail

removed=0
for ns in $(ip netns list | awk '{print $1}' | grep '^rmt' || true); do
    ip netns del "$ns" && removed=$((removed + 1))
done
echo "removed $removed testbed namespace(s)"

if command -v bpftool >/dev/null; then
    left=$(bpftool prog show | grep -c 'name routemon' || true)
    echo "routemon BPF programs still loaded: $left"
fi
