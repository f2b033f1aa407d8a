"""An independent, plain-NumPy float64 implementation of the reference recipe.

Written the way the original course program is (dict of parameters, the textbook dA
formula at the output, the global legacy NumPy generator), and sharing no code with gpucat,
so that agreement with it means something.
"""

import numpy as np


def init(layer_dims, seed):
    np.random.seed(seed)
    p = {}
    for l in range(1, len(layer_dims)):
        p["W" + str(l)] = np.random.randn(layer_dims[l], layer_dims[l - 1]) / np.sqrt(
            layer_dims[l - 1]
        )
        p["b" + str(l)] = np.zeros((layer_dims[l], 1))
    return p


def forward(X, p):
    return forward_dropout(X, p, None)


def cost(AL, Y):
    m = Y.shape[1]
    return float(np.squeeze(-np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m))


def backward(AL, Y, p, caches):
    return backward_options(AL, Y, p, caches, None, 0.0)


def train(X, Y, layer_dims, learning_rate, iterations, seed=1, log_every=100):
    """Returns (params, [(iteration, cost), ...]) logged like gpucat's default."""
    p = init(layer_dims, seed)
    costs = []
    L = len(p) // 2
    for i in range(iterations):
        AL, caches = forward(X, p)
        if i % log_every == 0 or i == iterations - 1:
            costs.append((i, cost(AL, Y)))
        g = backward(AL, Y, p, caches)
        for l in range(1, L + 1):
            p["W" + str(l)] -= learning_rate * g["dW" + str(l)]
            p["b" + str(l)] -= learning_rate * g["db" + str(l)]
    return p, costs


def predict(X, p):
    AL, _ = forward(X, p)
    return (AL > 0.5).astype(float)


# --- the training options, written out course-style -------------------------------------
# The definitions gpucat documents (README, "Training beyond the original recipe"), written
# here a second time without gpucat's code: the random streams are NumPy generators seeded
# [seed, stream, counter] (1: epoch shuffle, 2: dropout masks of iteration i, 3: the
# validation split), as gpucat defines them.


def split(Y, fraction, seed):
    """Stratified hold-out: per class (non-cat first), round(fraction * count) examples from
    one generator's permutations; both index lists in increasing order."""
    rng = np.random.default_rng([seed, 3, 0])
    val = []
    for cls in (0.0, 1.0):
        idx = np.where(Y[0] == cls)[0]
        val += list(rng.permutation(idx)[: int(round(fraction * len(idx)))])
    val = sorted(int(v) for v in val)
    train = [j for j in range(Y.shape[1]) if j not in set(val)]
    return np.array(train, dtype=int), np.array(val, dtype=int)


def mirror(X):
    """Columns of 64x64 RGB images (height, width, channel) flipped left-right."""
    out = np.empty_like(X)
    for j in range(X.shape[1]):
        out[:, j] = X[:, j].reshape(64, 64, 3)[:, ::-1, :].reshape(-1)
    return out


def forward_dropout(X, p, D):
    L = len(p) // 2
    caches = []
    A = X
    for l in range(1, L + 1):
        A_prev = A
        Z = np.dot(p["W" + str(l)], A_prev) + p["b" + str(l)]
        if l == L:
            A = 1 / (1 + np.exp(-Z))
        else:
            A = np.maximum(0, Z)
            if D is not None:
                A = A * D[l - 1]
        caches.append((A_prev, Z))
    return A, caches


def backward_options(AL, Y, p, caches, D, lambd):
    L = len(caches)
    m = AL.shape[1]
    g = {}
    dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    for l in reversed(range(1, L + 1)):
        A_prev, Z = caches[l - 1]
        if l == L:
            s = 1 / (1 + np.exp(-Z))
            dZ = dA * s * (1 - s)
        else:
            if D is not None:
                dA = dA * D[l - 1]
            dZ = np.array(dA, copy=True)
            dZ[Z <= 0] = 0
        g["dW" + str(l)] = np.dot(dZ, A_prev.T) / m + (lambd / m) * p["W" + str(l)]
        g["db" + str(l)] = np.sum(dZ, axis=1, keepdims=True) / m
        dA = np.dot(p["W" + str(l)].T, dZ)
    return g


def near_kink(p, X, caches, band=5e-7):
    """True when a hidden pre-activation lies within `band` (relative to the sum of the
    absolute values it adds up) of the ReLU kink at 0: there float32 rounding may take the
    other branch than float64, and trajectories of the two dtypes part legitimately. A
    float32 sum errs by a few units of its roundoff (6e-8) times that sum of absolute
    values: `band` is about 8 of them."""
    L = len(caches)
    for l in range(1, L):
        A_prev, Z = caches[l - 1]
        scale = np.abs(p["W" + str(l)]) @ np.abs(A_prev) + np.abs(p["b" + str(l)])
        if np.any(np.abs(Z) < band * scale):
            return True
    return False


