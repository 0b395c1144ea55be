"""The names of the mmdet and mmseg integrations, in the root registry, so
that building one without its subpackage says which subpackage to import.

``UpsamplerFPN`` and ``UpsamplerMaskHead`` are registered in mmdet's
registry by ``carafe_mm.mmdet``, and ``UpsamplerUPerHead`` in mmseg's by
``carafe_mm.mmseg``; importing ``carafe_mm`` imports neither library. A
registry looks a name up in its own scope before its parents, so under
mmdet's or mmseg's scope the real classes are found first, and the
stand-ins registered here are reached only where a name is missing. They
raise a ``KeyError`` (as mmengine does for an unknown name) that says what
to import, or, when the subpackage is imported, which scope to build in.
"""
import importlib.util
import sys

from mmengine.registry import MODELS

#: Name of each integration: (the subpackage that registers it, its scope).
INTEGRATIONS = {
    'UpsamplerFPN': ('carafe_mm.mmdet', 'mmdet'),
    'UpsamplerMaskHead': ('carafe_mm.mmdet', 'mmdet'),
    'UpsamplerUPerHead': ('carafe_mm.mmseg', 'mmseg'),
}


def missing_integration(name, subpackage, scope):
    """A stand-in for ``name`` that raises a ``KeyError`` naming
    ``subpackage`` (or ``scope``, when the subpackage is imported)."""

    def build(*args, **kwargs):
        if subpackage in sys.modules:
            raise KeyError(
                f'{name} is in the {scope}::model registry, not in the '
                f'current scope: build it with default_scope={scope!r}, or '
                f'as type={scope + "." + name!r}')
        message = (f'{name} is registered by {subpackage}, which is not '
                   f'imported: add custom_imports = dict(imports='
                   f'[{subpackage!r}], allow_failed_imports=False) to the '
                   f'config (or import {subpackage})')
        if importlib.util.find_spec(scope) is None:
            message += (f'; it needs {scope}, which is not installed: '
                        f'pip install "carafe_mm[{scope}]"')
        raise KeyError(message)

    build.__name__ = build.__qualname__ = name
    return build


for _name, (_subpackage, _scope) in INTEGRATIONS.items():
    MODELS.register_module(
        name=_name, module=missing_integration(_name, _subpackage, _scope))
