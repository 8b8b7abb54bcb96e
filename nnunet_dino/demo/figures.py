"""The demo's figures: one PNG per test case, the image, the ground truth and each model's prediction,
shown as radiology viewers show an axial slice (anterior at the top, the patient's right on the viewer's
left), with a legend naming each label's colour.

The orientation comes from each image's direction matrix, so a volume stored left-right or
upside-down (NIfTI's RAS, as the Colin27 template) is shown the same way as one stored in ITK's LPS.
Drawn on matplotlib Figures, without pyplot: the caller's backend is left alone."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# ITK's physical axes: +x towards the patient's left, +y posterior, +z superior (LPS)
LEFT_RIGHT, ANTERIOR_POSTERIOR, INFERIOR_SUPERIOR = 0, 1, 2


def _closest_index_axis(direction: np.ndarray, physical_axis: int, candidates: Sequence[int]) -> int:
    """The image index axis (ITK order) whose direction lies closest to `physical_axis`."""
    return max(candidates, key=lambda axis: abs(direction[physical_axis, axis]))


def radiological_view(array: np.ndarray, direction: Sequence[float],
                      slice_index: Optional[int] = None) -> Tuple[np.ndarray, Optional[int]]:
    """(2D view, slice shown) of an image array in numpy order ((z,) y, x) with ITK's `direction`
    (row-major, column c = the physical direction of index axis c). A volume is cut across its index
    axis closest to the head-foot axis, at `slice_index` (default: the middle). The view's rows run
    anterior -> posterior and its columns the patient's right -> left, whatever the storage order."""
    ndim = array.ndim
    matrix = np.asarray(direction, dtype=float).reshape(ndim, ndim)
    numpy_axis = lambda index_axis: ndim - 1 - index_axis  # noqa: E731 - ITK (x, y, z) vs numpy (z, y, x)
    in_plane, shown = list(range(ndim)), None
    if ndim == 3:
        normal = _closest_index_axis(matrix, INFERIOR_SUPERIOR, in_plane)
        in_plane.remove(normal)
        shown = array.shape[numpy_axis(normal)] // 2 if slice_index is None else slice_index
        array = np.take(array, shown, axis=numpy_axis(normal))
        remaining_numpy_axes = sorted(numpy_axis(a) for a in in_plane)
        plane_axis = {index_axis: remaining_numpy_axes.index(numpy_axis(index_axis)) for index_axis in in_plane}
    else:
        plane_axis = {index_axis: numpy_axis(index_axis) for index_axis in in_plane}
    rows = _closest_index_axis(matrix, ANTERIOR_POSTERIOR, in_plane)
    columns = next(axis for axis in in_plane if axis != rows)
    view = np.transpose(array, (plane_axis[rows], plane_axis[columns]))
    if matrix[ANTERIOR_POSTERIOR, rows] < 0:  # rows must run towards posterior (+y)
        view = view[::-1, :]
    if matrix[LEFT_RIGHT, columns] < 0:  # columns must run towards the patient's left (+x)
        view = view[:, ::-1]
    return view, shown


def label_colours(num_labels: int) -> np.ndarray:
    """RGBA colour of each label value 0..num_labels-1: matplotlib's tab10 from label 1 on (0, the
    background, is never drawn)."""
    import matplotlib
    palette = matplotlib.colormaps["tab10"]
    return np.array([(0.0, 0.0, 0.0, 0.0)] + [palette((value - 1) % 10) for value in range(1, max(num_labels, 2))])


def _read(path: str) -> Tuple[np.ndarray, Tuple[float, ...]]:
    import SimpleITK as sitk
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), image.GetDirection()


def draw_case(case: str, image: Tuple[np.ndarray, Sequence[float]],
              panels: Dict[str, Tuple[np.ndarray, Sequence[float]]], label_names: Dict[int, str],
              captions: Optional[Dict[str, str]] = None):
    """A Figure: the image, then each segmentation (title -> (array, direction)) over it, and a legend
    of the label colours. `captions`: a second title line per panel (e.g. that a backbone was random)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    captions = captions or {}
    colours = label_colours(max(label_names, default=0) + 1)
    grey, shown = radiological_view(*image)
    fig = Figure(figsize=(3.2 * (len(panels) + 1), 3.9))
    axes = fig.subplots(1, len(panels) + 1)
    axes[0].imshow(grey, cmap="gray")
    axes[0].set_title(case if shown is None else f"{case} (slice {shown})", fontsize=9)
    if image[0].ndim == 3:  # orientation letters, as a viewer shows them
        for text, x, y in (("A", 0.5, 0.97), ("P", 0.5, 0.03), ("R", 0.03, 0.5), ("L", 0.97, 0.5)):
            axes[0].text(x, y, text, transform=axes[0].transAxes, color="yellow", fontsize=8,
                         ha="center", va="center")
    for ax, (title, segmentation) in zip(axes[1:], panels.items()):
        labels = radiological_view(*segmentation)[0].astype(float)
        ax.imshow(grey, cmap="gray")
        ax.imshow(np.ma.masked_where(labels == 0, labels), cmap=ListedColormap(colours), vmin=0,
                  vmax=len(colours) - 1, alpha=0.55, interpolation="nearest")
        ax.set_title("\n".join(filter(None, (title, captions.get(title)))), fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.legend(handles=[Patch(color=colours[value], alpha=0.55, label=name.replace("_", " "))
                        for value, name in sorted(label_names.items()) if value != 0],
               loc="lower center", ncol=max(1, len(label_names)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def render_figures(images_dir: str, labels_dir: str, predictions: Dict[str, str], output_dir: str,
                   file_ending: str, label_names: Dict[int, str], max_cases: int = 3,
                   captions: Optional[Dict[str, str]] = None) -> List[str]:
    """One PNG per test case (the first `max_cases`): image, ground truth and every model's prediction
    (model name -> prediction folder). Returns the files written."""
    written = []
    cases = sorted(f[: -len(file_ending)] for f in os.listdir(labels_dir) if f.endswith(file_ending))
    for case in cases[:max_cases]:
        panels = {"ground truth": _read(os.path.join(labels_dir, case + file_ending))}
        panels.update({name: _read(os.path.join(folder, case + file_ending)) for name, folder in predictions.items()})
        fig = draw_case(case, _read(os.path.join(images_dir, f"{case}_0000{file_ending}")), panels, label_names,
                        captions)
        path = os.path.join(output_dir, f"figure_{case}.png")
        fig.savefig(path, dpi=90)
        written.append(path)
    return written
