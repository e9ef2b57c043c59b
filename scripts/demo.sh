#!/bin/bash
# The `make run` demo: boot a basalt node in QEMU, provision it with a signed
# config over the serial line, show kubelet running, power it off.
#
#   scripts/demo.sh BUILD_DIR            # -kernel/-initrd boot (make run)
#   scripts/demo.sh BUILD_DIR --disk     # BUILD_DIR/disk.img under OVMF (make run-disk)
#
# Everything an operator would type is a basaltctl command below; the guest
# has no shell. The console goes to BUILD_DIR/run/console.log (and, with
# DEMO_CONSOLE=1, to this terminal as well).
set -euo pipefail

build=$(cd "${1:?usage: demo.sh BUILD_DIR [--disk]}" && pwd)
mode=${2:-kernel}
case $mode in
    kernel | --disk) ;;
    *) echo "usage: demo.sh BUILD_DIR [--disk]" >&2; exit 2 ;;
esac
run=$build/run
bin=$build/bin
ctl="$bin/basaltctl --endpoint unix:$run/prov.sock"
key=$build/keys/config.key
step=0
say() { step=$((step + 1)); printf '\n\033[1m[%d/7] %s\033[0m\n' "$step" "$*"; }

rm -rf "$run" && mkdir -p "$run"
qemu_pid=
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# Wait until the console log shows $1, for at most $2 seconds.
wait_console() {
    local deadline=$((SECONDS + $2))
    until grep -q -- "$1" "$run/console.log" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ] || ! kill -0 "$qemu_pid" 2>/dev/null; then
            echo "demo: gave up waiting for \"$1\"; console follows" >&2
            tail -n 40 "$run/console.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

if [ "$mode" = --disk ]; then
    # OVMF boots the disk: systemd-boot, the ROOT-A UKI (its own command
    # line), dm-verity over the slot. The disk's writes go to an overlay.
    say "Booting basalt from ${build#$PWD/}/disk.img under OVMF (no network; console in ${run#$PWD/}/console.log)"
    boot=(--disk "$build/disk.img")
else
    say "Booting basalt in QEMU (no network; console in ${run#$PWD/}/console.log)"
    boot=(--kernel "$build/vmlinuz" --initrd "$build/initramfs.img" --append "quiet basalt.on_error=poweroff")
fi
BASALT_BUILD=$build "$bin/basalt-qemu" "${boot[@]}" --prov-socket "$run/prov.sock" \
    --vsock-cid 4 --work-dir "$run/vm" --console-log "$run/console.log" \
    </dev/null >"$run/qemu.out" 2>"$run/qemu.err" &
qemu_pid=$!
if [ "${DEMO_CONSOLE:-0}" = 1 ]; then tail -n +1 -F "$run/console.log" 2>/dev/null & fi
wait_console "handing off to" 180
grep -h "pid1 phase\|through dm-verity" "$run/console.log" | sed 's/^/    /'

say "Waiting for the agent in maintenance mode, over the serial line"
wait_console "basalt-agent: ready" 60
$ctl status | sed 's/^/    /'

say "Signing the example config for this node with the development key"
node=$($ctl node-id)
sed "s/REPLACE-WITH-NODE-ID/$node/" docs/examples/node.json > "$run/node.json"
$bin/basaltctl sign --key "$key" "$run/node.json" > "$run/node.envelope.json"
echo "    node $node, generation $(grep -o '"generation": [0-9]*' "$run/node.json" | grep -o '[0-9]*$'), key $(basename "$key")"

say "Applying it over the serial line"
$ctl apply --envelope "$run/node.envelope.json" | sed 's/^/    /'

say "Status: kubelet running (the stand-in: no kubelet binary is obtainable here)"
deadline=$((SECONDS + 30))
until $ctl --json status | grep -q '"state": *"running"'; do
    [ $SECONDS -lt $deadline ] || { echo "demo: kubelet did not reach running" >&2; exit 1; }
    sleep 0.5
done
$ctl status | sed 's/^/    /'

say "The last lines of kubelet's log"
sleep 1
$ctl logs kubelet -n 8 | sed 's/^/    /'

say "Powering off with a signed command bound to this node and a fresh challenge"
$ctl poweroff --key "$key" | sed 's/^/    /'
for _ in $(seq 1 300); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$qemu_pid" 2>/dev/null; then
    echo "demo: the VM did not power off within 30 s" >&2
    exit 1
fi
grep -h "shutdown: power off after" "$run/console.log" | sed 's/^/    /'
echo "    QEMU exited; the node is off."
