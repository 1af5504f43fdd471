# The README's Quick start: `make demo` and `make test`, each from a fresh machine.
PY ?= python3
VENV ?= .venv
# The set of versions CI tests; `make CONSTRAINTS= ...` installs from pyproject's ranges instead.
CONSTRAINTS ?= constraints.txt
FASHION_MNIST_DEB_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= workdirs/demo

.PHONY: demo test setup data clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev,aot]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no download at run time).
# Set FASHION_MNIST_DIR to use IDX files from elsewhere instead.
data:
	@if [ -n "$$FASHION_MNIST_DIR" ] || [ -f $(FASHION_MNIST_DEB_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: $${FASHION_MNIST_DIR:-$(FASHION_MNIST_DEB_DIR)}"; \
	else \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; \
	fi

demo: setup data
	JAX_PLATFORMS=cpu $(VENV)/bin/python -m big_vision_style.tools.demo --workdir $(DEMO_WORKDIR)

# JAX_PLATFORMS=cpu: with libtpu installed (the aot extra) jax would otherwise probe for a TPU.
# Two pytest workers (pytest-xdist), a module each at a time: most of a test's time is XLA
# compiling on one core. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: setup data
	JAX_PLATFORMS=cpu $(VENV)/bin/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) tests

clean:
	rm -rf $(VENV) workdirs
