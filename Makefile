# Quick start: `make demo` runs the product on embedded defaults, `make test`
# runs the tests. Both create .venv and start a private Postgres cluster when
# DATABASE_URL is unset (see mailer/demo/pgcluster.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB = $${DATABASE_URL:-$$($(BIN)/python -m mailer.demo.pgcluster ensure)}

.PHONY: demo test test-fast lint bench db-stop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,speed]'
	touch $(STAMP)

demo: $(STAMP)
	@url="$(DB)" && DATABASE_URL="$$url" $(BIN)/mailer demo

test: $(STAMP)
	@url="$(DB)" && DATABASE_URL="$$url" $(BIN)/pytest -q
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The pure-logic tests only (tests/unit): no Postgres, no network, about a minute.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m unit tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	@url="$(DB)" && for b in import_contacts audience render send tracker inbound signup; do \
		echo "== bench/$$b.py"; DATABASE_URL="$$url" $(BIN)/python bench/$$b.py || exit 1; done

db-stop:
	-$(BIN)/python -m mailer.demo.pgcluster stop

clean: db-stop
	rm -rf .pgdata .demo
