"""Optimisation pieces shared by the pretraining loop: parameter groups, AdamW, LR schedule."""

from .optim import BASE_LR as BASE_LR
from .optim import GRAD_CLIP_NORM as GRAD_CLIP_NORM
from .optim import MIN_LR as MIN_LR
from .optim import WARMUP_LR as WARMUP_LR
from .optim import WEIGHT_DECAY as WEIGHT_DECAY
from .optim import WarmupCosineSchedule as WarmupCosineSchedule
from .optim import build_optimizer as build_optimizer
from .optim import linear_scaled_lrs as linear_scaled_lrs
from .optim import lr_at as lr_at
from .optim import param_groups as param_groups
from .optim import schedule_steps as schedule_steps
