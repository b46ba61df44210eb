"""Export to ONNX (detectors with their post-processing, 2D segmentors) and the check of the
exported graph against PyTorch with onnxruntime; the command line is ``tools/export.py``."""
from .onnx import (BOX_ATOL, DEFAULT_OPSET, SCORE_ATOL, ExportMismatchError, check_report,
                   compare_outputs, default_image_size, export_onnx, first_test_images,
                   onnx_session, run_onnx, sample_images, torch_outputs, verify_onnx)
from .postprocess import (EXPORT_POSTPROCESSORS, RefineDetPostprocess, RetinaPostprocess,
                          padded_nms, register_export_postprocess)
from .wrappers import (DETECTION_OUTPUTS, SEGMENTATION_OUTPUTS, SUPPORTED_KINDS,
                       DetectorExport, ExportPreprocess, SegmentorExport,
                       UnsupportedModelError, build_export_module)

__all__ = ['BOX_ATOL', 'DEFAULT_OPSET', 'DETECTION_OUTPUTS', 'EXPORT_POSTPROCESSORS',
           'SCORE_ATOL', 'SEGMENTATION_OUTPUTS', 'SUPPORTED_KINDS', 'DetectorExport',
           'ExportMismatchError', 'ExportPreprocess', 'RefineDetPostprocess',
           'RetinaPostprocess', 'SegmentorExport', 'UnsupportedModelError',
           'build_export_module', 'check_report', 'compare_outputs', 'default_image_size',
           'export_onnx', 'first_test_images', 'onnx_session', 'padded_nms',
           'register_export_postprocess', 'run_onnx', 'sample_images', 'torch_outputs',
           'verify_onnx']
