"""Training data and LoRA fine-tuning: ``build_dataset`` (light) and ``train`` (needs the ``[local]`` extra)."""

from .dataset import DatasetReport, build_dataset, build_samples, read_samples, split_paths

__all__ = ["DatasetReport", "build_dataset", "build_samples", "read_samples", "split_paths"]
