"""Make a subpackage callable as the front-door function of the same name (``stainseg.train`` ...).

``stainseg.train``, ``stainseg.segment`` and ``stainseg.evaluate`` are both functions of the Python API
(:mod:`stainseg.api`) and subpackages. Importing a submodule rebinds the package attribute to the
subpackage, so each subpackage is made callable and calls the function; its submodules work as before.
"""

from __future__ import annotations

import sys
import types


def callable_package(module_name: str, function_name: str) -> None:
    """Let ``sys.modules[module_name](...)`` call ``stainseg.api.<function_name>(...)``."""

    class _CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from stainseg import api

            return getattr(api, function_name)(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallablePackage
