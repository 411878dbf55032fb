"""Checkpoints that resume a run exactly, and that refuse, with a message, what they could not give back.

:func:`save_checkpoint` writes the model's weights, the optimizer and scheduler states, the
:class:`~rnnlib.train.History`, PyTorch's random state and an ``extra`` dict in one file;
:func:`load_checkpoint` puts them back. Three promises:

* **What is saved loads.** ``load_checkpoint`` reads with ``torch.load(..., weights_only=True)``: tensors,
  numbers, strings, ``None``, lists, tuples and dicts, plus the course's own :class:`~rnnlib.text.Vocab`,
  never code. ``save_checkpoint`` refuses anything else *before writing*, naming the key and the type
  and what to store instead (a NumPy array as ``torch.as_tensor(a)``, a dataclass as
  ``dataclasses.asdict(d)``), so a file is never saved and then refused at load time.
* **A save never destroys the previous checkpoint.** The bytes go to a temporary file in the same folder,
  renamed over the old file only once complete; an interrupt, a full disk or a permission error leaves
  the previous checkpoint as it was (and the error says so). Files get the usual permissions (the umask).
* **Loading is all or nothing.** Everything is checked first (the file, its layout, the model's keys and
  shapes, the optimizers' groups and state shapes); if applying it still fails, every object is put back
  as it was. An empty, truncated or foreign file (a plain ``state_dict``, a text file) gets a message
  that names the file and what is wrong with it.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import errno
import io
import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "atomic_save"]

FORMAT = "rnnlib-checkpoint-1"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read as asked; the message names the file or key and what to do."""


# ------------------------------------------------------------------------------------------ what loads
def _safe_classes() -> list:
    from .text import Vocab  # the course's own types that a checkpoint may hold

    return [Vocab]


@contextmanager
def _allow_course_types():
    """Let ``torch.load(weights_only=True)`` build the course's own types, only within this block."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if safe_globals is None:
        yield
    else:
        with safe_globals(_safe_classes()):
            yield


_ALWAYS = {type(None), bool, int, float, str, torch.Tensor, nn.Parameter, torch.Size, torch.dtype, torch.device}
_MAYBE = {complex: 1j, bytes: b"x", bytearray: bytearray(b"x"), set: {1}, torch.layout: torch.strided}
_loadable_cache: dict = {}


def _loads_back(cls) -> bool:
    """Whether an object of type ``cls`` survives ``torch.save`` then ``load_checkpoint``'s reading (asked once)."""
    if cls not in _loadable_cache:
        from .text import Vocab

        sample = Vocab("ab") if cls is Vocab else _MAYBE[cls]
        buffer = io.BytesIO()
        torch.save({"x": sample}, buffer)
        buffer.seek(0)
        try:
            with _allow_course_types():
                torch.load(buffer, weights_only=True)
            _loadable_cache[cls] = True
        except Exception:
            _loadable_cache[cls] = False
    return _loadable_cache[cls]


def _is_loadable_leaf(obj) -> bool:
    cls = type(obj)
    if cls in _ALWAYS:
        return True
    if cls in _MAYBE or cls in _safe_classes():
        return _loads_back(cls)
    return False


def _instead(obj) -> str:
    """What to store in place of an object that a checkpoint cannot hold."""
    cls = type(obj)
    module = cls.__module__.split(".")[0]
    if module == "numpy":
        return ("store torch.as_tensor(value) for an array (value.numpy() turns it back) or value.item() for a "
                "NumPy number")
    if dataclasses.is_dataclass(obj):
        return f"store dataclasses.asdict(value) (and rebuild it with {cls.__name__}(**saved))"
    if isinstance(obj, torch.Generator):
        return "store generator.get_state() (a tensor; generator.set_state(saved) puts it back)"
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return "store value.state_dict() (and load it back with load_state_dict)"
    if isinstance(obj, os.PathLike):
        return "store str(value)"
    if isinstance(obj, (set, frozenset, range)):
        return "store list(value)"
    if callable(obj):
        return "a checkpoint holds data, not code: store the settings that rebuild it"
    if isinstance(obj, (int, float, str)):
        return f"store {type(obj).__mro__[-2].__name__}(value)"  # e.g. an IntEnum as int(value)
    return "store its contents as tensors, numbers, strings, lists and dicts"


