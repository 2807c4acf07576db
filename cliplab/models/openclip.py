"""open_clip models: built-in names + pretrained tags, ``hf-hub:``/``local-dir:``, config JSON files, checkpoints."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import socket
from copy import deepcopy
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.factory import _find_checkpoint_in_dir, load_state_dict
from open_clip.pretrained import get_pretrained_cfg

from cliplab.errors import ModelLoadError, ModelParameterError
from cliplab.io import hash_file, hash_json, write_json_atomic
from cliplab.models.names import suggest
from cliplab.models.specs import read_model_config

RANDOM_SEED = 0  # the seed of a model built without weights: the same random model in every run and process

OFFLINE_HINT = ("download the checkpoint on a machine with internet and pass it with {p:pretrained} PATH "
                "(and {p:model} CONFIG.json for a custom architecture)")  # in a ParameterError message


def register_config_file(path: Path, cache_dir: Path) -> tuple[str, dict, dict]:
    """Register a model-config JSON with open_clip; returns (registered name, model_cfg, preprocess_cfg).

    Accepts open_clip's two config shapes: a bare model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) or an
    ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``).
    """
    model_cfg, preprocess_cfg = read_model_config(path, "model", ModelParameterError)
    name = f"{path.stem}-{hash_json(model_cfg)[:8]}"
    reg_dir = cache_dir / "model_configs"
    reg_dir.mkdir(parents=True, exist_ok=True)
    target = reg_dir / f"{name}.json"
    if not target.exists():
        write_json_atomic(target, model_cfg)
    open_clip.add_model_config(target)
    return name, model_cfg, preprocess_cfg


def network_available(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """False when CLIPLAB_OFFLINE=1 or HF_HUB_OFFLINE=1 is set, or the hub cannot be reached."""
    if os.environ.get("CLIPLAB_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_hub(offline: bool):
    """Silence open_clip's root-logger chatter; with ``offline``, make the HF hub use its local cache only
    (cached weights still load; missing ones fail at once instead of after a minute of retries)."""
    import huggingface_hub.constants as hf_constants  # optional: not a declared dependency (open_clip_torch brings it)

    root = logging.getLogger()
    hub_logger = logging.getLogger("huggingface_hub")
    old = (root.level, hub_logger.level, hf_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    root.setLevel(logging.CRITICAL)
    hub_logger.setLevel(logging.CRITICAL)
    if offline:
        hf_constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        root.setLevel(old[0])
        hub_logger.setLevel(old[1])
        hf_constants.HF_HUB_OFFLINE = old[2]
        if old[3] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old[3]


_FILE_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def weights_identity(path: str) -> str:
    """Content hash of a weights file, memoised per (path, size, mtime) for the life of the process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASH_MEMO:
        _FILE_HASH_MEMO[key] = "file:" + hash_file(path)
    return _FILE_HASH_MEMO[key]


def state_dict_identity(model: torch.nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return "state:" + h.hexdigest()


def load_open_clip(model: str, pretrained: str | None, device: torch.device, precision: str,
                   cache_dir: Path, force_quick_gelu: bool | None = None) -> dict[str, Any]:
    preprocess_override: dict = {}
    model_cfg: dict | None = None
    name = model
    if model.endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelParameterError("model", model, "config file not found", quote=False)
        name, model_cfg, preprocess_override = register_config_file(path, cache_dir)
    elif model.startswith(("hf-hub:", "local-dir:")):
        if pretrained:
            raise ModelParameterError("pretrained", pretrained, f"{{p:model}} {model} carries its own weights; drop "
                                      f"{{p:pretrained}} {pretrained}", prefix=False)
        if model.startswith("local-dir:") and not Path(model[len("local-dir:"):]).is_dir():
            raise ModelParameterError("model", model, "folder not found (it should hold open_clip_config.json and "
                                      "weights)", quote=False)
    else:
        model_cfg = open_clip.get_model_config(model)
        if model_cfg is None:
            close = suggest(model, open_clip.list_models())
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise ModelParameterError("model", model, f"unknown model {model!r}; {hint}run `cliplab models` for "
                                      "architecture names, or pass {p:model} CONFIG.json", prefix=False)

    tag_cfg = get_pretrained_cfg(name, pretrained) if pretrained and model_cfg is not None else {}
    if pretrained and not tag_cfg and not os.path.isfile(pretrained):
        if os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")):
            raise ModelParameterError("pretrained", pretrained, "checkpoint file not found", quote=False)
        tags = open_clip.list_pretrained_tags_by_model(name) if model_cfg is not None else []
        raise ModelParameterError(
            "pretrained", pretrained, f"{{p:pretrained}} {pretrained!r} is neither a file nor a known tag for {model}"
            + (f" (known tags: {', '.join(tags)})" if tags else ""), prefix=False)
    quick_gelu = needs_quick_gelu(name, tag_cfg, model_cfg) if force_quick_gelu is None else force_quick_gelu
    hf_tokenizer = hf_tokenizer_name(name, model_cfg)
    if hf_tokenizer and importlib.util.find_spec("transformers") is None:  # before the slow build
        raise ModelParameterError("model", model, f"{{p:model}} {model} takes its tokenizer ({hf_tokenizer}) from "
                                  "Hugging Face transformers, which is not installed: pip install 'cliplab[hf]'",
                                  prefix=False)

    oc_precision = {"amp": "fp32", "amp_bf16": "fp32"}.get(precision, precision)
    needs_network = bool(tag_cfg) or model.startswith("hf-hub:")
    offline = needs_network and not network_available()
    local_dir = Path(model[len("local-dir:"):]) if model.startswith("local-dir:") else None
    random_init = not pretrained and not model.startswith("hf-hub:") and (
        local_dir is None or _find_checkpoint_in_dir(local_dir) is None)
    try:
        with quiet_hub(offline), seeded(RANDOM_SEED if random_init else None):
            net, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device, precision=oc_precision, force_quick_gelu=quick_gelu,
                image_mean=preprocess_override.get("mean"), image_std=preprocess_override.get("std"),
                image_interpolation=preprocess_override.get("interpolation"),
                image_resize_mode=preprocess_override.get("resize_mode"),
            )
    except ModelLoadError:
        raise
    except Exception as exc:  # download failures surface as RuntimeError/OSError/HF errors
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        why = "no network and not in the local cache" if offline else msg
        if pretrained and not os.path.isfile(pretrained):
            raise ModelParameterError("pretrained", pretrained, f"cannot get pretrained weights {pretrained!r} for "
                                      f"{model} ({why}); {OFFLINE_HINT}", prefix=False) from None
        if model.startswith("hf-hub:"):
            raise ModelParameterError("model", model, f"cannot get {model} from the Hugging Face hub ({why}); "
                                      f"{OFFLINE_HINT}", prefix=False) from None
        if pretrained and os.path.isfile(pretrained):
            why = checkpoint_mismatch(name, pretrained, quick_gelu)
            if why:
                raise ModelParameterError(
                    "pretrained", pretrained, f"{{p:pretrained}} {pretrained} does not fit {{p:model}} {model}: {why}; "
                    "the checkpoint was saved from another architecture: pass the model config it was trained with "
                    "({p:model} CONFIG.json) or the matching open_clip name (`cliplab models`)", prefix=False) from None
        full = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()) or type(exc).__name__
        raise ModelParameterError("pretrained", pretrained, f"cannot load {model} with {{p:pretrained}} {pretrained}: "
                                  f"{full if len(full) <= 300 else full[:297] + '...'}", prefix=False) from None
    net.eval()
    tokenizer = load_tokenizer(model, name, hf_tokenizer)
    pp_cfg = dict(net.visual.preprocess_cfg)
    if model_cfg is None:  # hf-hub / local-dir: take the config open_clip resolved
        model_cfg = {"source": model}
    if pretrained and os.path.isfile(pretrained):
        weights = weights_identity(pretrained)
    elif pretrained:
        weights = "tag:" + hash_json({k: v for k, v in tag_cfg.items()})[:16] + f":{pretrained}"
    elif random_init:
        weights = state_dict_identity(net)  # the tensors themselves: equal across runs, as they are seeded
    elif local_dir is not None:
        weights = weights_identity(_find_checkpoint_in_dir(local_dir))
    else:
        weights = "hub:" + model
    arch = deepcopy(model_cfg)
    arch["quick_gelu_forced"] = quick_gelu
    embed_dim = int(getattr(net, "embed_dim", None) or model_cfg.get("embed_dim") or _probe_dim(net, pp_cfg))
    if random_init:
        pretrained = random_weights(RANDOM_SEED)
    return dict(model=net, preprocess=preprocess, tokenizer=tokenizer, name=model, pretrained=pretrained,
                preprocess_cfg=_jsonable(pp_cfg), arch=arch, weights=weights, embed_dim=embed_dim,
                random_seed=RANDOM_SEED if random_init else None,
                trained_on=_trained_on(name, pretrained) if tag_cfg else None)


