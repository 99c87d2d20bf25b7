#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs the system packages the tests
# use, starts PostgreSQL if it is installed but not running, then runs `cargo test`.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test it api_json::`).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have php && php -m 2>/dev/null | grep -qi '^soap$' || missing+=(php-cli php-soap)
have xorriso || missing+=(xorriso)
have nasm || missing+=(nasm)
have grub-mkimage && [ -d /usr/lib/grub/i386-pc ] || missing+=(grub-pc-bin)
have mkfs.ext4 || missing+=(e2fsprogs)
# The full-disk test (tests/it/full_disk.rs) mounts a file system from a file and fills it.
have fallocate && have losetup || missing+=(util-linux mount)
have vsftpd || [ -x /usr/sbin/vsftpd ] || missing+=(vsftpd)
# The node-soap client test (tests/it/soap_versions.rs): Node.js and npm.
have node || missing+=(nodejs)
have npm || missing+=(npm)
# The Java SOAP client test: Apache Axis 1.4's WSDL2Java, and a JDK to compile its stubs.
need_java=()
have javac || need_java+=(default-jdk-headless)
[ -f /usr/share/java/axis.jar ] || need_java+=(libaxis-java)
# The first-boot package's tests: its script fetches with curl and wget; openssl checks the
# password hashes it sets.
have curl || missing+=(curl)
have wget || missing+=(wget)
have openssl || missing+=(openssl)
# The openssl crate (FetchDisk's MD5) builds against the system's libcrypto.
have pkg-config || missing+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
# The guest network test boots a real Linux guest: Debian's kernel and a static busybox.
need_guest=()
compgen -G '/boot/vmlinuz-*' >/dev/null || need_guest+=(linux-image-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || need_guest+=(busybox-static)
# A guest sends crafted UDP payloads (VXLAN) with socat, copied into its initramfs.
have socat || need_guest+=(socat)
# Tenant networks: nftables and dnsmasq (bridges and taps are iproute2's, always there).
have nft || [ -x /usr/sbin/nft ] || need_guest+=(nftables)
have dnsmasq || [ -x /usr/sbin/dnsmasq ] || need_guest+=(dnsmasq-base)
# cloud-init's own checks of the NoCloud documents (`cloud-init schema`, `net-convert`), and
# ssh-keygen for the SSH key tests.
have cloud-init || need_guest+=(cloud-init)
have ssh-keygen || need_guest+=(openssh-client)
# `docker-compose config` checks docker-compose.yml (1.29 validates without a daemon).
have docker-compose || need_guest+=(docker-compose)
# The compose stack is built and started (tests/it/containers.rs): podman and buildah, runc
# (crun refuses cgroup v1 hosts), podman-compose, CNI's dnsname plugin (the services find
# each other by name) and mmdebstrap (the Debian base image, as no registry is reachable).
have podman || need_guest+=(podman runc buildah)
have podman-compose || need_guest+=(podman-compose)
have mmdebstrap || need_guest+=(mmdebstrap)
[ -x /usr/lib/cni/dnsname ] || need_guest+=(golang-github-containernetworking-plugin-dnsname)
# The control panel's tests drive a real browser: Debian's headless Chromium and its WebDriver.
have chromium || need_guest+=(chromium)
have chromedriver || need_guest+=(chromium-driver)
# Ceph RBD storage: the tests start one monitor and one OSD of their own (16.2, Debian's).
have ceph-mon || [ -x /usr/bin/ceph-mon ] || need_guest+=(ceph-mon)
have ceph-osd || [ -x /usr/bin/ceph-osd ] || need_guest+=(ceph-osd)
# ceph-common also brings librbd1 and librados2, which the server loads (dlopen) for --storage rbd.
have rbd || need_guest+=(ceph-common)
# Image hygiene (tests/it/hygiene_engine.rs): libguestfs's guestfish and its appliance, and
# mkfs.xfs for the XFS test image.
have guestfish || need_guest+=(libguestfs-tools)
have mkfs.xfs || [ -x /usr/sbin/mkfs.xfs ] || need_guest+=(xfsprogs)
# QEMU's rbd driver, of the installed QEMU's version (installed with QEMU below otherwise).
need_rbd_driver=0
if have qemu-system-x86_64 && ! compgen -G '/usr/lib/*/qemu/block-rbd.so' >/dev/null; then
    need_rbd_driver=1
fi
need_qemu=0
have qemu-system-x86_64 || need_qemu=1

if [ ${#missing[@]} -gt 0 ] || [ ${#need_java[@]} -gt 0 ] || [ ${#need_guest[@]} -gt 0 ] \
    || [ $need_qemu -eq 1 ] || [ $need_rbd_driver -eq 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        as_root apt-get install -y -qq "${missing[@]}"
    fi
    if [ ${#need_java[@]} -gt 0 ]; then
        as_root apt-get install -y -qq --no-install-recommends "${need_java[@]}"
    fi
    if [ $need_rbd_driver -eq 1 ]; then
        version=$(dpkg-query -W -f '${Version}' qemu-system-x86)
        as_root apt-get install -y -qq --no-install-recommends "qemu-block-extra=$version"
    fi
    # QEMU before the other packages: libguestfs-tools and ceph pull in qemu-system-common, which
    # apt would take at the release version and then refuse beside a newer qemu-utils.
    if [ $need_qemu -eq 1 ]; then
        # qemu-system-x86 and qemu-utils must come from the same release: installing the first
        # alone would remove a newer qemu-utils the machine may already have.
        version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
        as_root apt-get install -y -qq --allow-downgrades \
            "qemu-system-x86=$version" "qemu-utils=$version" "qemu-system-common=$version" \
            "qemu-block-extra=$version" 2>/dev/null \
        || as_root apt-get install -y -qq --allow-downgrades "qemu-system-x86=$version" "qemu-utils=$version"
    fi
    if [ ${#need_guest[@]} -gt 0 ]; then
        as_root apt-get install -y -qq --no-install-recommends "${need_guest[@]}"
    fi
fi

# libguestfs builds its appliance (supermin) at its first launch: once here, so that no test
# pays for it. TCG, as KVM aborts in nested hosts.
if have guestfish && ! compgen -G "/var/tmp/.guestfs-$(id -u)/appliance.d/kernel" >/dev/null; then
    LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg libguestfs-test-tool >/dev/null 2>&1 \
        || echo "libguestfs-test-tool failed: the hygiene tests will fail" >&2
fi

# The book (docs/): tests/it/book.rs builds it with mdbook, at this version, and checks its links.
mdbook_version=0.5.4
[ "$(mdbook --version 2>/dev/null)" = "mdbook v$mdbook_version" ] \
    || cargo install mdbook --locked --version "$mdbook_version" --no-default-features --features search

python3 -c 'import zeep' 2>/dev/null || python3 -m pip install -q zeep
# node-soap, at the version tests/node/package-lock.json pins, in tests/node/node_modules.
[ -d tests/node/node_modules/soap ] || npm ci --prefix tests/node --no-audit --no-fund
# The fetch tests' FTP server, and pyOpenSSL for its FTPS (TLS_FTPHandler).
python3 -c 'import pyftpdlib' 2>/dev/null || python3 -m pip install -q pyftpdlib
python3 -c 'import OpenSSL' 2>/dev/null || python3 -m pip install -q pyopenssl

if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    if [ -d /etc/postgresql ]; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    else
        echo "PostgreSQL is not installed: the PostgreSQL half of the tests will fail." >&2
    fi
fi

cargo test "$@"
