# balloonctl — build, run, test, prove.
#
#   make run     build, then show `balloonctl status` of this machine (read-only)
#   make test    install test deps, build (failing on any warning in our code),
#                run every unit, CLI and umockdev test and check `make install`
#                into a temporary DESTDIR, then the whole suite again under
#                ASan and under TSan
#   make test-asan / test-tsan   only the run under one sanitizer
#   make e2e     boot real guest kernels under QEMU and prove the daemon there
#   make bench   footprint: CPU per idle second, cost per tick, memory
#   make fuzz    every parser under libFuzzer + ASan, FUZZ_SECONDS (30) each
#   make deb     the Debian package, .build-deb/balloonctl_<version>_amd64.deb,
#                checked by lintian and scripts/test-install.sh
#   make install / uninstall   (PREFIX, DESTDIR honoured) the binary `make build`
#                made: no toolchain, no apt (sudo make install after make build)

SWIFT      ?= swift
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
# udev and systemd look in fixed places, whatever PREFIX is. udev reads rules
# only from /etc/udev/rules.d, /run/udev/rules.d and /usr/lib/udev/rules.d
# (there is no /usr/local one). systemd reads units from /etc/systemd/system,
# /usr/local/lib/systemd/system and /usr/lib/systemd/system. So: PREFIX=/usr
# uses the vendor directories; /usr/local puts the unit in its own directory
# and the rule in /etc; any other PREFIX puts both in /etc.
UNITDIR    ?= $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib/systemd/system,/etc/systemd/system)
UDEVDIR    ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/udev/rules.d,/etc/udev/rules.d)
# The Prometheus alert rules (monitoring/) and their promtool tests.
DATADIR    ?= $(PREFIX)/share/balloonctl
MONITORING  = monitoring/balloonctl-alerts.yml monitoring/balloonctl-alerts.test.yml
# Release builds link the Swift runtime statically: the daemon runs on guests
# that are short of memory, and this saves ~3 MiB of resident code pages.
RELEASE_FLAGS ?= -c release --static-swift-stdlib
RELEASE_BIN = .build/release/balloonctl
# `make install` strips the binary it installs (about 28 MiB with symbols);
# the build's own copy keeps them. debian/rules sets INSTALL_STRIP= so that
# dh_strip strips instead and moves the symbols to balloonctl-dbgsym.
INSTALL_STRIP ?= -s

.PHONY: all deps build run test test-asan test-tsan unit-test e2e bench fuzz deb deb-path install uninstall test-install format clean

all: build

deps:
	scripts/deps.sh build

build: deps
	$(SWIFT) build $(RELEASE_FLAGS)

run: build
	$(RELEASE_BIN) status

# Every unit, CLI and umockdev test, the metrics file and the alert rules
# under Debian's node_exporter and promtool (scripts/test-metrics-tools.sh),
# then the install layout of the release build. umockdev-backed suites need the preload; BALLOONCTL_REQUIRE_UMOCKDEV
# turns "skipped for lack of umockdev" into a failure, so CI never skips them.
# Both builds recompile this package's own targets and fail on any warning in
# its code (scripts/build-warning-free.sh).
test:
	scripts/deps.sh test
	SWIFT=$(SWIFT) scripts/build-warning-free.sh debug
	BALLOONCTL_REQUIRE_UMOCKDEV=1 umockdev-wrapper $(SWIFT) test --skip-build
	BALLOONCTL_BIN=.build/debug/balloonctl scripts/test-metrics-tools.sh
	SWIFT=$(SWIFT) RELEASE_FLAGS='$(RELEASE_FLAGS)' scripts/build-warning-free.sh release
	BALLOONCTL_BIN=$(RELEASE_BIN) scripts/test-install.sh
	$(MAKE) test-asan
	$(MAKE) test-tsan

# The whole suite again under a sanitizer, each in its own scratch path
# (.build-asan, .build-tsan), the balloonctl the CLI tests spawn included. Any
# report fails the target with a "test-asan: FAILED" / "test-tsan: FAILED" line.
test-asan:
	scripts/deps.sh test
	SWIFT=$(SWIFT) scripts/test-sanitized.sh address

test-tsan:
	scripts/deps.sh test
	SWIFT=$(SWIFT) scripts/test-sanitized.sh thread

# The release binary as shipped, inside real guest kernels under QEMU.
e2e: build deb
	E2E_BALLOONCTL=$(RELEASE_BIN) E2E_DEB=$(DEB_FILE) e2e/run

bench:
	bench/run

# Every parser under libFuzzer with AddressSanitizer (fuzz/README.md).
fuzz:
	fuzz/run

