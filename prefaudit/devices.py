"""Which device and dtype a model runs on: ``device="auto"`` and the dtype chosen per device."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelError

_DEVICE_HELP = "use 'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: str | None = "auto") -> str:
    """The device to run on: ``"auto"`` (or ``None``) is ``"cuda"`` when CUDA is available, else ``"cpu"``.

    Explicit ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are checked (a CUDA device that is not there
    is a :class:`ModelError`, not a crash deep inside the forward pass); any other string torch
    understands (``"mps"``) is passed through.
    """
    import torch

    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ModelError(f"Unknown device {device!r}; {_DEVICE_HELP}.") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible."
            )
    return name


def default_dtype_name(device: str | None = None) -> str:
    """The compute dtype for ``device`` (``None``: the device ``"auto"`` picks).

    CUDA: ``bfloat16`` where the GPU runs it natively (Ampere and newer), else ``float16``. CPU:
    ``bfloat16`` where the CPU runs it natively (AVX512-BF16 / AMX; 3.5-4x faster than fp32
    there), else ``float32``.
    """
    import torch

    dev = torch.device(resolve_device(device))
    if dev.type == "cuda":
        # Asked of the current CUDA device (the GPUs of one machine are normally alike).
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no including_emulation
            native = torch.cuda.is_bf16_supported()
        return "bfloat16" if native else "float16"
    if dev.type != "cpu":
        return "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


# Where the decoder blocks live, by family (first match wins; ``_find_layers`` falls back to a search).
