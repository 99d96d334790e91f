"""Sparse-autoencoder feature source, through sae-lens.

``load_sae`` accepts what a user has: nothing (the embedded default SAE for SmolLM2), a
directory saved by sae-lens (``SAE.load_from_disk``), a ``"release/sae_id"`` string or a
``(release, sae_id)`` tuple (``SAE.from_pretrained``, hub only), or an ``SAE`` object. Before any
text is encoded the SAE is checked against the backbone: its ``d_in`` must equal the model's
hidden size and its hook must be the residual stream at the layer being read.

Hook names (``cfg.metadata.hook_name``) that denote the output of block L, the tensor
:class:`prefaudit.backbone.Backbone` reads at ``layer=L`` (``docs/MODELS_AND_SAES.md``):
``blocks.L.hook_resid_post`` (TransformerLens: Gemma Scope, Llama Scope, most sae-lens
releases), ``blocks.(L+1).hook_resid_pre`` (the input of the next block), and the Hugging Face
module paths ``model.layers.L`` (Llama, Gemma, Qwen, Mistral), ``transformer.h.L`` (GPT-2),
``gpt_neox.layers.L``, ``model.language_model.layers.L``, ``model.decoder.layers.L`` (with or
without the leading ``model.``/``transformer.``). ``blocks.0.hook_resid_pre`` and ``hook_embed``
are the embeddings, ``hook_resid_mid``/``hook_mlp_out``/``attn.hook_z`` are not the residual
stream after a block: those SAEs are refused with a message that says so.

Example
-------
>>> from prefaudit.features.sae import load_sae
>>> feats = load_sae(None, backbone=bb)        # doctest: +SKIP
>>> feats.d_sae                                  # doctest: +SKIP
4096
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, ModelError

DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "data" / "default_sae"

# Hook names that denote the residual stream after block L (or before block L+1).
_RESID_POST = [
    re.compile(r"^blocks\.(\d+)\.hook_resid_post$"),
    re.compile(r"^(?:model\.)?(?:model\.)?layers\.(\d+)$"),
    re.compile(r"^(?:transformer\.)?h\.(\d+)$"),
    re.compile(r"^gpt_neox\.layers\.(\d+)$"),
    re.compile(r"^(?:model\.)?language_model\.(?:model\.)?layers\.(\d+)$"),
    re.compile(r"^(?:model\.)?decoder\.layers\.(\d+)$"),
]
_RESID_PRE = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")


def layer_of_hook(hook_name: str) -> int | None:
    """Block index whose *output* a hook name denotes, or ``None`` if it is not the residual stream."""
    for pattern in _RESID_POST:
        m = pattern.match(hook_name)
        if m:
            return int(m.group(1))
    m = _RESID_PRE.match(hook_name)
    if m and int(m.group(1)) > 0:
        return int(m.group(1)) - 1
    return None


def _not_resid_reason(hook_name: str) -> str:
    """Why a hook is not one prefaudit reads (for the error message)."""
    if hook_name in ("blocks.0.hook_resid_pre", "hook_embed"):
        return "it is the embedding output, before block 0, which is no block's output"
    if hook_name.endswith(("hook_resid_mid", "ln2.hook_normalized")):
        return "it is the residual stream between attention and MLP, inside a block"
    return "it is not the residual stream after a block"


def _import_sae_class() -> Any:
    try:
        from sae_lens import SAE
    except ImportError as err:  # pragma: no cover - sae-lens is a hard dependency
        raise MissingDependencyError("SAE features need sae-lens: pip install 'sae-lens>=6.5,<7'") from err
    return SAE


@dataclass
class SAEFeatures:
    """An SAE from sae-lens, ready to encode activations of one backbone layer.

    Attributes
    ----------
    sae : sae_lens.SAE
    name : str
        Where it came from (directory, ``release/sae_id`` or ``"embedded"``).
    hook_name : str
        The SAE's hook (from its metadata), e.g. ``model.layers.15``.
    layer : int | None
        The block index the hook reads, when it is a residual-stream hook.
    """

    sae: Any
    name: str
    hook_name: str
    layer: int | None

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.sae.cfg.metadata.to_dict())

    def encode(self, acts: Any) -> Any:
        """Feature activations ``(n_tokens, d_sae)`` of ``acts`` ``(n_tokens, d_in)`` (float32).

        Runs on the SAE's device; the codes come back on the device of ``acts`` (no copy when
        both are the same, as on the CPU).
        """
        import torch

        w = self.sae.W_enc
        with torch.inference_mode():
            codes = self.sae.encode(acts.to(device=w.device, dtype=w.dtype))
            return codes if codes.device == acts.device else codes.to(acts.device)

    def decode(self, codes: Any) -> Any:
        """Reconstructions ``(n_tokens, d_in)`` of ``codes``, with :meth:`encode`'s device convention."""
        import torch

        w = self.sae.W_dec
        with torch.inference_mode():
            x_hat = self.sae.decode(codes.to(device=w.device, dtype=w.dtype))
            return x_hat if x_hat.device == codes.device else x_hat.to(codes.device)

    def decoder_directions(self, features: list[int] | None = None) -> Any:
        """Rows of ``W_dec`` (``(n, d_in)``), the residual-stream directions of the features."""
        w = self.sae.W_dec.detach()
        return w if features is None else w[list(features)]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.sae.cfg.to_dict(), sort_keys=True, default=str).encode())
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            t = getattr(self.sae, name, None)
            if t is not None:
                h.update(t.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def check_fits(self, backbone: Any) -> None:
        """Raise :class:`ModelError` if this SAE cannot read ``backbone`` at its layer."""
        if self.d_in != backbone.d_model:
            raise ModelError(
                f"The SAE {self.name!r} has d_in={self.d_in} but {backbone.name} has hidden size "
                f"{backbone.d_model}: it was trained on a different model."
            )
        if self.layer is None:
            raise ModelError(
                f"The SAE {self.name!r} reads hook {self.hook_name!r}, which is not a residual-stream "
                f"hook prefaudit can read ({_not_resid_reason(self.hook_name)}; expected e.g. "
                f"'{backbone.tl_hook_name}' or '{backbone.hook_name}')."
            )
        if self.layer != backbone.layer:
            raise ModelError(
                f"The SAE {self.name!r} was trained on layer {self.layer} ({self.hook_name}) but the "
                f"backbone reads layer {backbone.layer}; pass layer={self.layer} or a matching SAE."
            )


def _wrap(sae: Any, name: str) -> SAEFeatures:
    hook = str(sae.cfg.metadata.get("hook_name") or "")
    return SAEFeatures(sae=sae, name=name, hook_name=hook, layer=layer_of_hook(hook) if hook else None)


def load_sae(spec: Any = None, *, device: str = "auto") -> SAEFeatures:
    """Load an SAE from ``spec`` (see module docstring). The result is float32 on ``device``.

    ``device="auto"`` is CUDA when available, else the CPU (as for the backbone). An ``SAE`` or
    ``SAEFeatures`` object passed in stays where it is.
    """
    from ..backbone import resolve_device

    SAE = _import_sae_class()
    if not isinstance(spec, SAE) and not isinstance(spec, SAEFeatures):
        device = resolve_device(device)
    if spec is None:
        if not (DEFAULT_SAE_DIR / "cfg.json").is_file():
            raise ModelError(
                f"The embedded default SAE is missing from {DEFAULT_SAE_DIR}; reinstall prefaudit or "
                "rebuild it with `python -m prefaudit.build.sae_training`."
            )
        return _wrap(SAE.load_from_disk(DEFAULT_SAE_DIR, device=device, dtype="float32"), "embedded")
    if isinstance(spec, SAEFeatures):
        return spec
    if isinstance(spec, SAE):
        return _wrap(spec, str(spec.cfg.metadata.get("sae_id") or type(spec).__name__))
    if isinstance(spec, tuple) and len(spec) == 2:
        release, sae_id = spec
        return _from_hub(SAE, str(release), str(sae_id), device)
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if path.is_dir():
            if not (path / "cfg.json").is_file():
                raise ModelError(f"{path} is not an sae-lens SAE directory (no cfg.json).")
            try:
                sae = SAE.load_from_disk(path, device=device, dtype="float32")
            except Exception as err:
                raise ModelError(f"sae-lens could not load the SAE in {path}: {err}") from err
            return _wrap(sae, str(path))
        if isinstance(spec, str) and "/" in spec and not path.exists():
            release, sae_id = split_release_id(spec)
            return _from_hub(SAE, release, sae_id, device)
        raise ModelError(
            f"SAE {spec!r} is neither a directory nor 'release/sae_id'. Pass a directory saved by "
            "sae-lens, a (release, sae_id) tuple, or an SAE object."
        )
    raise ModelError(f"Cannot load an SAE from a {type(spec).__name__}.")


def split_release_id(spec: str) -> tuple[str, str]:
    """``"release/sae_id"`` as ``(release, sae_id)``; sae ids contain slashes of their own.

    The release is the longest prefix that sae-lens's directory of pretrained SAEs (the
    ``pretrained_saes.yaml`` inside the package, read offline) knows, so
    ``"gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical"`` splits after ``canonical``.
    An unknown release is accepted only when the split is unambiguous (one slash).
    """
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        known = get_pretrained_saes_directory()
    except Exception:  # pragma: no cover - a sae-lens without the directory
        known = {}
    parts = spec.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        release = "/".join(parts[:cut])
        if release in known:
            return release, "/".join(parts[cut:])
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ModelError(
        f"SAE {spec!r}: no prefix of it is a release sae-lens knows, so where the release ends and "
        "the sae_id begins is ambiguous; pass a (release, sae_id) tuple."
    )


def _from_hub(SAE: Any, release: str, sae_id: str, device: str) -> SAEFeatures:
    try:
        sae = SAE.from_pretrained(release, sae_id, device=device, dtype="float32")
    except Exception as err:
        raise ModelError(
            f"sae-lens could not load SAE release={release!r} sae_id={sae_id!r} from the hub "
            f"({type(err).__name__}: {err}). Without network access, pass a local directory."
        ) from err
    # sae-lens <= 5 returned (sae, cfg_dict, sparsity); 6.x returns the SAE (the triple moved to
    # SAE.from_pretrained_with_cfg_and_sparsity).
    if isinstance(sae, tuple):
        sae = sae[0]
    return _wrap(sae, f"{release}/{sae_id}")
