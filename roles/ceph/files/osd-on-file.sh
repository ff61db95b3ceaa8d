#!/bin/sh
# One BlueStore OSD on a regular file: what ceph-volume does for a block device, by hand, because
# ceph-volume only takes block devices and the lab has none. Prints "exists" or "created".
set -eu
file="$1"
for dir in /var/lib/ceph/osd/ceph-*; do
    if [ -L "$dir/block" ] && [ "$(readlink "$dir/block")" = "$file" ]; then
        id="${dir##*-}"
        systemctl enable --now "ceph-osd@$id" >/dev/null 2>&1
        echo "exists osd.$id"
        exit 0
    fi
done
[ -f "$file" ] || { echo "no such file: $file" >&2; exit 1; }
uuid="$(uuidgen)"
secret="$(ceph-authtool --gen-print-key)"
id="$(printf '{"cephx_secret": "%s"}' "$secret" |
    ceph osd new "$uuid" -i - -n client.bootstrap-osd -k /var/lib/ceph/bootstrap-osd/ceph.keyring)"
dir="/var/lib/ceph/osd/ceph-$id"
mkdir -p "$dir"
ceph-authtool --create-keyring "$dir/keyring" --name "osd.$id" --add-key "$secret" >/dev/null
ln -s "$file" "$dir/block"
chown -R ceph:ceph "$dir" "$file"
ceph-osd -i "$id" --mkfs --osd-uuid "$uuid" --osd-objectstore bluestore --setuser ceph --setgroup ceph
systemctl enable --now "ceph-osd@$id"
echo "created osd.$id"
