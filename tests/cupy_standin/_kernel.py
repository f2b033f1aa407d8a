"""``ElementwiseKernel`` for the stand-in: the kernel's own operation text, compiled for the
host by the C++ compiler and run over every element, with CuPy's rules for its arguments
(cupy/_core/_kernel.pyx, CuPy 14):

- parameters ``"T x, float32 y, raw T z"``: a one-letter type is a placeholder bound from
  the array arguments (outputs first, then inputs), a dtype name is fixed; an array whose
  dtype differs from what its parameter is bound to is refused ("Type is mismatched",
  TypeError); Python and NumPy scalars bind nothing and are converted to their parameter's
  type; NumPy arrays and other objects are refused ("Unsupported type", TypeError);
- the call takes the inputs alone (outputs are made) or inputs and outputs;
- every non-raw array, outputs included, is broadcast to one shape; a given output of
  another shape is refused ("Out shape is mismatched", ValueError); no array at all is
  "Loop size is undecided" (ValueError);
- in the operation an input array element is a ``const T &``, an output element a ``T &``
  (an output is read and written in place), a scalar a ``const T``, ``i`` the element's
  index; ``exp``, ``fabs``, ``log1p``, ``sqrt`` and the rest of CUDA's math functions are
  C++'s overloads for float and double.

``raw`` parameters are not modelled (gpucat uses none): a kernel with one says so.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from ._core import check_operand, ndarray

CTYPES = {
    np.dtype(np.float64): "double",
    np.dtype(np.float32): "float",
    np.dtype(np.int64): "long long",
    np.dtype(np.int32): "int",
    np.dtype(np.int16): "short",
    np.dtype(np.int8): "signed char",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.bool_): "bool",
}
TEMPLATE = """
#include <cmath>
#include <cstddef>
#include <cstdint>
using namespace std;
{typedefs}
extern "C" void {name}(void **_args, const ptrdiff_t *_strides, const ptrdiff_t *_shape,
                       int _ndim, ptrdiff_t _size) {{
  for (ptrdiff_t i = 0; i < _size; ++i) {{
    ptrdiff_t _rem = i;
    ptrdiff_t _off[{nargs}] = {{0}};
    for (int _d = _ndim - 1; _d >= 0; --_d) {{
      ptrdiff_t _k = _rem % _shape[_d];
      _rem /= _shape[_d];
      for (int _a = 0; _a < {nargs}; ++_a) _off[_a] += _k * _strides[_a * _ndim + _d];
    }}
{bindings}
    {{
{operation};
    }}
  }}
}}
"""


class Param:
    """One parameter as CuPy's ParameterInfo reads it."""

    def __init__(self, text: str, is_const: bool):
        words = text.split()
        if len(words) < 2:
            raise Exception(f"Syntax error: {text}")
        t, self.name = words[-2:]
        self.raw, self.is_const = False, is_const
        for w in words[:-2]:
            if w == "raw":
                self.raw = True
            elif w == "_non_const":
                self.is_const = False
            else:
                raise Exception(f'Unknown keyword "{w}"')
        self.ctype, self.dtype = (t, None) if len(t) == 1 else (None, np.dtype(t))


def params(text: str, is_const: bool) -> tuple[Param, ...]:
    return tuple(Param(p, is_const) for p in text.strip().split(",")) if text.strip() else ()


class Compiler:
    """g++ behind a cache: each distinct kernel source is built once per process, into a
    folder of its own that is removed when the process ends."""

    def __init__(self):
        self._lock, self._libs, self._dir = threading.Lock(), {}, None

    def function(self, source: str, name: str):
        with self._lock:
            key = hashlib.sha256(source.encode()).hexdigest()[:20]
            if key not in self._libs:
                if self._dir is None:
                    self._dir = Path(tempfile.mkdtemp(prefix="cupy-standin-"))
                    atexit.register(shutil.rmtree, self._dir, True)
                cpp, so = self._dir / f"{key}.cpp", self._dir / f"{key}.so"
                cpp.write_text(source)
                cmd = ["g++", "-std=c++17", "-O2", "-ffp-contract=off", "-shared", "-fPIC"]
                done = subprocess.run(
                    [*cmd, str(cpp), "-o", str(so)], capture_output=True, text=True
                )
                if done.returncode:
                    raise CompileException(done.stderr, source, name)
                self._libs[key] = ctypes.CDLL(str(so))
            fn = getattr(self._libs[key], name)
            fn.restype = None
            return fn


COMPILER = Compiler()


class CompileException(Exception):
    """The kernel source does not compile (CuPy: cupy.cuda.compiler.CompileException)."""

    def __init__(self, log: str, source: str, name: str):
        super().__init__(f"{name}: {log.strip()}")
        self.log, self.source, self.name = log, source, name


