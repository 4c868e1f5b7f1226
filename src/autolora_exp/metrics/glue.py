"""GLUE dev-set metrics and the classification metrics of the offline task, computed offline.

The hub's ``glue`` metric script (which needs the hub) is a thin wrapper over these sklearn /
scipy calls; they are called directly here, with the same arguments, so the numbers are the
official ones (docs/METRICS.md):

- CoLA: Matthews correlation, ``sklearn.metrics.matthews_corrcoef``;
- SST-2, QNLI, RTE, MNLI: accuracy = mean(prediction == reference) (MNLI matched and
  mismatched are evaluated as separate calls, never concatenated);
- MRPC, QQP: accuracy and binary F1 of the positive class 1 (``f1_score``);
- STS-B: Spearman (the paper's number) and Pearson correlation of the predicted scores.

Undefined values. Spearman and Pearson are undefined when either side is constant (e.g. a
model that predicts one score for every pair): scipy returns NaN (with a
``ConstantInputWarning``) and NaN is reported as is, never replaced by 0, so a collapsed run
cannot pass for a poor one. sklearn's Matthews correlation defines the constant case as 0.0,
and that is the official CoLA number (it is what GLUE tables show for a collapsed run); it is
kept, and a ``UndefinedMetricWarning`` is raised here so it is not silent. F1 follows sklearn's
default likewise (0.0 with its own warning when there is no positive prediction or reference).
Empty inputs or inputs of different lengths raise ValueError.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score, matthews_corrcoef

from autolora_exp.errors import UserError
from autolora_exp.glue_tasks import GLUE_TASK_NAMES

#: The metric each task reports in the paper's table (result.json's primary metric).
#: Accuracy, but Matthews correlation on CoLA and Spearman correlation on STS-B.
PRIMARY_METRIC: dict[str, str] = {**dict.fromkeys(GLUE_TASK_NAMES, "accuracy"),
                                  "cola": "matthews_correlation", "stsb": "spearmanr"}


def _as_arrays(predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(predictions), np.asarray(references)
    if pred.ndim != 1 or ref.ndim != 1:
        raise ValueError(f"predictions and references must be 1-D, got shapes {pred.shape} and {ref.shape}")
    if len(pred) == 0 or len(ref) == 0:
        raise ValueError(f"cannot score empty inputs ({len(pred)} predictions, {len(ref)} references)")
    if len(pred) != len(ref):
        raise ValueError(f"{len(pred)} predictions but {len(ref)} references")
    return pred, ref


def _class_ids(values: np.ndarray, what: str) -> np.ndarray:
    """Class ids as int64; floats are accepted only when they are whole numbers (not scores)."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    raise ValueError(f"{what} must be class ids (take the argmax of the logits), got dtype {values.dtype} "
                     f"with values like {values[:3].tolist()}")


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    """accuracy = (1/N) * sum_i [pred_i == ref_i]."""
    return float(np.mean(pred == ref))


def _matthews(pred: np.ndarray, ref: np.ndarray) -> float:
    """MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) (sklearn's multiclass form
    reduces to this for two classes). 0.0 by sklearn's definition when the denominator is 0."""
    if len(np.unique(pred)) < 2 or len(np.unique(ref)) < 2:
        warnings.warn("matthews_correlation is undefined when predictions or references are constant; "
                      "reporting 0.0 as sklearn (the official GLUE metric) does", UndefinedMetricWarning,
                      stacklevel=3)
    return float(matthews_corrcoef(ref, pred))


def glue_metrics(task: str, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The official dev-set metrics of one GLUE task.

    ``predictions``: class ids (argmax of the logits) or, for ``stsb``, predicted scores;
    ``references``: the ``label`` column. Keys: ``matthews_correlation`` (cola), ``accuracy``
    (all classification tasks), ``f1`` (mrpc, qqp), ``spearmanr`` and ``pearson`` (stsb).
    """
    if task not in PRIMARY_METRIC:
        raise UserError(f"unknown GLUE task {task!r}; accepted: {', '.join(PRIMARY_METRIC)}")
    pred, ref = _as_arrays(predictions, references)
    if task == "stsb":
        pred, ref = pred.astype(np.float64), ref.astype(np.float64)
        # Pearson r = cov(x, y) / (sd(x) sd(y)); Spearman rho = Pearson r of the ranks (ties: mean rank).
        return {"pearson": float(stats.pearsonr(pred, ref)[0]), "spearmanr": float(stats.spearmanr(pred, ref)[0])}
    pred, ref = _class_ids(pred, "predictions"), _class_ids(ref, "references")
    if task == "cola":
        return {"matthews_correlation": _matthews(pred, ref)}
    out = {"accuracy": accuracy(pred, ref)}
    if task in ("mrpc", "qqp"):
        # F1 = 2 TP / (2 TP + FP + FN) for the positive class 1 (equivalent / duplicate).
        out["f1"] = float(f1_score(ref, pred))
    return out


def classification_metrics(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Accuracy (primary) and macro F1 for single-label classification (BBC News).

    macro_f1 = (1/|C|) * sum_{c in C} 2 TP_c / (2 TP_c + FP_c + FN_c), over the classes C that
    occur in the references or the predictions (sklearn's ``average="macro"``).
    """
    pred, ref = _as_arrays(predictions, references)
    pred, ref = _class_ids(pred, "predictions"), _class_ids(ref, "references")
    return {"accuracy": accuracy(pred, ref), "macro_f1": float(f1_score(ref, pred, average="macro"))}