def _plain_key(key) -> bool:
    """A dict key that loads back: a number, string, bytes, None, dtype or device, or a tuple of them."""
    if type(key) is tuple:
        return all(_plain_key(k) for k in key)
    return type(key) in (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device) and \
        _is_loadable_leaf(key)


def _first_unloadable(obj, where: str, seen: set):
    """``(where, obj)`` for the first object inside ``obj`` that ``load_checkpoint`` would refuse, else None."""
    if _is_loadable_leaf(obj):
        return None
    cls = type(obj)
    if cls in (dict, collections.OrderedDict):
        if id(obj) in seen:
            return None
        seen.add(id(obj))
        for key, value in obj.items():
            if not _plain_key(key):
                return f"{where}, key {key!r}", key
            found = _first_unloadable(value, f"{where}[{key!r}]", seen)
            if found:
                return found
        return None
    if cls in (list, tuple):
        if id(obj) in seen:
            return None
        seen.add(id(obj))
        for k, value in enumerate(obj):
            found = _first_unloadable(value, f"{where}[{k}]", seen)
            if found:
                return found
        return None
    return where, obj


def _check_saveable(payload: dict) -> None:
    found = _first_unloadable(payload, "checkpoint", set())
    if found is not None:
        where, obj = found
        where = where.replace("checkpoint['extra']", "extra", 1)
        cls = type(obj)
        raise CheckpointError(
            f"cannot save {where}: it is a {cls.__module__}.{cls.__qualname__}, and load_checkpoint reads only "
            "tensors, numbers, strings, None, and lists, tuples and dicts of them (plus rnnlib's Vocab), never "
            f"other objects, so it would refuse the file. Nothing was written; {_instead(obj)}."
        )


# ---------------------------------------------------------------------------------------------- saving
def _state_of(obj):
    """``state_dict()`` of an optimizer/scheduler, a list of them, or None."""
    if obj is None:
        return None
    if isinstance(obj, (list, tuple)):
        return [o.state_dict() for o in obj]
    return obj.state_dict()


