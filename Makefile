# The two commands the README starts with. Each does its own set-up on a fresh machine.
.PHONY: dev test setup bench crds

dev: setup
	node --no-node-snapshot bin/edge.mjs dev

test: setup
	npm test

setup:
	bash scripts/setup.sh

bench: setup
	npm run bench

crds:
	npm run gen:crds
