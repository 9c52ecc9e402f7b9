# The one way into the repository's tasks. Every target installs what it needs
# when it is missing, so a fresh clone works: `make test`, `make run`.
#
# Python tools come from PyPI into .venv (exact versions: constraints.txt);
# buf comes from npm into tools/node_modules (exact version: tools/package-lock.json).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := tools/node_modules/.bin/buf
# Generated directories checked for drift by proto-check.
GENERATED := flou_grpc/_proto clients

.DEFAULT_GOAL := help
.PHONY: help install go-tools proto proto-check lint fmt typecheck test run container-check bench lock clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "flou-grpc needs Python >= 3.11; set PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt 'pip>=24'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e clients/python -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv with the package (editable) and the dev tools

$(BUF): tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	@touch $@

GO_APT := golang-go golang-google-grpc-dev golang-google-protobuf-dev \
	golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc protobuf-compiler

go-tools: ## install Debian's Go toolchain and protoc plugins (apt), when missing
	@command -v go >/dev/null && command -v protoc-gen-go >/dev/null \
		&& command -v protoc-gen-go-grpc >/dev/null \
		|| { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		     $$SUDO apt-get install -y --no-install-recommends $(GO_APT) \
		     || { $$SUDO apt-get update -qq \
		          && $$SUDO apt-get install -y --no-install-recommends $(GO_APT); }; }

proto: $(STAMP) go-tools ## regenerate flou_grpc/_proto and the clients from protos/
	$(BIN)/python tools/gen_protos.py
	$(BIN)/python tools/gen_typescript.py
	$(BIN)/python tools/gen_go.py

proto-check: proto ## fail if the committed generated code differs from a regeneration
	@git diff --exit-code --stat -- $(GENERATED) \
		|| { echo "generated code is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- $(GENERATED))" \
		|| { git status --short -- $(GENERATED); \
		     echo "untracked generated files: run 'make proto' and commit"; exit 1; }

lint: $(STAMP) $(BUF) ## ruff (lint + format check), buf lint and hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint
	$(BIN)/hadolint Dockerfile

fmt: $(STAMP) ## format and auto-fix the Python code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## mypy --strict on flou_grpc (generated code excluded)
	$(BIN)/mypy

test: $(STAMP) ## run the test suite, with branch coverage (engine/ must stay >= 95%)
	$(BIN)/pytest --cov --cov-report= $(PYTEST_ARGS)
	$(BIN)/coverage report --include='flou_grpc/engine/*' --fail-under=95

DEMO_APP ?= examples.orders,examples.crawl

run: $(STAMP) ## run the server with the demo machines on 127.0.0.1:50051, SQLite ./flou.db (Ctrl-C to stop)
	@echo "flou-grpc: serving the demo machines ($(DEMO_APP)) on 127.0.0.1:50051, instances in ./flou.db"
	@echo "  drive it from another shell (README, 'Try the demo'):"
	@echo "    $(BIN)/flou-grpc describe order"
	@echo "    $(BIN)/flou-grpc start order --id order-1 --payload '{\"items\": [\"book\"], \"total\": 42.5}'"
	@echo "    $(BIN)/flou-grpc watch order-1"
	@echo "    grpcurl -plaintext 127.0.0.1:50051 list flou.v1.FlouService"
	FLOU_APP="$${FLOU_APP:-$(DEMO_APP)}" $(BIN)/flou-grpc serve

container-check: $(STAMP) ## build the Dockerfile with buildah and run the image (root, Debian)
	$$([ "$$(id -u)" = 0 ] || echo sudo) bash tools/container_check.sh

bench: $(STAMP) ## run every benchmark under bench/ and print its figures
	@for script in bench/*_bench.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lock: ## re-resolve constraints.txt from pyproject.toml (needs the registries)
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check 'pip>=24' \
		-e clients/python -e '.[dev]'
	{ echo "# Exact versions for make install and CI; regenerate with 'make lock'."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable --all | grep -v '^flou-grpc'; } > constraints.txt
	rm -rf .venv-lock

clean: ## remove the virtualenv, node tools and caches
	rm -rf $(VENV) tools/node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
