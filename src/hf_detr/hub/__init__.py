"""Checkpoints and the Hub: conversion from transformers' and the original DETR (`convert`), model cards and uploads
(`cards`), ONNX export (`export`) and the folders of the published variants (`hub_configs`)."""

from .cards import model_card, push_to_hub, save_model_folder
from .convert import from_original, from_transformers, to_original

__all__ = ["from_original", "from_transformers", "model_card", "push_to_hub", "save_model_folder", "to_original"]
