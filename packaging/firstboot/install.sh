#!/bin/sh
# Installs extility-firstboot from this directory (the unpacked tarball): into the running
# system, or with --root DIR into an image's root file system tree, before its file system is
# made and fsmaker makes it bootable.
#
#   ./install.sh                     this system: files, then the service enabled
#   ./install.sh --root DIR          an image tree: files, then the systemd unit enabled by
#                                    its symbolic link in DIR (and the init script's links
#                                    with DIR's own update-rc.d, when run as root)
#   ./install.sh --no-enable ...     files only
#
# Run as root (or under fakeroot, in the same session as mkfs.ext4 -d): the files are then
# root's, as they must be in an image.
set -eu

usage() {
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

root=/
enable=yes
while [ $# -gt 0 ]; do
	case $1 in
	--root)
		[ $# -ge 2 ] || usage
		root=$2
		shift 2
		;;
	--root=*)
		root=${1#--root=}
		shift
		;;
	--no-enable)
		enable=no
		shift
		;;
	*) usage ;;
	esac
done

here=$(cd "$(dirname "$0")" && pwd)
[ -d "$root" ] || {
	echo "install.sh: $root is not a directory" >&2
	exit 1
}
root=$(cd "$root" && pwd -P)
r=${root%/}
owned=yes

# mkdir_inside DIR: makes folder DIR of the tree, refusing one that a symbolic link of the
# tree takes outside it (an image's /etc/init.d -> /etc/rc.d/init.d is the build host's).
mkdir_inside() {
	mkdir -p "$1"
	case $(cd "$1" && pwd -P)/ in
	"$r"/*) ;;
	*)
		echo "install.sh: $1 leads out of $root: nothing installed there" >&2
		exit 1
		;;
	esac
}

# put SOURCE MODE PATH: the file SOURCE of this directory at PATH of the tree, replaced in
# one rename.
put() {
	mkdir_inside "$r$(dirname "$3")"
	cp "$here/$1" "$r$3.new"
	chmod "$2" "$r$3.new"
	chown 0:0 "$r$3.new" 2>/dev/null || owned=no
	mv -f "$r$3.new" "$r$3"
	echo "installed $r$3"
}

put usr/sbin/extility-firstboot 0755 /usr/sbin/extility-firstboot
put usr/lib/systemd/system/extility-firstboot.service 0644 /usr/lib/systemd/system/extility-firstboot.service
put etc/init.d/extility-firstboot 0755 /etc/init.d/extility-firstboot
[ "$owned" = yes ] || echo "install.sh: warning: the files are not root's (run as root, or under fakeroot with mkfs.ext4 -d in the same session)" >&2

[ "$enable" = yes ] || exit 0

if [ -e "$r/var/lib/extility-firstboot/done" ]; then
	echo "install.sh: $r/var/lib/extility-firstboot/done exists: not enabled (extility-firstboot --rearm forgets it)"
	exit 0
fi

if [ -z "$r" ]; then
	# This system.
	if command -v systemctl >/dev/null 2>&1; then
		systemctl enable extility-firstboot.service && echo "enabled extility-firstboot.service"
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		update-rc.d extility-firstboot defaults && echo "enabled /etc/init.d/extility-firstboot"
	fi
	exit 0
fi

# An image tree: what `systemctl enable` would do there.
wants=$r/etc/systemd/system/multi-user.target.wants
mkdir_inside "$wants"
ln -sfn /usr/lib/systemd/system/extility-firstboot.service "$wants/extility-firstboot.service"
echo "enabled extility-firstboot.service ($wants/extility-firstboot.service)"
# The init script's links, for a tree booted by sysvinit: its own update-rc.d makes them.
if [ -d "$r/etc/rc2.d" ] && [ ! -e "$r/lib/systemd/systemd" ] && [ ! -e "$r/usr/lib/systemd/systemd" ]; then
	if [ "$(id -u)" = 0 ] && [ -x "$r/usr/sbin/update-rc.d" ] &&
		chroot "$root" /usr/sbin/update-rc.d extility-firstboot defaults; then
		echo "enabled /etc/init.d/extility-firstboot (update-rc.d in $root)"
	else
		echo "install.sh: for sysvinit, run as root: chroot $root update-rc.d extility-firstboot defaults" >&2
	fi
fi
