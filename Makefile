# demolab: a live technical talk that works with no internet.
#   make lab     provision this machine (inventory.ini) and start the lab
#   make test    the whole test suite (fresh offline systemd hosts included)
#   make quick   lint + unit tests, for your own iterations
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -qq
INVENTORY ?= inventory.ini
PLAYBOOK_ARGS ?=
# online (at home: fill the mirrors, record) or offline (at the venue); `make offline` and
# `make online` switch it and keep it in .lab-mode, so a later `make lab` stays in that mode.
LAB_MODE ?= $(shell cat .lab-mode 2>/dev/null)
# The talk (docs/TALK.md): talk/talk.yml unless TALK=path names another, for every target that
# provisions, rehearses, verifies or locks (the talk role validates it on this machine first).
TALK ?=
TALK_FILE := $(abspath $(or $(TALK),talk/talk.yml))
TALK_ARGS := $(if $(TALK),-e talk_file=$(TALK_FILE))
# Exported only when TALK is given (the suites read it): never into a shell that runs the lab's
# own demolab-talk, which reads the installed talk.
ifneq ($(TALK),)
export DEMOLAB_TALK := $(TALK_FILE)
endif
# The lab FFmpeg the media suite builds (once): test runs install it instead of rebuilding.
FFMPEG_CACHE ?= /var/cache/demolab/ffmpeg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Debian packages the controller needs (the test areas add theirs in tests/apt/*.txt).
CONTROLLER_PKGS := python3-venv python3-pip openssh-client iproute2 debootstrap \
	systemd-container zstd apt-cacher-ng sudo

.PHONY: help deps venv wheel lab bundle offline online rehearse ready remove verify lint unit quick lock talk test test-serial test-hosts test-vagrant-replay test-vagrant \
	test-local test-http-cache test-devpi test-media test-apt-mirror test-demo-app test-talk bench-talk bench-rerun clean

help: ## this list: every target, one line each (the default)
	@echo "demolab: a live technical talk that works with no internet. make TARGET:"
	@awk -F ':[^=]*## ' '/^[a-z][a-z0-9 -]*:.*## / { printf "  %-20s %s\n", $$1, $$2 }' $(firstword $(MAKEFILE_LIST))

$(VENV)/.stamp-apt: $(wildcard tests/apt/*.txt) Makefile
	@echo "==> Debian packages for the controller"
	@pkgs="$(CONTROLLER_PKGS) $$(cat tests/apt/*.txt 2>/dev/null | sed 's/#.*//' | xargs)"; \
	missing=$$(for p in $$pkgs; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "    installing: $$missing"; \
	  $(APT) update && $(APT) install --no-install-recommends $$missing >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

deps: $(VENV)/.stamp-apt ## the Debian packages the controller needs (tests/apt/*.txt too)

$(VENV)/.stamp-pip: requirements-dev.txt $(wildcard tests/requirements/*.txt) | $(VENV)/.stamp-apt
	@echo "==> Python toolchain in $(VENV)"
	@[ -x $(BIN)/pip ] || $(PY) -m venv $(VENV)
	@eval "$$($(BIN)/python mirror/upstream_pip.py --conf $(VENV)/pip-upstream.conf)"; \
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt \
	  $$(for f in tests/requirements/*.txt; do [ -f "$$f" ] && echo "-r $$f"; done)
	@touch $@

venv: $(VENV)/.stamp-pip ## the Python toolchain in .venv (Ansible, linters, test packages)

# The demo app's wheel (JS assets inside), rebuilt only when its sources change.
DEMO_APP_SRC := $(shell find demo-app/src demo-app/pyproject.toml demo-app/package-lock.json \
	-type f -not -name '*.pyc' -not -path '*/static/*.min.js' -not -name jquery.flot.js 2>/dev/null)
demo-app/dist/.stamp: $(DEMO_APP_SRC) | $(VENV)/.stamp-apt
	@echo "==> demo app wheel"
	@command -v npm >/dev/null || $(APT) install --no-install-recommends nodejs npm >/dev/null
	@$(MAKE) --no-print-directory -C demo-app wheel
	@touch $@

wheel: demo-app/dist/.stamp ## the demo app's wheel (JS assets inside), rebuilt when its sources change

# BUNDLE=dir: a machine with no internet, provisioned from `make bundle` (the bundle carries
# the demo app's wheel, so nothing is built here).
BUNDLE ?=
lab: venv $(if $(BUNDLE),,wheel) ## provision this machine (inventory.ini) and start the lab; BUNDLE=dir: from a bundle, no internet
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/site.yml $(if $(LAB_MODE),-e lab_mode=$(LAB_MODE)) \
	  $(if $(BUNDLE),-e bundle_dir=$(abspath $(BUNDLE))) $(TALK_ARGS) $(PLAYBOOK_ARGS)

# Export the lab's store (Debian and Python mirrors, FFmpeg artifact, recorded pages, lab CA,
# the demo app's wheel) to DEST, for a machine with no internet: make lab BUNDLE=DEST there.
bundle: venv wheel ## export the lab's store to DEST=dir, for a machine with no internet (make lab BUNDLE=dir there)
	@[ -n "$(DEST)" ] || { echo "make bundle DEST=/path/to/dir (a directory on this machine)"; exit 2; }
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/bundle.yml -e bundle_dir=$(abspath $(DEST)) $(TALK_ARGS) \
	  $(PLAYBOOK_ARGS)

# One switch: apt (the lab's Debian mirror only), pip (devpi --offline-mode), the HTTP(S)
# cache (replay only) and the shell proxy settings flip together; the readiness report ends it.
offline online: venv wheel ## switch the lab offline (at the venue) or online (at home: fill, record), kept in .lab-mode
	@echo "==> switching the lab to $@ mode"
	@$(MAKE) --no-print-directory lab LAB_MODE=$@
	@echo $@ > .lab-mode

# The airplane rehearsal: the lab goes offline, the talk's steps run against its caches, and
# every miss is listed (record those at home: make online).
rehearse: venv ## the airplane rehearsal: the talk offline against the lab's caches, every miss listed
	@[ "$$(cat .lab-mode 2>/dev/null)" = offline ] || $(MAKE) --no-print-directory offline
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/rehearse.yml $(TALK_ARGS) $(PLAYBOOK_ARGS)

ready: venv ## the readiness report (one line per service)
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/ready.yml

# Give the laptop back: every lab service, program, user and file gone, the files the lab
# changed restored byte for byte (roles/lab/README.md); the store is kept unless PURGE=1.
PURGE ?=
remove: venv ## give the laptop back: lab services, programs, users gone, originals restored (PURGE=1: the store too)
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/remove.yml $(if $(PURGE),-e lab_remove_purge=true) $(PLAYBOOK_ARGS)
	@rm -f .lab-mode

verify: venv ## testinfra checks of the provisioned lab
	$(BIN)/pytest -q tests/infra --hosts='ansible://lab' --ansible-inventory=$(INVENTORY) -p no:cacheprovider

lint: venv ## ansible-lint (production profile) and ruff
	@echo "==> ansible-lint (production profile)"
	@$(BIN)/ansible-lint --offline -q
	@echo "==> ruff (every Python file that ships; demo-app with its own settings)"
	@$(BIN)/ruff check tests roles mirror talk plugins
	@cd demo-app && $(CURDIR)/$(BIN)/ruff check .

unit: venv ## the unit tests
	@echo "==> unit tests"
	@$(BIN)/pytest -q tests/unit -p no:cacheprovider

quick: lint unit ## lint + unit tests, for your own iterations

# The talk file, validated (one line naming file, line and step on an error) and listed.
talk: venv ## validate and list the talk file (TALK=path for another)
	@PYTHONPATH=roles/talk/files $(BIN)/python -m demolab_talk show $(TALK_FILE)

# Regenerate mirror/requirements.lock (hashed, what the lab's pip index holds) from
# mirror/requirements.in plus the talk's needs.pip: after changing either. Needs the internet
# (pip reaches the upstream index, never the lab's own).
lock: venv ## regenerate mirror/requirements.lock from mirror/requirements.in + the talk's needs (internet)
	@eval "$$($(BIN)/python mirror/upstream_pip.py --conf $(VENV)/pip-upstream.conf)"; \
	$(BIN)/python mirror/lock.py mirror/requirements.in --talk $(TALK_FILE) -o mirror/requirements.lock

# The foundation lifecycle on a brand-new offline systemd host:
# converge -> idempotence (changed=0) -> check mode -> testinfra verify.
# LIFECYCLE_ARGS: e.g. --no-debian13, or --only-debian13 (make test runs the two side by side).
LIFECYCLE_ARGS ?=
test-hosts: venv wheel ## the lifecycle on fresh offline systemd test hosts (converge, changed=0, check mode, verify, ...)
	@echo "==> fresh systemd test hosts: converge, idempotence, check mode, verify"
	@$(BIN)/python tests/lifecycle.py $(LIFECYCLE_ARGS)

# `make lab` on this very machine (supervisord path where PID 1 is not systemd), then verify;
# then as after a reboot where nothing starts supervisord: the play starts it and must wait for
# every service (devpi-server takes seconds to listen).
test-local: venv ## make lab on this very machine (supervisord without systemd), verify, then again after supervisord stopped
	@echo "==> make lab on this machine, then verify"
	@$(MAKE) --no-print-directory lab PLAYBOOK_ARGS="-e ffmpeg_artifact_source_dir=$(FFMPEG_CACHE) $(PLAYBOOK_ARGS)"
	@$(MAKE) --no-print-directory verify
	@echo "==> as after a reboot with no init to start supervisord: make lab starts it, every service waits for its port"
	@/etc/init.d/supervisor stop >/dev/null; for i in $$(seq 60); do pgrep -f 'bin/supervisord' >/dev/null || break; sleep 1; done
	@$(MAKE) --no-print-directory lab PLAYBOOK_ARGS="-e ffmpeg_artifact_source_dir=$(FFMPEG_CACHE) $(PLAYBOOK_ARGS)"
	@/usr/local/bin/demolab-ready

# The Vagrantfile's provisioner (vagrant/ansible_local.json) replayed on a fresh host set up
# like a Vagrant box: the unprivileged SSH user, sudo, pip, the ansible-playbook line.
test-vagrant-replay: venv ## the Vagrantfile's ansible_local provisioning replayed on a fresh host
	@echo "==> the Vagrantfile's ansible_local provisioning, replayed on a fresh host"
	@$(BIN)/python tests/vagrant/replay.py

# The Vagrantfile for real (not in `make test`: software emulation, ~1 h): a box built from the
# harness's rootfs, libvirt and the VM in a network namespace, provisioned from a harness host's
# mirrors; vagrant up, vagrant provision (changed=0), testinfra, vagrant destroy.
VAGRANT_TEST_ARGS ?=
test-vagrant: venv wheel ## the Vagrantfile for real: vagrant up, provision (changed=0), testinfra (QEMU, ~1 h; not in make test)
	@echo "==> the Vagrantfile: vagrant up, vagrant provision (changed=0), testinfra (libvirt, QEMU)"
	@$(BIN)/python tests/vagrant/run.py $(VAGRANT_TEST_ARGS)

test-demo-app: deps ## the demo app's tests (real Redis, SecantusDB, FFmpeg, Chromium)
	@echo "==> demo app (real Redis, SecantusDB, FFmpeg, Chromium)"
	@$(MAKE) --no-print-directory -C demo-app test

test-devpi: venv ## devpi: real devpi-server on loopback, the role applied to this machine
	@echo "==> devpi (real devpi-server on loopback, the role applied to this machine)"
	@bash tests/devpi/run.sh

test-media: venv ## lab FFmpeg, lab-record, lab-snippet (Xvfb, PulseAudio, xclip)
	@echo "==> media: lab FFmpeg (built once, cached), lab-record, lab-snippet (Xvfb, PulseAudio, xclip)"
	@bash tests/media/run.sh

test-apt-mirror: venv ## apt_mirror: flat repo on one host, offline installs on another
	@echo "==> apt_mirror: flat repo on host A, offline installs on host B"
	@bash tests/apt_mirror/run.sh

test-http-cache: venv ## the proxy.py record/replay cache
	@echo "==> http_cache (proxy.py replay cache)"
	@bash tests/http_cache/run.sh

# lab-play through a real pty (pexpect + pyte) and in tmux, real asciinema recordings (< 1 min).
test-talk: venv ## lab-play on a real pty and in tmux, real asciinema recordings
	@echo "==> talk: lab-play on a real pty (typing, live runs, skip/back, fallbacks, copy, terminal restored)"
	@$(BIN)/pytest -q tests/talk -p no:cacheprovider

# lab-play's keypress-to-character latency through a pty, beside cat's (goal: p99 < 20 ms).
bench-rerun: venv ## a changed=0 rerun of this machine's lab, plain linear beside Mitogen (make lab first)
	@$(BIN)/python tests/bench/rerun.py -- -e ffmpeg_artifact_source_dir=$(FFMPEG_CACHE) $(PLAYBOOK_ARGS)

bench-talk: venv ## lab-play's keypress-to-character latency beside cat's (goal p99 < 20 ms)
	@$(BIN)/python tests/talk/bench_latency.py

# Every suite, in three lanes side by side (tests/lanes.py: this machine | other fresh hosts |
# the Debian 12 lifecycle), after what they share is built once: the toolchain, the demo app's
# wheel and the test hosts' root filesystems.
test: venv wheel ## the whole test suite, in three lanes side by side (fresh offline systemd hosts included)
	@$(BIN)/python tests/harness/labhosts.py base --suite bookworm >/dev/null
	@$(BIN)/python tests/harness/labhosts.py base --suite trixie >/dev/null
	@$(BIN)/python tests/lanes.py
	@echo "==> all tests passed"

# The same suites one after the other (to compare with make test's lanes).
test-serial: venv wheel ## what make test runs, one lane after the other (to compare)
	@$(BIN)/python tests/lanes.py --serial

clean: ## remove .run
	rm -rf .run
