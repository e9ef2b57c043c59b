# basalt — build, boot and test an immutable Kubernetes node host.
#
#   make run      build everything and boot a node in QEMU (the demo)
#   make run-disk the demo booted from build/disk.img under OVMF
#   make test     every test: lint, unit, host-level and QEMU suites
#   make image    build/vmlinuz + build/initramfs.img
#   make disk     build/disk.img: GPT, ESP with systemd-boot and UKIs, dm-verity root slots
#   make bundle   build/update.bundle: a signed update for slot B (docs/upgrades.md)
#   make kernel-check KCONFIG=path   check a kernel config against kernel-config/basalt.config
#   make bench    benchmarks (bench/results.md)
#
# Overrides: KERNEL=vmlinuz MODULES_DIR=lib/modules/<release> KCONFIG=config
# (default: the Debian kernel, fetched into build/kernel on first use).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := image

BUILD       ?= build
B           := $(abspath $(BUILD))
TARGET      := x86_64-unknown-linux-musl
CARGO       ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)
export CC_x86_64_unknown_linux_musl := musl-gcc

KERNEL      ?= $(B)/kernel/vmlinuz
MODULES_DIR ?= $(B)/kernel/modules
KCONFIG     ?= $(B)/kernel/config
FRAGMENT    := $(abspath kernel-config/basalt.config)
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Reproducible images: every timestamp in the squashfs and cpio is this.
export SOURCE_DATE_EPOCH ?= 0

HOST_BIN    := $(abspath target/release)
NODE_BIN    := $(abspath target/$(TARGET)/release)
MKIMAGE     := $(HOST_BIN)/basalt-mkimage
BASALTCTL   := $(HOST_BIN)/basaltctl
QEMU        := $(HOST_BIN)/basalt-qemu

.PHONY: setup kernel host-tools keys node-bins rootfs image disk bundle run run-disk boot test lint unit vmtest \
        kernel-check bench fuzz fuzz-short robustness clean

setup:
	@scripts/setup.sh

# The Debian kernel package, unmodified, unless KERNEL= says otherwise.
kernel: setup
	@if [ "$(KERNEL)" = "$(B)/kernel/vmlinuz" ]; then kernel-config/fetch-kernel.sh $(B); fi
	@test -f "$(KERNEL)" || { echo "kernel $(KERNEL) not found" >&2; exit 1; }

host-tools: setup
	$(CARGO) build --release --locked -p basalt-mkimage -p basaltctl -p basalt-qemu

# Development keys: generated once per build directory, never committed.
# image.key signs the image manifest (its public half is compiled into
# basalt-init); config.key signs node configs (its public half is in the image).
keys: host-tools
	@mkdir -p $(B)/keys
	@[ -f $(B)/keys/image.key ] || $(BASALTCTL) keygen --out $(B)/keys/image
	@[ -f $(B)/keys/config.key ] || $(BASALTCTL) keygen --out $(B)/keys/config

node-bins: keys
	BASALT_IMAGE_PUBKEY=$(B)/keys/image.pub $(CARGO) build --release --locked --target $(TARGET) \
	    -p basalt-init -p basalt-agent -p kubelet-standin -p basalt-fixtures
	@mkdir -p $(B)/bin
	@for b in basalt-init basalt-agent kubelet basalt-checker basalt-testhands basalt-broken-kubelet; do cp $(NODE_BIN)/$$b $(B)/bin/; done
	@for b in basalt-mkimage basaltctl basalt-qemu; do cp $(HOST_BIN)/$$b $(B)/bin/; done