# The Debian package, built by dpkg-buildpackage from debian/ (debian/rules
# builds with $(SWIFT) and installs with `make install PREFIX=/usr`). Its
# outputs stay in .build-deb/, not in the parent directory. Then lintian (no
# error may remain) and the package's layout (scripts/test-install.sh).
DEB_DIR     = .build-deb
DEB_VERSION = $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB_FILE    = $(DEB_DIR)/balloonctl_$(DEB_VERSION)_amd64.deb
DEB_CHANGES = $(DEB_DIR)/balloonctl_$(DEB_VERSION)_amd64.changes

deb:
	scripts/deps.sh deb
	mkdir -p $(DEB_DIR)
	rm -f $(DEB_DIR)/balloonctl*_$(DEB_VERSION)_*
	$(if $(filter-out default,$(origin SWIFT)),SWIFT='$(SWIFT)') DEB_DESTDIR='$(CURDIR)/$(DEB_DIR)' \
		dpkg-buildpackage -b -us -uc \
		--buildinfo-file=$(DEB_DIR)/balloonctl_$(DEB_VERSION)_amd64.buildinfo --buildinfo-option=-u$(DEB_DIR) \
		--changes-file=$(DEB_CHANGES) --changes-option=-u$(DEB_DIR)
	lintian --fail-on error --info $(DEB_CHANGES)
	BALLOONCTL_DEB=$(DEB_FILE) scripts/test-install.sh
	@echo "deb: $(DEB_FILE)"

# The path `make deb` writes, for scripts (e2e): make -s deb-path
deb-path:
	@echo $(DEB_FILE)

# The unit gets the real paths (@BINDIR@, @SYSCONFDIR@). The settings file is
# installed only if there is none, so an admin's settings are never replaced.
# Nothing is built, started or reloaded: the binary must exist (make build, or
# RELEASE_BIN=<binary>), and the hints say what to run.
install:
	@test -x '$(RELEASE_BIN)' || { echo "install: no $(RELEASE_BIN): build it first with 'make build' (as yourself, then sudo make install), or pass RELEASE_BIN=<binary>" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UDEVDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/default $(DESTDIR)$(DATADIR)
	install -m 0644 $(MONITORING) $(DESTDIR)$(DATADIR)/
	install $(INSTALL_STRIP) -m 0755 $(RELEASE_BIN) $(DESTDIR)$(BINDIR)/balloonctl
	install -m 0644 udev/60-balloonctl.rules $(DESTDIR)$(UDEVDIR)/60-balloonctl.rules
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' udev/balloonctl.service > $(DESTDIR)$(UNITDIR)/balloonctl.service.tmp
	install -m 0644 $(DESTDIR)$(UNITDIR)/balloonctl.service.tmp $(DESTDIR)$(UNITDIR)/balloonctl.service
	rm -f $(DESTDIR)$(UNITDIR)/balloonctl.service.tmp
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default/balloonctl ]; then \
		echo "install: kept the existing $(DESTDIR)$(SYSCONFDIR)/default/balloonctl (the example is udev/balloonctl.default)"; \
	else \
		echo "install -m 0644 udev/balloonctl.default $(DESTDIR)$(SYSCONFDIR)/default/balloonctl"; \
		install -m 0644 udev/balloonctl.default $(DESTDIR)$(SYSCONFDIR)/default/balloonctl; \
	fi
	@echo "install: done. Settings: $(SYSCONFDIR)/default/balloonctl (the shipped example sets BALLOONCTL_MODE=enforce)."
	@echo "install: to start it: systemctl daemon-reload && udevadm control --reload && systemctl enable --now balloonctl.service"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/balloonctl $(DESTDIR)$(UNITDIR)/balloonctl.service $(DESTDIR)$(UDEVDIR)/60-balloonctl.rules
	rm -f $(addprefix $(DESTDIR)$(DATADIR)/,$(notdir $(MONITORING)))
	rmdir $(DESTDIR)$(DATADIR) 2>/dev/null || true
	@echo "uninstall: kept $(DESTDIR)$(SYSCONFDIR)/default/balloonctl (your settings); delete it by hand if you no longer want it"
	@echo "uninstall: if the service was enabled, first run: systemctl disable --now balloonctl.service; then systemctl daemon-reload && udevadm control --reload"

# Installs into temporary DESTDIRs and checks every path, mode and the unit.
# BALLOONCTL_BIN=<binary> skips the release build.
test-install:
	scripts/test-install.sh

format:
	$(SWIFT) format -i -r Sources Tests Package.swift

clean:
	rm -rf .build .build-asan .build-tsan .build-deb fuzz/.build
