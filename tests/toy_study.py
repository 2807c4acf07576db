"""A study written the way a contributor adds one: this module only. It declares its parameters, its run function
and its result on the study contract, and registers itself; every door (the CLI, the Python API, docs/api.md, the
results store, the HTML report) takes it from the registry. ``tests/test_adding_a_study.py`` registers it and
finds it everywhere (it is not part of the package)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cliplab.embed import EmbeddingResult, embed_images
from cliplab.inputs import IMAGES, ONE_MODEL, RUN, Inputs
from cliplab.params import param
from cliplab.registry import Output, Study
from cliplab.report.notebook import Notebook
from cliplab.results.result import DatasetInfo, Failure, ReportSection, Rows, SingleModel, Table


@dataclass(frozen=True)
class ToyParams:
    """The toy study's own parameters."""
    scale: float = param(2.0, "multiply the mean embedding norm by this.", min=0.0)
    label: str = param("toy", "the variant's name in the results.")


@dataclass(repr=False)
class ToyResult(SingleModel, Notebook):
    """The mean norm of the image embeddings, scaled."""
    model: object
    data: object
    images: EmbeddingResult
    scale: float
    label: str
    task = "toy_norms"

    @property
    def value(self) -> float:
        return float(np.linalg.norm(self.images.embeddings, axis=1).mean() * self.scale)

    @property
    def dataset(self) -> DatasetInfo:
        return DatasetInfo.of(self.data, int(len(self.images.indices)))

    @property
    def params(self) -> dict:
        return {"scale": self.scale, "label": self.label}

    @property
    def failures(self) -> list[Failure]:
        return Failure.from_embedding(self.images.failures)

    def metric_rows(self) -> pd.DataFrame:
        rows = Rows()
        rows.add(task=self.task, model=self.model, dataset=self.data, variant=self.label, metric="mean_norm",
                 value=self.value, n=self.dataset.n)
        return rows.frame()

    def summary(self) -> str:
        return f"toy: mean norm x {self.scale} = {self.value:.4f}"

    def tables(self) -> list[Table]:
        return [Table("toy", ["variant", "mean norm"], [[self.label, f"{self.value:.4f}"]])]

    def record(self) -> dict:
        return {"task": self.task, "model": self.model.name, "dataset": self.data.name, "mean_norm": self.value}

    def artifacts(self) -> dict:
        return {}


def run_toy(inputs: Inputs, params: ToyParams = ToyParams()) -> ToyResult:
    """The mean embedding norm of the dataset's images, scaled: a :class:`ToyResult`."""
    images = embed_images(inputs.model, inputs.dataset, inputs.options)
    return ToyResult(inputs.model, inputs.dataset, images, params.scale, params.label)


TOY = Study("toy", run_toy, "Toy study: the mean norm of the image embeddings, scaled.", params=ToyParams,
            inputs=(*ONE_MODEL, *IMAGES, *RUN),
            outputs=(Output("output", "record", "results JSON.", (".json",), short="-o"),),
            sections=(ReportSection("toy_norms", ("mean_norm",)),),
            example='cliplab.toy("tiny-shapes", "shapes:color", scale=3.0)')