def train_options(
    X,
    Y,
    layer_dims,
    iterations,
    seed=1,
    log_every=3,
    learning_rate=0.0075,
    batch_size=None,
    optimizer="gd",
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    lr_decay=0.0,
    l2=0.0,
    keep_prob=1.0,
    flip=False,
    validation=0.0,
    validate_every=100,
    patience=None,
    full_cost=False,
):
    """Every option of `gpucat train`, as the README defines it; returns a dict with the
    final (or best) parameters, the logged costs and validation costs, best_iteration,
    stopped_early, iterations_done, and first_kink: the first iteration whose forward pass
    came near a ReLU kink.

    L2 adds (l2 / M) W to each dW, M the number of training examples, whatever the batch
    size, and (l2 / 2M) sum ||W||^2 to the cost. A logged cost is the mean loss of the
    training forward passes (dropout included) since the previous log point -- in full-batch
    training, of that iteration's -- or, with full_cost, of the whole training set without
    dropout. Validation runs at i % validate_every == 0 (before update i) and on the final
    parameters; patience counts validations."""
    Xv = Yv = None
    if validation:
        tr, va = split(Y, validation, seed)
        Xv, Yv, X, Y = X[:, va], Y[:, va], X[:, tr], Y[:, tr]
    if flip:
        X, Y = np.concatenate([X, mirror(X)], axis=1), np.concatenate([Y, Y], axis=1)
    M = X.shape[1]
    B = M if batch_size is None else min(batch_size, M)
    n_batches = -(-M // B)
    p = init(layer_dims, seed)
    L = len(layer_dims) - 1
    state = {k: np.zeros_like(v) for k, v in p.items()}
    state2 = {k: np.zeros_like(v) for k, v in p.items()}
    t = 0
    out = {
        "costs": [],
        "val_costs": [],
        "best_iteration": None,
        "stopped_early": False,
        "first_kink": None,
    }
    best, best_p, bad = None, None, 0
    done = 0
    since = [0.0, 0]  # summed batch losses and examples since the previous log point

    def penalty():
        return l2 / (2 * M) * sum(np.sum(p["W" + str(l)] ** 2) for l in range(1, L + 1))

    for i in range(iterations):
        log = i % log_every == 0 or i == iterations - 1
        if Xv is not None and i % validate_every == 0:
            v = cost(forward(Xv, p)[0], Yv)
            out["val_costs"].append((i, v))
            if best is None or v < best:
                best, out["best_iteration"], bad = v, i, 0
                best_p = {k: a.copy() for k, a in p.items()}
            else:
                bad += 1
        exact = cost(forward(X, p)[0], Y) + penalty() if log and full_cost else None
        pen = penalty() if log else 0.0
        epoch, k = divmod(i, n_batches)
        if B == M:
            Xb, Yb = X, Y
        else:
            members = np.random.default_rng([seed, 1, epoch]).permutation(M)[k * B : (k + 1) * B]
            Xb, Yb = X[:, members], Y[:, members]
        D = None
        if keep_prob < 1:
            rng = np.random.default_rng([seed, 2, i])
            D = [(rng.random((n, Xb.shape[1])) < keep_prob) / keep_prob for n in layer_dims[1:-1]]
        AL, caches = forward_dropout(Xb, p, D)
        if B == M:  # full batch: the cost of this very iteration
            since = [0.0, 0]
        since[0] += cost(AL, Yb) * Yb.shape[1]
        since[1] += Yb.shape[1]
        if log:
            out["costs"].append((i, exact if exact is not None else since[0] / since[1] + pen))
            if i % log_every == 0:
                since = [0.0, 0]
        if out["first_kink"] is None and near_kink(p, Xb, caches):
            out["first_kink"] = i
        g = backward_options(AL, Yb, p, caches, D, 0.0)
        for l in range(1, L + 1):
            g["dW" + str(l)] = g["dW" + str(l)] + (l2 / M) * p["W" + str(l)]
        lr = learning_rate / (1 + lr_decay * epoch)
        t += 1
        for l in range(1, L + 1):
            for name in ("W" + str(l), "b" + str(l)):
                grad = g["d" + name]
                if optimizer == "gd":
                    p[name] = p[name] - lr * grad
                elif optimizer == "momentum":
                    state[name] = beta1 * state[name] + (1 - beta1) * grad
                    p[name] = p[name] - lr * state[name]
                else:  # adam
                    state[name] = beta1 * state[name] + (1 - beta1) * grad
                    state2[name] = beta2 * state2[name] + (1 - beta2) * grad**2
                    m_hat = state[name] / (1 - beta1**t)
                    v_hat = state2[name] / (1 - beta2**t)
                    p[name] = p[name] - lr * m_hat / (np.sqrt(v_hat) + epsilon)
        done = i + 1
        if patience and bad >= patience:
            out["stopped_early"] = True
            break
    if Xv is not None and not out["stopped_early"]:
        v = out["final_val_cost"] = cost(forward(Xv, p)[0], Yv)
        if best is None or v < best:
            out["best_iteration"], best_p = done, None
    out["iterations_done"] = done
    out["params"] = best_p if best_p is not None else p
    return out
