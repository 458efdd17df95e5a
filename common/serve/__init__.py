"""``eyegc serve``: a local web page that predicts uploaded images with loaded bundles."""

from eyegc.common.serve.app import create_app, serve
from eyegc.common.serve.predictions import PredictionService, load_choices

__all__ = ["PredictionService", "create_app", "load_choices", "serve"]
