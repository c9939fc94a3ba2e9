"""Every non-empty subset of the views at once: how the model (trained with view dropout) and
triangulation (2 or more views) do with fewer cameras, and how often adding a view hurts.

The result, the layout ``iivformer evaluate --view_subsets all --json`` writes::

    {"subsets": {"0,1": {"model": {"p1": mm, "p2": mm}, "triangulation": {"p1": mm, "p2": mm}}, ...},
     "provenance": {...}}

with subsets named by their camera indices and the mm the mean over actions, as in the tables.
"""
import itertools

import numpy as np

from iivformer import provenance, runtime, skeleton
from iivformer.baselines import triangulation
from iivformer.errors import IIVFormerError
from iivformer.evaluate import evaluate_predictions, evaluate_split, load_for_evaluation, trained_views
from iivformer.prepare import Normalization, prepare

_PIXELS = Normalization(np.zeros((1, 1, 2), np.float32), np.ones((1, 1, 2), np.float32))


def all_subsets(views) -> list:
    """The non-empty subsets of `views`, smallest first, each in camera order."""
    views = sorted(views)
    return [subset for size in range(1, len(views) + 1) for subset in itertools.combinations(views, size)]


def _means(evaluation) -> dict:
    return {protocol: evaluation.per_action(protocol)["mean"] for protocol in ("p1", "p2")}


def evaluate_subsets(model_path, data_3d, data_2d, subjects=skeleton.TEST_SUBJECTS, device="auto",
                     every: int = 1) -> dict:
    """The model on every subset of the views it was trained on (it must have been trained with
    view dropout) and triangulation on every subset of 2 or more, on the frames of `subjects`
    (with `every` n > 1, on every n-th of them: the first, the n+1-th, ...)."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise IIVFormerError(f"every must be a positive integer, not {every!r}")
    checkpoint, model, prepared = load_for_evaluation(model_path, data_3d, data_2d, subjects)
    trained = trained_views(checkpoint)
    if not checkpoint.get("train_config", {}).get("view_dropout"):
        raise IIVFormerError(f"{model_path}: evaluating every subset of views needs a model trained with "
                             "--view_dropout")
    device = runtime.resolve_device(device)
    pixels = prepare(data_3d, data_2d, train_subjects=(), test_subjects=subjects, normalization=_PIXELS).test
    if every > 1:
        pixels, prepared.test = pixels.every(every), prepared.test.every(every)
    results = {}
    for subset in all_subsets(trained):
        mask = np.array([view in subset for view in trained])
        entry = {"model": _means(evaluate_split(model, prepared.test, device, view_mask=mask))}
        if len(subset) >= 2:
            entry["triangulation"] = _means(evaluate_predictions(
                triangulation(pixels, _PIXELS, subset, rig=prepared.rig), pixels))
        results[",".join(map(str, subset))] = entry
    record = provenance.describe("IIVFormer on every subset of views", model_path, data_3d, data_2d,
                                 prepared.test_subjects, len(prepared.test), device,
                                 "stored in the checkpoint", trained, prepared.rig)
    if every > 1:  # one test frame in `every`: the protocol and the caption say so
        record["every"] = int(every)
        record["protocol"]["frames"] = f"one in {every} of the chosen subjects' frames, in order from the first"
    return {"subsets": results, "provenance": record}


def added_view_hurts(subsets: dict, method: str = "model", protocol: str = "p1") -> tuple:
    """(worse, cases): of all the ways to add one view to a subset that `method` was evaluated on,
    how many made its error larger."""
    errors = {frozenset(map(int, name.split(","))): entry[method][protocol]
              for name, entry in subsets.items() if method in entry}
    cases = [(errors[smaller | {view}] > error) for smaller, error in errors.items()
             for view in set().union(*errors) - smaller if smaller | {view} in errors]
    return sum(cases), len(cases)
