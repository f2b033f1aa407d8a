"""The strict stand-in device: array-api-strict on its non-default device. A second device
for CI that refuses host arrays mixed into device code and any implicit device-to-host
conversion, as a GPU would; it runs the generic ``Device`` code as it is."""

from __future__ import annotations

import numpy as np

from gpucat.backends.base import Device
from gpucat.errors import GpucatError


class StrictDevice(Device):
    name, flag = "strict", "strict"

    def __init__(self):
        try:
            import array_api_strict
        except ImportError:
            raise GpucatError(
                "the strict stand-in device needs array-api-strict: pip install array-api-strict"
            ) from None
        xp = array_api_strict
        super().__init__(xp, xp.Device("device1"), "array-api-strict stand-in device (device1)")

    def to_host(self, x):
        return np.from_dlpack(x.to_device(self.xp.Device("CPU_DEVICE")))
