from clinic_eval.models.accounts import User, UserSession
from clinic_eval.models.adjudication import Adjudication
from clinic_eval.models.audit import AuditEvent, AuditEventQuerySet, AuditImmutable, ExportLog
from clinic_eval.models.power import PowerAnalysis
from clinic_eval.models.rating import (
    Assignment,
    Comparison,
    Judgment,
    JudgmentEdit,
    ResponseRating,
    ResponseSpan,
)
from clinic_eval.models.rubrics import (
    CaseRubric,
    CriterionGrade,
    GraderVerdict,
    RubricChange,
    RubricCriterion,
    RubricVerification,
)
from clinic_eval.models.studies import (
    STUDY_TRANSITIONS,
    Arm,
    Case,
    DataImport,
    Response,
    Study,
    StudyRater,
    new_public_id,
    new_study_seed,
)

__all__ = [
    "Adjudication",
    "Arm",
    "Assignment",
    "AuditEvent",
    "AuditEventQuerySet",
    "AuditImmutable",
    "Case",
    "CaseRubric",
    "Comparison",
    "CriterionGrade",
    "DataImport",
    "ExportLog",
    "GraderVerdict",
    "Judgment",
    "JudgmentEdit",
    "PowerAnalysis",
    "Response",
    "ResponseRating",
    "ResponseSpan",
    "RubricChange",
    "RubricCriterion",
    "RubricVerification",
    "STUDY_TRANSITIONS",
    "Study",
    "StudyRater",
    "User",
    "UserSession",
    "new_public_id",
    "new_study_seed",
]
