# Developer entry points; everything runs from the project virtualenv .venv.
PYTEST_ARGS ?=

.PHONY: deps test test-fast lint bench demo molecule clean

deps:
	bash scripts/install-deps.sh

# The whole suite: pytest, the lab tests and the molecule scenario (scripts/run-tests.sh runs
# them in two parts side by side); PYTEST_ARGS="..." runs pytest alone with those arguments.
test: deps
	sh scripts/run-tests.sh $(PYTEST_ARGS)

# The quick pure tests alone: no root, no daemons, nothing marked slow (the markers are in
# pyproject.toml, their enforcement in tests/conftest.py); under 30 s. Bytecode (and pytest's
# rewritten tests) is cached outside the checkout, as tests/test_cli.py does for calicoctl.
# PYTEST_ARGS="..." adds arguments.
test-fast:
	PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX="$${TMPDIR:-/tmp}/calico-test-pycache-$$(id -u)" \
		.venv/bin/python -m pytest -q -m "not (netns or etcd or docker or lab or ansible or slow)" \
		$(PYTEST_ARGS)

molecule: deps
	bash scripts/molecule-test.sh

# ruff; the changelog (fragments lint, CHANGELOG.md generated, a fragment for every change:
# scripts/changelog-check.sh); ansible-test sanity, units (the modules' unit tests,
# tests/unit/) and integration (tests/integration/targets/, on SQLite) of the collection,
# offline (scripts/ansible-test.sh)
lint: deps
	.venv/bin/ruff check .
	sh scripts/changelog-check.sh
	sh scripts/ansible-test.sh sanity
	sh scripts/ansible-test.sh units
	sh scripts/ansible-test.sh integration

bench: deps
	.venv/bin/python bench/ipam.py

# The main job: first a 3-node lab in two racks (a ToR and a subnet each, --racks 2) where
# scripts/demo_vxlan.py shows and checks a VXLAN pool (never, cross-subnet, always); then the
# lab again with one top-of-rack router and an outside host beyond it (--fabric), deployed
# with playbooks/site.yml, and scripts/demo.py shows and checks it. `calicoctl lab down`
# removes it.
demo: deps
	.venv/bin/calicoctl lab up --nodes 3 --ipv6 --racks 2
	.venv/bin/python scripts/demo_vxlan.py
	.venv/bin/calicoctl lab up --nodes 3 --ipv6 --fabric
	.venv/bin/python scripts/demo.py

clean:
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./ansible_collections -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
