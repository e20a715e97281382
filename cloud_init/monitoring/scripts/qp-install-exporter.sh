#!/bin/bash
# qp-install-exporter: install and (re)start the contract exporter from the files the `contract-exporter`
# bootstrap step just unpacked (cloud_init/exporter_deploy.py). Idempotent: run it again after any change.
# The venv is rebuilt only when the hash-locked requirements change, into a new directory that replaces the
# old one only after it imports and accepts the config.
set -euo pipefail

HOME_DIR=/opt/quantapool/exporter
SRC="$HOME_DIR/src"
VENV="$HOME_DIR/venv"
LOCK="$HOME_DIR/requirements.lock"
MANIFEST="$HOME_DIR/MANIFEST.sha256"
CONFIG=/etc/quantapool/contract-exporter.yaml
UNIT=qp-contract-exporter.service
USER_NAME=qp-exporter
METRICS_URL=http://127.0.0.1:9101/metrics

die() { echo "qp-install-exporter: $*" >&2; exit 1; }
say() { echo "qp-install-exporter: $*"; }
[ "$(id -u)" -eq 0 ] || die "must run as root (sudo)"

# 1. The source is exactly what the manifest lists: verify it, and drop files an older release left behind.
cd "$HOME_DIR" || die "$HOME_DIR is missing: the bundle was not unpacked"
sha256sum --quiet --strict -c "$MANIFEST" || die "files under $HOME_DIR do not match $MANIFEST"
listed=$(sed -E 's/^[0-9a-f]{64}  //' "$MANIFEST" | sort)
while IFS= read -r -d '' present; do
	present=${present#./}
	if ! grep -qxF -- "$present" <<<"$listed"; then
		rm -f -- "$present"
		say "removed stale $HOME_DIR/$present"
	fi
done < <(find ./src -type f -print0)
find ./src -mindepth 1 -type d -empty -delete
chmod -R u=rwX,go=rX "$SRC"

# 2. Service user (no login, no home).
if ! getent passwd "$USER_NAME" >/dev/null; then
	useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$USER_NAME"
fi

# 3. The venv, from the hash-locked closure only (no source builds, no unpinned dependency).
want=$(sha256sum "$LOCK" | cut -d' ' -f1)
have=$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ] || ! "$VENV/bin/python" -c 'import prometheus_client, pydantic, eth_abi' 2>/dev/null; then
	say "building $VENV (requirements $want)"
	rm -rf "$VENV.new"
	python3 -m venv "$VENV.new"
	"$VENV.new/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --no-input \
		--require-hashes --only-binary=:all: -r "$LOCK" || die "pip install from $LOCK failed"
	PYTHONPATH="$SRC" "$VENV.new/bin/python" -c 'import exporter.__main__' || die "the exporter does not import"
	echo "$want" >"$VENV.new/.requirements.sha256"
	rm -rf "$VENV.old"
	if [ -d "$VENV" ]; then mv "$VENV" "$VENV.old"; fi
	mv "$VENV.new" "$VENV"
	rm -rf "$VENV.old"
fi

# 4. The config must be accepted by the exporter itself, read as the service user.
runuser -u "$USER_NAME" -- env PYTHONPATH="$SRC" PYTHONDONTWRITEBYTECODE=1 \
	"$VENV/bin/python" -m exporter --config "$CONFIG" --check-config || die "the exporter rejects $CONFIG"

# 5. (Re)start and wait until Prometheus' target answers (an unreachable RPC does not stop it serving).
systemctl daemon-reload
systemctl enable "$UNIT"
systemctl restart "$UNIT"
curl -fsS -o /dev/null --retry 20 --retry-delay 2 --retry-connrefused --max-time 5 "$METRICS_URL" \
	|| die "$UNIT does not serve $METRICS_URL (journalctl -u $UNIT)"
say "$UNIT is up on $METRICS_URL"
