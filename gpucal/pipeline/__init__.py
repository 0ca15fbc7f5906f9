"""The ExposurePipeline (``roman_elp``)."""

from gpucal.pipeline.exposure import ExposurePipeline

__all__ = ["ExposurePipeline"]
