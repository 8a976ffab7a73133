"""The ``svm`` section: the kernel SVM's landmarks, kernel width, strength, epochs and calibration."""

from __future__ import annotations

from pydantic import Field

from ontime.config import StrictModel


class SVMConfig(StrictModel):
    """The ``svm`` section of params.yaml."""

    n_components: int = Field(ge=1, description="Nystroem landmarks (training rows) of the RBF kernel")
    gamma_scale: float = Field(
        gt=0, description="RBF width: gamma = gamma_scale / the median squared distance between training rows"
    )
    alpha: float = Field(gt=0, description="L2 strength of the linear SVM (SGD's alpha; C = 1 / (alpha n))")
    epochs: int = Field(ge=1, description="passes of averaged SGD over the fitting rows")
    calibration_folds: int = Field(
        ge=2,
        description="time-ordered blocks of the fitting rows whose out-of-fold scores fit Platt's sigmoid",
    )
    refit: bool = Field(description="fit again on every non-test row; validation scores stay the first fit's")
