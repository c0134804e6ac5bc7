"""Retraining as a change request, never a silent retrain: a signal (a declared drift, a new dataset version under a
deployed model) becomes a change request the bot opens with the evidence; people review, merge and launch it.

signals     RetrainSignal (the input: what any trigger hands in) and the outcomes of handling one
bot         the bot's user: it saves and reads, never decides, merges or launches
datasets    the dataset trigger: deployed models whose training data changed on main, with a diff summary
proposals   the proposed config (the model's config, the new dataset version) and the request's description
service     Retrain: the safeguards (one open request per model, suppression, cool-down, hourly limit), the
            check, the merge hook (launch on merge), the list
"""

from backend.retrain.service import Retrain
from backend.retrain.signals import Outcome, RetrainSignal

__all__ = ["Outcome", "Retrain", "RetrainSignal"]
