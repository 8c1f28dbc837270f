# Two commands a new user needs: `make demo` and `make test`. Both set up .venv/ themselves,
# with every optional extra: charts (matplotlib), postgres (psycopg), sandbox (Flask emulators).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DISTS := -e '.[dev,charts,postgres,sandbox]' -e 'connectors/zendesk[sandbox]' \
	-e 'connectors/freshdesk[sandbox]' -e 'connectors/zohodesk[sandbox]' -e webhooks \
	-e 'examples/acmedesk[sandbox]'
PROJECT_FILES := pyproject.toml connectors/zendesk/pyproject.toml connectors/freshdesk/pyproject.toml \
	connectors/zohodesk/pyproject.toml webhooks/pyproject.toml examples/acmedesk/pyproject.toml

.PHONY: demo test lint typecheck unit venv clean dist docs

venv: $(STAMP)

$(STAMP): $(PROJECT_FILES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(DISTS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/escbridge demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict src connectors/zendesk/src connectors/freshdesk/src connectors/zohodesk/src \
		webhooks/src examples/acmedesk/src scripts/docs_reference.py scripts/version.py scripts/dist.py

unit: $(STAMP)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-nginx.sh
	$(BIN)/python -m pytest -q

# The documentation site into site/; --strict: a broken link, anchor, nav entry or snippet fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck docs unit

# The wheels and sdists of the five distributions, into dist/ (scripts/dist.py checks the versions).
dist: $(STAMP)
	$(BIN)/python scripts/dist.py dist

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist site
