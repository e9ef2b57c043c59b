#!/bin/sh
# Installs what building and booting basalt needs, only where it is missing.
# Safe to run again: it does nothing on a machine that has everything.
#
#   scripts/setup.sh            # Debian packages, Rust target, vhost-device-vsock,
#                               # cargo-fuzz (make fuzz, make test)
set -eu

say() { echo "setup: $*"; }

need_pkgs=""
want() { # want COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || need_pkgs="$need_pkgs $2"
}
want qemu-system-x86_64 qemu-system-x86
want mksquashfs squashfs-tools
want cpio cpio
want busybox busybox-static
want musl-gcc musl-tools
want openssl openssl
want file file
want zstd zstd
# init's device-mapper layout test compiles against the kernel's header.
[ -f /usr/include/linux/dm-ioctl.h ] || need_pkgs="$need_pkgs linux-libc-dev"
[ -f /usr/share/qemu/qboot.rom ] || need_pkgs="$need_pkgs qemu-system-data"
# The disk image (make disk) and booting it under UEFI (make run-disk).
want_file() { # want_file PATH PACKAGE: for files, and tools in sbin dirs a user's PATH may lack
    [ -e "$1" ] || need_pkgs="$need_pkgs $2"
}
want objcopy binutils
want mcopy mtools
want_file /usr/sbin/mkfs.vfat dosfstools
want_file /usr/sbin/sfdisk fdisk
want_file /usr/sbin/sgdisk gdisk
want_file /usr/sbin/veritysetup cryptsetup-bin
want_file /usr/sbin/mke2fs e2fsprogs
want_file /usr/lib/systemd/boot/efi/linuxx64.efi.stub systemd-boot-efi
want_file /usr/share/OVMF/OVMF_CODE_4M.fd ovmf

if [ -n "$need_pkgs" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing packages:$need_pkgs (run as root, or install them)" >&2
        exit 1
    fi
    say "installing$need_pkgs"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need_pkgs >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    say "adding Rust target x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v vhost-device-vsock >/dev/null 2>&1 && [ ! -x "$cargo_bin/vhost-device-vsock" ]; then
    say "installing vhost-device-vsock 0.3.0 (userspace vsock device for QEMU)"
    cargo install --locked --quiet vhost-device-vsock --version 0.3.0
fi

# Fuzzing (scripts/fuzz.sh) builds with cargo-fuzz on the one stable
# toolchain (RUSTC_BOOTSTRAP=1; no second toolchain is fetched).
if ! cargo fuzz --version >/dev/null 2>&1 && [ ! -x "$cargo_bin/cargo-fuzz" ]; then
    say "installing cargo-fuzz 0.13.2"
    cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi
