"""The pipeline's scripts: train, register, deploy (script mode; run as `python -m training.<step>`).

The defaults below are where the steps meet when SageMaker's variables are not set (CodeBuild, the
embedded run, a laptop): train writes there and register reads there, so the two agree without flags.
"""

DEFAULT_MODEL_DIR = "build/model"
DEFAULT_OUTPUT_DIR = "build/output"
# Written by train beside evaluation.json (data source, features, hyperparameters, library
# versions); register reads the data source from it for the package's metadata.
TRAINING_METADATA_FILE = "training_metadata.json"
