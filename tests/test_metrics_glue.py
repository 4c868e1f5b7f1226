"""GLUE and classification metrics pinned to values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning

from autolora_exp.data.glue import GLUE_TASKS
from autolora_exp.errors import UserError
from autolora_exp.metrics.glue import PRIMARY_METRIC, classification_metrics, glue_metrics

# Binary example used below:
#   refs  1 0 0 1 1
#   preds 1 0 1 1 0
#   TP = 2 (rows 0, 3), TN = 1 (row 1), FP = 1 (row 2), FN = 1 (row 4)
REFS = [1, 0, 0, 1, 1]
PREDS = [1, 0, 1, 1, 0]


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte"])
def test_accuracy_tasks(task):
    # accuracy = (TP + TN) / N = 3 / 5
    assert glue_metrics(task, PREDS, REFS) == {"accuracy": 0.6}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_accuracy_and_f1(task):
    # F1 = 2 TP / (2 TP + FP + FN) = 4 / (4 + 1 + 1) = 2/3
    out = glue_metrics(task, np.array(PREDS), np.array(REFS))
    assert out == {"accuracy": 0.6, "f1": pytest.approx(0.6666666666666666)}


def test_cola_matthews():
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1 / 6
    assert glue_metrics("cola", PREDS, REFS) == {"matthews_correlation": pytest.approx(0.16666666666666666)}


def test_cola_constant_predictions_is_zero_by_sklearn_definition_with_a_warning():
    with pytest.warns(UndefinedMetricWarning, match="constant"):
        assert glue_metrics("cola", [1, 1, 1, 1], [0, 1, 0, 1]) == {"matthews_correlation": 0.0}


def test_mnli_three_classes():
    # refs 0 1 2 2 1 0 ; preds 0 1 1 2 1 2 -> 4 of 6 equal
    assert glue_metrics("mnli", [0, 1, 1, 2, 1, 2], [0, 1, 2, 2, 1, 0]) == {"accuracy": pytest.approx(4 / 6)}


def test_stsb_pearson_and_spearman():
    # x = 1 2 3 4 (mean 2.5), y = 1 2 3 10 (mean 4)
    # dx = -1.5 -0.5 0.5 1.5 ; dy = -3 -2 -1 6
    # sum dx*dy = 4.5 + 1 - 0.5 + 9 = 14 ; sum dx^2 = 5 ; sum dy^2 = 9 + 4 + 1 + 36 = 50
    # pearson = 14 / sqrt(5 * 50) = 14 / sqrt(250) = 0.8854377448...
    # spearman: the ranks of y are 1 2 3 4 = the ranks of x -> 1.0
    out = glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 10.0])
    assert out == {"pearson": pytest.approx(0.8854377448471462), "spearmanr": pytest.approx(1.0)}
    # y = 1 3 2 4: dy = -1.5 0.5 -0.5 1.5, sum dx*dy = 2.25 - 0.25 - 0.25 + 2.25 = 4 -> 4 / sqrt(5*5) = 0.8
    out = glue_metrics("stsb", np.array([1, 2, 3, 4], dtype=np.float32), [1.0, 3.0, 2.0, 4.0])
    assert out == {"pearson": pytest.approx(0.8), "spearmanr": pytest.approx(0.8)}


def test_stsb_constant_predictions_are_nan_not_zero():
    with pytest.warns(Warning):  # scipy's ConstantInputWarning
        out = glue_metrics("stsb", [2.5, 2.5, 2.5], [1.0, 2.0, 4.0])
    assert math.isnan(out["spearmanr"]) and math.isnan(out["pearson"])


def test_classification_metrics_macro_f1():
    # refs  0 0 1 1 2 2 ; preds 0 1 1 1 2 0
    # class 0: TP 1, FP 1 (row 5), FN 1 (row 1) -> F1 = 2/(2+1+1) = 1/2
    # class 1: TP 2, FP 1 (row 1), FN 0         -> F1 = 4/(4+1)   = 4/5
    # class 2: TP 1, FP 0, FN 1 (row 5)         -> F1 = 2/(2+1)   = 2/3
    # macro = (1/2 + 4/5 + 2/3) / 3 = 59/90 = 0.6555...; accuracy = 4/6
    out = classification_metrics([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2])
    assert out == {"accuracy": pytest.approx(4 / 6), "macro_f1": pytest.approx(59 / 90)}


@pytest.mark.parametrize("preds, refs", [([], []), ([1, 0], [1]), ([1], [])])
def test_empty_or_mismatched_inputs_raise(preds, refs):
    with pytest.raises(ValueError):
        glue_metrics("rte", preds, refs)
    with pytest.raises(ValueError):
        classification_metrics(preds, refs)


def test_scores_are_not_taken_as_class_ids():
    with pytest.raises(ValueError, match="argmax"):
        glue_metrics("rte", [0.3, 0.9], [0, 1])
    # whole-number floats (e.g. labels read back from a float tensor) are fine
    assert glue_metrics("rte", [0.0, 1.0], [0, 1]) == {"accuracy": 1.0}


def test_unknown_task_and_primary_metric_table():
    with pytest.raises(UserError, match="'wnli'"):
        glue_metrics("wnli", [1], [1])
    assert set(PRIMARY_METRIC) == set(GLUE_TASKS)
    # every primary metric is one of the keys its task reports
    sample = {"stsb": ([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])}
    for task, key in PRIMARY_METRIC.items():
        preds, refs = sample.get(task, (PREDS, REFS))
        assert key in glue_metrics(task, preds, refs)
    assert (PRIMARY_METRIC["cola"], PRIMARY_METRIC["stsb"]) == ("matthews_correlation", "spearmanr")
