"""An offline text corpus every Python install has: the standard library's docstrings.

Walks a fixed list of pure-library modules with `inspect` (module, class, function and method
docstrings), in a sorted, deterministic order, and de-duplicates. The text depends on the Python
version (docstrings change between releases) but not on the machine or on import order.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
from collections.abc import Iterable

import torch

from genloom.text.specials import MASK_ID

# modules that import without side effects (no GUI, no network, no printing) on every platform
DEFAULT_MODULES = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "collections", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch",
    "fractions", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "inspect", "io", "ipaddress", "itertools", "json", "logging", "lzma", "math", "mimetypes", "numbers",
    "operator", "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "shlex",
    "shutil", "statistics", "string", "struct", "tarfile", "tempfile", "textwrap", "threading", "time",
    "timeit", "tokenize", "typing", "unittest", "urllib.parse", "uuid", "warnings", "weakref", "zipfile",
)  # fmt: skip


def _docstrings_of_module(name: str) -> Iterable[str]:
    module = importlib.import_module(name)
    yield inspect.getdoc(module) or ""
    for attr_name, obj in sorted(vars(module).items()):
        if attr_name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            yield inspect.getdoc(obj) or ""
            for _, member in sorted(vars(obj).items()):
                if inspect.isfunction(member) and member.__doc__:
                    yield inspect.cleandoc(member.__doc__)
        elif inspect.isfunction(obj):
            yield inspect.getdoc(obj) or ""


def stdlib_docstrings(modules: Iterable[str] = DEFAULT_MODULES, *, min_chars: int = 40) -> list[str]:
    """De-duplicated docstrings of `modules` (at least `min_chars` characters each), in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []
    for name in modules:
        with warnings.catch_warnings():  # typing.io / typing.re warn when touched
            warnings.simplefilter("ignore", DeprecationWarning)
            docs = list(_docstrings_of_module(name))
        for doc in docs:
            text = doc.strip()
            if len(text) >= min_chars and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def split_corpus(texts: Iterable[str], *, val_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """Deterministic train / validation split by a hash of each text (stable across runs and machines)."""
    train, val = [], []
    for text in texts:
        bucket = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") / 2**32
        (val if bucket < val_fraction else train).append(text)
    return train, val


def token_windows(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    """Concatenate the texts' ids (each followed by eos) and cut them into non-overlapping [N, length] windows.

    The mask id (3) is replaced by pad so that a diffusion model's mask token never occurs in data.
    """
    ids = torch.tensor([i for row in tokenizer.encode_batch(texts, add_eos=True) for i in row])
    ids = ids.masked_fill(ids == MASK_ID, 0)
    return ids[: len(ids) // length * length].view(-1, length)
