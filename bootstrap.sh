#!/usr/bin/env bash
# One entry point for a fresh Debian 12 / Ubuntu 22.04+ machine, as root. Two setups:
#   ./bootstrap.sh demo     what bpftools needs to run, then the demo. Installs nothing that changes
#                           the host's network or starts a server (no Docker Engine, no Prometheus):
#                           the demo's container story runs where a Docker Engine already answers.
#   ./bootstrap.sh test     that, plus the test tools (Docker Engine, Prometheus, pipx, ...), then the
#                           whole test suite (what CI runs)
#   ./bootstrap.sh          the run setup only (idempotent, fast when already done)
# A user install without this script: pipx install --system-site-packages . (README).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

log() { echo "[bootstrap] $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "bootstrap.sh must run as root (it installs packages and loads BPF programs)" >&2; exit 1; }

# What bpftools needs to run (bcc and its Python module come from the distribution).
# busybox-static: the image of the demo's container story (only used where a Docker Engine answers).
RUN_PACKAGES=(bpfcc-tools python3-bpfcc bpftool iproute2 iptables nftables iputils-ping python3-venv kmod procps util-linux busybox-static)
# The test tools. docker.io: the Docker scenario tests (a local image is built from busybox with
# `docker import`); prometheus: promtool and the exporter's tests; pipx: the user-install test;
# tcpdump, bpftrace, iperf3: tests and benchmarks. containerd (its CRI plugin, runc) and
# containernetworking-plugins: the pod tests (tests/cri_env.py).
TEST_PACKAGES=(tcpdump bpftrace iperf3 prometheus docker.io pipx containerd containernetworking-plugins)

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

# apt-get update at most once a day (a fresh machine may have empty or stale package lists).
apt_update_once() {
    local stamp=/var/lib/apt/periodic/bpftools-updated
    if [ -n "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then return 0; fi
    log "apt-get update"
    apt-get update -qq
    mkdir -p "$(dirname "$stamp")" && touch "$stamp"
}

apt_install() {
    [ $# -gt 0 ] || return 0
    apt_update_once
    log "installing: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Kernel headers for bcc: the package matching `uname -r` where the distribution has one,
# else the newest generic linux-headers-*; exposed through /lib/modules/$(uname -r)/build.
setup_headers() {
    local rel build
    rel=$(uname -r)
    build=/lib/modules/$rel/build
    if [ -e "$build/include/generated/autoconf.h" ] && [ -e "/lib/modules/$rel/source/include/linux/kconfig.h" ]; then return 0; fi
    local pkg="linux-headers-$rel"
    if ! dpkg-query -W "$pkg" >/dev/null 2>&1; then
        apt_update_once
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            local arch
            arch=$(dpkg --print-architecture)
            pkg=$(apt-cache search --names-only "^linux-headers-[0-9][^ ]*-${arch}\$" | awk '{print $1}' \
                  | grep -vE -- '-(cloud|rt)-' | sort -V | tail -n 1)
            [ -n "$pkg" ] || { echo "no linux-headers package found for $rel" >&2; exit 1; }
        fi
        [ -z "$(missing_packages "$pkg")" ] || apt_install "$pkg"
    fi
    local obj src
    obj=$(dpkg -L "$pkg" | grep -E '^/usr/src/linux-headers-[^/]+$' | head -n 1)
    [ -n "$obj" ] || { echo "package $pkg holds no /usr/src/linux-headers-* tree" >&2; exit 1; }
    # Debian splits the tree: -ARCH holds generated files, its Makefile includes the -common sources.
    src=$obj
    if [ ! -e "$obj/include/linux/kconfig.h" ]; then
        src=$(sed -n 's|^include \(/usr/src/[^ ]*\)/Makefile$|\1|p' "$obj/Makefile" | head -n 1)
        [ -n "$src" ] && [ -e "$src/include/linux/kconfig.h" ] || { echo "cannot find the source half of $obj" >&2; exit 1; }
    fi
    mkdir -p "/lib/modules/$rel"
    ln -sfn "$obj" "$build"
    ln -sfn "$src" "/lib/modules/$rel/source"
    log "kernel headers: $pkg -> $build (sources $src)"
}

# .venv with bpftools editable and the extras $1 (all: docker, pcap; test: those and the test tools).
setup_venv() {
    local extras=$1 stamp=.venv/.bpftools-installed want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
    if [ -x .venv/bin/python ] && [ -f "$stamp" ]; then
        # done, or done with the test extras, which include everything of "all"
        [ "$(cat "$stamp")" = "$want" ] || [ "$(cat "$stamp")" = "${want% *} test" ] && return 0
    fi
    log "installing bpftools into .venv (made from the system Python: bcc is a system package)"
    [ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
    # (the filter hides pip's notes about local index mirrors that some machines configure)
    .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]" 2>&1 | { grep -v "neither a file nor a directory" || true; } >&2
    echo "$want" > "$stamp"
}

# kubectl renders deploy/ in the tests (its built-in kustomize; tests/unit/test_deploy.py): Debian's
# kubernetes-client, unless a kubectl from another package is there already.
setup_kubectl() {
    command -v kubectl >/dev/null || apt_install kubernetes-client
}

setup() {
    local extras=$1
    shift
    apt_install $(missing_packages "$@")
    setup_headers
    setup_venv "$extras"
    .venv/bin/bpftools mount >/dev/null
}

case "${1:-}" in
    "") setup all "${RUN_PACKAGES[@]}" ;;
    demo) shift; setup all "${RUN_PACKAGES[@]}"; exec .venv/bin/bpftools demo "$@" ;;
    test) shift; setup test "${RUN_PACKAGES[@]}" "${TEST_PACKAGES[@]}"; setup_kubectl
          exec .venv/bin/python -m pytest -ra "$@" ;;
    *) echo "usage: $0 [demo|test [pytest args]]" >&2; exit 2 ;;
esac