# The default root filesystem: the agent, the kubelet stand-in, the dev
# config key. Mount points for what basalt-init mounts over it.
rootfs: node-bins
	@rm -rf $(B)/rootfs && mkdir -p $(B)/rootfs
	@cd $(B)/rootfs && mkdir -p proc sys dev run tmp var etc/basalt/trusted-keys sbin usr/bin
	install -m 0755 $(B)/bin/basalt-agent $(B)/rootfs/sbin/basalt-agent
	install -m 0755 $(B)/bin/kubelet $(B)/rootfs/usr/bin/kubelet
	install -m 0644 $(B)/keys/config.pub $(B)/rootfs/etc/basalt/trusted-keys/dev.pub
	install -m 0644 $(B)/keys/image.pub $(B)/rootfs/etc/basalt/image.pub
	@printf 'NAME=basalt\nID=basalt\nVERSION_ID=%s\n' "$(VERSION)" > $(B)/rootfs/etc/os-release

image: kernel rootfs
	$(MKIMAGE) build --init $(B)/bin/basalt-init --rootfs $(B)/rootfs \
	    --modules-dir $(MODULES_DIR) --kconfig $(KCONFIG) --fragment $(FRAGMENT) \
	    --key $(B)/keys/image.key --version $(VERSION) \
	    --image-out $(B)/root.sqsh --manifest-out $(B)/manifest --out $(B)/initramfs.img
	@cp $(KERNEL) $(B)/vmlinuz
	@echo "image: $(BUILD)/vmlinuz $(BUILD)/initramfs.img"

# The disk image (docs/disk-layout.md), built as an ordinary user: no loop
# devices, no mounts. SLOT_SIZE sizes ROOT-A and ROOT-B, VAR_SIZE the empty
# ext4 of VAR; DISK_APPEND adds to the UKIs' command lines; DISK_ARGS passes
# more (basalt-mkimage --help).
# The parts (UKIs, ESP image, initramfs, manifest) stay in build/disk/.
SLOT_SIZE   ?= 256M
VAR_SIZE    ?= 256M
DISK_APPEND ?=
DISK_ARGS   ?=
disk: kernel rootfs
	$(MKIMAGE) disk --init $(B)/bin/basalt-init --rootfs $(B)/rootfs \
	    --modules-dir $(MODULES_DIR) --kconfig $(KCONFIG) --fragment $(FRAGMENT) \
	    --key $(B)/keys/image.key --version $(VERSION) --kernel $(KERNEL) \
	    --slot-size $(SLOT_SIZE) --var-size $(VAR_SIZE) $(if $(DISK_APPEND),--append "$(DISK_APPEND)") $(DISK_ARGS) \
	    --parts-dir $(B)/disk --out $(B)/disk.img
	@echo "disk: $(BUILD)/disk.img"

# The signed update bundle (docs/upgrades.md): the UKI and root slot contents
# that `disk` would put in slot B (BUNDLE_TARGET=A for slot A), with a SHA-256
# per 1 MiB chunk. VERSION_SEQ is the monotonic version anti-rollback
# compares: by default the number of commits on HEAD, so a later commit
# always gives a higher one; set it by hand (VERSION_SEQ=42) for a rebuild of
# an older tree or a build outside git.
VERSION_SEQ   ?= $(shell git rev-list --count HEAD 2>/dev/null || echo 0)
BUNDLE_TARGET ?= B
bundle: kernel rootfs
	$(MKIMAGE) bundle --init $(B)/bin/basalt-init --rootfs $(B)/rootfs \
	    --modules-dir $(MODULES_DIR) --kconfig $(KCONFIG) --fragment $(FRAGMENT) \
	    --key $(B)/keys/image.key --version $(VERSION) --version-seq $(VERSION_SEQ) \
	    --kernel $(KERNEL) --target $(BUNDLE_TARGET) --slot-size $(SLOT_SIZE) \
	    $(if $(DISK_APPEND),--append "$(DISK_APPEND)") \
	    --parts-dir $(B)/bundle --out $(B)/update.bundle
	@echo "bundle: $(BUILD)/update.bundle"

