# The README's two commands. Each sets itself up (idempotent): a .venv with the CI pins.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat constraints-ci.txt setup.py | cksum | cut -d' ' -f1)

MRICRON := /usr/share/mricron/templates/ch2.nii.gz

.PHONY: setup realdata browser test demo clean

setup: $(STAMP)

$(STAMP): constraints-ci.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints-ci.txt --upgrade pip
	$(PY) -m pip install -q -c constraints-ci.txt torch torchvision
	$(PY) -m pip install -q -c constraints-ci.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps dinov2==0.0.1.dev2  # Meta's DINOv2 code, parity tests only
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Debian's mricron-data (real MRI + atlas) for the demo and the real-data test; optional elsewhere.
realdata:
	@test -f $(MRICRON) || (command -v apt-get >/dev/null && \
	  { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq mricron-data; }) \
	  || echo "!! could not install mricron-data (not Debian?): the demo uses synthetic data instead"

# Debian's chromium: tests/test_comparison_e2e.py opens the HTML report in a real headless browser.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || (command -v apt-get >/dev/null && \
	  { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }) \
	  || echo "!! could not install chromium (not Debian?): the HTML report's browser test will fail"

# pytest-xdist workers, each pinned to a core with the nnU-Net processes it starts (tests/README.md)
TEST_WORKERS ?= 2

test: setup realdata browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

demo: setup realdata
	HF_HUB_OFFLINE=1 $(VENV)/bin/nnunet-dino demo --output demo_output

clean:
	rm -rf demo_output build *.egg-info
