# Thin wrappers over the commands the README documents.
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# httpbin, a test backend, pins an old greenlet: it gets a virtualenv of its own.
HTTPBIN_BIN := $(abspath .venv-httpbin)/bin
PYTHON ?= python3
export PATH := $(BIN):$(PATH)

.PHONY: run test lint format up down clean chromium curl redis-server pebble screenshots bench

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(HTTPBIN_BIN)/.installed: tests/httpbin/requirements.txt
	$(PYTHON) -m venv .venv-httpbin
	$(HTTPBIN_BIN)/pip install --quiet --disable-pip-version-check -r tests/httpbin/requirements.txt
	touch $@

# The browser test drives Debian's Chromium (Playwright cannot download one here).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# The HTTP/2 tests are a real HTTP/2 client's: Debian's curl, built with nghttp2.
curl:
	@command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates; }

# Rate limits shared by every worker are counted in Debian's Redis: `make run`
# starts one beside the balancer, and the tests start their own.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }
# The automatic-HTTPS tests get their certificates from a real ACME CA:
# Debian's pebble (Let's Encrypt's test CA), with pebble-challtestsrv as its DNS.
pebble:
	@command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pebble; }

# A secret key made once per checkout; honcho reads .env for every command.
.env:
	$(PYTHON) -c "import secrets; print('SECRET_KEY=' + secrets.token_urlsafe(50))" > $@

## run: the balancer (traffic :8000, HTTPS :8443, admin :8001), Redis (:6380), four demo backends, the demo routes
run: $(BIN)/.installed .env redis-server
	honcho run python manage.py migrate --noinput
	honcho run python manage.py load_demo_routes
	honcho run python manage.py ensure_admin
	honcho run python manage.py collectstatic --noinput --verbosity 0
	@echo "Traffic: http://127.0.0.1:8000/ and https://127.0.0.1:8443/    Admin: http://127.0.0.1:8001/admin/"
	honcho start

## test: lint, then the whole test suite
test: $(BIN)/.installed $(HTTPBIN_BIN)/.installed chromium curl redis-server pebble lint
	HTTPBIN_GUNICORN=$(HTTPBIN_BIN)/gunicorn pytest

## screenshots: refresh the admin screenshots in docs/ from the browser test
screenshots: $(BIN)/.installed chromium
	SCREENSHOT_DIR=docs/screenshots pytest tests/test_browser.py tests/test_browser_history.py \
		tests/test_browser_certificates.py tests/test_browser_traffic.py

lint: $(BIN)/.installed
	ruff check .
	ruff format --check .

format: $(BIN)/.installed
	ruff check --fix .
	ruff format .

## bench: the balancer beside nginx (wrk, loopback only), its capacity on slow backends, then route resolution
bench: $(BIN)/.installed redis-server
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx; }
	python -m bench.run
	python -m bench.capacity
	python -m bench.resolve

## up: the same demo under Docker Compose (needs a Docker engine)
up:
	@test -f .env || $(MAKE) .env
	docker compose --env-file .env up --build

down:
	docker compose down

clean:
	rm -rf $(VENV) .venv-httpbin staticfiles .pytest_cache .ruff_cache
