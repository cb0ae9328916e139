"""Write the PuzzleLib goldens in tests/goldens/puzzlelib/ by running real PuzzleLib on its CPU backend.

Nothing here runs in the tests or in CI: the JSON and .hdf files it writes are committed, and the
tests compare puzzle_rms with them. Rerun it only to regenerate them.

Set up PuzzleLib (once; it stays outside this repository)
-------------------------------------------------------
1. Fetch the repository and export it next to a record of its commit::

       git clone https://github.com/puzzlelib/PuzzleLib /tmp/PuzzleLib.git      # or any mirror of it
       mkdir -p /work/ext && git -C /tmp/PuzzleLib.git archive --prefix=PuzzleLib/ HEAD | tar -x -C /work/ext
       git -C /tmp/PuzzleLib.git rev-parse HEAD > /work/ext/PuzzleLib.commit

   The goldens were written from commit 73a14457e4d8afc60fea331556581b641a34d125 (version 1.0.2).
2. A virtual environment with numpy and h5py (and gcc on the PATH: PuzzleLib's CPU element-wise
   kernels are C code it compiles on first use)::

       python -m venv /work/venvs/fw-puzzlelib && /work/venvs/fw-puzzlelib/bin/pip install numpy h5py

3. Run, from the repository root (``PUZZLELIB_ROOT`` defaults to /work/ext)::

       PUZZLELIB_ROOT=/work/ext /work/venvs/fw-puzzlelib/bin/python tools/puzzlelib_goldens/generate.py

PuzzleLib is selected with ``Config.backend = Config.Backend.cpu`` and its CPU
``mulMatrixOnMatrix`` is replaced in memory by one that honours ``alpha``/``beta`` (see
``puzzlelib_cpu.py``); the files on disk are not changed.

Sign convention
---------------
puzzle_rms costs return dL/dpred and optimizers subtract dL/dw; PuzzleLib's costs return -dL/dpred
and its optimizers add the gradient they are given. Every file says in ``"signConversion"`` what
was converted: cost gradients are stored negated, optimizers were fed the negated gradient, and
state buffers that carry the gradient's sign (momentum, delta, mean gradient) are stored negated.
Module backward passes are linear in the incoming gradient, so they need no conversion.

Arrays are stored as ``{"shape": [...], "dtype": "float32", "data": [flat values]}``; each value
is the shortest decimal that round-trips the float32.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import puzzlelib_cpu  # noqa: E402

PL = None  # PuzzleLib's names, set by main()
OUT = "tests/goldens/puzzlelib"

NO_CONVERSION = "none: module backward passes are linear in the incoming gradient"
COST_CONVERSION = "grad = -(PuzzleLib's cost grad), i.e. dL/dpred; error values unchanged"
OPT_CONVERSION = ("PuzzleLib was given grad = -g for each listed g (dL/dw); ms stored as is, "
                  "mom/delta/mg stored negated (PuzzleLib's buffers carry the negative)")
TRAIN_CONVERSION = "none needed: losses and weights are sign-free; PuzzleLib ran its own loop unchanged"


# --- encoding ---------------------------------------------------------------------------------
def arr(x) -> dict:
    """A float32 (or int32) array as shape, dtype and flat shortest-round-trip values."""
    x = np.asarray(x.get() if hasattr(x, "get") else x)
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
        data = [float(str(v)) for v in x.ravel()]
    else:
        x = x.astype(np.int32)
        data = [int(v) for v in x.ravel()]
    return {"shape": list(x.shape), "dtype": str(x.dtype), "data": data}


def arrs(v):
    """An array, or a list of arrays, encoded with :func:`arr`."""
    return [arr(item) for item in v] if isinstance(v, list) else arr(v)


def num(v) -> float:
    """A float32 scalar as its shortest round-trip decimal."""
    return float(str(np.float32(v)))


def header(what: str, conversion: str) -> dict:
    return {"what": what, "puzzlelib": puzzlelib_cpu.provenance(), "signConversion": conversion,
            "generator": "tools/puzzlelib_goldens/generate.py"}


def dev(x):
    return PL.gpuarray.to_gpu(np.ascontiguousarray(x, dtype=np.float32) if np.asarray(x).dtype.kind == "f"
                              else np.ascontiguousarray(x, dtype=np.int32))


def rand(rng, *shape, scale=1.0):
    return (rng.randn(*shape) * scale).astype(np.float32)


def weights(module) -> dict:
    """Every parameter under PuzzleLib's getVarTable name (first name of each Variable)."""
    return {names[0]: arr(var.data) for var, names in sorted(module.getVarTable().items(), key=lambda kv: kv[1][0])}


# --- init schemes -----------------------------------------------------------------------------
def init_schemes() -> dict:
    """Linear(insize, outsize, initscheme=..., wscale=...) after np.random.seed(seed), and the formula checked."""
    seed, insize, outsize = 1234, 6, 4
    ins, outs = insize, outsize
    factors = {"in": ins, "out": outs, "avg": (ins + outs) / 2}

    def expect(scheme, factor, wscale, shape):
        if scheme in (None, "xavier_uniform"):
            bound = math.sqrt(3.0 / factor)
            return np.random.uniform(-bound, bound, shape).astype(np.float32), f"U(-sqrt(3/{factor}), +sqrt(3/{factor}))"
        if scheme in ("xavier", "xavier_normal"):
            return np.random.normal(0, math.sqrt(1.0 / factor), shape).astype(np.float32), f"N(0, sd=sqrt(1/{factor}))"
        if scheme == "he":
            return np.random.normal(0.0, math.sqrt(2.0 / factor), shape).astype(np.float32), f"N(0, sd=sqrt(2/{factor}))"
        if scheme == "gaussian":
            return np.random.normal(0.0, wscale, shape).astype(np.float32), f"N(0, sd=wscale={wscale})"
        if scheme == "uniform":
            return np.random.uniform(-wscale, wscale, shape).astype(np.float32), f"U(-wscale, +wscale), wscale={wscale}"
        raise ValueError(scheme)

    cases = []
    variants = [(None, 1.0), ("xavier", 1.0), ("xavier_uniform", 1.0), ("xavier_normal", 1.0), ("he", 1.0),
                ("gaussian", 1.0), ("gaussian", 0.5), ("uniform", 1.0), ("uniform", 0.25), ("none", 1.0),
                (("xavier", "avg"), 1.0), (("xavier", "out"), 1.0), (("xavier", "in"), 1.0),
                (("xavier_uniform", "avg"), 1.0), (("xavier_normal", "out"), 1.0), (("gaussian", "avg"), 0.1),
                ((None, "out"), 1.0)]
    for scheme, wscale in variants:
        np.random.seed(seed)
        layer = PL.Linear(insize, outsize, initscheme=scheme, wscale=wscale)
        nextDraw = np.random.random()
        name, factorType = scheme if isinstance(scheme, tuple) else (scheme, "in")
        case = {"initscheme": list(scheme) if isinstance(scheme, tuple) else scheme, "wscale": wscale,
                "insize": insize, "outsize": outsize, "seed": seed, "b": arr(layer.b),
                "nextDrawAfterInit": float(nextDraw)}
        if name == "none":
            case["W"] = None
            case["rule"] = "W left uninitialised (gpuarray.empty); np.random not drawn from"
            np.random.seed(seed)
            assert np.random.random() == nextDraw
        else:
            np.random.seed(seed)
            expected, rule = expect(name, factors[factorType], wscale, (insize, outsize))
            assert np.array_equal(expected, layer.W.get()), (scheme, rule)
            case["W"] = arr(layer.W)
            case["rule"] = (f"W of shape (insize, outsize) = {rule} drawn with np.random after np.random.seed, "
                            f"cast to float32 (verified bit for bit); b = 0")
        cases.append(case)
    return {**header("Linear initial weights per initscheme", "none: weights"), "cases": cases,
            "factor": "in = insize, out = outsize, avg = (insize + outsize) / 2; default factor 'in'"}


# --- modules ----------------------------------------------------------------------------------
def run_module(module, x, g, train=True):
    """Forward on x, backward with g: output, input gradient and parameter gradients."""
    if not train:
        module.evalMode()
    y = module(dev(x) if not isinstance(x, list) else [dev(v) for v in x])
    module.backward(dev(g) if not isinstance(g, list) else [dev(v) for v in g])
    out = {"x": arrs(x), "gradOut": arrs(g), "y": arrs(y), "gradIn": arrs(module.grad)}
    table = module.getVarTable()
    if table:
        out["params"] = {names[0]: arr(var.data) for var, names in table.items()}
        out["paramGrads"] = {names[0]: arr(var.grad) for var, names in table.items() if var.grad is not None}
    return out


def modules() -> dict:
    rng = np.random.RandomState(7)
    cases = {}
    np.random.seed(11)
    x, g = rand(rng, 4, 5), rand(rng, 4, 3)
    cases["Linear(5, 3)"] = run_module(PL.Linear(5, 3), x, g)
    np.random.seed(11)
    cases["Linear(5, 3, useBias=False)"] = run_module(PL.Linear(5, 3, useBias=False), x, g)

    act = PL.activation
    x, g = rand(rng, 4, 6, scale=3.0), rand(rng, 4, 6)
    x[0, :3] = [0.0, 6.0, -1.0]  # exact kinks: relu at 0, clip at 6
    for name, kind, args in [("relu", act.relu, ()), ("sigmoid", act.sigmoid, ()), ("tanh", act.tanh, ()),
                             ("leakyRelu", act.leakyRelu, ()), ("leakyRelu(0.2)", act.leakyRelu, (0.2,)),
                             ("elu", act.elu, ()), ("elu(0.5)", act.elu, (0.5,)), ("softPlus", act.softPlus, ()),
                             ("clip", act.clip, ()), ("clip(-1, 1)", act.clip, (-1.0, 1.0))]:
        cases[f"Activation({name})"] = run_module(PL.Activation(kind, args=args), x, g)

    x, g = rand(rng, 3, 5, 2, 2, scale=2.0), rand(rng, 3, 5, 2, 2)
    cases["SoftMax (N, C, H, W), over C"] = run_module(PL.SoftMax(), x, g)
    x2, g2 = rand(rng, 3, 4, scale=2.0), rand(rng, 3, 4)
    cases["SoftMax (N, C)"] = run_module(PL.SoftMax(), x2, g2)
    x, g = rand(rng, 3, 4), [rand(rng, 3, 4) for _ in range(3)]
    cases["Replicate(3)"] = run_module(PL.Replicate(3), x, g)
    x, g = rand(rng, 3, 5), [rand(rng, 3, 2), rand(rng, 3, 3)]
    cases["Split(axis=1, sections=(2, 3))"] = run_module(PL.Split(axis=1, sections=(2, 3)), x, g)
    x, g = [rand(rng, 3, 2), rand(rng, 3, 4)], rand(rng, 3, 6)
    cases["Concat(axis=1)"] = run_module(PL.Concat(axis=1), x, g)
    x, g = [rand(rng, 2, 3), rand(rng, 4, 3)], rand(rng, 6, 3)
    cases["Concat(axis=0)"] = run_module(PL.Concat(axis=0), x, g)
    x, g = rand(rng, 2, 3, 4), rand(rng, 2, 12)
    cases["Reshape((2, 12))"] = run_module(PL.Reshape((2, 12)), x, g)
    cases["Reshape((0, -1))"] = run_module(PL.Reshape((0, -1)), x, g)
    x, g = rand(rng, 2, 3, 2, 2), rand(rng, 2, 12)
    cases["Flatten"] = run_module(PL.Flatten(), x, g)
    x, g = rand(rng, 3, 4), rand(rng, 3, 4)
    cases["Identity"] = run_module(PL.Identity(), x, g)
    dropout = PL.Dropout(p=0.5)
    cases["Dropout(p=0.5), evalMode"] = run_module(dropout, x, g, train=False)
    cases["Cast('float32', 'float32')"] = attempt(lambda: run_module(PL.Cast("float32", "float32"), x, g))
    cases["Cast('float32', 'float16')"] = attempt(lambda: run_module(PL.Cast("float32", "float16"), x, g))
    x, g = [rand(rng, 3, 4) for _ in range(3)], rand(rng, 3, 4)
    cases["Add"] = run_module(PL.Add(), x, g)
    x, g = rand(rng, 3, 4, 5), rand(rng, 3, 5)
    cases["Sum(axis=1, useWeights=False)"] = attempt(lambda: run_module(PL.Sum(axis=1, useWeights=False), x, g))

    np.random.seed(12)
    par = PL.Parallel()
    par.append(PL.Linear(4, 3)).append(PL.Activation(act.tanh)).append(PL.Identity())
    x, g = [rand(rng, 2, 4), rand(rng, 2, 3), rand(rng, 2, 2)], [rand(rng, 2, 3), rand(rng, 2, 3), rand(rng, 2, 2)]
    cases["Parallel(Linear(4, 3), Activation(tanh), Identity)"] = run_module(par, x, g)

    cases["backward accumulation"] = accumulation(rng)
    return {**header("forward outputs and gradients of single modules (float32)", NO_CONVERSION),
            "note": "gradIn is dL/dx for the given gradOut = dL/dy; paramGrads is dL/dw after ONE backward",
            "cases": cases}


def attempt(fn):
    """Run fn; a module PuzzleLib's CPU backend cannot run is recorded with its error instead."""
    try:
        return fn()
    except Exception as error:  # recorded, not hidden: the golden says PuzzleLib's CPU backend failed here
        return {"unavailableOnPuzzleLibCPU": f"{type(error).__name__}: {error}".splitlines()[0][:200]}


def accumulation(rng) -> dict:
    """backward twice on the same input: a bare Linear overwrites dW, one inside a Sequential adds."""
    x, g = rand(rng, 3, 4), rand(rng, 3, 2)
    np.random.seed(13)
    bare = PL.Linear(4, 2)
    np.random.seed(13)
    seq = PL.Sequential()
    seq.append(PL.Linear(4, 2))
    out = {"x": arr(x), "gradOut": arr(g)}
    for label, module in (("bareLinear", bare), ("sequentialLinear", seq)):
        module(dev(x))
        module.backward(dev(g))
        module(dev(x))
        module.backward(dev(g))
        out[label] = {names[0]: arr(var.grad) for var, names in module.getVarTable().items()}
    out["note"] = ("W.grad after two backward calls with no zeroGradParams: a bare module's backward "
                   "(momentum=0.0) overwrites, Sequential.backward (momentum=1.0) accumulates")
    return out


# --- costs ------------------------------------------------------------------------------------
def cost_case(cost, pred, target, validate=True) -> dict:
    error, grad = cost(dev(pred), dev(target))
    out = {"pred": arr(pred), "target": arr(target), "error": num(error), "grad": arr(-grad.get()),
           "getError": num(cost.getError())}
    if validate:
        out["validate"] = attempt(lambda: num(cost.validate(dev(pred), dev(target))))
    return out


def costs() -> dict:
    rng = np.random.RandomState(21)
    cases = {}
    p, t = rand(rng, 4, 3), rand(rng, 4, 3)
    cases["MSE"] = cost_case(PL.MSE(), p, t)
    p, t = rand(rng, 2, 3, 2), rand(rng, 2, 3, 2)
    cases["MSE (N, C, L)"] = cost_case(PL.MSE(), p, t)
    p, t = rand(rng, 4, 3), rand(rng, 4, 3)
    cases["Abs"] = cost_case(PL.Abs(), p, t)
    p, t = rand(rng, 4, 3, scale=2.0), rand(rng, 4, 3, scale=2.0)
    cases["SmoothL1"] = cost_case(PL.SmoothL1(), p, t)
    p, t = rand(rng, 5, 3, scale=2.0), rng.randint(0, 2, size=(5, 3)).astype(np.int32)
    cases["BCE"] = cost_case(PL.BCE(), p, t)
    p, t = rand(rng, 6, 4, scale=2.0), rng.randint(0, 4, size=6).astype(np.int32)
    cases["CrossEntropy"] = cost_case(PL.CrossEntropy(), p, t)
    cases["CrossEntropy(maxlabels=4)"] = cost_case(PL.CrossEntropy(maxlabels=4), p, t)
    w = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    case = cost_case(PL.CrossEntropy(weights=w), p, t)
    case["weights"] = arr(w)
    cases["CrossEntropy(weights)"] = case
    p, t = rand(rng, 2, 3, 2, 2, scale=2.0), rng.randint(0, 3, size=(2, 2, 2)).astype(np.int32)
    cases["CrossEntropy spatial (N, C, H, W)"] = cost_case(PL.CrossEntropy(), p, t)
    p, t = rand(rng, 3, 4, 5, scale=2.0), rng.randint(0, 4, size=(3, 5)).astype(np.int32)
    cases["CrossEntropy spatial (N, C, L)"] = cost_case(PL.CrossEntropy(), p, t)
    w3 = np.array([0.5, 1.0, 2.0, 0.25], np.float32)
    case = cost_case(PL.CrossEntropy(weights=w3), p, t)
    case["weights"] = arr(w3)
    cases["CrossEntropy(weights) spatial (N, C, L)"] = case
    return {**header("cost values and gradients; error/getError/getMeanError/validate semantics", COST_CONVERSION),
            "cases": cases, "accumulator": accumulator(rng)}


def accumulator(rng) -> dict:
    """Three MSE calls of batch 2, 3, 5: error per call, getError, getMeanError; then resetAccumulator."""
    mse = PL.MSE()
    calls = []
    for n in (2, 3, 5):
        p, t = rand(rng, n, 3), rand(rng, n, 3)
        error, _ = mse(dev(p), dev(t))
        calls.append({"pred": arr(p), "target": arr(t), "error": num(error), "getError": num(mse.getError()),
                      "getMeanError": num(mse.getMeanError()), "numOfSamples": int(mse.numOfSamples)})
    mse.resetAccumulator()
    p, t = rand(rng, 4, 3), rand(rng, 4, 3)
    error, _ = mse(dev(p), dev(t))
    after = {"pred": arr(p), "target": arr(t), "error": num(error), "getMeanError": num(mse.getMeanError()),
             "numOfSamples": int(mse.numOfSamples)}
    return {"cost": "MSE", "calls": calls, "afterResetAccumulator": after,
            "note": "getMeanError = sum(error_i * batch_i) / sum(batch_i) since the last resetAccumulator"}


# --- optimizers -------------------------------------------------------------------------------
def optimizers() -> dict:
    rng = np.random.RandomState(31)
    W0, b0 = rand(rng, 4, 3), rand(rng, 3)
    grads = [{"W": rand(rng, 4, 3), "b": rand(rng, 3)} for _ in range(5)]
    configs = [("SGD(learnRate=0.1)", lambda: PL.SGD(learnRate=0.1)),
               ("MomentumSGD(learnRate=0.1, momRate=0.9)", lambda: PL.MomentumSGD(learnRate=0.1, momRate=0.9)),
               ("NesterovSGD(learnRate=0.1, momRate=0.9)", lambda: PL.NesterovSGD(learnRate=0.1, momRate=0.9)),
               ("RMSProp()", lambda: PL.RMSProp()),
               ("RMSProp(learnRate=0.01, factor=0.5, epsilon=0.1)",
                lambda: PL.RMSProp(learnRate=0.01, factor=0.5, epsilon=0.1)),
               ("RMSPropGraves()", lambda: PL.RMSPropGraves()),
               ("RMSPropGraves(learnRate=0.01, alpha=0.9, momRate=0.5, epsilon=0.01)",
                lambda: PL.RMSPropGraves(learnRate=0.01, alpha=0.9, momRate=0.5, epsilon=0.01))]
    cases = {}
    for label, make in configs:
        cases[label] = opt_run(make, W0, b0, grads)
    cases["RMSProp(learnRate=0.01) + WeightDecay(0.1), W.wc = 1.0"] = opt_run(
        lambda: PL.RMSProp(learnRate=0.01), W0, b0, grads, hook=0.1, wc={"W": 1.0})
    cases["RMSProp(learnRate=0.01) + WeightDecay(0.1), default wc = 0.0"] = opt_run(
        lambda: PL.RMSProp(learnRate=0.01), W0, b0, grads, hook=0.1)
    return {**header("optimizer steps on fixed gradients (a Linear(4, 3)'s W and b)", OPT_CONVERSION),
            "W0": arr(W0), "b0": arr(b0), "grads": [{k: arr(v) for k, v in g.items()} for g in grads],
            "note": ("params[i] and state[i] are after update() number i+1 with useGlobalState=False; "
                     "useGlobalState=True gave the same params except where paramsWithGlobalState is listed. "
                     "The WeightDecay hook adds rate * wc * w to dL/dw; Variable.wc defaults to 0.0, so the hook "
                     "does nothing unless wc is set, and with global state it sees only the flat Variable "
                     "(wc = 0.0), so it does nothing there"),
            "cases": cases}


def opt_run(make, W0, b0, grads, hook=None, wc=None) -> dict:
    results = []
    for globalState in (False, True):
        layer = PL.Linear(4, 3)
        layer.W.set(W0)
        layer.b.set(b0)
        for name, value in (wc or {}).items():
            layer.vars[name].wc = value
        opt = make()
        if hook is not None:
            opt.addHook(PL.WeightDecay(hook))
        opt.setupOn(layer, useGlobalState=globalState)
        steps = []
        for g in grads:
            for name, value in g.items():
                layer.vars[name].grad.set(-value)
            opt.update()
            steps.append({"params": {n: arr(layer.vars[n].data) for n in ("W", "b")}})
            if not globalState:
                steps[-1]["state"] = {f"{var}.{key}": arr(buf.get() if key == "ms" else -buf.get())
                                      for var, st in opt.states.items() for key, buf in st.items()}
        results.append(steps)
    local, shared = results
    out = {"attrs": {k: (float(v) if isinstance(v, float) else v) for k, v in sorted(opt.getAttrDict().items())},
           "steps": local}
    if [s["params"] for s in local] != [s["params"] for s in shared]:
        out["paramsWithGlobalState"] = [s["params"] for s in shared]
    return out


# --- scripts ----------------------------------------------------------------------------------
def train(net, cost, opt, data, target, steps, globalState=True) -> list:
    opt.setupOn(net, useGlobalState=globalState)
    losses = []
    for _ in range(steps):
        error, grad = cost(net(data), target)
        opt.zeroGradParams()
        net.backward(grad)
        opt.update()
        losses.append(num(error))
    return losses


def script_docs_rmsprop() -> dict:
    """The README quick start (PuzzleLib's RMSProp docs loop), exactly as a PuzzleLib user writes it."""
    np.random.seed(0)
    net = PL.Sequential()
    net.extend([PL.Linear(128, 64), PL.Activation(PL.activation.relu), PL.Linear(64, 1)])
    initial = weights(net)
    loss = PL.MSE()
    data = np.random.randn(16, 128).astype(np.float32)
    target = np.random.randn(16, 1).astype(np.float32)
    losses = train(net, loss, PL.RMSProp(learnRate=0.001, factor=0.9), dev(data), dev(target), 100)
    return {**header("README quick start: Sequential(Linear(128, 64), relu, Linear(64, 1)), MSE, "
                     "RMSProp(learnRate=0.001, factor=0.9), useGlobalState=True, 100 steps", TRAIN_CONVERSION),
            "seed": 0, "order": "np.random.seed(0); build the net (draws W of layer 0 then layer 2); data; target",
            "losses": losses, "note": "losses[i] is the error returned by the cost in step i (before update i)",
            "data": arr(data), "target": arr(target), "initialWeights": initial, "finalWeights": weights(net)}


def script_train_simple() -> dict:
    """Optimizer.trainSimpleTest's network and loop, every loss recorded (PuzzleLib prints every fifth)."""
    np.random.seed(0)
    seq = PL.Sequential()
    seq.append(PL.Linear(128, 64, useBias=False))
    seq.append(PL.Activation(PL.activation.relu))
    seq.append(PL.Linear(64, 32, useBias=False))
    seq.append(PL.Activation(PL.activation.relu))
    seq.append(PL.Linear(32, 16))
    seq.calcMode(np.float32)
    seq.append(PL.Cast(intype=np.float32, outtype=np.float32))
    initial = weights(seq)
    data = np.random.randn(16, 128).astype(np.float32)
    target = np.random.randn(16, 16).astype(np.float32)
    losses = train(seq, PL.MSE(), PL.RMSProp(learnRate=1e-2), dev(data), dev(target), 200)
    return {**header("Optimizer.trainSimpleTest(RMSProp, float32, learnRate=1e-2): Linear(128, 64, useBias=False), "
                     "relu, Linear(64, 32, useBias=False), relu, Linear(32, 16), Cast(float32 -> float32); MSE; "
                     "useGlobalState=True; 200 steps", TRAIN_CONVERSION),
            "seed": 0, "order": "np.random.seed(0); build the net; data; target",
            "losses": losses, "data": arr(data), "target": arr(target), "initialWeights": initial,
            "finalWeights": weights(seq)}


def script_graph_replicate_concat(outdir: str) -> dict:
    """Replicate, Parallel and Concat in a Graph (with (node, slot) parents) and in a Sequential; MSE; RMSProp."""
    np.random.seed(3)
    inp = PL.Linear(6, 5, name="inp").node()
    act = PL.Activation(PL.activation.tanh, name="act").node(inp)
    rep = PL.Replicate(2, name="rep").node(act)
    par = PL.Parallel(name="par")
    par.append(PL.Linear(5, 4, name="left")).append(PL.Linear(5, 3, name="right"))
    parNode = par.node(rep)
    cat = PL.Concat(axis=1, name="cat").node((parNode, [0, 1]), (rep, 0))
    out = PL.Linear(12, 2, name="out").node(cat)
    graph = PL.Graph(inputs=inp, outputs=out)
    graphInitial = weights(graph)

    seq = PL.Sequential()
    seq.append(PL.Linear(6, 5))
    seq.append(PL.Activation(PL.activation.sigmoid))
    seq.append(PL.Replicate(times=2))
    branches = PL.Parallel()
    branches.append(PL.Linear(5, 4)).append(PL.Linear(5, 3))
    seq.append(branches)
    seq.append(PL.Concat(axis=1))
    seq.append(PL.Linear(7, 2))
    seqInitial = weights(seq)

    data = np.random.randn(10, 6).astype(np.float32)
    target = np.random.randn(10, 2).astype(np.float32)
    graphOpt = PL.RMSProp(learnRate=0.01)
    graphLosses = train(graph, PL.MSE(), graphOpt, dev(data), dev(target), 60)
    graph.save(os.path.join(outdir, "graph_model.hdf"))
    graphOpt.save(os.path.join(outdir, "graph_rmsprop_global.hdf"))
    flatMs = next(iter(graphOpt.states.values()))["ms"]
    order = sorted(names[0] for names in graph.getVarTable().values())
    seqLosses = train(seq, PL.MSE(), PL.RMSProp(learnRate=0.01), dev(data), dev(target), 60)
    return {**header("Replicate/Parallel/Concat networks trained with MSE and RMSProp(learnRate=0.01), "
                     "useGlobalState=True, 60 steps each, on the same data", TRAIN_CONVERSION),
            "seed": 3,
            "order": "np.random.seed(3); build graph (inp, left, right, out); build sequential (0, 3.0, 3.1, 5); "
                     "data; target",
            "data": arr(data), "target": arr(target),
            "graph": {"structure": ("inp=Linear(6, 5) -> act=tanh -> rep=Replicate(2) -> par=Parallel(left=Linear(5, 4), "
                                    "right=Linear(5, 3)) fed the list rep -> cat=Concat(axis=1) fed (par, [0, 1]) "
                                    "and (rep, 0) -> out=Linear(12, 2)"),
                      "losses": graphLosses, "initialWeights": graphInitial, "finalWeights": weights(graph),
                      "optimizer": {"t": int(graphOpt.t), "globalStateOrder": order, "msFlat": arr(flatMs)}},
            "hdfFiles": {"graph_model.hdf": "graph.save(path) after training",
                         "graph_rmsprop_global.hdf": ("the graph's optimizer.save(path) after training "
                                                      "(useGlobalState=True: one flat ms, variables sorted by name)")},
            "sequential": {"structure": ("Sequential(Linear(6, 5), sigmoid, Replicate(times=2), Parallel(Linear(5, 4), "
                                         "Linear(5, 3)), Concat(axis=1), Linear(7, 2))"),
                           "losses": seqLosses, "initialWeights": seqInitial, "finalWeights": weights(seq)}}


def classifier_net():
    net = PL.Sequential()
    net.extend([PL.Linear(4, 16, initscheme="xavier"), PL.Activation(PL.activation.relu),
                PL.Linear(16, 3, initscheme="xavier")])
    return net


def classifier_data():
    centres = np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 1.0, 1.0]], np.float32)
    labels = np.repeat(np.arange(3), 10).astype(np.int32)
    data = (centres[labels] + 0.5 * np.random.randn(30, 4)).astype(np.float32)
    return data, labels


def script_classifier_ce(outdir: str) -> dict:
    """A 3-class classifier with CrossEntropy and RMSProp in local state; writes the .hdf fixtures."""
    np.random.seed(5)
    net = classifier_net()
    initial = weights(net)
    data, labels = classifier_data()
    ce = PL.CrossEntropy()
    opt = PL.RMSProp(learnRate=0.01)
    losses = train(net, ce, opt, dev(data), dev(labels), 80, globalState=False)
    net.evalMode()
    valError = num(ce.validate(net(dev(data)), dev(labels)))
    meanError = num(ce.getMeanError())
    net.save(os.path.join(outdir, "classifier_model.hdf"))
    opt.save(os.path.join(outdir, "classifier_rmsprop.hdf"))
    state = {f"{var}.{key}": arr(buf) for var, st in sorted(opt.states.items()) for key, buf in st.items()}
    return {**header("classifier: Sequential(Linear(4, 16, initscheme='xavier'), relu, Linear(16, 3, "
                     "initscheme='xavier')); CrossEntropy; RMSProp(learnRate=0.01); useGlobalState=False; "
                     "80 steps; then evalMode and validate", TRAIN_CONVERSION),
            "seed": 5, "order": ("np.random.seed(5); build the net; data = (centres[labels] + "
                                 "0.5 * np.random.randn(30, 4)).astype(float32) with labels = repeat(arange(3), 10)"),
            "losses": losses, "data": arr(data), "labels": arr(labels),
            "validate": valError, "getMeanErrorOver80Steps": meanError,
            "initialWeights": initial, "finalWeights": weights(net),
            "optimizer": {"t": int(opt.t), "attrs": {k: (float(v) if isinstance(v, float) else v)
                                                     for k, v in sorted(opt.getAttrDict().items())},
                          "state": state},
            "hdfFiles": {"classifier_model.hdf": "net.save(path) after training",
                         "classifier_rmsprop.hdf": "optimizer.save(path) after training (local state)"}}


def write(path: str, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(payload, stream, indent=1, sort_keys=False)
        stream.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main() -> None:
    global PL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=OUT, help="output folder (default %(default)s)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    PL = puzzlelib_cpu.load()
    write(os.path.join(args.out, "init_schemes.json"), init_schemes())
    write(os.path.join(args.out, "modules.json"), modules())
    write(os.path.join(args.out, "costs.json"), costs())
    write(os.path.join(args.out, "optimizers.json"), optimizers())
    write(os.path.join(args.out, "script_docs_rmsprop.json"), script_docs_rmsprop())
    write(os.path.join(args.out, "script_train_simple.json"), script_train_simple())
    write(os.path.join(args.out, "script_graph_replicate_concat.json"), script_graph_replicate_concat(args.out))
    write(os.path.join(args.out, "script_classifier_ce.json"), script_classifier_ce(args.out))


if __name__ == "__main__":
    main()
