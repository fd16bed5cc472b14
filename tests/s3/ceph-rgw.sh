#!/usr/bin/env bash
# Runs Larch's S3 tests against a single-node Ceph RGW from Debian packages instead of moto
# (issue 17): the conditional-write race test, the object-log and bucket tests of the engine and
# the data plane, and the binary tests with real processes (`s3_`). Not part of CI: it needs root
# (apt and the Ceph daemons), ~250 MB of packages and a few minutes. Usage, from anywhere:
#
#   sudo tests/s3/ceph-rgw.sh             # installs Ceph if needed, runs every S3 test
#   sudo tests/s3/ceph-rgw.sh s3_followers  # only binary tests whose name contains this
#
# The cluster is throwaway: one monitor, one manager, one OSD on memstore (RAM, 2 GiB), no
# authentication, everything under a temporary directory, listening on 127.0.0.1 only; the
# script stops it and deletes the directory however it exits. The RGW user's keys are the
# dummy ones the tests use with moto.
set -euo pipefail
[ -n "${LARCH_CEPH_TRACE:-}" ] && set -x
cd "$(dirname "$0")/../.."
filter="${1:-s3_}"

if ! command -v radosgw >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ceph-mon ceph-osd ceph-mgr radosgw ceph-common
fi
test -x .venv-s3/bin/python || { python3 -m venv .venv-s3 && .venv-s3/bin/pip install -q -r tests/s3/requirements.txt; }

dir=$(mktemp -d /tmp/larch-ceph.XXXXXX)
free_port() { .venv-s3/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mon_port=$(free_port)
rgw_port=$(free_port)
conf="$dir/ceph.conf"
stop() {
    # Only this cluster's daemons: each was started with this script's own config file.
    pkill -f -- "-c $conf" 2>/dev/null || true
    sleep 1
    pkill -9 -f -- "-c $conf" 2>/dev/null || true
    [ -n "${LARCH_CEPH_KEEP:-}" ] || rm -rf "$dir"
}
trap stop EXIT
mkdir -p "$dir"/{run,log,mon,osd,rgw}
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 2147483648
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon data = $dir/mon/\$id
osd data = $dir/osd/\$id
keyring = $dir/keyring
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
EOF

echo "tests/s3/ceph-rgw.sh: starting a one-node Ceph in $dir (mon :$mon_port, rgw :$rgw_port)"
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --addv a "[v1:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap"
ceph-mon -c "$conf" -i a
for _ in $(seq 1 60); do
    ceph -c "$conf" --connect-timeout 5 mon stat >/dev/null 2>&1 && break
    sleep 1
done
ceph -c "$conf" --connect-timeout 5 mon stat
ceph-mgr -c "$conf" -i x
osd=$(ceph -c "$conf" osd create)
mkdir -p "$dir/osd/$osd"
ceph-osd -c "$conf" -i "$osd" --mkfs
# Its start sometimes fails at once on a busy machine (exit 250): try again.
for attempt in 1 2 3; do
    ceph-osd -c "$conf" -i "$osd" && break
    [ "$attempt" = 3 ] && { tail -n 30 "$dir/log/osd.$osd.log" >&2; exit 1; }
    sleep 2
done
radosgw -c "$conf" -n client.rgw
for _ in $(seq 1 120); do
    curl -s -o /dev/null "http://127.0.0.1:$rgw_port" && break
    sleep 1
done
curl -s -o /dev/null "http://127.0.0.1:$rgw_port" || { echo "radosgw did not start; logs in $dir/log" >&2; tail -n 30 "$dir"/log/*.log >&2; exit 1; }
radosgw-admin -c "$conf" user create --uid larch --display-name larch \
    --access-key t --secret-key t >/dev/null

export LARCH_TEST_S3_URL=s3://larch-test AWS_ENDPOINT_URL="http://127.0.0.1:$rgw_port" \
    AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=t AWS_SECRET_ACCESS_KEY=t AWS_REGION=us-east-1 \
    LARCH_REQUIRE_S3=1
.venv-s3/bin/python - <<'EOF'
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                  aws_access_key_id="t", aws_secret_access_key="t")
s3.create_bucket(Bucket="larch-test")
EOF
echo "tests/s3/ceph-rgw.sh: RGW up; running the S3 tests against it"
# Every suite runs, whatever the one before did; the script fails if any did.
failed=()
run() { "$@" || failed+=("$*"); }
run cargo test -p larch-state --lib s3_
run cargo test -p larch-data-plane --lib s3_
run cargo test -p larch-tests --test integration bucket
run cargo test -p larch --test binary "$filter"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'tests/s3/ceph-rgw.sh: failed against Ceph RGW: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "tests/s3/ceph-rgw.sh: every S3 test passed against Ceph RGW"