kernel-check: host-tools
	@if [ "$(KCONFIG)" = "$(B)/kernel/config" ]; then $(MAKE) --no-print-directory kernel; fi
	$(MKIMAGE) kernel-check --kconfig $(KCONFIG) --fragment $(FRAGMENT) \
	    $(if $(wildcard $(MODULES_DIR)),--modules-dir $(MODULES_DIR))

# The demo: boot, provision over serial with the dev key, show kubelet, power off.
run: image
	@scripts/demo.sh $(B)

# The same demo booted from build/disk.img under OVMF (about 8 s more).
run-disk: disk
	@scripts/demo.sh $(B) --disk

# Just boot, console on this terminal (Ctrl-C stops QEMU).
boot: image
	BASALT_BUILD=$(B) $(QEMU) --kernel $(B)/vmlinuz --initrd $(B)/initramfs.img \
	    --append "quiet basalt.on_error=poweroff" --prov-socket $(B)/prov.sock --vsock-cid 4

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Unit and host-level tests. basalt-qemu's own tests boot a busybox guest on
# the kernel, so the kernel comes first. docs_links, the one test of the
# suite's crate that needs no VM, checks every relative link in the markdown.
unit: kernel
	BASALT_KERNEL=$(KERNEL) BASALT_KERNEL_MODULES=$(MODULES_DIR) \
	    $(CARGO) test --locked --workspace --exclude basalt-tests
	$(CARGO) test --locked -p basalt-tests --test docs_links

# The QEMU suite: boots real images built from $(BUILD).
vmtest: image
	BASALT_BUILD=$(B) BASALT_MODULES_DIR=$(MODULES_DIR) BASALT_KCONFIG=$(KCONFIG) \
	    $(CARGO) test --locked -p basalt-tests -- --test-threads=2

test: lint unit fuzz-short vmtest

# The robustness suites at full size (docs/robustness.md): the tamper matrix,
# the channel under abuse (50 MiB down the serial line alone takes 15-30
# minutes under TCG) and the crash storms. `make vmtest` runs the same tests
# at their short sizes. Figures: $(BUILD)/test-logs/robustness.txt.
robustness: image
	@mkdir -p $(B)/test-logs && rm -f $(B)/test-logs/robustness.txt
	BASALT_BUILD=$(B) BASALT_MODULES_DIR=$(MODULES_DIR) BASALT_KCONFIG=$(KCONFIG) BASALT_ROBUSTNESS=long \
	    $(CARGO) test --locked -p basalt-tests --test tamper --test abuse --test storms --test state --test upgrade -- --test-threads=2 --nocapture
	@cat $(B)/test-logs/robustness.txt

# Fuzzing (fuzz/README.md): every cargo-fuzz target for FUZZ_SECONDS each,
# then a table of executions and crashes (fuzz/results.md). Needs cargo-fuzz
# (scripts/setup.sh installs it). Non-zero on any crash.
FUZZ_SECONDS ?= 600
fuzz: setup
	scripts/fuzz.sh --seconds $(FUZZ_SECONDS) --out fuzz/results.md

# The short run `make test` does: 30 s per target.
fuzz-short: setup
	scripts/fuzz.sh --seconds 30

# Benchmarks (bench/README.md): basalt-init against a busybox /init, hashing
# against openssl, sizes, memory and apply latency, disk boots. About 20
# minutes under TCG. Writes bench/results.md, bench/results.json, bench/timeline.svg and
# bench/scaling.svg and bench/disk.svg; BENCH_ARGS passes options (basalt-bench run --help).
BENCH_ARGS ?=
bench: image
	$(CARGO) build --release --locked --target $(TARGET) -p basalt-bench --no-default-features --bin bench-handoff
	$(CARGO) build --release --locked -p basalt-bench --bin basalt-bench
	$(HOST_BIN)/basalt-bench run --build $(B) --handoff $(NODE_BIN)/bench-handoff \
	    --fragment $(FRAGMENT) --modules-dir $(MODULES_DIR) --kconfig $(KCONFIG) \
	    --out $(abspath bench) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) target
