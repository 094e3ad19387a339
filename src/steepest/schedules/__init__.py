"""Learning-rate schedules: linear decay, warmup-stable-decay, the refined schedule, batch-size scaling.

Every schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` (so it composes with torch's
schedulers, saves in a checkpoint and drives any optimizer of the library), built from a pure
multiplier function that can be inspected or plotted on its own.
"""

from steepest.schedules.batch_scaling import scale_lr_for_batch_size, scaling_rule
from steepest.schedules.refined import median_filter, refined_multipliers, refined_schedule
from steepest.schedules.simple import linear_decay, linear_decay_multiplier, warmup_stable_decay, wsd_multiplier

__all__ = [
    "linear_decay",
    "linear_decay_multiplier",
    "median_filter",
    "refined_multipliers",
    "refined_schedule",
    "scale_lr_for_batch_size",
    "scaling_rule",
    "warmup_stable_decay",
    "wsd_multiplier",
]