def _trained_on(arch: str, tag: str) -> str | None:
    """The pretraining data of an open_clip tag (its config's record, else its name's convention), None: unknown."""
    from cliplab.models.facts import UNKNOWN, tag_data

    data = tag_data(arch, tag)
    return None if data == UNKNOWN else data


def hf_tokenizer_name(name: str, model_cfg: dict | None) -> str | None:
    """The Hugging Face tokenizer an open_clip architecture takes its tokenizer from (SigLIP, SigLIP 2, ...), if any."""
    text_cfg = (model_cfg or {}).get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        return str(text_cfg["hf_tokenizer_name"])
    if model_cfg is not None and "siglip" in name.lower():
        return f"open_clip's SigLIP tokenizer for {name}"
    return None


def load_tokenizer(model: str, name: str, hf_tokenizer: str | None):
    """open_clip's tokenizer of ``name``; a Hugging Face tokenizer that cannot be had is a :class:`ParameterError`
    naming ``model``."""
    if not hf_tokenizer:
        return open_clip.get_tokenizer(name)
    try:
        with quiet_hub(not network_available()):
            return open_clip.get_tokenizer(name)
    except ImportError as exc:
        raise ModelParameterError("model", model, f"{{p:model}} {model} takes its tokenizer ({hf_tokenizer}) from "
                                  f"Hugging Face transformers ({exc}): pip install 'cliplab[hf]'",
                                  prefix=False) from None
    except Exception as exc:  # noqa: BLE001 - hub and file errors of transformers, reported the same way
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelParameterError("model", model, f"cannot get the tokenizer of {{p:model}} {model} ({hf_tokenizer}: "
                                  f"{why}); run once with internet so that the Hugging Face cache holds it",
                                  prefix=False) from None


def random_weights(seed: int) -> str:
    """How results name the weights of a model built without any: ``random (seed 0)``."""
    return f"random (seed {seed})"


@contextlib.contextmanager
def seeded(seed: int | None):
    """Build under torch's CPU generator seeded with ``seed`` (nothing when None), leaving the caller's generator
    state as it was (open_clip builds on the CPU, then moves the model to its device)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def checkpoint_mismatch(name: str, checkpoint: str, quick_gelu: bool = False, examples: int = 2) -> str | None:
    """Why ``checkpoint`` does not fit the open_clip architecture ``name``: counts (and first examples) of
    parameters whose shapes differ, that the model needs but the checkpoint lacks, and that the checkpoint has
    but the model does not. None when that cannot be worked out or nothing differs."""
    try:
        got = {k: tuple(v.shape) for k, v in load_state_dict(checkpoint).items() if hasattr(v, "shape")}
        with torch.device("meta"), quiet_hub(False):  # the architecture's shapes, no weights allocated
            net = open_clip.create_model(name, pretrained=None, device="meta", force_quick_gelu=quick_gelu)
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    except Exception:  # noqa: BLE001 - a diagnosis only; the caller falls back to the loader's own message
        return None

    def fmt(shape):
        return "x".join(map(str, shape)) or "scalar"

    def listed(items, what):
        shown = ", ".join(items[:examples]) + (", ..." if len(items) > examples else "")
        return f"{len(items)} {what} ({shown})"

    shapes = [f"{k}: checkpoint {fmt(got[k])}, model {fmt(want[k])}" for k in want if k in got and got[k] != want[k]]
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    parts = [listed(x, what) for x, what in ((shapes, "parameters with other shapes"),
                                             (missing, "parameters missing from the checkpoint"),
                                             (extra, "checkpoint entries the model does not have")) if x]
    return "; ".join(parts) or None


def needs_quick_gelu(name: str, tag_cfg: dict, model_cfg: dict | None) -> bool:
    """OpenAI weights were trained with QuickGELU; open_clip's tag config says so. Force it unless the
    architecture already has it (``*-quickgelu`` configs)."""
    if name.endswith("-quickgelu") or (model_cfg or {}).get("quick_gelu"):
        return False
    return bool(tag_cfg.get("quick_gelu", False))


def _probe_dim(net, pp_cfg) -> int:
    return int(net.text_projection.shape[-1]) if hasattr(net, "text_projection") else -1


def _jsonable(cfg: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def list_architectures() -> list[str]:
    return open_clip.list_models()


def list_pretrained() -> list[tuple[str, str]]:
    return open_clip.list_pretrained()
