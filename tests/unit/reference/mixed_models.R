# Reference fits for clinic_eval.statistics.mixed, from R's lme4, lmerTest and ordinal.
#
#   Rscript tests/unit/reference/mixed_models.R tests/reference > tests/unit/reference/mixed_models_r.json
#
# Debian: apt-get install r-base-core r-cran-lme4 r-cran-lmertest r-cran-ordinal
# The output is committed; tests/unit/test_stats_mixed.py compares the Python fits with it, and
# re-runs this script when Rscript is installed.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(ordinal)
})
args <- commandArgs(trailingOnly = TRUE)
folder <- if (length(args)) args[1] else "."
likert <- read.csv(file.path(folder, "likert.csv"))
preference <- read.csv(file.path(folder, "preference.csv"))
control <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))

number <- function(x) formatC(x, digits = 12, format = "g")
vector <- function(x) paste0("[", paste(sapply(x, number), collapse = ", "), "]")

# Linear mixed model on the paired difference (REML), Satterthwaite df as lmerTest.
lmm <- lmerTest::lmer(difference ~ 1 + (1 | case) + (1 | rater), data = likert, REML = TRUE,
                      control = control)
lmm_table <- summary(lmm, ddf = "Satterthwaite")$coefficients
lmm_sd <- as.data.frame(VarCorr(lmm))
lmm_sd <- setNames(lmm_sd$sdcor, lmm_sd$grp)

# Logistic mixed model on decisive preferences (Laplace). lme4's default PIRLS tolerance
# (1e-7) evaluates the Laplace determinant a step before the conditional mode, which moves the
# deviance by about 2e-4; a tight tolerance gives the approximation at the mode itself.
glmm <- glmer(a_won ~ 1 + (1 | case) + (1 | rater), data = preference, family = binomial,
              control = glmerControl(optimizer = "bobyqa", tolPwrss = 1e-13,
                                     optCtrl = list(maxfun = 1e5)))
glmm_sd <- as.data.frame(VarCorr(glmm))
glmm_sd <- setNames(glmm_sd$sdcor, glmm_sd$grp)

# Cumulative-logit mixed model on the scores of both arms (long form).
long <- rbind(
  data.frame(case = likert$case, rater = likert$rater, arm = 1, score = likert$score_a),
  data.frame(case = likert$case, rater = likert$rater, arm = 0, score = likert$score_b)
)
long$score <- factor(long$score, ordered = TRUE)
clmm_fit <- clmm(score ~ arm + (1 | case) + (1 | rater), data = long, link = "logit",
                 control = clmm.control(gradTol = 1e-8))
clmm_summary <- summary(clmm_fit)$coefficients
clmm_sd <- sapply(VarCorr(clmm_fit), function(v) sqrt(v[1]))

cat("{\n")
cat('  "versions": {"R": "', R.version$major, ".", R.version$minor, '", "lme4": "',
    as.character(packageVersion("lme4")), '", "lmerTest": "',
    as.character(packageVersion("lmerTest")), '", "ordinal": "',
    as.character(packageVersion("ordinal")), '"},\n', sep = "")
cat('  "lmm": {"estimate": ', number(lmm_table[1, "Estimate"]),
    ', "se": ', number(lmm_table[1, "Std. Error"]),
    ', "df": ', number(lmm_table[1, "df"]),
    ', "p_value": ', number(lmm_table[1, "Pr(>|t|)"]),
    ', "sd_case": ', number(lmm_sd[["case"]]),
    ', "sd_rater": ', number(lmm_sd[["rater"]]),
    ', "sd_residual": ', number(lmm_sd[["Residual"]]),
    ', "reml_criterion": ', number(REMLcrit(lmm)), "},\n", sep = "")
cat('  "glmm": {"estimate": ', number(fixef(glmm)[1]),
    ', "se": ', number(sqrt(diag(as.matrix(vcov(glmm))))[1]),
    ', "sd_case": ', number(glmm_sd[["case"]]),
    ', "sd_rater": ', number(glmm_sd[["rater"]]),
    ', "deviance": ', number(-2 * as.numeric(logLik(glmm))), "},\n", sep = "")
cat('  "clmm": {"thresholds": ', vector(clmm_fit$alpha),
    ', "beta": ', number(clmm_fit$beta[["arm"]]),
    ', "se": ', number(clmm_summary["arm", "Std. Error"]),
    ', "sd_case": ', number(clmm_sd[["case"]]),
    ', "sd_rater": ', number(clmm_sd[["rater"]]),
    ', "deviance": ', number(-2 * as.numeric(logLik(clmm_fit))), "}\n", sep = "")
cat("}\n")
