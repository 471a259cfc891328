# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format tools browser redis rsyslog oidc clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,compression]'
	@touch $(STAMP)

## run: start FerretDB (or $MONGODB_URI), daphne, a qcluster and a gateway, with demo users; Ctrl+C stops all
##      addresses: make run HTTP=127.0.0.1:8001 GATEWAY=127.0.0.1:27019 (defaults below)
# Debug mode, which brings the embedded defaults (generated secrets and SQLite in var/, no Redis needed).
HTTP ?= 127.0.0.1:8000
GATEWAY ?= 127.0.0.1:27018
run: export DJANGO_DEBUG ?= true
run: $(STAMP)
	@if [ -z "$$MONGODB_URI" ]; then tests/mongo/install-tools.sh ferretdb; fi
	$(PY) manage.py migrate --no-input -v0
	$(PY) manage.py demo --http $(HTTP) --gateway $(GATEWAY)

## test: install everything the suite needs, then run the whole suite
test: $(STAMP) tools browser redis rsyslog oidc
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

tools: $(STAMP)
	tests/mongo/install-tools.sh ferretdb clients

browser:
	@tests/install-browser.sh

redis:
	@tests/install-redis.sh

rsyslog:
	@tests/install-rsyslog.sh

oidc:
	@tests/install-oidc.sh

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) var/portal.sqlite3* var/static
