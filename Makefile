# Developer entry points; everything runs from the project virtualenv .venv.
PYTEST_ARGS ?=

.PHONY: deps test lint bench demo molecule clean

deps:
	bash scripts/install-deps.sh

# The whole suite: pytest, the lab tests and the molecule scenario (scripts/run-tests.sh runs
# them in two parts side by side); PYTEST_ARGS="..." runs pytest alone with those arguments.
test: deps
	sh scripts/run-tests.sh $(PYTEST_ARGS)

molecule: deps
	bash scripts/molecule-test.sh

lint: deps
	.venv/bin/ruff check .

bench: deps
	.venv/bin/python bench/ipam.py

# The main job: a 3-node lab in containers (calicoctl lab up), deployed with
# playbooks/site.yml, then scripts/demo.py shows and checks it. `calicoctl lab down` removes it.
demo: deps
	.venv/bin/calicoctl lab up --nodes 3 --ipv6
	.venv/bin/python scripts/demo.py

clean:
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./ansible_collections -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
