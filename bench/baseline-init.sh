#!/bin/sh
# basalt-bench baseline /init (busybox): the work basalt-init does, as a script.
set -e
mark() { echo "bench-mark $1" > "$kmsg"; }
kmsg=/dev/kmsg
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mount -t securityfs -o nosuid,nodev,noexec securityfs /sys/kernel/security
mount -t tmpfs -o nosuid,nodev,noexec,mode=0755,size=20% run /run
mark mount-early
@INSMOD@
mark modules
set -- $(sha256sum /basalt/root.sqsh)
[ "$1" = @IMAGE_SHA256@ ] || { echo "baseline: root image digest mismatch: $1"; exit 1; }
mark verify-image
loop=$(losetup -f)
losetup -r "$loop" /basalt/root.sqsh
mount -t squashfs -o ro,nosuid,nodev "$loop" /newroot
mark mount-root
mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=64m tmpfs /newroot/tmp
mount -t tmpfs -o nosuid,nodev,mode=0755,size=50% tmpfs /newroot/var
mark mount-writable
for m in /dev /proc /sys /run; do mount --move "$m" "/newroot$m"; done
kmsg=/newroot/dev/kmsg
mark switch-root
echo integrity > /newroot/sys/kernel/security/lockdown
mark lockdown
exec switch_root /newroot @HANDOFF@
