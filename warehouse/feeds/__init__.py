"""Feed adapters, one module per vendor protocol: frame in, records out. Pure: no I/O, no clock.

A feed module defines KIND, OPTIONS ({key: (type, required)}), SECRET_OPTIONS (option keys that
name environment variables holding secrets), DEFAULT_SILENCE_S, `connect(options, secrets,
resume_id) -> ConnectSpec`, an `Adapter(source, options)` with `handle(message, received_at) -> Output`,
and optionally `validate(options) -> str | None`. Modules are found by KIND: adding a vendor is
adding a file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules_by_kind(package: str, path: list[str], required: tuple[str, ...]) -> dict[str, ModuleType]:
    """The modules of `package` that define KIND and every name in `required`, by KIND."""
    found = {}
    for info in pkgutil.iter_modules(path):
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, "KIND") and all(hasattr(module, name) for name in required):
            found[module.KIND] = module
    return found


def feed_modules() -> dict[str, ModuleType]:
    """Every feed module of this package, by its KIND."""
    return modules_by_kind(__name__, __path__, ("Adapter", "connect"))
