"""Model formats: the .klm blob (export: write and read) and ONNX/TFLite import."""
