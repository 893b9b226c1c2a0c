"""Backbone file formats, none of which unpickles code.

==============  =======================  ==================================================
format          file                     loaded with
==============  =======================  ==================================================
state_dict      ``backbone.pt``          ``torch.load(weights_only=True)`` into a named
                                         architecture (:data:`ARCHITECTURES`)
safetensors     ``backbone.safetensors`` ``safetensors.torch.load_file`` into a named
                                         architecture
torch.export    ``backbone.pt2``         ``torch.export.load`` after :func:`check_pt2` has
                                         refused every member that would be unpickled
onnx            ``backbone.onnx``        onnxruntime (CPU; CUDA where available)
==============  =======================  ==================================================

Every loader returns a ``torch.nn.Module`` mapping ``(n, *input_shape)`` to ``(n, k)``, so the
embedder, the variants and the challenger treat all formats alike.
"""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from torch import nn

from streamapp.errors import BundleError
from streamapp.model.backbone import ARCHITECTURES

__all__ = [
    "BACKBONE_FILES",
    "OnnxBackbone",
    "check_pt2",
    "copy_backbone",
    "format_of",
    "infer_architecture",
    "load_backbone",
    "load_safetensors",
    "save_backbone",
]

logger = logging.getLogger(__name__)

BACKBONE_FILES: dict[str, str] = {
    "state_dict": "backbone.pt",
    "safetensors": "backbone.safetensors",
    "torch.export": "backbone.pt2",
    "onnx": "backbone.onnx",
}
_SUFFIXES = {".pt2": "torch.export", ".onnx": "onnx", ".safetensors": "safetensors"}


def format_of(path: Path) -> str:
    """The backbone format of a user's file, from its suffix.

    >>> format_of(Path("net.pt2")), format_of(Path("net.onnx"))
    ('torch.export', 'onnx')
    """
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise BundleError(
            f"{path}: unsupported backbone file; use a torch.export program (.pt2), "
            f"ONNX (.onnx) or a safetensors state_dict of a built-in architecture (.safetensors)"
        )
    return fmt


