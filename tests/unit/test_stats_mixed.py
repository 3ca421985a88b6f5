"""The mixed models match R's lme4, lmerTest and ordinal on committed data to 1e-3.

``reference/mixed_models_r.json`` (beside this file) is the output of ``reference/mixed_models.R``
on ``reference/*.csv``; when Rscript and the packages are installed (``make test`` installs
them), the script is run again here and must print the same numbers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinic_eval.statistics import mixed

REFERENCE = Path(__file__).resolve().parent / "reference"
R_OUTPUT = json.loads((REFERENCE / "mixed_models_r.json").read_text())
TOLERANCE = 1e-3


def _codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values, sort=True)[0]


@pytest.fixture(scope="module")
def likert() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "likert.csv")


@pytest.fixture(scope="module")
def preference() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "preference.csv")


def test_the_linear_mixed_model_is_lmer_with_satterthwaite(likert: pd.DataFrame) -> None:
    fit = mixed.lmm(
        likert["difference"].to_numpy(float),
        np.ones((len(likert), 1)),
        _codes(likert["case"]),
        _codes(likert["rater"]),
    )
    r = R_OUTPUT["lmm"]
    assert fit.converged
    assert fit.coefficients[0] == pytest.approx(r["estimate"], abs=TOLERANCE)
    assert fit.se[0] == pytest.approx(r["se"], abs=TOLERANCE)
    assert fit.df[0] == pytest.approx(r["df"], rel=TOLERANCE)
    assert fit.p_values[0] == pytest.approx(r["p_value"], abs=TOLERANCE)
    assert fit.sd_case == pytest.approx(r["sd_case"], abs=TOLERANCE)
    assert fit.sd_rater == pytest.approx(r["sd_rater"], abs=TOLERANCE)
    assert fit.sd_residual == pytest.approx(r["sd_residual"], abs=TOLERANCE)
    assert fit.criterion == pytest.approx(r["reml_criterion"], abs=TOLERANCE)


def test_the_logistic_mixed_model_is_glmer_laplace(preference: pd.DataFrame) -> None:
    fit = mixed.glmm_logit(
        preference["a_won"].to_numpy(float),
        np.ones((len(preference), 1)),
        _codes(preference["case"]),
        _codes(preference["rater"]),
    )
    r = R_OUTPUT["glmm"]
    assert fit.coefficients[0] == pytest.approx(r["estimate"], abs=TOLERANCE)
    assert fit.se[0] == pytest.approx(r["se"], abs=TOLERANCE)
    assert fit.sd_case == pytest.approx(r["sd_case"], abs=TOLERANCE)
    assert fit.sd_rater == pytest.approx(r["sd_rater"], abs=TOLERANCE)
    assert fit.criterion == pytest.approx(r["deviance"], abs=TOLERANCE)


def test_the_ordinal_mixed_model_is_clmm(likert: pd.DataFrame) -> None:
    score = np.concatenate([likert["score_a"], likert["score_b"]])
    arm = np.concatenate([np.ones(len(likert)), np.zeros(len(likert))])
    case = np.tile(_codes(likert["case"]), 2)
    rater = np.tile(_codes(likert["rater"]), 2)
    fit = mixed.clmm_logit(score, arm[:, None], case, rater)
    r = R_OUTPUT["clmm"]
    assert fit.thresholds == pytest.approx(r["thresholds"], abs=TOLERANCE)
    assert fit.coefficients[0] == pytest.approx(r["beta"], abs=TOLERANCE)
    assert fit.se[0] == pytest.approx(r["se"], abs=TOLERANCE)
    assert fit.sd_case == pytest.approx(r["sd_case"], abs=TOLERANCE)
    assert fit.sd_rater == pytest.approx(r["sd_rater"], abs=TOLERANCE)
    assert fit.criterion == pytest.approx(r["deviance"], abs=TOLERANCE)


def _r_has_the_packages() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(
        ["Rscript", "-e", "library(lme4); library(lmerTest); library(ordinal)"],
        capture_output=True,
        timeout=120,
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _r_has_the_packages(), reason="R with lme4, lmerTest, ordinal absent")
def test_r_still_prints_the_committed_reference() -> None:
    output = subprocess.run(
        ["Rscript", str(REFERENCE / "mixed_models.R"), str(REFERENCE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    fresh = json.loads(output)
    for model in ("lmm", "glmm", "clmm"):
        for key, value in R_OUTPUT[model].items():
            assert fresh[model][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (model, key)


def test_a_singular_fit_says_so() -> None:
    rng = np.random.default_rng(4)
    case = np.repeat(np.arange(40), 3)
    rater = np.tile(np.arange(3), 40)
    y = rng.normal(0, 1, case.size)  # no case or rater effect at all
    fit = mixed.lmm(y, np.ones((case.size, 1)), case, rater)
    assert fit.sd_case == 0 and fit.sd_rater == 0
    assert "singular fit" in fit.message
    assert fit.se[0] == pytest.approx(np.std(y, ddof=1) / np.sqrt(y.size), rel=1e-6)


def test_a_model_without_a_finite_estimate_says_so_and_gives_no_standard_error() -> None:
    case = np.repeat(np.arange(30), 2)
    rater = np.tile(np.arange(6), 10)
    fit = mixed.glmm_logit(np.ones(60), np.ones((60, 1)), case, rater)
    assert not fit.converged and "separated" in fit.message
    assert np.isnan(fit.se[0]) and np.isnan(fit.p_values[0])
