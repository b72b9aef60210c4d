"""Using a trained checkpoint on new scans: predict, explain (Grad-CAM), export (ONNX/TorchScript).

See docs/inference.md. The heavy optional parts (MONAI's Grad-CAM, matplotlib, ONNX) are
imported inside the functions that use them.
"""

from volkd.inference.explain import explain_scans
from volkd.inference.export import export_model
from volkd.inference.grid import IncompatibleScanError, TrainingGrid, training_grid
from volkd.inference.inputs import Skipped, collect_inputs
from volkd.inference.model_card import model_card
from volkd.inference.predict import NoScansError, PredictionWarning, predict_scans, predict_to_csv, write_predictions

__all__ = [
    "IncompatibleScanError", "NoScansError", "PredictionWarning", "Skipped", "TrainingGrid", "collect_inputs",
    "explain_scans", "export_model", "model_card", "predict_scans", "predict_to_csv", "training_grid", "write_predictions",
]
