#!/bin/sh
# Set each KEY=VALUE of a pool that differs; print "set KEY=VALUE" for each change, nothing if none.
set -eu
pool="$1"
shift
for kv in "$@"; do
    key="${kv%%=*}"
    want="${kv#*=}"
    have="$(ceph osd pool get "$pool" "$key" | sed -n "s/^$key: //p")"
    if [ "$have" != "$want" ]; then
        ceph osd pool set "$pool" "$key" "$want" >/dev/null
        echo "set $key=$want"
    fi
done