def save_backbone(backbone: nn.Module, path: Path, fmt: str) -> None:
    """Save a built-in architecture's weights as ``fmt`` (``state_dict`` or ``safetensors``)."""
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    if fmt == "state_dict":
        torch.save(state, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        raise BundleError(f"cannot save a module as {fmt!r}; copy the file instead")


def load_backbone(
    path: Path,
    fmt: str,
    architecture: dict[str, Any],
    *,
    input_dim: int,
    embedding_dim: int,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """The backbone in ``path`` as a module in eval mode; :class:`BundleError` if refused."""
    if fmt == "torch.export":
        return _load_pt2(path)
    if fmt == "onnx":
        return OnnxBackbone(path)
    if fmt == "state_dict":
        with warnings.catch_warnings():  # a refusal is one line: no notes on pickle protocols
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    elif fmt == "safetensors":
        state = load_safetensors(path)
    else:
        raise BundleError(f"unknown backbone format {fmt!r}")
    module = _build(architecture, input_dim, embedding_dim, input_shape)
    module.load_state_dict(state)
    return module.eval()


def _build(
    architecture: dict[str, Any],
    input_dim: int,
    embedding_dim: int,
    input_shape: Sequence[int] | None,
) -> nn.Module:
    arch = dict(architecture)
    name = arch.pop("name", "")
    factory = ARCHITECTURES.get(name)
    if factory is None:
        raise BundleError(f"unknown architecture {architecture!r}")
    if name == "cnn":
        arch["input_shape"] = list(input_shape or [])
    return factory(input_dim=input_dim, embedding_dim=embedding_dim, **arch)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path.name} is not a safetensors file: {_first_line(exc)}") from None


def infer_architecture(
    state: dict[str, torch.Tensor], input_dim: int, input_shape: Sequence[int] | None
) -> tuple[dict[str, Any], int]:
    """``(architecture, embedding_dim)`` of a built-in architecture's state_dict, read from
    its tensor names and shapes.

    >>> from streamapp.model.backbone import MLPBackbone
    >>> infer_architecture(MLPBackbone(5, [7, 6], 3).state_dict(), 5, None)
    ({'name': 'mlp', 'hidden': [7, 6]}, 3)
    """
    keys = sorted(k for k in state if k.endswith(".weight"))
    if keys and all(k.startswith("layers.") for k in keys):
        weights = sorted((int(k.split(".")[1]), state[k]) for k in keys)
        dims = [int(w.shape[0]) for _, w in weights]
        if int(weights[0][1].shape[1]) != input_dim:
            raise BundleError(
                f"the MLP's first layer takes {int(weights[0][1].shape[1])} features, "
                f"the data has {input_dim}"
            )
        return {"name": "mlp", "hidden": dims[:-1]}, dims[-1]
    if keys and any(k.startswith("convs.") for k in keys) and "embed.0.weight" in state:
        convs = sorted((int(k.split(".")[1]), state[k]) for k in keys if k.startswith("convs."))
        if input_shape is None:
            raise BundleError("a cnn backbone needs --input-shape C,H,W")
        channels = [int(w.shape[0]) for _, w in convs]
        return {"name": "cnn", "channels": channels}, int(state["embed.0.weight"].shape[0])
    raise BundleError(
        "the safetensors state_dict is not a built-in architecture (mlp: layers.N.weight; "
        "cnn: convs.N.weight + embed.0.weight); export the network with torch.export instead"
    )


# -- torch.export ----------------------------------------------------------------------------

_NATIVE_PREFIXES = ("data/aotinductor/",)
_PAYLOAD_DIRS = ("data/weights/", "data/constants/")
_CODE_CONSTANTS = ("custom_obj", "opaque_obj")  # torch loads these with plain pickle


def check_pt2(path: Path) -> None:
    """Refuse a ``.pt2`` archive that ``torch.export.load`` would unpickle code from.

    ``torch.export.load`` falls back to ``pickle`` for some members (custom objects, opaque
    constants, pickled weights, legacy files). A member that is a pickle must load with
    ``torch.load(weights_only=True)``; custom and opaque objects and compiled native code are
    refused outright. Raises :class:`BundleError` with the reason.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path.name} is not a torch.export archive: {exc}") from None
    with archive:
        for info in archive.infolist():
            inner = info.filename.split("/", 1)[-1]
            if inner.startswith(_NATIVE_PREFIXES):
                raise BundleError(f"{path.name}: compiled native code ({inner}) is refused")
            if inner.endswith("_config.json") and inner.startswith(
                ("data/weights/", "data/constants/")
            ):
                _check_payload_config(path, archive, info.filename)
            elif inner.endswith(".pt"):
                _check_weights_only(path, inner, archive.read(info))


def _check_payload_config(path: Path, archive: zipfile.ZipFile, name: str) -> None:
    try:
        config = orjson.loads(archive.read(name)).get("config", {})
    except (orjson.JSONDecodeError, AttributeError) as exc:
        raise BundleError(f"{path.name}: {name} is not valid JSON: {exc}") from None
    folder = name.rsplit("/", 1)[0]
    for fqn, meta in config.items():
        member = str(meta.get("path_name", ""))
        if member.startswith(_CODE_CONSTANTS):
            raise BundleError(
                f"{path.name}: constant {fqn!r} is a pickled Python object; refused to unpickle it"
            )
        if meta.get("use_pickle"):
            _check_weights_only(path, member, archive.read(f"{folder}/{member}"))


def _check_weights_only(path: Path, member: str, payload: bytes) -> None:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols before refusing: the refusal is the message
            warnings.simplefilter("ignore", UserWarning)
            torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise BundleError(
            f"{path.name}: {member} is not plain tensors, refused to unpickle it "
            f"({_first_line(exc)})"
        ) from None


def _load_pt2(path: Path) -> nn.Module:
    check_pt2(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises many types for a malformed archive
        raise BundleError(
            f"{path.name} is not a loadable torch.export program: {_first_line(exc)}"
        ) from None
    return program.module()


# -- ONNX --------------------------------------------------------------------------------------


def copy_backbone(source: Path, target: Path, fmt: str) -> None:
    """Copy a backbone file into a bundle. An ONNX model whose weights live in external data
    files beside it (what ``torch.onnx.export`` writes by default) is written as one file: a
    bundle holds one checksummed backbone file."""
    if fmt != "onnx" or not _onnx_external_data(source):
        shutil.copyfile(source, target)
        return
    import onnx

    try:
        # the data files are resolved next to the model; a location outside its folder is refused
        model = onnx.load(str(source))
        onnx.save_model(model, str(target))
    except Exception as exc:  # onnx raises ValueError (over 2 GB), OSError, its own types
        raise BundleError(
            f"{source.name}: its external data cannot be bundled: {_first_line(exc)}"
        ) from None


def _onnx_external_data(path: Path) -> bool:
    """True when an ONNX file keeps tensors in external data files (False without onnx, which
    only onnxruntime then loads: a missing data file fails the bundle's verification)."""
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError:
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX: copied as is, and refused when the bundle is verified
        return False
    return any(uses_external_data(tensor) for tensor in model.graph.initializer)


class OnnxBackbone(nn.Module):
    """An ONNX feature extractor behind the ``nn.Module`` call: float32 numpy in onnxruntime,
    the result back as a tensor of the input's dtype and device.

    CUDA runs through onnxruntime's CUDA provider where installed, else on CPU. Copies share
    the session (onnxruntime sessions are thread-safe and hold no per-call state).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError as exc:
            raise BundleError("ONNX backbones need onnxruntime: pip install onnxruntime") from exc
        self.path = Path(path)
        self._ort = onnxruntime
        self._sessions: dict[str, Any] = {}
        self._session("cpu")  # fails now, with the reason, on a file that is not ONNX

    def _session(self, device: str) -> Any:
        if device not in self._sessions:
            providers = ["CPUExecutionProvider"]
            if device == "cuda" and "CUDAExecutionProvider" in self._ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            options = self._ort.SessionOptions()
            # one thread, like torch_threads=1: the broker client needs the other core
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            try:
                self._sessions[device] = self._ort.InferenceSession(
                    str(self.path), options, providers=providers
                )
            except Exception as exc:  # onnxruntime raises its own types for a bad graph
                raise BundleError(
                    f"{self.path.name} is not a loadable ONNX model: {_first_line(exc)}"
                ) from None
        return self._sessions[device]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self._session(x.device.type)
        feed = {session.get_inputs()[0].name: x.detach().to(torch.float32).cpu().numpy()}
        (z,) = session.run(None, feed)
        return torch.from_numpy(np.asarray(z, np.float32)).to(x.device, x.dtype)

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxBackbone:
        return self


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "..."
