"""The eight GLUE tasks of the paper's Table 1, in the benchmark's order: the one list of them.

Whatever enumerates GLUE reads this tuple: the loaders' specs (:mod:`autolora_exp.data.glue`),
the primary metrics (:mod:`autolora_exp.metrics.glue`), the benchmark scripts
(:mod:`autolora_exp.bench`) and the tables' columns (:mod:`autolora_exp.tables.layout`). It
imports nothing, so the tables and benchmarks read it without loading ``datasets`` or sklearn.
The experiments' sweeps (``conf/experiment/table1_glue.yaml``, ``table4_ablations.yaml``) list
the same tasks in YAML; tests/test_experiments.py checks that they match.
"""

GLUE_TASK_NAMES: tuple[str, ...] = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