def atomic_save(payload, path: Path) -> None:
    """``torch.save`` into a temporary file next to ``path``, then rename it over ``path`` (usual permissions).

    On any failure (an interrupt, a full disk, no permission) the temporary file is removed and ``path``
    keeps whatever it held before; the error says so.
    """
    from .data import file_mode

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot save to {path}: it is a folder; give the path of a file "
                                              f"in it, e.g. {path / 'checkpoint.pt'}")
    kept = f"the previous file at {path} is unchanged" if path.exists() else f"nothing was written to {path}"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".part")
        os.close(fd)
        torch.save(payload, tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes it 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:  # the same OSError subclass (PermissionError, ...), with a message that says more
        raise OSError(exc.errno, f"could not write {path}: {exc.strerror or exc} ({exc.filename or path}); "
                                 f"{kept}. Free some space or choose a folder you can write to") from exc
    except RuntimeError as exc:  # torch's zip writer reports a failed write (e.g. a full disk) this way
        raise CheckpointError(f"could not write {path}: {str(exc).splitlines()[0]}; {kept}. Free some space or "
                              "choose another folder") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def save_checkpoint(path, model: nn.Module, optimizer=None, scheduler=None, history=None,
                    extra: dict | None = None) -> None:
    """Save everything needed to resume exactly: weights, optimizer and scheduler state, history, RNG state.

    ``optimizer`` and ``scheduler`` may be one object or a list. ``extra`` holds whatever else decides the
    rest of the run (e.g. a batch generator's ``get_state()``): tensors, numbers, strings, ``None``,
    lists, tuples and dicts of them, and :class:`~rnnlib.text.Vocab`. Anything else raises
    :class:`CheckpointError` before a byte is written, naming the key and what to store instead.
    Written atomically (see :func:`atomic_save`).
    """
    if extra is not None and not isinstance(extra, dict):
        raise CheckpointError(f"extra must be a dict of named values, got a {type(extra).__name__}")
    payload = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": _state_of(optimizer),
        "scheduler": _state_of(scheduler),
        "history": history.to_dict() if history is not None else None,
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    _check_saveable(payload)
    path = Path(path).expanduser()
    _refuse_to_replace_other_files(path)
    atomic_save(payload, path)


def _refuse_to_replace_other_files(path: Path) -> None:
    """A file at ``path`` is replaced only if it is a checkpoint (an older one of this run, usually)."""
    if not path.is_file():
        return
    try:
        with _allow_course_types():  # mmap: only the small index of the file is read, not its tensors
            old = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ours = isinstance(old, dict) and {"model", "torch_rng", "extra"} <= set(old)
    except Exception:
        ours = False
    if not ours:
        raise CheckpointError(f"{path} exists and is not a checkpoint written by save_checkpoint (it is another "
                              "file, or a damaged one), so it is not replaced. Move it away, or save to another path")


# --------------------------------------------------------------------------------------------- loading
def _read(path: Path, device) -> dict:
    """The checkpoint's contents, or an error that names the file and what is wrong with it."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): whatever wrote it stopped before writing anything. "
                              "Use an earlier checkpoint, or train again")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read the checkpoint {path}: {exc.strerror}") from exc
    try:
        with _allow_course_types():
            payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc) and "global" not in str(exc):
            raise CheckpointError(f"{path} ({size:,} bytes) is damaged: {str(exc).splitlines()[0]}") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else "an object that is not a tensor or a plain value"
        raise CheckpointError(
            f"{path} holds a {what}, which load_checkpoint does not read: it reads only tensors and plain values, "
            "never code, and save_checkpoint never writes anything else. The file was written by other code; "
            "read it with that code, or load it with torch.load(..., weights_only=False) only if you trust "
            "whoever made it (unpickling can run any code)"
        ) from None
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0]
        if head == _ZIP_MAGIC:
            raise CheckpointError(
                f"{path} ({size:,} bytes) is truncated or damaged: it starts like a file written by torch.save but "
                f"cannot be read ({reason}). Use an earlier checkpoint, or train again"
            ) from None
        raise CheckpointError(
            f"{path} ({size:,} bytes, starting with {head!r}) is not a checkpoint: it is not a file written by "
            "torch.save"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint written by save_checkpoint")
    if "model" not in payload:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise CheckpointError(
                f"{path} is a plain state_dict ({len(payload)} tensors, e.g. {next(iter(payload))!r}), as "
                "torch.save(model.state_dict(), path) writes, not a checkpoint of save_checkpoint: load it with "
                "model.load_state_dict(torch.load(path, weights_only=True))"
            )
        keys = ", ".join(map(repr, list(payload)[:8]))
        raise CheckpointError(f"{path} is not a checkpoint written by save_checkpoint: it holds the keys {keys}, "
                              "but no 'model'")
    return payload


def _shape(t) -> tuple:
    return tuple(t.shape)


def _check_model(state, model: nn.Module, path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: its 'model' entry is not a state_dict of tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [f"{k}: {_shape(state[k])} in the file, {_shape(own[k])} in the model"
               for k in own if k in state and _shape(state[k]) != _shape(own[k])]
    if missing or unexpected or resized:
        parts = []
        if missing:
            parts.append(f"missing from the file: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in the model: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if resized:
            parts.append("other shapes: " + "; ".join(resized[:5]) + (" ..." if len(resized) > 5 else ""))
        raise CheckpointError(
            f"{path} holds the weights of a different model ({'; '.join(parts)}). Build the model with the "
            "settings it was saved with (sizes, cell, number of layers). Nothing was loaded"
        )


_ELEMENTWISE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta", "sum")


def _check_optimizer(opt, state, path: Path, label: str) -> None:
    if not isinstance(state, dict) or "param_groups" not in state or "state" not in state:
        raise CheckpointError(f"{path}: the {label} entry is not an optimizer state_dict")
    groups = state["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
            len(g["params"]) != len(o["params"]) for g, o in zip(groups, opt.param_groups)):
        saved = [len(g["params"]) for g in groups]
        given = [len(g["params"]) for g in opt.param_groups]
        raise CheckpointError(
            f"{path}: the {label} was saved for parameter groups of sizes {saved}, but the given one has {given}. "
            "Build the optimizer over the same parameters, in the same groups, as when it was saved. Nothing was loaded"
        )
    params = [p for group in opt.param_groups for p in group["params"]]
    ids = [i for group in groups for i in group["params"]]
    for saved_id, param in zip(ids, params):
        entry = state["state"].get(saved_id, {})
        for key in _ELEMENTWISE:
            value = entry.get(key)
            if isinstance(value, torch.Tensor) and _shape(value) != _shape(param):
                raise CheckpointError(
                    f"{path}: the {label}'s {key} of parameter {saved_id} has shape {_shape(value)}, the parameter "
                    f"{_shape(param)}: the optimizer was saved for a different model. Nothing was loaded"
                )


def _pair_up(objs, states, name: str, path: Path) -> list:
    if objs is None:
        return []
    if states is None:
        raise CheckpointError(f"{path} holds no {name} state (it was saved without one); load it without {name}=")
    objs = list(objs) if isinstance(objs, (list, tuple)) else [objs]
    states = states if isinstance(states, list) else [states]
    if len(objs) != len(states):
        raise CheckpointError(f"{path} holds the state of {len(states)} {name}(s), but {len(objs)} were given")
    return list(zip(objs, states))


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def load_checkpoint(path, model: nn.Module, optimizer=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects, all or nothing.

    Reads with ``torch.load(..., weights_only=True)`` (tensors and plain values, never code). Everything is
    checked before any object changes; a failure raises :class:`CheckpointError` and changes nothing.
    Returns ``{"history": History | None, "extra": dict}``.
    """
    from .train import History

    path = Path(path).expanduser()
    payload = _read(path, _device_of(model))
    _check_model(payload["model"], model, path)
    optimizers = _pair_up(optimizer, payload.get("optimizer"), "optimizer", path)
    for k, (opt, state) in enumerate(optimizers):
        _check_optimizer(opt, state, path, f"optimizer {k}" if len(optimizers) > 1 else "optimizer")
    schedulers = _pair_up(scheduler, payload.get("scheduler"), "scheduler", path)
    try:
        history = History.from_dict(payload["history"]) if payload.get("history") is not None else None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its history cannot be read ({exc})") from None
    rng = payload.get("torch_rng")
    if restore_rng and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.dim() == 1):
        raise CheckpointError(f"{path} holds no random-number state; load it with restore_rng=False")

    targets = [(model, payload["model"])] + optimizers + schedulers
    backups = [(obj, copy.deepcopy(obj.state_dict())) for obj, _ in targets]
    touched = []
    try:
        for obj, state in targets:
            touched.append(obj)
            obj.load_state_dict(state)
    except Exception as exc:
        for obj, state in backups[: len(touched)]:  # put back everything touched so far, the failing one too
            try:
                obj.load_state_dict(state)
            except Exception:
                pass
        raise CheckpointError(f"{path} could not be loaded into the given objects ({exc}); nothing was changed") \
            from exc
    if restore_rng:
        torch.set_rng_state(rng.cpu())
    return {"history": history, "extra": payload.get("extra", {})}
