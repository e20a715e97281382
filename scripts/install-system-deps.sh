#!/usr/bin/env bash
# Debian packages the test suite runs for real: promtool/amtool, cloud-init schema, shellcheck, nft, sshd -t,
# systemd-analyze, visudo (sudo), and the lab's systemd-nspawn + mmdebstrap. Installs only what is missing.
set -euo pipefail

packages=(prometheus prometheus-alertmanager prometheus-node-exporter cloud-init shellcheck nftables
          systemd systemd-container mmdebstrap iproute2 openssh-client openssh-server curl sudo)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "system packages: all present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "error: missing Debian packages (${missing[*]}); run this script as root or install them with apt-get" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# The Debian packages start their daemons; the tests run their own instances on loopback.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter ssh; do
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
