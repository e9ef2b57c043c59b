#!/bin/sh
# Fetches the Debian kernel package (unmodified) into a cache and extracts it
# without installing anything on the host.
#
#   kernel-config/fetch-kernel.sh BUILD_DIR
#
# Leaves BUILD_DIR/kernel/{vmlinuz,config,release,modules/} where modules/ is
# the package's lib/modules/<release>. KERNEL_PACKAGE=linux-image-X pins the
# package; by default it is whatever linux-image-amd64 depends on today.
set -eu

build=${1:?usage: fetch-kernel.sh BUILD_DIR}
out=$build/kernel
cache=$build/cache

if [ -f "$out/vmlinuz" ] && [ -f "$out/config" ] && [ -d "$out/modules" ]; then
    exit 0
fi

pkg=${KERNEL_PACKAGE:-}
if [ -z "$pkg" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
fi
if [ -z "$pkg" ]; then
    echo "fetch-kernel: cannot resolve linux-image-amd64 (run apt-get update, or set KERNEL_PACKAGE=)" >&2
    exit 1
fi

mkdir -p "$cache"
deb=$(ls "$cache"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    echo "fetch-kernel: downloading $pkg"
    # apt drops privileges to _apt for downloads; a cache it cannot write is
    # fine, apt falls back to downloading as root.
    (cd "$cache" && apt-get -qq download "$pkg" >/dev/null 2>&1 || true)
    deb=$(ls "$cache"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
    [ -n "$deb" ] || { echo "fetch-kernel: apt-get download $pkg failed" >&2; exit 1; }
fi

rm -rf "$out.tmp"
mkdir -p "$out.tmp/root"
dpkg-deb -x "$deb" "$out.tmp/root"
release=$(ls "$out.tmp/root/lib/modules" | head -n1)
cp "$out.tmp/root/boot/vmlinuz-$release" "$out.tmp/vmlinuz"
cp "$out.tmp/root/boot/config-$release" "$out.tmp/config"
echo "$release" > "$out.tmp/release"
mv "$out.tmp/root/lib/modules/$release" "$out.tmp/modules"
rm -rf "$out.tmp/root"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "fetch-kernel: $pkg ($release) in $out"
