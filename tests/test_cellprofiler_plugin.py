"""CellProfiler module ``plugins/runstainseg.py``: runs headless in cellprofiler-core and the example
pipeline loads (skipped where CellProfiler is not installed; see docs/cellprofiler.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from stainseg.config import ChannelsConfig, ExperimentConfig, ModelConfig, SegmentConfig
from stainseg.export.apply import segment_planes
from stainseg.model import Model

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"

pytest.importorskip("cellprofiler_core", reason="cellprofiler-core is not installed (see docs/cellprofiler.md)")


@pytest.fixture(scope="module")
def cp_modules():
    import cellprofiler_core.preferences as prefs

    prefs.set_headless()
    prefs.set_plugin_directory(str(PLUGINS), globally=False)
    import cellprofiler_core.utilities.core.modules as modules

    modules.fill_modules()
    return modules


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model folder with random weights (plumbing: the module runs the real segmentation code)."""
    cfg = ExperimentConfig(name="t", root=".", pattern=r"(?P<channel>[A-Za-z]+)\.tif",
                           channels=ChannelsConfig(input=["BF1", "BF2"], nuclei="DNA"),
                           model=ModelConfig(in_channels=2), segment=SegmentConfig(tile_size=64, device="cpu"))
    return Model.new(["BF1", "BF2"], cfg=cfg).save(tmp_path_factory.mktemp("model") / "model")


def _planes(shape=(96, 128)):
    rng = np.random.default_rng(0)
    image = np.full(shape, 0.3) + rng.normal(0, 0.02, shape)
    for cy, cx in [(30, 30), (60, 90), (70, 30)]:
        rr, cc = disk((cy, cx), 10, shape=shape)
        image[rr, cc] += 0.4
    return [image.astype(np.float32), np.clip(image * 0.8 + 0.05, 0, 1).astype(np.float32)]


def test_module_segments_two_channel_images_into_objects(cp_modules, model_dir):
    from cellprofiler_core.image import Image, ImageSetList
    from cellprofiler_core.measurement import Measurements
    from cellprofiler_core.object import ObjectSet
    from cellprofiler_core.pipeline import Pipeline
    from cellprofiler_core.workspace import Workspace

    planes = _planes()
    image_set_list = ImageSetList()
    image_set = image_set_list.get_image_set(0)
    image_set.add("BF1", Image(planes[0]))
    image_set.add("BF2", Image(planes[1]))
    module = cp_modules.instantiate_module("RunStainseg")
    module.set_module_num(1)
    module.x_name.value = "BF1"
    module.further_images.value = "BF2"
    module.y_name.value = "Cells"
    module.model_directory.value = f"Elsewhere...|{model_dir}"
    module.use_model_settings.value = False
    module.tile_size.value = 64
    module.save_probabilities.value = True
    pipeline = Pipeline()
    pipeline.add_module(module)
    object_set, measurements = ObjectSet(), Measurements()
    workspace = Workspace(pipeline, module, image_set, object_set, measurements, image_set_list)
    module.run(workspace)

    objects = object_set.get_objects("Cells")
    expected = segment_planes(model_dir, planes, tile_size=64)
    np.testing.assert_array_equal(objects.segmented, expected["labels"])
    count = measurements.get_current_image_measurement("Count_Cells")
    assert count == int(len(np.unique(expected["labels"])) - 1)
    probability = image_set.get_image("StainsegProbabilities").pixel_data
    np.testing.assert_allclose(probability, 1 - expected["probability"][0], atol=1e-6)
    assert [s.text for s in module.visible_settings()].count("Tile size (pixels)") == 1


def test_settings_round_trip_through_a_saved_pipeline(cp_modules, tmp_path):
    from cellprofiler_core.pipeline import Pipeline

    module = cp_modules.instantiate_module("RunStainseg")
    module.set_module_num(1)
    module.x_name.value, module.y_name.value, module.tile_size.value = "BF", "Nuclei", 128
    pipeline = Pipeline()
    pipeline.add_module(module)
    with open(tmp_path / "p.cppipe", "w") as fd:
        pipeline.dump(fd)
    loaded = Pipeline()
    loaded.load(str(tmp_path / "p.cppipe"))
    again = loaded.modules()[0]
    assert again.module_name == "RunStainseg"
    assert [s.value_text for s in again.settings()] == [s.value_text for s in module.settings()]


def test_example_pipeline_loads_with_illumination_segmentation_and_measurements(cp_modules):
    pytest.importorskip("cellprofiler.modules.correctilluminationcalculate",
                        reason="the example pipeline's built-in modules need the full cellprofiler package")
    from cellprofiler_core.pipeline import Pipeline

    pipeline = Pipeline()
    pipeline.load(str(PLUGINS / "example.cppipe"))
    names = [m.module_name for m in pipeline.modules()]
    assert names[4:] == ["CorrectIlluminationCalculate", "CorrectIlluminationApply", "RunStainseg",
                         "MeasureObjectSizeShape", "MeasureObjectIntensity", "ExportToSpreadsheet"]
    run = pipeline.modules()[names.index("RunStainseg")]
    assert run.x_name.value == "CorrBrightField" and run.y_name.value == "Cells"
