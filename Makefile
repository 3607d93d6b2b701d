# Two commands do everything on a fresh machine:
#   make run   - set up, sample favicons with the shipped default model, then serve the demo page
#   make test  - set up, then run the test suite
PY := .venv/bin/python
DITWEB := .venv/bin/ditweb
MODEL := models/named.safetensors
BUNDLE := bundles/named-int4
PORT ?= 8000

.PHONY: setup run test
setup:
	./scripts/setup.sh

run: setup
	$(DITWEB) sample $(MODEL) --prompt hippo --n 16 --steps 50 --cfg 4 --seed 0 --out samples/hippo
	$(DITWEB) serve $(BUNDLE) --port $(PORT)

test: setup
	$(PY) -m pytest tests
