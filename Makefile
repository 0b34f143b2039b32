# lanmesh — every target does its own set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PKGS := wireguard-go wireguard-tools iproute2 nftables iperf3 iputils-ping procps \
            mosquitto mosquitto-clients qemu-system-x86 busybox-static kmod shellcheck \
            python3-venv dpkg-dev systemd iptables libsodium23
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: all deps venv test unit fuzz demo bench ipk apk deb clean

all: test

# Debian packages: installed only when one is missing, always without recommends.
deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(STAMP)

test: deps venv
	$(PY) -m pytest -q tests

unit: venv
	$(PY) -m pytest -q tests -m 'not netns and not vm'

# Every parser of outside input, 1,000,000 mutated inputs each (make test runs 1,500)
fuzz: venv
	LANMESH_FUZZ_CASES=$${LANMESH_FUZZ_CASES:-1000000} $(PY) -m pytest -q tests/test_fuzz.py

demo: deps venv
	$(PY) -m lanmesh_lab.demo

bench: deps venv
	$(PY) bench/run_all.py

# OpenWrt packages without the SDK (architecture all, byte-reproducible with
# SOURCE_DATE_EPOCH): 24.10's ipk (opkg) and 25.x's apk (apk-tools v3: APK=/path/to/apk,
# else ../shared/tools/openwrt/apk). Same files, dependencies and scripts.
ipk: venv
	$(PY) packaging/build_ipk.py --out dist

apk: venv
	$(PY) packaging/build_apk.py --out dist

# Raspberry Pi OS / Debian package with a systemd unit and the vendored pure-Python deps
deb: deps venv
	$(PY) packaging/build_deb.py --out dist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
