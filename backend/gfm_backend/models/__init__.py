"""Swin encoder, checkpoint loading and task networks of the GFM backend."""

from .checkpoints import encoder_state_dict as encoder_state_dict
from .checkpoints import load_encoder as load_encoder
from .checkpoints import read_state_dict as read_state_dict
from .checkpoints import save_encoder as save_encoder
from .pretrainer import GfmPretrainer as GfmPretrainer
from .pretrainer import build_pretrainer as build_pretrainer
from .pretrainer import load_pretrainer as load_pretrainer
from .pretrainer import save_pretrainer as save_pretrainer
from .swin import CONFIGS as CONFIGS
from .swin import EncoderConfig as EncoderConfig
from .swin import SwinEncoder as SwinEncoder
from .swin import build_encoder as build_encoder
