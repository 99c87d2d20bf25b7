#!/bin/sh
# Builds the extility-firstboot packages into OUTDIR (default: target/packages of the
# repository):
#   extility-firstboot_<version>_all.deb      (dpkg-deb)
#   extility-firstboot-<version>.tar.gz       (the same files and install.sh)
# The version is the crate's, from Cargo.toml. Needs dpkg-deb (package dpkg) and GNU tar.
#
#   packaging/firstboot/build.sh [OUTDIR]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/target/packages}
version=$(awk -F'"' '/^\[/ { section = $0 } section == "[package]" && /^version *=/ { print $2; exit }' \
	"$repo/Cargo.toml")
[ -n "$version" ] || {
	echo "build.sh: no version in $repo/Cargo.toml" >&2
	exit 1
}
command -v dpkg-deb >/dev/null 2>&1 || {
	echo "build.sh: dpkg-deb is missing (Debian package dpkg)" >&2
	exit 1
}
# Reproducible: every file's time is the last commit's (or SOURCE_DATE_EPOCH).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
umask 022

# files DIR: the installed files under DIR.
files() {
	install -D -m 0755 "$here/extility-firstboot" "$1/usr/sbin/extility-firstboot"
	install -D -m 0644 "$here/extility-firstboot.service" \
		"$1/usr/lib/systemd/system/extility-firstboot.service"
	install -D -m 0755 "$here/extility-firstboot.init" "$1/etc/init.d/extility-firstboot"
}

deb=$stage/deb
files "$deb"
install -d -m 0755 "$deb/DEBIAN"
size=$(du -sk "$deb" | cut -f 1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/DEBIAN/control.in" > "$deb/DEBIAN/control"
chmod 0644 "$deb/DEBIAN/control"
install -m 0644 "$here/DEBIAN/conffiles" "$deb/DEBIAN/conffiles"
for script in postinst prerm postrm; do
	install -m 0755 "$here/DEBIAN/$script" "$deb/DEBIAN/$script"
done
(cd "$deb" && find etc usr -type f | LC_ALL=C sort | xargs md5sum) > "$deb/DEBIAN/md5sums"
chmod 0644 "$deb/DEBIAN/md5sums"

name=extility-firstboot-$version
tree=$stage/tar/$name
files "$tree"
install -m 0755 "$here/install.sh" "$tree/install.sh"

find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zgzip --build "$deb" "$out/extility-firstboot_${version}_all.deb" >/dev/null
tar -C "$stage/tar" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
	-cf - "$name" | gzip -9n > "$out/$name.tar.gz"
echo "$out/extility-firstboot_${version}_all.deb"
echo "$out/$name.tar.gz"
