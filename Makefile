# The two commands of the quick start are `make demo` and `make test`.
PY      ?= .venv/bin/python
PIP     ?= .venv/bin/pip
PYTEST  ?= .venv/bin/pytest
export PYTHONUNBUFFERED := 1

.PHONY: install test test-full test-slow test-ray demo bench protos certs loadtest loadtest-chaos clean

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# CPU torch from the local wheel (an unpinned torch pulls a multi-GB CUDA build)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,gguf,bench]'
	touch $@

install: .venv/.installed

# The default suite: under 6 minutes on 2 cores (the fake n-gram pair carries the chi-square checks),
# on two pytest-xdist workers: much of it waits on emulated forwards and child processes
test: install
	$(PYTEST) -q -x -p no:cacheprovider -n 2

# The statistical checks at full strength on the tiny transformers pair and through the stack (CI runs it too)
test-full: install
	$(PYTEST) -q -x -p no:cacheprovider -m full

# The real pair (fetched into ~/.cache/specdec first): greedy equality in every mode
test-slow: install
	$(PY) -m specdec.cli models fetch
	$(PYTEST) -q -m slow -p no:cacheprovider

# Ray placement on a local Ray instance, bound to loopback (the default suite runs these where Ray is installed)
test-ray: install
	$(PIP) install -q -e '.[ray]'
	$(PYTEST) -q -m ray -p no:cacheprovider

# The real pair through three processes (fetched into ~/.cache/specdec on first run), PEARL mode
demo: install
	$(PY) -m specdec.cli demo

bench: install
	$(PY) -m specdec.cli bench --preset tiny --cost gpu-like --json bench-results/tiny-gpu-like.json

# Bounded load on the tiny local stack: 1, 4 and 16 concurrent clients (<= 48 requests and 60 s + 30 s drain each)
loadtest: install
	$(PY) -m loadtest --stack tiny --scenario steady --clients 1,4,16 --requests 48 --duration 60 --max-batch 16 \
		--max-new-tokens 64 --fail-on-errors --json bench-results/loadtest-tiny.json \
		--plot bench-results/loadtest-tiny.png --markdown bench-results/loadtest-tiny.md

# Chaos under load: 32 streams (sequential, PEARL, GSD; greedy and sampled) against 2 draft + 2 target
# replicas; a target and a draft replica SIGKILLed at 15 s, the target restarted at 30 s. Exits 1 if a
# request fails or is lost, or a greedy output differs from the target alone (60 s of load, 600 s at most)
loadtest-chaos: install
	$(PY) -m loadtest --stack tiny --scenario chaos --clients 32 --duration 60 --max-new-tokens 64 \
		--fail-on-lost --fail-on-errors --json bench-results/chaos-tiny.json --markdown bench-results/chaos-tiny.md

# Regenerate specdec/pb/v1 from protos/specdec/v1 (commit the result; CI checks it is fresh)
protos: install
	$(PY) scripts/gen_protos.py

# A local CA + certificates for TLS / mTLS into .certs/ (SAN localhost, 127.0.0.1;
# more names: make certs DNS=coordinator.example,draft.example)
certs: install
	$(PY) scripts/make_certs.py --out .certs $(if $(DNS),--dns $(DNS))

clean:
	rm -rf .venv build *.egg-info bench-results
