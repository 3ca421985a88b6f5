"""Mixed models with crossed random intercepts for case and rater, as lme4 and ordinal fit them.

The reviewer's standard for clinical rating studies: ``lmer(y ~ x + (1|case) + (1|rater))``,
``glmer(..., family = binomial)`` and ``ordinal::clmm``. The report's primary analyses are the
two-way cluster-robust estimators in ``clustered`` (assumption-light, calibrated by simulation,
fast at any size); these model-based fits sit beside them for a reader who asks for a mixed
model, and give the planner its case and rater variance components from a closed study.

The fits follow lme4's formulation (Bates, Maechler, Bolker & Walker 2015, J Stat Softw 67:1):
random effects ``b = Lambda u`` with ``u ~ N(0, I)``, relative standard deviations ``theta``.
With one intercept per case and per rater, ``Lambda' Z' W Z Lambda + I`` is a diagonal case
block, a diagonal rater block and the case x rater counts between them; eliminating the case
block leaves a dense raters x raters Schur complement, so every fit costs O(judgments + raters^3)
per evaluation and scales to studies with many cases.

* ``lmm``: linear mixed model by REML (the profiled deviance of lme4), fixed effects with
  Satterthwaite degrees of freedom as lmerTest computes them.
* ``glmm_logit``: logistic mixed model by the Laplace approximation (glmer's default, nAGQ = 1),
  optimised over theta and the fixed effects together; standard errors from the Hessian of the
  deviance, as lme4's ``vcov`` does.
* ``clmm_logit``: cumulative-logit (proportional odds) mixed model by the Laplace approximation,
  as ``ordinal::clmm`` fits it.

``tests/test_stats_mixed.py`` compares every number with R (``tests/reference/``) to 1e-3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse, stats

# A fixed effect beyond this (log-odds) means the maximum is at infinity, not a real estimate.
SEPARATION = 15.0


@dataclass(frozen=True)
class MixedFit:
    """A fitted mixed model: fixed effects with standard errors, random-effect SDs."""

    model: str
    coefficients: tuple[float, ...]
    se: tuple[float, ...]
    df: tuple[float, ...]
    p_values: tuple[float, ...]
    sd_case: float
    sd_rater: float
    sd_residual: float  # nan for the logistic and ordinal models
    criterion: float  # REML criterion (lmm) or -2 log-likelihood (Laplace)
    converged: bool
    message: str = ""
    thresholds: tuple[float, ...] = ()
    n: int = 0
    cases: int = 0
    raters: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class _Crossed:
    """Z' W Z for random intercepts of case and rater, and solves with Lambda' Z' W Z Lambda + I."""

    def __init__(self, case: np.ndarray, rater: np.ndarray) -> None:
        self.case = np.asarray(case, dtype=np.int64)
        self.rater = np.asarray(rater, dtype=np.int64)
        self.cases = int(self.case.max(initial=-1)) + 1
        self.raters = int(self.rater.max(initial=-1)) + 1
        self.n = self.case.size

    def weighted(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, sparse.csr_matrix]:
        case_sum = np.bincount(self.case, weights, self.cases)
        rater_sum = np.bincount(self.rater, weights, self.raters)
        counts = sparse.csr_matrix(
            (weights, (self.case, self.rater)), shape=(self.cases, self.raters)
        )
        counts.sum_duplicates()
        return case_sum, rater_sum, counts

    def factor(self, theta: np.ndarray, weights: np.ndarray | None = None) -> _Factor:
        w = np.ones(self.n) if weights is None else weights
        case_sum, rater_sum, counts = self.weighted(w)
        return _Factor(theta, case_sum, rater_sum, counts)

    def z_transpose(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z' v for a vector or (n, m) matrix v: sums per case and per rater."""
        if values.ndim == 1:
            return (
                np.bincount(self.case, values, self.cases),
                np.bincount(self.rater, values, self.raters),
            )
        return (
            np.stack([np.bincount(self.case, c, self.cases) for c in values.T], axis=1),
            np.stack([np.bincount(self.rater, c, self.raters) for c in values.T], axis=1),
        )


class _Factor:
    """M = Lambda' Z' W Z Lambda + I for one theta, eliminated through the case block."""

    def __init__(
        self,
        theta: np.ndarray,
        case_sum: np.ndarray,
        rater_sum: np.ndarray,
        counts: sparse.csr_matrix,
    ) -> None:
        tc, tr = float(theta[0]), float(theta[1])
        self.tc, self.tr = tc, tr
        self.a = tc * tc * case_sum + 1.0
        self.b = (tc * tr) * counts  # cases x raters
        c = tr * tr * rater_sum + 1.0
        scaled = sparse.diags(1.0 / self.a) @ self.b
        schur = np.diag(c) - np.asarray((self.b.T @ scaled).todense())
        self.chol = np.linalg.cholesky(schur)
        self.logdet = float(np.sum(np.log(self.a)) + 2 * np.sum(np.log(np.diag(self.chol))))

    def solve(self, f_case: np.ndarray, f_rater: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self.a if f_case.ndim == 1 else self.a[:, None]
        rhs = f_rater - self.b.T @ (f_case / a)
        u_rater = np.linalg.solve(self.chol.T, np.linalg.solve(self.chol, rhs))
        u_case = (f_case - self.b @ u_rater) / a
        return u_case, u_rater


def _check(case: np.ndarray, rater: np.ndarray, n: int) -> None:
    if len(case) != n or len(rater) != n:
        raise ValueError("case, rater and the response must have the same length")


# --- Linear mixed model (REML) --------------------------------------------------------------


@dataclass(frozen=True)
class _LmmState:
    beta: np.ndarray
    rx: np.ndarray  # X'X - X'Z Lambda M^-1 Lambda' Z'X
    pwrss: float
    logdet: float


def _lmm_state(
    design: _Crossed,
    theta: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    zy: tuple[np.ndarray, np.ndarray],
    zx: tuple[np.ndarray, np.ndarray],
) -> _LmmState:
    factor = design.factor(theta)
    tc, tr = factor.tc, factor.tr
    fy = (tc * zy[0], tr * zy[1])
    fx = (tc * zx[0], tr * zx[1])
    my = factor.solve(*fy)
    mx = factor.solve(*fx)
    xtx = x.T @ x
    rx = xtx - (fx[0].T @ mx[0] + fx[1].T @ mx[1])
    rhs = x.T @ y - (fx[0].T @ my[0] + fx[1].T @ my[1])
    beta = np.linalg.solve(rx, rhs)
    u_case, u_rater = factor.solve(fy[0] - fx[0] @ beta, fy[1] - fx[1] @ beta)
    pwrss = float(y @ y - (u_case @ fy[0] + u_rater @ fy[1]) - beta @ (x.T @ y))
    return _LmmState(beta=beta, rx=rx, pwrss=max(pwrss, 0.0), logdet=factor.logdet)


def lmm(
    y: np.ndarray,
    x: np.ndarray,
    case: np.ndarray,
    rater: np.ndarray,
) -> MixedFit:
    """``lmer(y ~ x - 1 + (1|case) + (1|rater), REML = TRUE)`` with lmerTest's Satterthwaite
    degrees of freedom; ``x`` includes the intercept column. ``case`` and ``rater`` are
    integer codes 0..G-1."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    _check(case, rater, len(y))
    design = _Crossed(case, rater)
    n, p = x.shape
    zy, zx = design.z_transpose(y), design.z_transpose(x)

    def deviance(theta: np.ndarray) -> float:
        state = _lmm_state(design, np.abs(theta), y, x, zy, zx)
        _, logdet_rx = np.linalg.slogdet(state.rx)
        return float(
            state.logdet + logdet_rx + (n - p) * (1 + math.log(2 * math.pi * state.pwrss / (n - p)))
        )

    theta, converged, message = _minimise_theta(deviance)
    state = _lmm_state(design, theta, y, x, zy, zx)
    sigma = math.sqrt(state.pwrss / (n - p))
    covariance = sigma**2 * np.linalg.inv(state.rx)
    se = np.sqrt(np.diag(covariance))
    df = _satterthwaite(design, theta, sigma, y, x, zy, zx)
    statistic = state.beta / se
    return MixedFit(
        model="lmm",
        coefficients=tuple(float(v) for v in state.beta),
        se=tuple(float(v) for v in se),
        df=tuple(float(v) for v in df),
        p_values=tuple(
            float(2 * stats.t.sf(abs(t), d)) for t, d in zip(statistic, df, strict=True)
        ),
        sd_case=float(theta[0] * sigma),
        sd_rater=float(theta[1] * sigma),
        sd_residual=sigma,
        criterion=float(deviance(theta)),
        converged=converged,
        message=message,
        n=n,
        cases=design.cases,
        raters=design.raters,
    )


def _minimise_theta(deviance: Callable[[np.ndarray], float]) -> tuple[np.ndarray, bool, str]:
    """Minimise over theta >= 0 from several starts (lme4 starts at 1, 1)."""
    best = None
    for start in ((1.0, 1.0), (0.3, 0.3), (2.0, 0.5), (0.5, 2.0)):
        result = optimize.minimize(
            deviance,
            np.array(start),
            method="L-BFGS-B",
            bounds=[(0.0, None), (0.0, None)],
            options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 500},
        )
        if best is None or result.fun < best.fun - 1e-10:
            best = result
    assert best is not None
    refined = optimize.minimize(
        deviance,
        best.x,
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
    )
    theta = np.abs(refined.x) if refined.fun <= best.fun else best.x
    converged = bool(best.success or refined.success)
    message = "" if converged else f"the optimiser stopped: {best.message}"
    if np.any(theta < 1e-4):
        message = (message + "; " if message else "") + (
            "singular fit: a variance component is estimated at zero"
        )
    return theta, converged, message


def _satterthwaite(
    design: _Crossed,
    theta: np.ndarray,
    sigma: float,
    y: np.ndarray,
    x: np.ndarray,
    zy: tuple[np.ndarray, np.ndarray],
    zx: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """lmerTest's Satterthwaite df per coefficient: 2 V^2 / (g' A g), where V is the
    coefficient's variance as a function of (theta, sigma), g its gradient and A twice the
    inverse Hessian of the REML deviance in (theta, sigma)."""
    n, p = x.shape

    def full_deviance(varpar: np.ndarray) -> float:
        state = _lmm_state(design, np.abs(varpar[:2]), y, x, zy, zx)
        s2 = varpar[2] ** 2
        _, logdet_rx = np.linalg.slogdet(state.rx)
        return float(
            state.logdet + logdet_rx + state.pwrss / s2 + (n - p) * math.log(2 * math.pi * s2)
        )

    def variances(varpar: np.ndarray) -> np.ndarray:
        state = _lmm_state(design, np.abs(varpar[:2]), y, x, zy, zx)
        scaled: np.ndarray = varpar[2] ** 2 * np.diag(np.linalg.inv(state.rx))
        return scaled

    varpar = np.array([theta[0], theta[1], sigma])
    hessian = _hessian(full_deviance, varpar)
    try:
        a = 2 * np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        a = 2 * np.linalg.pinv(hessian)
    jacobian = _jacobian(variances, varpar)  # (p, 3)
    v = variances(varpar)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = 2 * v**2 / np.einsum("ij,jk,ik->i", jacobian, a, jacobian)
    return np.where(np.isfinite(df) & (df > 0), df, n - p)


def _step(x: float) -> float:
    return 1e-4 * max(abs(x), 1e-2)


def _hessian(function: Callable[[np.ndarray], float], at: np.ndarray) -> np.ndarray:
    """Central-difference Hessian with Richardson extrapolation (as numDeriv)."""

    def estimate(scale: float) -> npt.NDArray[np.float64]:
        k = len(at)
        h = np.array([_step(v) * scale for v in at])
        out = np.empty((k, k))
        f0 = function(at)
        for i in range(k):
            e_i = np.zeros(k)
            e_i[i] = h[i]
            out[i, i] = (function(at + e_i) - 2 * f0 + function(at - e_i)) / h[i] ** 2
            for j in range(i):
                e_j = np.zeros(k)
                e_j[j] = h[j]
                out[i, j] = out[j, i] = (
                    function(at + e_i + e_j)
                    - function(at + e_i - e_j)
                    - function(at - e_i + e_j)
                    + function(at - e_i - e_j)
                ) / (4 * h[i] * h[j])
        return out

    coarse, fine = estimate(2.0), estimate(1.0)
    return (4 * fine - coarse) / 3


def _jacobian(function: Callable[[np.ndarray], np.ndarray], at: np.ndarray) -> np.ndarray:
    def estimate(scale: float) -> npt.NDArray[np.float64]:
        columns = []
        for i, value in enumerate(at):
            h = _step(value) * scale
            e = np.zeros(len(at))
            e[i] = h
            columns.append((function(at + e) - function(at - e)) / (2 * h))
        return np.stack(columns, axis=1)

    coarse, fine = estimate(2.0), estimate(1.0)
    return (4 * fine - coarse) / 3


# --- Laplace approximation for logistic and cumulative-logit models -------------------------


@dataclass(frozen=True)
class _Family:
    """Per-observation log-likelihood in the linear predictor eta, its first derivative and
    minus its second derivative (the Newton weight), given the family's own parameters."""

    loglik: Callable[[np.ndarray, np.ndarray], np.ndarray]
    gradient: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _logistic(z: np.ndarray) -> npt.NDArray[np.float64]:
    return 0.5 * (1 + np.tanh(z / 2))


def _binary(y: np.ndarray) -> _Family:
    def loglik(eta: np.ndarray, _: np.ndarray) -> np.ndarray:
        terms: np.ndarray = y * eta - np.logaddexp(0.0, eta)
        return terms

    def gradient(eta: np.ndarray, _: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = _logistic(eta)
        return y - mu, mu * (1 - mu)

    return _Family(loglik, gradient)


def _cumulative(y: np.ndarray, levels: int) -> _Family:
    """P(Y <= j) = F(alpha_j - eta), alpha strictly increasing; y in 0..levels-1."""

    def bounds(alpha: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cut = np.concatenate([[-np.inf], alpha, [np.inf]])
        return cut[y + 1] - eta, cut[y] - eta

    def loglik(eta: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        upper, lower = bounds(alpha, eta)
        return np.log(np.clip(_logistic(upper) - _logistic(lower), 1e-300, None))

    def gradient(eta: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        upper, lower = bounds(alpha, eta)
        fu, fl = _logistic(upper), _logistic(lower)
        p = np.clip(fu - fl, 1e-300, None)
        du, dl = fu * (1 - fu), fl * (1 - fl)
        ddu, ddl = du * (1 - 2 * fu), dl * (1 - 2 * fl)
        first = -(du - dl) / p
        second = (ddu - ddl) / p - first**2
        return first, -second

    return _Family(loglik, gradient)


def _laplace_deviance(
    design: _Crossed,
    family: _Family,
    theta: np.ndarray,
    fixed_eta: np.ndarray,
    extra: np.ndarray,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """-2 log L by Laplace: -2 sum log p(y | u*) + |u*|^2 + log det(Lambda'Z'WZ Lambda + I),
    with u* the conditional mode found by Newton's method (step-halving on the penalised
    deviance)."""
    tc, tr = float(theta[0]), float(theta[1])
    u_case = np.zeros(design.cases) if start is None else start[0].copy()
    u_rater = np.zeros(design.raters) if start is None else start[1].copy()

    def eta_of(uc: np.ndarray, ur: np.ndarray) -> np.ndarray:
        return fixed_eta + tc * uc[design.case] + tr * ur[design.rater]

    def penalised(uc: np.ndarray, ur: np.ndarray) -> float:
        return float(-2 * family.loglik(eta_of(uc, ur), extra).sum() + uc @ uc + ur @ ur)

    current = penalised(u_case, u_rater)
    for _ in range(100):
        eta = eta_of(u_case, u_rater)
        first, weight = family.gradient(eta, extra)
        score_case, score_rater = design.z_transpose(first)
        g_case = tc * score_case - u_case
        g_rater = tr * score_rater - u_rater
        factor = design.factor(theta, weight)
        step_case, step_rater = factor.solve(g_case, g_rater)
        scale = 1.0
        while True:
            candidate = (u_case + scale * step_case, u_rater + scale * step_rater)
            value = penalised(*candidate)
            if value <= current + 1e-12 * (1 + abs(current)) or scale < 1e-8:
                break
            scale /= 2
        u_case, u_rater = candidate
        change = current - value
        current = value
        if abs(change) < 1e-10 * (1 + abs(current)):
            break
    eta = eta_of(u_case, u_rater)
    _, weight = family.gradient(eta, extra)
    factor = design.factor(theta, weight)
    return current + factor.logdet, (u_case, u_rater)


def glmm_logit(
    y: np.ndarray,
    x: np.ndarray,
    case: np.ndarray,
    rater: np.ndarray,
) -> MixedFit:
    """``glmer(y ~ x - 1 + (1|case) + (1|rater), family = binomial)`` by Laplace."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    _check(case, rater, len(y))
    design = _Crossed(case, rater)
    family = _binary(y)
    p = x.shape[1]
    none = np.zeros(0)
    modes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def deviance(params: np.ndarray) -> float:
        theta, beta = np.abs(params[:2]), params[2:]
        value, mode = _laplace_deviance(design, family, theta, x @ beta, none, modes.get("last"))
        modes["last"] = mode
        return value

    start = np.concatenate([[1.0, 1.0], _logistic_start(x, y)])
    return _laplace_fit("glmm_logit", deviance, start, p, design, thresholds=0)


def _logistic_start(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    beta = np.zeros(x.shape[1])
    for _ in range(25):
        mu = _logistic(x @ beta)
        w = mu * (1 - mu)
        beta = beta + np.linalg.solve((x * w[:, None]).T @ x + 1e-10, x.T @ (y - mu))
    return beta


def clmm_logit(
    score: np.ndarray,
    x: np.ndarray,
    case: np.ndarray,
    rater: np.ndarray,
) -> MixedFit:
    """``ordinal::clmm(factor(score) ~ x + (1|case) + (1|rater))`` with the logit link by
    Laplace; ``x`` has no intercept (the thresholds take its place). ``score`` is any ordered
    integer scale; its observed values are the categories."""
    score = np.asarray(score)
    x = np.asarray(x, dtype=float).reshape(len(score), -1)
    _check(case, rater, len(score))
    levels, y = np.unique(score, return_inverse=True)
    k = len(levels)
    if k < 2:
        raise ValueError("the ordinal model needs at least two observed score levels")
    design = _Crossed(case, rater)
    family = _cumulative(y.reshape(-1), k)
    p = x.shape[1]
    modes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def deviance(params: np.ndarray) -> float:
        theta = np.abs(params[:2])
        alpha = _thresholds(params[2 : 2 + k - 1])
        beta = params[2 + k - 1 :]
        value, mode = _laplace_deviance(design, family, theta, x @ beta, alpha, modes.get("last"))
        modes["last"] = mode
        return value

    cumulative = np.cumsum(np.bincount(y.reshape(-1), minlength=k))[:-1] / len(y)
    alpha0 = np.log(cumulative / (1 - cumulative))
    start = np.concatenate([[1.0, 1.0], _threshold_params(alpha0), np.zeros(p)])
    fit = _laplace_fit("clmm_logit", deviance, start, p, design, thresholds=k - 1)
    return fit


def _thresholds(params: np.ndarray) -> np.ndarray:
    """Increasing thresholds from (first, log gaps)."""
    return np.cumsum(np.concatenate([params[:1], np.exp(params[1:])]))


def _threshold_params(alpha: np.ndarray) -> np.ndarray:
    return np.concatenate([alpha[:1], np.log(np.maximum(np.diff(alpha), 1e-6))])


def _laplace_fit(
    model: str,
    deviance: Callable[[np.ndarray], float],
    start: np.ndarray,
    p: int,
    design: _Crossed,
    *,
    thresholds: int,
) -> MixedFit:
    result = optimize.minimize(
        deviance,
        start,
        method="L-BFGS-B",
        bounds=[(0.0, None), (0.0, None)] + [(None, None)] * (len(start) - 2),
        options={"ftol": 1e-14, "gtol": 1e-8, "maxiter": 2000},
    )
    refined = optimize.minimize(
        deviance,
        result.x,
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-11, "maxiter": 20000, "adaptive": True},
    )
    params = refined.x if refined.fun <= result.fun else result.x
    params[:2] = np.abs(params[:2])
    converged = bool(result.success or refined.success)
    message = "" if converged else f"the optimiser stopped: {result.message}"
    if np.any(params[:2] < 1e-4):
        message = (message + "; " if message else "") + (
            "singular fit: a variance component is estimated at zero"
        )
    # Standard errors of the fixed effects (and thresholds) from the Hessian of the deviance
    # in all parameters, theta included, as lme4's vcov does for GLMMs. Thresholds are
    # re-parametrised to their own scale first, so their standard errors are directly theirs.
    natural = params.copy()
    if thresholds:
        natural[2 : 2 + thresholds] = _thresholds(params[2 : 2 + thresholds])

    def on_natural(values: np.ndarray) -> float:
        inner = values.copy()
        if thresholds:
            alpha = values[2 : 2 + thresholds]
            if np.any(np.diff(alpha) <= 0):
                return np.inf
            inner[2 : 2 + thresholds] = _threshold_params(alpha)
        return deviance(inner)

    hessian = _hessian(on_natural, natural)
    free = slice(2, len(params)) if np.any(params[:2] < 1e-4) else slice(0, len(params))
    try:
        covariance = 2 * np.linalg.inv(hessian[free, free])
    except np.linalg.LinAlgError:
        covariance = 2 * np.linalg.pinv(hessian[free, free])
    offset = 0 if free.start == 2 else 2
    beta = natural[2 + thresholds :]
    se_all = np.sqrt(np.clip(np.diag(covariance), 0, None))
    se_beta = se_all[offset + thresholds :]
    if np.any(np.abs(beta) > SEPARATION) or not np.all(se_beta > 0):
        # Every judgment (or score) went one way: the likelihood grows without bound.
        converged = False
        message = (message + "; " if message else "") + (
            "no finite estimate: the responses are separated (every one went the same way)"
        )
        se_beta = np.full_like(beta, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = beta / se_beta
    return MixedFit(
        model=model,
        coefficients=tuple(float(v) for v in beta),
        se=tuple(float(v) for v in se_beta),
        df=tuple(math.inf for _ in beta),
        p_values=tuple(float(2 * stats.norm.sf(abs(v))) for v in z),
        sd_case=float(params[0]),
        sd_rater=float(params[1]),
        sd_residual=math.nan,
        criterion=float(deviance(params)),
        converged=converged,
        message=message,
        thresholds=tuple(float(v) for v in natural[2 : 2 + thresholds]),
        n=design.n,
        cases=design.cases,
        raters=design.raters,
        extra={"threshold_se": float(se_all[offset]) if thresholds else math.nan},
    )
