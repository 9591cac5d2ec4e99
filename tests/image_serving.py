"""The scikit-learn image's serving entry point, for gunicorn in `.venv-image` (the image's Python and packages).

The image (aws/sagemaker-scikit-learn-container 1.4-2) serves with `sagemaker_sklearn_container.serving:main`,
which is not on PyPI. What it does, from its source: on the first request, import the user module named by
SAGEMAKER_PROGRAM (the image pip-installs the code directory first; here the directory is on gunicorn's
--pythonpath, which the image's own command line also carries), wrap its model_fn, input_fn, predict_fn and
output_fn in sagemaker-containers' Transformer, load the model (`initialize`), and hand every request to
sagemaker-containers' Worker, a Flask app whose /invocations is the Transformer's `transform`.
Everything that shapes a request or an answer is the toolkit's own code; only this glue is ours.

Run by tests/test_serving_contract.py as
    gunicorn -k gevent --pythonpath CODE_DIR,TESTS_DIR ... image_serving:main
with SAGEMAKER_BASE_DIR (model in its model/), SAGEMAKER_PROGRAM and SAGEMAKER_SUBMIT_DIRECTORY set.
"""

import importlib

from sagemaker_containers.beta.framework import env, transformer, worker

app = None


def main(environ, start_response):
    global app
    if app is None:
        serving_env = env.ServingEnv()
        user_module = importlib.import_module(serving_env.module_name)
        user_transformer = transformer.Transformer(
            model_fn=user_module.model_fn,
            input_fn=user_module.input_fn,
            predict_fn=user_module.predict_fn,
            output_fn=user_module.output_fn,
        )
        user_transformer.initialize()
        app = worker.Worker(transform_fn=user_transformer.transform, module_name=serving_env.module_name)
    return app(environ, start_response)
