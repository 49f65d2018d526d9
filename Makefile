# Makefile targets mirror the stage4 CLI. `make demo` and `make test` are the two
# commands of the README; both work on a fresh Debian 12 machine.
# ARGS passes any other option to the command: make upgrade TO=opt4 ARGS='--accept-drift'.
# make exits 2 whenever a command fails ("Error N" names the command's own code); a
# NO-GO (stage4's exit code 3) is said as such on the line before.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAGE4  := $(BIN)/stage4
TO      ?= head
FEATURES ?= 200000
REPORTS ?= reports
PG_PKGS := postgresql-15 postgresql-15-postgis-3 postgresql-15-cron
ARGS    ?=
NO_GO   = || { rc=$$?; [ $$rc -ne 3 ] || echo "exit 3 = NO-GO (make says Error 3 and exits 2)" >&2; exit $$rc; }

.PHONY: setup system-packages demo demo-end test test-fast lint format upgrade rehearse downgrade status plan bench baseline compare report refresh workload-capture seed db-start db-stop clean

$(BIN)/stage4: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

system-packages:
	@if [ ! -f /usr/share/postgresql/15/extension/postgis.control ] || \
	    [ ! -f /usr/share/postgresql/15/extension/pg_cron.control ]; then \
	  echo "installing $(PG_PKGS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PG_PKGS) >/dev/null; \
	fi

setup: system-packages $(BIN)/stage4  ## venv + dependencies (+ PostgreSQL/PostGIS/pg_cron when missing)

demo: setup  ## embedded cluster -> seed -> gated upgrade to opt5 -> report path
	$(STAGE4) db start
	$(STAGE4) upgrade --to schema
	$(STAGE4) seed --features $(FEATURES) --if-empty
	@# exit code 3 is a NO-GO verdict: a real outcome of the demo, reported, not a failure.
	@# on the defaults: no step serves a read stale (README "Fresh results")
	$(STAGE4) upgrade --to opt5 || [ $$? -eq 3 ]
	$(STAGE4) status
	@$(MAKE) -s demo-end

demo-end:  ## the demo's last lines: where the database is, where the report is, what to try next
	@rev=$$($(STAGE4) status | sed -n 's/^revision: //p'); \
	report=$$(ls -1d $(REPORTS)/*/REPORT.md 2>/dev/null | tail -1); \
	echo; \
	$(STAGE4) compare --brief 2>/dev/null || true; \
	echo "Database: $$($(STAGE4) db url) (revision $$rev)"; \
	echo "Report:   $${report:-none yet (make upgrade writes one under $(REPORTS)/)}"; \
	case "$$rev" in \
	  schema|"(none)") echo "Next:     make status, then make upgrade TO=opt5 JUDGE=target (the five steps judged as one package)";; \
	  *) echo "Next:     make downgrade (rolls back one step), then make status";; \
	esac

test: setup  ## the whole test suite against a real PostgreSQL + PostGIS
	$(BIN)/pytest

test-fast: setup  ## the edit-run loop: every test but those marked slow (gated rollouts, benches)
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src alembic tests benchmarks
	$(BIN)/ruff format --check src alembic tests benchmarks

format: setup
	$(BIN)/ruff format src alembic tests benchmarks
	$(BIN)/ruff check --fix src alembic tests benchmarks

upgrade: setup  ## make upgrade TO=opt3 (JUDGE=target: judge the steps as one package; ACCEPT_STALE=1; ARGS='...')
	$(STAGE4) upgrade --to $(TO) $(if $(JUDGE),--judge $(JUDGE)) $(if $(ACCEPT_STALE),--accept-stale) $(ARGS) $(NO_GO)

rehearse: setup  ## the upgrade on a copy (stage4 rehearse; same JUDGE, ACCEPT_STALE, ARGS)
	$(STAGE4) rehearse --to $(TO) $(if $(JUDGE),--judge $(JUDGE)) $(if $(ACCEPT_STALE),--accept-stale) $(ARGS) $(NO_GO)

downgrade: setup  ## one step back (make downgrade TO=schema to go further)
	@if [ "$(TO)" = "head" ]; then $(STAGE4) downgrade -1 $(ARGS); else $(STAGE4) downgrade --to $(TO) $(ARGS); fi

status: setup
	$(STAGE4) status $(ARGS)

plan: setup
	$(STAGE4) plan --to $(TO) $(ARGS)

bench: setup  ## measure the workload now (stage4 bench)
	$(STAGE4) bench $(ARGS)

baseline: setup  ## store the latest run as the baseline (stage4 baseline)
	$(STAGE4) baseline $(ARGS)

compare: setup  ## latest run vs the baseline (stage4 compare)
	$(STAGE4) compare $(ARGS)

report: setup  ## rebuild the newest rollout report (stage4 report)
	$(STAGE4) report $(ARGS)

refresh: setup  ## refresh the materialized views by hand (stage4 refresh)
	$(STAGE4) refresh $(ARGS)

workload-capture: setup  ## the heaviest reads of pg_stat_statements as workload files (TOP=10 OUT=workload)
	$(STAGE4) workload capture --top $(or $(TOP),10) --out $(or $(OUT),workload) $(ARGS)

seed: setup
	$(STAGE4) seed --features $(FEATURES) $(ARGS)

db-start: setup
	$(STAGE4) db start $(ARGS)

db-stop: setup
	$(STAGE4) db stop $(ARGS)

clean:
	-$(STAGE4) db stop
	rm -rf .stage4 reports
