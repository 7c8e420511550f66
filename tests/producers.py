"""Minimal non-numpy array types, for the tests of what the API accepts and returns."""

from __future__ import annotations

import numpy as np


class DLPackOnly:
    """Exports its data through DLPack only (no ``__array__``)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


class Foreign(DLPackOnly):
    """A DLPack producer with an array-API namespace: results must come back as this type."""

    def __array_namespace__(self):
        return ForeignNamespace


class ForeignNamespace:
    @staticmethod
    def asarray(obj):
        return Foreign(np.asarray(obj))
