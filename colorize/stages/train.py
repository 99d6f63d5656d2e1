"""Stage train: the model params.yaml names (train.model), trained by the one engine
(colorize/training/engine.py) on the training split, validated on val.

Outputs (rank 0): `models/model.pt` (model, optimizers, scheduler, epoch, RNG states and
the params, colorize/training/checkpoint.py; nothing run-specific), `reports/train.json`
(final numbers, DVC metrics), `reports/train_history.csv` (per epoch, DVC plots),
`reports/train_grid.png`, `reports/train_loss_table.csv` (per training image, its last
loss and times drawn) and an MLflow run. `train.nproc` > 1 relaunches this stage under
torchrun.

Several machines (`train.nnodes` > 1): node 0 runs the stage as DVC does; every other
node, in its own clone of the same commit with the same data (`dvc repro priors` there,
the stages reproduce byte for byte, or `dvc pull`), runs

    python -m colorize.stages.train --node-rank R     # or COLORIZE_NODE_RANK=R

The node rank is per machine, so an option, not a param. Node 0 writes every output and
logs to MLflow; the other nodes only compute, and need no MLflow store. Ranks whose
params or data differ from node 0's stop with one line (engine.same_everywhere).
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

import argparse
import os

from colorize.common import portable

if __name__ == "__main__":
    portable.pin(switch=("train", "portable"))  # before numpy and torch (docs/reproducibility.md)

from colorize.common import paths, tracking
from colorize.common.errors import UserError, run_main
from colorize.common.params import load_params, rdzv_endpoint
from colorize.training import distributed
from colorize.training.engine import train


def node_rank_arg(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the model params.yaml names (train.model).")
    parser.add_argument("--node-rank", type=node_rank_arg, default=os.environ.get("COLORIZE_NODE_RANK", "0"),
                        help="this machine's place when train.nnodes > 1: 0 runs dvc repro, the others 1, 2, ... "
                             "(default: $COLORIZE_NODE_RANK, else 0)")
    args = parser.parse_args(argv)
    portable.configure_torch()
    params = load_params()
    cfg = params["train"]
    nproc, nnodes = cfg["nproc"], cfg["nnodes"]
    node = distributed.node_rank() if distributed.under_torchrun() else args.node_rank
    if node >= nnodes and not distributed.under_torchrun():
        raise UserError(f"--node-rank: must be below train.nnodes ({nnodes}), got {node}")
    if node == 0:  # the other nodes do not log, and may not reach the store
        tracking.check_store()  # before any work: an unreachable store fails now, in one line
    if (nproc > 1 or nnodes > 1) and not distributed.under_torchrun():
        master = rdzv_endpoint(cfg) if nnodes > 1 else None
        code = distributed.relaunch_with_torchrun(nproc, __spec__.name, nnodes, node, master)
        if code:
            where = f" on node {node} of {nnodes}" if nnodes > 1 else ""
            raise UserError(f"train: torchrun with {nproc} process(es){where} failed (exit {code}); "
                            "see the output above")
        if node:
            print(f"train: node {node} of {nnodes} finished; node 0 wrote {paths.MODEL} and the reports")
        return
    summary = train(params)
    if summary:
        print(f"train: val_psnr {summary['val_psnr']:.2f} dB, checkpoint {paths.MODEL}")
    distributed.shutdown()


if __name__ == "__main__":
    run_main(main)
