# citeqa — the two commands that matter: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CITEQA := $(VENV)/bin/citeqa
STAMP := $(VENV)/.installed-stamp
SQUAD ?= ../shared/benchmarks/squad

.PHONY: stress train-retriever train-reranker check-container check-install install run test test-engines eval eval-squad eval-extractors eval-models bench bench-scale distill-reranker train-reader export-reader fit-abstention eval-reader clean

install: $(STAMP)  ## create .venv and install citeqa with its dev extras (torch 2.13.0 CPU first)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) dev
	touch $(STAMP)

run: install  ## index the bundled articles (if needed) and serve http://127.0.0.1:8000
	$(CITEQA) serve

test: install  ## every test, the import layering, declared dependencies and the Dockerfile's lint
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry index service eval citeqa
	$(VENV)/bin/hadolint Dockerfile
	$(PY) -m pytest

test-engines: install  ## the `engine` suite against the real Milvus binary, milvus==2.3.5 (root: it runs in its own network namespace; ~4 min)
	$(PY) -m pip install --quiet "milvus==2.3.5"
	$(PY) -m pytest -m engine

stress: install  ## SIGKILL loops (citeqa index, serve during an upload) and the 60 s load + overload test (~9 min); see docs/reliability.md
	$(PY) scripts/stress.py $(STRESS_ARGS)

check-install:  ## the plain install users run (no extras) in a fresh venv, smoke-tested (~2 min)
	bash scripts/check_install.sh

check-container:  ## the Dockerfile's steps in a debootstrapped Debian bookworm root (root; ~4 min cold, ~3 min warm)
	bash scripts/check_container.sh

eval: install  ## our question set, in-process
	$(CITEQA) eval

eval-squad: install  ## the Normans+Rhine SQuAD v2.0 subset
	$(CITEQA) eval --squad $(SQUAD)/dev-v2.0.json --title Normans --title Rhine

eval-extractors: install  ## sentence and reader extractors side by side: our set, then four SQuAD test articles
	$(CITEQA) eval --ablation hybrid+rerank --ablation hybrid+rerank+reader
	$(CITEQA) eval --ablation hybrid+rerank --ablation hybrid+rerank+reader --squad $(SQUAD)/dev-v2.0.json --title Amazon_rainforest --title Black_Death --title Pharmacy --title Jacksonville,_Florida

eval-models: install  ## issue 12's models side by side: defaults / bi-encoder / cross-encoder / both on our set, SQuAD test17, SQuADShifts new_wiki, reddit, amazon -> docs/results/eval-models.{json,md} (hours; EVAL_MODELS_ARGS, e.g. --sets own --limit 5)
	OMP_NUM_THREADS=1 $(PY) scripts/eval_models.py $(EVAL_MODELS_ARGS)

bench: install  ## latency and build-time figures (in-process and over HTTP)
	$(PY) scripts/bench.py --http-runs 3 $(BENCH_ARGS)

bench-scale: install  ## FAISS flat/HNSW/IVF and Milvus Lite at 10k/100k/1M passages (docs/scaling.md): ~35 min; the first run also embeds ~34k real passages (~70 min, cached in .bench/scale)
	OMP_NUM_THREADS=1 $(PY) scripts/bench_scale.py $(BENCH_SCALE_ARGS)

distill-reranker: install  ## distil the 12-layer cross-encoder into the 6-layer one in models/reranker (~15 + ~50 min, one thread)
	OMP_NUM_THREADS=1 $(PY) scripts/distill_reranker.py --squad-dir $(SQUAD) --out models/reranker $(DISTILL_ARGS)

# The span reader's three stages as file targets, like the two below: a rerun skips a finished
# stage and resumes a stopped one from its checkpoint.
RD := models/reader
TRAIN_RD = OMP_NUM_THREADS=1 $(PY) scripts/train_reader.py --squad-dir $(SQUAD) --neg-ratio 0.2 --epochs 1 --batch-size 16 --threads 1
resume_rd = $(if $(wildcard $(RD)/$(1)/checkpoint.pt),--resume)

train-reader: install $(RD)/checkpoints3/final/train_summary.json  ## train the span reader on CPU in three stages (~50 + ~40 + ~80 min on one thread; a rerun skips finished stages and resumes a stopped one)

$(RD)/checkpoints/final/train_summary.json: | $(STAMP)
	$(TRAIN_RD) --output-dir $(RD)/checkpoints --max-examples 19000 --lr 8e-5 --seed 13 $(call resume_rd,checkpoints) $(TRAIN_ARGS)

$(RD)/checkpoints2/final/train_summary.json: $(RD)/checkpoints/final/train_summary.json
	$(TRAIN_RD) --base-model $(RD)/checkpoints/final --output-dir $(RD)/checkpoints2 --max-examples 15000 --lr 5e-5 --seed 14 $(call resume_rd,checkpoints2) $(TRAIN_ARGS)

