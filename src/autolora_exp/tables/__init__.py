"""Result files -> the paper's tables (Markdown, LaTeX) and figures (PNG).

    load.py                   read result.json / failed.json, group runs into cells, aggregate over seeds
    render.py                 a table as data; Markdown and LaTeX writers
    layout.py                 the paper's task columns, method rows, labels and number formats
    glue.py                   Table 1 (every method on GLUE), Table 4 (ablations)
    figure2_roberta_large.py  Figure 2 (RoBERTa-large bars)
    nlg.py                    Table 2 (E2E, WebNLG)
    ner.py                    Table 3 (BioNLP)
    cost.py                   Table 5 (training cost, AdaLoRA = 1, LoRA rank grid)
    ranks.py                  Figure 3 (learned-rank heatmaps)
    generic.py                any other experiment found
    make.py                   the driver: make_tables(results_root, out_dir)
"""

from autolora_exp.tables.make import make_tables

__all__ = ["make_tables"]
