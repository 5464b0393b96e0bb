# citeqa — the two commands that matter: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CITEQA := $(VENV)/bin/citeqa
STAMP := $(VENV)/.installed-stamp
SQUAD ?= ../shared/benchmarks/squad

.PHONY: install run test eval eval-squad bench train-reader export-reader eval-reader clean

install: $(STAMP)  ## create .venv and install citeqa with its dev extras (torch 2.13.0 CPU first)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) dev
	touch $(STAMP)

run: install  ## index the bundled articles (if needed) and serve http://127.0.0.1:8000
	$(CITEQA) serve

test: install  ## every test
	$(PY) -m pytest

eval: install  ## our question set, in-process
	$(CITEQA) eval

eval-squad: install  ## the Normans+Rhine SQuAD v2.0 subset
	$(CITEQA) eval --squad $(SQUAD)/dev-v2.0.json --title Normans --title Rhine

bench: install  ## latency and build-time figures (in-process and over HTTP)
	$(PY) scripts/bench.py

train-reader: install  ## train the span reader (CPU subsample by default; see models/reader/README.md)
	$(PY) scripts/train_reader.py --squad-dir $(SQUAD) --output-dir models/reader/checkpoints $(TRAIN_ARGS)

export-reader: install  ## export the trained reader to INT8 ONNX in models/reader/
	$(PY) scripts/export_reader.py --checkpoint models/reader/checkpoints/final --output-dir models/reader $(EXPORT_ARGS)

eval-reader: install  ## SQuAD v2.0 EM/F1 of the shipped reader on the 17 test articles
	$(PY) scripts/eval_reader.py --model-dir models/reader --squad-dir $(SQUAD) $(EVAL_ARGS)

clean:
	rm -rf $(VENV) .eval .pytest_cache .hypothesis