$(RD)/checkpoints3/final/train_summary.json: $(RD)/checkpoints2/final/train_summary.json
	$(TRAIN_RD) --base-model $(RD)/checkpoints2/final --output-dir $(RD)/checkpoints3 --max-examples 25000 --lr 4e-5 --seed 15 $(call resume_rd,checkpoints3) $(TRAIN_ARGS)

# citeqa-retriever's two stages as file targets, like the cross-encoder's below: a rerun skips a
# finished stage and resumes a stopped one from its checkpoint.
RT := models/retriever/work
TRAIN_RT = OMP_NUM_THREADS=1 $(PY) scripts/train_retriever.py --squad-dir $(SQUAD)
resume_rt = $(if $(wildcard $(RT)/stage$(1)/checkpoint.pt),--resume)

train-retriever: install $(RT)/stage2/final/train_summary.json  ## the question -> sentence bi-encoder (issue 12): data, stages 1 and 2 (~70 min each on an idle thread; a rerun skips finished stages and resumes a stopped one), INT8 ONNX in models/retriever/
	OMP_NUM_THREADS=1 $(PY) scripts/export_retriever.py --squad-dir $(SQUAD) --model $(RT)/stage2/final --out-dir models/retriever

$(RT)/data/train.jsonl: | $(STAMP)
	$(TRAIN_RT) --prepare-only

$(RT)/stage1/final/train_summary.json: $(RT)/data/train.jsonl
	$(TRAIN_RT) --stage 1 --examples 38400 --batch-size 64 $(call resume_rt,1)

$(RT)/stage2/final/train_summary.json: $(RT)/stage1/final/train_summary.json
	$(TRAIN_RT) --stage 2 --offset 38400 --examples 38400 --batch-size 64 --base-model $(RT)/stage1/final $(call resume_rt,2)

# The answer-sentence cross-encoder's lineage, one file target per stage so that a rerun skips
# finished stages and resumes an interrupted one from its checkpoint. Stage 2 (distillation from
# the teacher) was a dead end and is not in the lineage: stage 3 starts from stage 1.
RA := models/reranker_answer/work
TRAIN_RA = OMP_NUM_THREADS=1 $(PY) scripts/train_reranker.py --squad-dir $(SQUAD) --threads 1 --no-export
resume_ra = $(if $(wildcard $(RA)/stage$(1)/checkpoint.pt),--resume)

train-reranker: install $(RA)/stage5/final/train_summary.json  ## the answer-sentence cross-encoder (issue 12): pairs, then stages 1, 3, 4, 5 (~6 + 24 + 37 + 38 + 80 min on one thread; a rerun skips finished stages and resumes a stopped one), INT8 ONNX in models/reranker_answer/
	OMP_NUM_THREADS=1 $(PY) scripts/train_reranker.py --squad-dir $(SQUAD) --export --model $(RA)/stage5/final --out models/reranker_answer

$(RA)/data/pairs.jsonl: | $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/train_reranker.py --prepare-only --squad-dir $(SQUAD)

$(RA)/stage1/final/train_summary.json: $(RA)/data/pairs.jsonl
	$(TRAIN_RA) --stage 1 --examples 14400 --unanswerable 1200 $(call resume_ra,1)

$(RA)/stage3/final/train_summary.json: $(RA)/stage1/final/train_summary.json
	$(TRAIN_RA) --stage 3 --offset 43200 --examples 28800 --unanswerable 2400 --base-model $(RA)/stage1/final $(call resume_ra,3)

$(RA)/stage4/final/train_summary.json: $(RA)/stage3/final/train_summary.json
	$(TRAIN_RA) --stage 4 --offset 72000 --examples 28800 --unanswerable 2400 --base-model $(RA)/stage3/final $(call resume_ra,4)

$(RA)/stage5/final/train_summary.json: $(RA)/stage4/final/train_summary.json
	$(TRAIN_RA) --stage 5 --offset 100800 --examples 57600 --unanswerable 4800 --base-model $(RA)/stage4/final $(call resume_ra,5)

export-reader: install  ## export the trained reader to INT8 ONNX in models/reader/
	OMP_NUM_THREADS=1 $(PY) scripts/export_reader.py --model models/reader/checkpoints3/final --out-dir models/reader --json models/reader/export_dev.json $(EXPORT_ARGS)

fit-abstention: install  ## refit the reader extractor's abstention model (models/reader/abstention.json) after a new reader (~7 min)
	$(PY) scripts/reader_abstention.py --squad-dir $(SQUAD) --json docs/results/reader-abstention.json --write models/reader

eval-reader: install  ## SQuAD v2.0 EM/F1 of the shipped reader on the 17 test articles
	OMP_NUM_THREADS=1 $(PY) scripts/eval_reader.py --model-dir models/reader --squad-dir $(SQUAD) --latency --json models/reader/eval.json $(EVAL_ARGS)

clean:
	rm -rf $(VENV) .eval .pytest_cache .hypothesis
