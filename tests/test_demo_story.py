"""The demo tells its own story: its steps and results on the console, whatever else its process or
nnU-Net prints in its log, and the end of that log when a step fails. Its figures show a slice as
radiology viewers do (anterior at the top, the patient's right on the left), whatever the storage
order of the volume, with a legend naming each label's colour."""
import warnings

import numpy as np
import pytest

from nnunet_dino.demo.console import FAILED_TAIL_LINES, DemoStepFailed, StepPrinter
from nnunet_dino.demo.figures import draw_case, label_colours, radiological_view
from nnunet_dino.errors import MissingInputError
from nnunet_dino.nnunet.runner import NnUNetCommandError

# row-major ITK directions (column c: the physical direction, in LPS, of index axis c)
DIRECTIONS = {
    "LPS, as ITK stores": np.eye(3),
    "RAS, as the Colin27 NIfTI": np.diag([-1.0, -1.0, 1.0]),
    "in-plane axes swapped, x stored right to left": np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]),
    "slices along the first index axis": np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0.0]]),
}


def physical_coordinates(shape_zyx, direction):
    """Per voxel of a numpy-ordered volume: its physical (x, y, z), origin 0, spacing 1."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_zyx], indexing="ij")
    index = np.stack([i, j, k])  # ITK order
    return np.einsum("pc,c...->p...", direction, index)


@pytest.mark.parametrize("name", DIRECTIONS)
def test_the_view_runs_anterior_to_posterior_down_and_right_to_left_across(name):
    direction = DIRECTIONS[name]
    x, y, z = physical_coordinates((5, 6, 7), direction)
    view_x, shown = radiological_view(x, direction.ravel())
    view_y, _ = radiological_view(y, direction.ravel())
    view_z, _ = radiological_view(z, direction.ravel())
    assert np.ptp(view_z) == 0, "the view is not an axial slice"
    assert (np.diff(view_y, axis=0) > 0).all() and (np.diff(view_y, axis=1) == 0).all()  # +y: posterior
    assert (np.diff(view_x, axis=1) > 0).all() and (np.diff(view_x, axis=0) == 0).all()  # +x: patient's left
    normal_length = {0: 7, 1: 6, 2: 5}[int(np.argmax(np.abs(direction[2])))]  # index axis -> its length
    assert shown == normal_length // 2


def test_a_2d_image_keeps_its_rows_and_columns():
    image = np.arange(12).reshape(3, 4)
    view, shown = radiological_view(image, (1.0, 0.0, 0.0, 1.0))
    assert shown is None and (view == image).all()


def test_the_legend_names_each_label_in_its_overlay_colour():
    direction = DIRECTIONS["RAS, as the Colin27 NIfTI"].ravel()
    image = np.random.default_rng(0).random((3, 8, 8))
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[:, :4], labels[:, 6:] = 1, 2
    names = {0: "background", 1: "cerebral_grey_matter", 2: "cerebellum"}
    fig = draw_case("case", (image, direction), {"ground truth": (labels, direction)}, names)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["cerebral grey matter", "cerebellum"]
    colours = label_colours(3)
    overlay = fig.axes[1].images[1]
    for value, handle in zip((1, 2), legend.legend_handles):
        assert np.allclose(handle.get_facecolor()[:3], colours[value][:3])
        assert np.allclose(overlay.cmap(overlay.norm(value))[:3], colours[value][:3])
    assert [t.get_text() for t in fig.axes[0].texts] == ["A", "P", "R", "L"]


def test_noise_goes_to_the_log_and_the_story_to_the_console(tmp_path, capsys):
    log = tmp_path / "demo_log.txt"
    steps = StepPrinter(2, log_path=str(log))
    with steps.quiet():
        steps.step("training")
        print("Trainer 'x' not found in nnunetv2.training.nnUNetTrainer.")
        warnings.simplefilter("default", FutureWarning)  # Python shows them by default; pytest.ini ignores them
        warnings.warn("`torch.jit.interface` is deprecated", FutureWarning)
        steps("2026-01-01 00:00:00: nnunet-dino budget: 800/800 iterations, 400.0 s")
    console = capsys.readouterr()
    assert console.out == "[1/2] training\n      800/800 iterations, 400 s of training, about 0 s left\n"
    assert console.err == ""
    logged = log.read_text()
    assert "not found in nnunetv2" in logged and "FutureWarning: `torch.jit.interface` is deprecated" in logged


def test_a_failed_step_shows_the_end_of_the_log_and_its_path(tmp_path, capsys):
    log = tmp_path / "demo_log.txt"
    steps = StepPrinter(7, log_path=str(log))
    with pytest.raises(DemoStepFailed, match=r"step 1/7 \(training nnUNetTrainer_demo\) failed"):
        with steps.quiet():
            steps.step("training nnUNetTrainer_demo")
            for number in range(40):
                print(f"nnU-Net line {number}")
            raise NnUNetCommandError("`nnUNetv2_train 902 2d 0` failed (exit 1):\nnnU-Net line 39")
    out = capsys.readouterr().out
    assert "!! [1/7] training nnUNetTrainer_demo FAILED: `nnUNetv2_train 902 2d 0` failed (exit 1)" in out
    shown = [line for line in out.splitlines() if line.startswith("   | ")]
    assert len(shown) == FAILED_TAIL_LINES and shown[-1].endswith("failed (exit 1)")
    assert "   | nnU-Net line 39" in shown and "nnU-Net line 10\n" not in out
    assert f"the whole log: {log}" in out


def test_a_user_mistake_is_not_dressed_as_a_failed_step(tmp_path, capsys):
    steps = StepPrinter(7, log_path=str(tmp_path / "demo_log.txt"))
    with pytest.raises(MissingInputError):
        with steps.quiet():
            raise MissingInputError("mricron-data is not installed")
    assert "FAILED" not in capsys.readouterr().out
