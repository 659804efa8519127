# selfchat: `make run` sets up what is missing, then rebuilds the pipeline with DVC; `make test` tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
UV_INSTALL := $(UV) pip install --python $(PY) $(FIND_LINKS) -c requirements/constraints.txt
# llama-cpp-python ships as source only: build its wheel once per machine (~5 min on 2 cores) into a
# wheelhouse outside the clone, and install from there afterwards.
WHEELHOUSE ?= $(HOME)/.cache/selfchat/wheels
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==//p' requirements/teacher.txt)
# Portable CPU build of llama.cpp: -march=native emits instructions (AMX) some VMs trap, and the built
# wheel is cached and reused on other machines.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AMX_TILE=OFF

# Offline by default and no telemetry (tasks/services/runtime.py sets the same for `python -m flows.*`).
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PREFECT_HOME := $(CURDIR)/.prefect
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site_cache
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run distill pipeline sweep promote up deploy export serve chat down test test-slow lint mlflow-ui prefect-ui plots ui-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/constraints.txt requirements/teacher.txt requirements/assets.txt \
  requirements/reference.txt
	test -x $(PY) || python3 -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet "uv>=0.9,<1"
	$(UV_INSTALL) -e '.[dev]'
	test -n "$$(ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl 2>/dev/null)" || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-deps -w $(WHEELHOUSE) "llama-cpp-python==$(LLAMA_VERSION)"
	$(UV_INSTALL) --find-links $(WHEELHOUSE) -r requirements/teacher.txt
	$(UV) pip install --python $(PY) --no-deps -r requirements/assets.txt
	$(UV) pip install --python $(PY) --no-deps -r requirements/reference.txt
	touch $@

# The whole pipeline with DVC: only stages whose inputs changed run; outputs go to the DVC cache and the
# local remote. One MLflow parent run groups the stages of this invocation; every stage reports to the
# project's one Prefect server (started here if it is not running; `make down` stops it).
run: install up
	SELFCHAT_PIPELINE_ID=$$(date -u +%Y%m%dT%H%M%S) dvc repro register
	dvc push --quiet --with-deps register
	@echo "Done. Look: dvc metrics show | make mlflow-ui | make prefect-ui | reports/data_docs/index.html | reports/eval/"

# The same pipeline as one Prefect flow (what a Prefect deployment schedules).
# One Self-Distill-with-Feedback round from the registry's champion (Baize v2): the champion samples, the
# judge scores, the best answers train a challenger, which is evaluated and registered (README: Self-distillation)
distill: install up
	SELFCHAT_PIPELINE_ID=$$(date -u +%Y%m%dT%H%M%S) dvc repro distill-train
	dvc push --quiet distill-train

pipeline: install up
	$(PY) -m flows.pipeline

# A LoRA sweep as one Prefect flow (sweep.grid in params.yaml; members are DVC experiments), then one decision.
sweep: install up
	$(PY) -m flows.sweep

# Decide the pending members of a `dvc exp run --queue` sweep: comparison report, at most one promotion.
promote: install up
	$(PY) -m flows.promote

# The project's local Prefect server on 127.0.0.1, the worker that runs its deployments, and collect.shards
# workers for collection shards when collect.shards > 1 (all reused when
# running; the server's database is .prefect/).
up: install
	@$(PY) -m tasks.services.prefect_server up

# prefect.yaml's deployments (nightly pipeline, corpus growth, rank sweep) on the local work pool `selfchat`.
deploy: up
	@$(PY) -m tasks.services.deployments

# The champion (serve.alias) as a GGUF for llama.cpp/Ollama, checked against its evaluated answers: exports/.
export: install
	$(PY) -m flows.export

# The champion (serve.alias) as an OpenAI-compatible chat endpoint on 127.0.0.1 (serve.port); Ctrl-C stops it.
# serve.engine gguf (the default) runs its export (made first if missing), transformers the merged model.
serve: install
	$(PY) -m flows.serve

# A terminal chat with what `make serve` serves (in another terminal).
chat: install
	@$(PY) -m tasks.serve.chat

down:
	@test ! -x $(PY) || $(PY) -m tasks.services.prefect_server down
	@test ! -x $(PY) || $(PY) -m tasks.services.mlflow_ui down

# two workers, a file each at a time (a module's fixtures are built once): the long integration files
# wait on subprocesses and imports more than on the cores
test: install
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile

test-slow: install
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check flows tasks tests bench

# The MLflow UI in the background (lean: one worker, no job runner); returns once it answers, prints the
# runs page of the selfchat experiment in model-training mode. `make down` stops it.
mlflow-ui: install
	@$(PY) -m tasks.services.mlflow_ui up

# DVC's plots as one HTML page that works offline (Vega from a PyPI package instead of a CDN).
plots: install
	dvc plots show -o dvc_plots
	$(PY) -m tasks.services.offline_assets dvc_plots

# After `make run`: MLflow, the registry, Prefect and Data Docs opened in a headless Chromium (apt-get install
# chromium), each checked for what it must show; screenshots in docs/screenshots/.
ui-check: install up
	$(PY) -m tests.ui_check --screenshots docs/screenshots

# The UI of the same server the stages report to.
prefect-ui: up

clean: down
	rm -rf .prefect mlflow.db mlartifacts logs exports
