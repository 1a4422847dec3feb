"""ferops: facial-expression recognition from the SFEW ResNet-18 paper to DVC, MLflow, ONNX and
BentoML."""

#: The model's one name: the registered model in MLflow and the served model in BentoML's store.
MODEL_NAME = "ferops-resnet18"
