"""``python -m puzzle_rms.bench``: the RMSProp step against the memory-bandwidth ceiling, naive NumPy and torch.

An RMSProp step is memory-bound: the plain variant reads ``w, g, ms`` and writes ``w, ms`` (20 bytes per
float32 parameter); centered with momentum reads 5 and writes 4 buffers (36 bytes). For every case the
benchmark times, in one process and interleaved round by round (so that a noisy machine slows every row
alike):

* a *probe*: a fused loop with the step's own access pattern and byte count and trivial arithmetic, on
  the same device (Numba on the CPU, a CuPy kernel on the GPU; plus a plain device copy on the GPU). It is
  the ceiling: STREAM triad would ignore write-allocate, which an in-place update does not pay;
* the backend's raw kernel (``Backend.rmsprop_update`` on the optimizer's own buffers);
* the real optimizer, ``RMSProp.update()`` after ``setupOn(..., useGlobalState=True)``, with the default
  ``nonFinite="raise"`` (one extra reduction pass reading ``g``) and with ``nonFinite="ignore"``; for
  many small tensors also with local state and, for reference, one flat tensor of the same total size;
* the same step written the textbook way with NumPy (or CuPy) temporaries, and ``torch.optim.RMSprop``
  with ``foreach`` on and off on the same device, when torch is installed.

Every row reports min/median/max milliseconds per step over ``--repeat`` rounds (after ``--warmup``
calls; a round repeats the call until it lasts ``--min-time``), the effective bandwidth counted with the
step's own bytes, and the fraction of the probe. The cases: plain and centered+momentum; 1M, 16M and 64M
parameters in one tensor; 200 x 1,000 and 2,000 x 100 tensors; float16 parameters (GPU only); the lazy
row-sparse update of an Embedding. Numba's cold start (compiling, empty cache) and warm start (disk cache
hit) are measured in fresh subprocesses.

torch is imported before anything can start Numba's thread pool: the other order makes torch's CPU
kernels pick up the wrong OpenMP runtime and run up to ~100x slower. No module of this package imports
Numba (or CuPy) when it is imported; :mod:`.cli` imports torch first and only then lets a backend start.

One module per concern: :mod:`.cases` (the step, the sizes, bytes per parameter), :mod:`.timing` (rows
and interleaved rounds), :mod:`.probes` (the ceiling), :mod:`.library_rows` (puzzle_rms's kernel and
optimizer), :mod:`.baselines` (naive NumPy/CuPy, torch), :mod:`.runner` (one case end to end),
:mod:`.goals` (the project's benchmark goals), :mod:`.startup` (Numba's cold and warm start),
:mod:`.report` (header, tables, JSON) and :mod:`.cli` (options and ``main``).
"""
