# Two commands do everything on a fresh machine:
#   make run   - set up, then sample favicons with the shipped default model
#   make test  - set up, then run the test suite
PY := .venv/bin/python
DITWEB := .venv/bin/ditweb

.PHONY: setup run test
setup:
	./scripts/setup.sh

run: setup
	$(DITWEB) sample Favicon-T/2 --class 0 --n 16 --steps 50 --out samples/default

test: setup
	$(PY) -m pytest tests
