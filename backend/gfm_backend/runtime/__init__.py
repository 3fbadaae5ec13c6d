"""Execution of a model package on torch or ONNX Runtime, on CPU or CUDA."""

from .device import resolve_device
from .predictors import OnnxPredictor, Predictor, TorchPredictor, make_predictor

__all__ = ["OnnxPredictor", "Predictor", "TorchPredictor", "make_predictor", "resolve_device"]