class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):  # fmt: skip
        if not name.isidentifier():
            raise ValueError(f'Invalid kernel name: "{name}"')
        self.in_params, self.out_params = params(in_params, True), params(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")
        if any(p.raw for p in self.in_params + self.out_params):
            raise NotImplementedError("the CuPy stand-in does not model raw parameters")
        self.operation, self.name, self.preamble = operation, name, preamble
        self.no_return, self.return_tuple = no_return, return_tuple
        self.runtime = None  # set by the stand-in module that made this class

    def __call__(self, *args, size=-1, stream=None, block_size=128):
        rt = self.runtime
        rt.fault("kernel")
        if block_size <= 0:
            raise ValueError("block_size must be greater than zero")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(
                f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                f"{self.nargs} (with outputs), but given {len(args)}."
            )
        for a in args:
            check_operand(a)  # NumPy arrays, lists, ...: TypeError
        if size != -1:
            raise NotImplementedError("the CuPy stand-in does not model size= (raw arrays only)")
        ins, outs = list(args[: self.nin]), list(args[self.nin :])
        arrays = [a._a for a in args if isinstance(a, ndarray)]
        if not arrays:
            raise ValueError("Loop size is undecided.")
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        types = self._bind(ins, outs)
        if not outs:
            outs = [rt.empty(shape, types[p.ctype] if p.dtype is None else p.dtype)
                    for p in self.out_params]  # fmt: skip
        else:
            for a in outs:
                if not isinstance(a, ndarray):
                    raise TypeError("Output arguments type must be cupy.ndarray")
                if a.shape != shape:
                    raise ValueError("Out shape is mismatched")
        result = None if self.no_return else (
            outs[0] if not self.return_tuple and self.nout == 1 else tuple(outs)
        )  # fmt: skip
        if 0 in shape:
            return result
        self._launch(ins, outs, shape, types)
        return result

    def _bind(self, ins, outs) -> dict:
        """The placeholder types, as _decide_params_type_core binds them: outputs first."""
        bound: dict = {}
        pairs = list(zip(self.out_params, outs)) + list(zip(self.in_params, ins))
        for p, a in pairs:
            if not isinstance(a, ndarray):
                continue
            if p.dtype is not None:
                if a.dtype != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {p.dtype}")
            elif p.ctype in bound:
                if bound[p.ctype] != a.dtype:
                    raise TypeError(
                        f"Type is mismatched. {p.name} {a.dtype} {bound[p.ctype]} {p.ctype}"
                    )
            else:
                bound[p.ctype] = a.dtype
        for p in self.in_params + self.out_params:
            if p.dtype is None and p.ctype not in bound:
                raise KeyError(p.ctype)  # a placeholder no array binds, as in CuPy
        return bound

    def _launch(self, ins, outs, shape, types) -> None:
        ndim = len(shape)
        ptrs, strides, keep, bindings = [], [], [], []
        for k, (p, a) in enumerate(zip(self.in_params + self.out_params, ins + outs)):
            t = types[p.ctype] if p.dtype is None else p.dtype
            ctype = p.ctype if p.dtype is None else CTYPES[p.dtype]
            if isinstance(a, ndarray):
                view = np.broadcast_to(a._a, shape) if a.shape != shape else a._a
                ptrs.append(view.ctypes.data)
                strides.extend(view.strides if ndim else [])
                ref = "const " if p.is_const else ""
                bindings.append(
                    f"    {ref}{ctype} &{p.name} = *reinterpret_cast<{ref}{ctype} *>("
                    f"static_cast<{ref}char *>(_args[{k}]) + _off[{k}]);"
                )
            else:  # a scalar: converted to its parameter's type, as CScalar.apply_dtype does
                value = np.array(a, dtype=t)
                keep.append(value)
                ptrs.append(value.ctypes.data)
                strides.extend([0] * ndim)
                bindings.append(
                    f"    const {ctype} {p.name} = *reinterpret_cast<const {ctype} *>(_args[{k}]);"
                )
        typedefs = "".join(f"typedef {CTYPES[d]} {c};\n" for c, d in sorted(types.items()))
        source = TEMPLATE.format(
            typedefs=self.preamble + "\n" + typedefs,
            name=self.name,
            nargs=len(ptrs),
            bindings="\n".join(bindings),
            operation=self.operation,
        )
        fn = COMPILER.function(source, self.name)
        P = ctypes.c_ssize_t
        fn(
            (ctypes.c_void_p * len(ptrs))(*ptrs),
            (P * max(len(strides), 1))(*strides),
            (P * max(ndim, 1))(*shape),
            ctypes.c_int(ndim),
            P(int(np.prod(shape))),
        )
        del keep
