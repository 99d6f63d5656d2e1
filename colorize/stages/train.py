"""Stage train: the model params.yaml names (train.model), trained by the one engine
(colorize/training/engine.py) on the training split, validated on val.

Outputs (rank 0): `models/model.pt` (model, optimizers, scheduler, epoch, RNG states and
the params, colorize/training/checkpoint.py; nothing run-specific), `reports/train.json`
(final numbers, DVC metrics), `reports/train_history.csv` (per epoch, DVC plots),
`reports/train_grid.png`, `reports/train_loss_table.csv` (per training image, its last
loss and times drawn) and an MLflow run. `train.nproc` > 1 relaunches this stage under
torchrun.
"""
# ruff: noqa: E402 (portable.pin() must run before numpy and torch are imported)
from __future__ import annotations

from colorize.common import portable

if __name__ == "__main__":
    portable.pin(switch=("train", "portable"))  # before numpy and torch (docs/reproducibility.md)

from colorize.common import paths, tracking
from colorize.common.errors import UserError, run_main
from colorize.common.params import load_params
from colorize.training import distributed
from colorize.training.engine import train


def main() -> None:
    portable.configure_torch()
    params = load_params()
    tracking.check_store()  # before any work: an unreachable store fails now, in one line
    nproc = params["train"]["nproc"]
    if nproc > 1 and not distributed.under_torchrun():
        code = distributed.relaunch_with_torchrun(nproc, __spec__.name)
        if code:
            raise UserError(f"train: torchrun with {nproc} processes failed (exit {code}); see the output above")
        return
    summary = train(params)
    if summary:
        print(f"train: val_psnr {summary['val_psnr']:.2f} dB, checkpoint {paths.MODEL}")
    distributed.shutdown()


if __name__ == "__main__":
    run_main(main)
