"""`cnnlab serve`: a FastAPI prediction server and web page for one trained model.

>>> from cnnlab.serve import create_app, check_bind
>>> check_bind("127.0.0.1", api_key=None)  # loopback needs no key
"""

from cnnlab.serve.app import API_KEY_ENV, ConnectionLimits, check_bind, create_app, is_loopback, run_server
from cnnlab.serve.batching import MicroBatcher
from cnnlab.serve.predictor import LoadedModel, load_predictor

__all__ = ["create_app", "check_bind", "run_server", "is_loopback", "API_KEY_ENV", "ConnectionLimits", "MicroBatcher",
           "LoadedModel", "load_predictor"]
