"""The primary endpoint as a mixed model with crossed random intercepts for case and rater
(the lme4 / ordinal fit a reviewer asks for), beside the clustered analysis: the report's
model-based companion of its pre-registered endpoint."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from clinic_eval.statistics import clustered, mixed, paired

# A full mixed-model fit costs about a second per thousand rows here, so the report runs one
# only for the primary endpoint and only up to this many rows; beyond it the clustered
# estimator (which is the primary analysis at every size) stands alone, and the report says so.
MODEL_BASED_MAX_ROWS = 5_000


def model_based(
    judgments: pd.DataFrame, ratings: pd.DataFrame, primary: tuple[str, ...], alpha: float
) -> dict[str, Any] | None:
    """The primary endpoint as a mixed model with crossed random intercepts (the lme4 /
    ordinal fit a reviewer asks for), beside the clustered analysis."""
    if not primary:
        return None
    kind, *rest = primary
    if kind == "preference":
        arm_a, arm_b = rest
        j = judgments
        pair = ((j["arm_a"] == arm_a) & (j["arm_b"] == arm_b)) | (
            (j["arm_a"] == arm_b) & (j["arm_b"] == arm_a)
        )
        decisive = j[pair & j["outcome"].isin(["a", "b"])]
        a_won = np.where(
            decisive["arm_a"] == arm_a, decisive["outcome"] == "a", decisive["outcome"] == "b"
        ).astype(float)
        rows = len(decisive)
        model = (
            "logistic mixed model, random intercepts for case and rater (lme4 glmer, "
            "Laplace); the estimate is the log-odds that "
            f"{arm_a} is preferred for the median case and physician"
        )
        base = {"model": model, "rows": rows, "generalises_to": clustered.GENERALISES_TO}
        if reason := _model_reason(rows, decisive["case_id"], decisive["rater_id"]):
            return {**base, "not_run": reason}
        fit = mixed.glmm_logit(
            a_won,
            np.ones((rows, 1)),
            clustered.codes(decisive["case_id"]),
            clustered.codes(decisive["rater_id"]),
        )
        return {**base, **_fit_summary(fit, alpha, probability=True)}
    dimension, arm_a, arm_b = rest
    wide = paired.score_tables(ratings, [arm_a, arm_b], [dimension])[dimension].dropna()
    rows = len(wide)
    model = (
        "linear mixed model on the paired difference, random intercepts for case and rater "
        "(lme4 lmer, REML, Satterthwaite df as lmerTest), and a cumulative-logit mixed model "
        "on the two arms' scores (ordinal clmm)"
    )
    base = {"model": model, "rows": rows, "generalises_to": clustered.GENERALISES_TO}
    case_labels = wide.index.get_level_values("case_id")
    rater_labels = wide.index.get_level_values("rater_id")
    if reason := _model_reason(rows, case_labels, rater_labels):
        return {**base, "not_run": reason}
    case, rater = clustered.codes(case_labels), clustered.codes(rater_labels)
    difference = (wide[arm_a] - wide[arm_b]).to_numpy()
    fit = mixed.lmm(difference, np.ones((rows, 1)), case, rater)
    section = {**base, **_fit_summary(fit, alpha)}
    scores = np.concatenate([wide[arm_a].to_numpy(), wide[arm_b].to_numpy()])
    if np.all(scores == np.round(scores)) and len(np.unique(scores)) >= 2:
        arm = np.concatenate([np.ones(rows), np.zeros(rows)])[:, None]
        ordinal = mixed.clmm_logit(scores, arm, np.tile(case, 2), np.tile(rater, 2))
        section["ordinal"] = {
            "log_odds_ratio": ordinal.coefficients[0],
            "se": ordinal.se[0],
            "p_value": ordinal.p_values[0],
            "sd_case": ordinal.sd_case,
            "sd_rater": ordinal.sd_rater,
            "message": ordinal.message,
        }
    else:
        section["ordinal"] = {"not_run": "averaged scores are not on the ordinal scale"}
    return section


def _model_reason(rows: int, case: Any, rater: Any) -> str:
    if rows > MODEL_BASED_MAX_ROWS:
        return (
            f"{rows:,} rows: a full mixed-model fit is not run above "
            f"{MODEL_BASED_MAX_ROWS:,}; the cluster-robust analysis is the primary one"
        )
    return clustered.too_few_clusters(
        int(pd.Series(case).nunique()), int(pd.Series(rater).nunique())
    )


def _fit_summary(fit: mixed.MixedFit, alpha: float, *, probability: bool = False) -> dict[str, Any]:
    estimate, se, df = fit.coefficients[0], fit.se[0], fit.df[0]
    q = float(clustered.t_quantile(1 - alpha, df))
    low, high = estimate - q * se, estimate + q * se
    summary: dict[str, Any] = {
        "estimate": estimate,
        "low": low,
        "high": high,
        "se": se,
        "df": df,
        "p_value": fit.p_values[0],
        "sd_case": fit.sd_case,
        "sd_rater": fit.sd_rater,
        "sd_residual": fit.sd_residual,
        "converged": fit.converged,
        "message": fit.message,
    }
    if probability and math.isfinite(low) and math.isfinite(high):
        summary["probability"] = {
            "estimate": 1 / (1 + math.exp(-estimate)),
            "low": 1 / (1 + math.exp(-low)),
            "high": 1 / (1 + math.exp(-high)),
        }
    if not fit.converged:
        summary["fallback"] = (
            f"the mixed model did not converge ({fit.message or 'no reason given'}); the "
            "clustered analysis above is the one to read"
        )
    return summary
