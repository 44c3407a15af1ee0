"""Checks of command-line input: each turns a mistake into one `UserError` line.

Every `ip2p` command runs these before any heavy import or model load, so a typo costs a
second, not a model load, and the message names the option, the value and what to do.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ip2p_lib.infra.errors import UserError

MAX_SEED = 2**32 - 1  # numpy's and torch's generators both take any seed in [0, 2**32)


def number(
    value: str | int | float,
    option: str,
    kind: type = float,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> int | float:
    """`value` (text or a number) as a finite `kind` (int or float) with `minimum <= value
    <= maximum` and `value > above` (each bound optional), or a `UserError` naming `option`."""
    try:
        parsed = kind(value)
        if kind is int and isinstance(value, float) and parsed != value:
            raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{option} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise UserError(f"{option} must be a finite number, got {value}")
    if minimum is not None and parsed < minimum:
        raise UserError(f"{option} must be at least {_bound(minimum)}, got {value}")
    if maximum is not None and parsed > maximum:
        raise UserError(f"{option} must be at most {_bound(maximum)}, got {value}")
    if above is not None and parsed <= above:
        raise UserError(f"{option} must be greater than {_bound(above)}, got {value}")
    return parsed


def _bound(x: float) -> str:
    """A bound as a user wrote it: 4294967295, not 4.29497e+09; 0.99, not 0.99000."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def seed(value: str | int, option: str = "--seed") -> int:
    """A random seed: an integer in [0, 2**32)."""
    return int(number(value, option, int, minimum=0, maximum=MAX_SEED))


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def output_folder(path: str | Path, option: str) -> Path:
    """Make the folder `path` (and its parents) if needed and check it is writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} exists and is not a folder; choose a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{option} {path}: cannot create this folder ({_reason(err)}); choose a folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: this folder is not writable; choose a folder you can write to")
    return path


def output_file(path: str | Path, option: str) -> Path:
    """Check that a file can be written at `path`: its folder is made if needed, and `path`
    is not a folder nor an existing file that cannot be written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give the path of a file (it may be inside this folder)")
    output_folder(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: this file is not writable; choose another path")
    return path


def input_file(path: str | Path, option: str, what: str = "file") -> Path:
    """Check that `path` is an existing, readable file (`what` names it in the message)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{option}: no {what} at {path}; check the path")
    if not path.is_file():
        raise UserError(f"{option} {path} is a folder, not a {what}; give the file inside it")
    if not os.access(path, os.R_OK):
        raise UserError(f"{option} {path}: this {what} is not readable; check its permissions")
    return path


def model_folder(name: str | Path, option: str, required_file: str, what: str = "model", hub: bool = True) -> None:
    """If `name` is a local path (it exists, or it is written like one, or `hub` is False), it
    must be a folder holding `required_file`. Any other name is left to the loader as a hub id."""
    from ip2p_lib.infra.models import _looks_like_path  # the loader's own rule for "a path, not a hub id"

    path = Path(name).expanduser()
    if hub and not (path.exists() or _looks_like_path(str(name))):
        return
    if not path.exists():
        raise UserError(f"{option}: no {what} folder at {path}")
    if not path.is_dir():
        raise UserError(f"{option} {path} is a file; give the folder that holds the {what}")
    if not (path / required_file).exists():
        raise UserError(f"{option} {path} has no {required_file}; give a folder that holds the {what}")
