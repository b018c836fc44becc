"""Reading checkpoints from local files, URLs and the Hugging Face Hub, and writing
mobilevt's own safetensors format."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import socket
import urllib.error
from collections.abc import Mapping
from dataclasses import fields as dataclass_fields
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError, safe_open

from ..errors import MissingDependencyError, MobilevtError
from .entries import PreprocessConfig, Weights
from .state_dicts import CheckpointMismatchError, unwrap_state_dict

HF_PREFIX = "hf-hub:"
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_LOCAL_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$")


class WeightsNotFoundError(MobilevtError, FileNotFoundError):
    """A weights source could not be found or downloaded; the message says what was
    tried and where to put the file by hand."""


class Checkpoint:
    """A state dict read from somewhere, with the metadata mobilevt files carry, the file
    it came from (``None`` for an in-memory state dict) and the transformers
    ``config.json`` beside it (a Hugging Face folder or Hub repository), if any."""

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor],
        metadata: Mapping[str, str] | None = None,
        path: str | os.PathLike | None = None,
        config: Mapping[str, object] | None = None,
    ):
        self.state_dict = state_dict
        self.metadata = dict(metadata or {})
        self.path = None if path is None else Path(path)
        self.config = None if config is None else dict(config)


# ---------------------------------------------------------------------------------------
# Resolving a source to a local file


def resolve_source(source: str | os.PathLike, sha256: str | None = None) -> Path:
    """Local path of a weights source: a file, a model folder, an http(s) URL (downloaded
    once into torch.hub's cache) or ``hf-hub:<repo>[@revision]`` (via huggingface_hub)."""
    text = os.fspath(source)
    if text.startswith(HF_PREFIX):
        return _download_from_hub(text[len(HF_PREFIX) :])
    if urlparse(text).scheme in ("http", "https", "file"):
        return _download_url(text, sha256)
    path = Path(text).expanduser()
    if path.is_dir():
        for name in _LOCAL_FILES:
            if (path / name).is_file():
                return path / name
        candidates = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
        if len(candidates) == 1:
            return candidates[0]
        raise WeightsNotFoundError(
            f"no weights file in folder {path}: expected one of {', '.join(_LOCAL_FILES)} "
            f"or a single *.safetensors / *.pt / *.pth / *.bin file, found {[p.name for p in candidates]}"
        )
    if path.is_file():
        return path
    raise WeightsNotFoundError(
        f"weights {text!r} not found: it is not an existing file or folder, an http(s) URL, or a "
        f"'{HF_PREFIX}<org>/<repo>' id, and not a weights tag of this model"
    )


class HubOfflineError(MobilevtError, ConnectionError):
    """The Hugging Face Hub cannot be reached and the file is not in the local Hub cache."""


def hub_file(repo: str, filename: str) -> Path:
    """Local path of ``filename`` of Hub repository ``repo`` (``org/name[@revision]``): from
    the Hub cache when it is there, else downloaded. Without a network it fails at once
    (``HubOfflineError``) instead of after huggingface_hub's ~25 s of retries."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError as err:  # pragma: no cover - a runtime dependency
        raise MissingDependencyError("loading from the Hugging Face Hub needs `pip install huggingface_hub`") from err
    repo_id, _, revision = repo.partition("@")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision or None, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or a cached revision lookup failed): ask the Hub
        pass
    if constants.HF_HUB_OFFLINE:
        raise HubOfflineError(f"HF_HUB_OFFLINE is set and {repo_id}/{filename} is not in the Hub cache")
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as err:
        raise HubOfflineError(
            f"cannot reach {host} ({err}), and {repo_id}/{filename} is not in the Hub cache"
        ) from None
    return Path(hf_hub_download(repo_id, filename, revision=revision or None))


def _download_from_hub(repo: str) -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    repo_id, _, revision = repo.partition("@")
    errors: list[str] = []
    for filename in _HUB_FILES:
        try:
            return hub_file(repo, filename)
        except Exception as err:  # noqa: BLE001 - EntryNotFound, offline, connection, auth ...
            errors.append(f"{filename}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            if type(err).__name__ in (
                "RepositoryNotFoundError",
                "GatedRepoError",
                "RevisionNotFoundError",
                "HubOfflineError",
            ):
                break
    raise WeightsNotFoundError(
        f"could not get weights for {HF_PREFIX}{repo} from the Hugging Face Hub; tried:\n  "
        + "\n  ".join(errors)
        + f"\nIf this machine is offline, download {_HUB_FILES[0]} (or {_HUB_FILES[1]}) of {repo_id} elsewhere "
        f"and pass its local path as weights=PATH, or fill the Hub cache at {HF_HUB_CACHE} "
        "(`huggingface-cli download` on a connected machine, then copy the folder)."
    )


def _download_url(url: str, sha256: str | None) -> Path:
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(urlparse(url).path) or "weights.pt"
    target = cache_dir / filename
    if target.is_file():
        if sha256:
            _check_sha256(target, sha256)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        # Downloads into a temporary file and renames it: never a half-written cache entry.
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256, progress=True)
    except RuntimeError as err:  # torch.hub's hash mismatch; it has removed the file
        raise CheckpointMismatchError(f"{url}: {err}; the download is corrupt or a different file") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise WeightsNotFoundError(
            f"could not download {url}: {err}\nIf this machine is offline, download the file elsewhere and "
            f"put it at {target} (or pass its local path as weights=PATH)."
        ) from err
    return target


def _check_sha256(path: Path, expected: str) -> None:

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(expected):
        raise CheckpointMismatchError(
            f"{path} has sha256 {digest.hexdigest()}, expected {expected}: the download is corrupt or a different "
            "file; delete it and try again"
        )


# ---------------------------------------------------------------------------------------
# Reading


def read_source(source: str | os.PathLike | Weights, with_config: bool = False) -> Checkpoint:
    """Read the checkpoint of any weights source: a ``Weights`` entry, a file, a model
    folder, an http(s) URL, ``hf-hub:<org>/<repo>`` or a bare Hub id ``<org>/<repo>``
    that is not a local path. ``with_config`` also reads the transformers
    ``config.json`` beside the weights (folder or Hub repository)."""
    sha256 = None
    if isinstance(source, Weights):
        source, sha256 = source.source, source.sha256
    text = os.fspath(source)
    repo = _hub_repo(text)
    if repo is not None:
        # the config first: offline, its message names both files to fetch
        config = _hub_config(repo) if with_config else None
        path = resolve_source(HF_PREFIX + repo)
    else:
        path = resolve_source(text, sha256)
        config = _config_beside(Path(text).expanduser()) if with_config and not _is_url(text) else None
    checkpoint = read_checkpoint(path)
    checkpoint.config = config
    return checkpoint


def _is_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https", "file")


def _hub_repo(text: str) -> str | None:
    if text.startswith(HF_PREFIX):
        return text[len(HF_PREFIX) :]
    if _is_url(text) or Path(text).expanduser().exists():
        return None
    if _HUB_ID.match(text) and not text.endswith(_SUFFIXES):
        return text
    return None


def _config_beside(path: Path) -> dict | None:
    folder = path if path.is_dir() else path.parent
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise CheckpointMismatchError(f"{config_path} is not readable JSON ({err}); fix or remove it") from err


def _hub_config(repo: str) -> dict | None:
    from huggingface_hub.constants import HF_HUB_CACHE

    repo_id = repo.partition("@")[0]
    try:
        path = hub_file(repo, "config.json")
    except Exception as err:  # offline, not found, auth ...
        if type(err).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
            return None  # a repository of weights only
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsNotFoundError(
            f"could not get config.json of {repo_id} from the Hugging Face Hub ({type(err).__name__}: {reason}). "
            f"If this machine is offline, download config.json and model.safetensors (or pytorch_model.bin) from "
            f"https://huggingface.co/{repo_id} on a connected machine into one folder and pass that folder as "
            f"weights=FOLDER, or fill the Hub cache at {HF_HUB_CACHE} (`hf download {repo_id}` on a connected machine, "
            "then copy it)."
        ) from err
    return _config_beside(Path(path))  # a corrupt download gets the same one-line error


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a safetensors file or a weights-only pickle (``torch.load(weights_only=True)``)."""
    path = Path(path)
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointMismatchError(f"{path} is not a readable safetensors file: {err}") from err
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "global" not in str(err):  # not a pickled object we refuse, just not a pickle at all
                raise CheckpointMismatchError(
                    f"{path} is not a readable PyTorch checkpoint: the file is corrupt or in another format"
                ) from err
            raise CheckpointMismatchError(
                f"{path} is not a weights-only checkpoint: loading it would run arbitrary code, which mobilevt "
                "refuses. If you trust the file, re-save its state dict with "
                "torch.save(torch.load(path, weights_only=False)['state_dict'], new_path) or as safetensors."
            ) from err
        except (RuntimeError, EOFError, OSError) as err:
            reason = str(err).splitlines()[0] if str(err) else f"{type(err).__name__} (empty or truncated file)"
            raise CheckpointMismatchError(f"{path} is not a readable PyTorch checkpoint: {reason}") from err
        if not isinstance(raw, Mapping):
            raise CheckpointMismatchError(f"{path} holds a {type(raw).__name__}, not a state dict")
        state = raw
    return Checkpoint(unwrap_state_dict(state), metadata, path)


# ---------------------------------------------------------------------------------------
# mobilevt's own format


def recorded_model_name(path: Path) -> str | None:
    """The model name a mobilevt ``.safetensors`` file records in its metadata, if any."""
    if path.suffix != ".safetensors":
        return None

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError):
        return None
    if metadata.get("format") != "mobilevt":
        return None
    return metadata.get("model") or None


def class_names_from_metadata(metadata: Mapping[str, str]) -> list[str] | None:
    """The output names a mobilevt file records (``class_names``, or a ViLT's ``answers``)."""
    raw = metadata.get("class_names") or metadata.get("answers")
    return [str(name) for name in json.loads(raw)] if raw else None


def preprocess_from_metadata(metadata: Mapping[str, str]) -> PreprocessConfig | None:
    raw = metadata.get("preprocess")
    if not raw:
        return None
    fields = json.loads(raw)
    known = {f.name for f in dataclass_fields(PreprocessConfig)}
    # Ignore fields a newer mobilevt may have written; missing ones take their defaults.
    return PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known})
