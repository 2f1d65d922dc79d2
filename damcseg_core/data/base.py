"""Base class of the file-based dataset loaders: the checks every one of them makes alike.

A loader names its dataset, splits, modalities and conditions as class attributes; the
constructor here refuses an unknown split, condition or modality selection with one message
format, and sets ``root``, ``split``, ``requested_modalities`` and ``requested_conditions``.
The loader then looks for its files (``require_dir`` / ``require_files``: a missing folder or an
empty split fails at construction, naming how to get the data) and implements ``_load``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from damcseg_core.data.io_utils import FrameListDataset, resolve_modalities

__all__ = ["DatasetBase"]


class DatasetBase(FrameListDataset):
    """Shared split / root / modality / condition checks of the real-dataset loaders.

    Class attributes of a loader:
        title: name in messages (``"Cityscapes"``).
        split_names: the splits it has.
        modality_names: the modalities it provides (``("rgb", "depth")``).
        condition_names: the conditions one may select (empty: no selection).

    Raises:
        ValueError: unknown split, an empty or unknown condition / modality selection.
    """

    title = "dataset"
    split_names: tuple[str, ...] = ()
    modality_names: tuple[str, ...] = ()
    condition_names: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: str | Sequence[int] | None = None,
        modalities: Sequence[str] | None = None,
        conditions: Sequence[str] | None = None,
    ) -> None:
        super().__init__(size)
        if split not in self.split_names:
            raise ValueError(f"{self.title} split must be one of {list(self.split_names)}, got {split!r}")
        if conditions is not None:
            bad = [c for c in conditions if c not in self.condition_names]
            if bad or not conditions:
                raise ValueError(
                    f"{self.title} conditions must be a non-empty subset of {list(self.condition_names)}, "
                    f"got {conditions!r}"
                )
        self.requested_modalities = resolve_modalities(modalities, self.modality_names, self.title)
        self.requested_conditions = tuple(conditions) if conditions is not None else None
        self.root = Path(root)
        self.split = split
