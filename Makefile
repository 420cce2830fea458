# Two entry points a fresh machine needs (see README):
#   make demo  - set up and run the main job (nncift select) on the built-in data
#   make test  - set up and run the whole test suite
VENV ?= .venv
OUT ?= out

.PHONY: setup dist demo test bench clean

setup:
	scripts/setup.sh $(VENV)

# The portable manylinux2014 abi3 wheel and the sdist, into dist/.
dist:
	scripts/dist.sh $(VENV)

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/nncift select --pool builtin:ifbench --method delift-se --budget 0.1 --out $(OUT)/ifbench-subset.jsonl

test: setup
	scripts/test.sh $(VENV)

clean:
	rm -rf dist target $(OUT)
