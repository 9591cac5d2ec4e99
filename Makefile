# Two commands on a fresh machine: `make demo` and `make test`. Everything else builds on these.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The scikit-learn image's Python and packages (Python 3.10, sagemaker-training, sagemaker-containers):
# what runs the training step in the embedded run and serves the contract tests (local/image_env.py).
IMAGE_STAMP := .venv-image/.installed.json

.PHONY: install image-env test lint typecheck pytest workflows-lint demo serve bench clean

install: $(STAMP) $(IMAGE_STAMP)

# The first run says what it installs and how long that takes, then shows pip's line per package;
# later runs find the stamp and skip it (it is redone only when a requirements file changes).
# One command per recipe line (no continuations): tests read `make -n` output line by line.
STARTED := $(shell date +%s)
$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@echo "==> First run: installing $$(grep -c '==' constraints.txt) pinned packages into $(VENV)"
	@echo "    (Pulumi SDKs, boto3, scikit-learn, pandas, moto, pytest, pyright, ruff, ...; see constraints.txt)."
	@echo "    This takes 1 to 3 minutes on a 2-core machine; pip lists each package as it goes."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)
	@echo "==> Installed in $$(( $$(date +%s) - $(STARTED) )) s; later runs skip this step"

image-env: $(IMAGE_STAMP)

$(IMAGE_STAMP): $(STAMP) local/image-requirements.txt local/image-constraints.txt
	$(PY) -m local.image_env

test: $(STAMP) $(IMAGE_STAMP) workflows-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/pyright

pytest: $(STAMP)
	$(PY) -m pytest

# GitHub workflows: actionlint (syntax, expressions, shellcheck when installed) and zizmor's security
# audits, offline so no GitHub token is needed. Both must report nothing.
workflows-lint: $(STAMP)
	$(VENV)/bin/actionlint
	$(VENV)/bin/zizmor --offline --no-progress .github/workflows

demo: $(STAMP) $(IMAGE_STAMP)
	$(PY) -m local.demo

# make serve MODEL=path/to/model-dir-or-model.tar.gz [PORT=8080]
serve: $(STAMP)
	$(PY) -m local.model_server --model "$(MODEL)" --port "$(or $(PORT),8080)"

bench: $(STAMP) $(IMAGE_STAMP)
	$(PY) -m local.bench --output bench-results.json

clean:
	rm -rf $(VENV) .venv-image .pytest_cache .ruff_cache .hypothesis .demo bench-results.json
