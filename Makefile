# Developer entry points; everything runs from the project virtualenv .venv.
PYTEST_ARGS ?=

.PHONY: deps test lint bench demo clean

deps:
	bash scripts/install-deps.sh

test: deps
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint: deps
	.venv/bin/ruff check .

bench: deps
	.venv/bin/python bench/ipam.py

demo:
	@echo "make demo: the demo comes with the lab issue and is not available yet" >&2
	@exit 1

clean:
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./ansible_collections -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
