"""Early stopping on validation loss: stop when it has not improved for ``patience`` evaluations, never
before ``min_epochs`` of the training split, and keep the best checkpoint.

A loss on a handful of validation samples is mostly noise, and stopping on noise ends a run at random:
``check_validation`` refuses a split smaller than ``TRAIN_MIN_VAL_SAMPLES`` with its counts. The stopping
state is rebuilt from the Trainer's log history, so a resumed run stops where the uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import TRAIN_MIN_VAL_SAMPLES
from ..errors import InputError


def check_validation(val_samples: Sequence[dict], usable: int, too_long: int, max_length: int,
                     minimum: int = TRAIN_MIN_VAL_SAMPLES, capped: int = 0) -> None:
    """Raise ``InputError`` naming the counts when ``usable`` validation samples are too few to stop on."""
    if usable >= minimum:
        return
    scenes = len({s.get("meta", {}).get("scene") for s in val_samples})
    parts = [f"{len(val_samples)} validation sample(s) from {scenes} scene(s)"]
    if too_long:
        parts.append(f"{too_long} longer than --max-length {max_length}")
    if capped:
        parts.append(f"--max-val-samples {capped} keeps {usable}")
    raise InputError(f"early stopping needs at least {minimum} validation samples to judge the loss on, but there "
                     f"are {usable} ({'; '.join(parts)}): rebuild the data with a larger --val-fraction "
                     f"(chatharuhi build-dataset), or train for a fixed --epochs without --early-stopping")


def best_so_far(history: Sequence[dict], min_delta: float) -> tuple[float | None, int]:
    """(the best validation loss in ``history``, evaluations since it improved by more than ``min_delta``)."""
    best, waited = None, 0
    for entry in history:
        loss = entry.get("eval_loss")
        if loss is None:
            continue
        if best is None or loss < best - min_delta:
            best, waited = loss, 0
        else:
            waited += 1
    return best, waited


def make_callback(patience: int, min_epochs: float, min_delta: float = 0.0):
    """A ``TrainerCallback`` that stops training as the module doc says (transformers imported here)."""
    from transformers import TrainerCallback

    class EarlyStopping(TrainerCallback):
        """Stops after ``patience`` evaluations without improvement, once ``min_epochs`` are done."""

        def __init__(self):
            self.stopped_at: dict | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            _, waited = best_so_far(state.log_history, min_delta)
            if waited >= patience and (state.epoch or 0) >= min_epochs - 1e-9:
                control.should_training_stop = True
                self.stopped_at = {"step": state.global_step, "epoch": state.epoch, "evaluations_without_gain": waited}

    return EarlyStopping()
