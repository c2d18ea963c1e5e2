"""The former home of the MLflow pyfunc model; it is ``facesr.registry.pyfunc`` now. Kept so that
``from facesr.mlflow_model import FacesrSuperResolution`` still works. (Versions registered earlier do not import this
module: MLflow stored a copy of the file in each model and runs that copy.)"""

from facesr.registry.pyfunc import FacesrSuperResolution

__all__ = ["FacesrSuperResolution"]
