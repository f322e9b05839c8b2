#################################
#
# Imports from useful Python libraries
#
#################################

import numpy

#################################
#
# Imports from CellProfiler
#
##################################

from cellprofiler_core.image import Image
from cellprofiler_core.module.image_segmentation import ImageSegmentation
from cellprofiler_core.object import Objects
from cellprofiler_core.setting import Binary
from cellprofiler_core.setting.choice import Choice
from cellprofiler_core.setting.subscriber import ImageListSubscriber
from cellprofiler_core.setting.text import Directory, Float, ImageName, Integer

__doc__ = """\
RunStainseg
===========

**RunStainseg** segments cells or nuclei in label-free images (bright-field, or any non-nuclear
channels) with a network trained by `stainseg`_ on labels made automatically from end-point
fluorescent stains (Sadanandan et al., Sci. Rep. 2017). The module takes the input image(s) and
produces an object set; the class probabilities can be kept as an image.

The model is a folder written by ``stainseg train -o MODEL`` (``model.pt``, ``model.json``). Give
the input images in the order of the model's input planes (see ``MODEL/model.json``,
``plane_names``): the first one as the input image, the others under "Further input images". The
images are prepared exactly as in ``stainseg segment`` (``stainseg.Model.prepare``: spline
illumination correction when the model uses it, then the model's normalisation), so any intensity
scale works.

Installation: install stainseg into CellProfiler's Python environment (``pip install stainseg``
or ``pip install -e PATH/TO/stainseg``; it brings PyTorch), then put this file in your
CellProfiler plugins folder (*File > Preferences > CellProfiler plugins directory*) and restart.
See ``docs/cellprofiler.md`` of stainseg.

The network runs on the GPU when PyTorch finds one (device "auto"), else on the CPU.

|

============ ============ ===============
Supports 2D? Supports 3D? Respects masks?
============ ============ ===============
YES          NO           NO
============ ============ ===============

.. _stainseg: https://doi.org/10.1038/s41598-017-07599-6
"""

DEVICES = ["auto", "cpu", "cuda"]


class RunStainseg(ImageSegmentation):
    category = "Object Processing"

    module_name = "RunStainseg"

    variable_revision_number = 1

    doi = {
        "Please cite the following when using RunStainseg:": "https://doi.org/10.1038/s41598-017-07599-6",
    }

    def create_settings(self):
        super(RunStainseg, self).create_settings()

        self.x_name.text = "Select the input image (first model channel)"

        self.further_images = ImageListSubscriber(
            "Further input images (model channels 2, 3, ... in order)",
            can_be_blank=True,
            doc="""\
Models trained on several channels (e.g. three bright-field focal planes) need all of them, in the
order listed in ``MODEL/model.json`` under ``plane_names``. Leave empty for a one-plane model.""",
        )

        self.model_directory = Directory(
            "Model folder",
            doc="""\
The folder written by ``stainseg train -o MODEL``: it holds ``model.pt`` and ``model.json``.""",
        )

        self.use_model_settings = Binary(
            "Use the model's tile settings?",
            True,
            doc="""\
If enabled, the tile size, two-pass tiling and threshold saved with the model are used. Disable it
to set them here (for example a smaller tile size for less memory).""",
        )

        self.tile_size = Integer(
            "Tile size (pixels)",
            240,
            minval=16,
            doc="Side of the square tiles the network sees (the paper uses 240).",
        )

        self.two_pass = Binary(
            "Two tile passes?",
            True,
            doc="Add a second pass of tiles shifted by half a tile and blend both (hides tile seams).",
        )

        self.threshold = Float(
            "Probability threshold",
            0.5,
            minval=0.01,
            maxval=0.99,
            doc="Pixels whose foreground probability is above this value belong to objects.",
        )

        self.device = Choice(
            "Device",
            DEVICES,
            value="auto",
            doc='"auto" uses a CUDA GPU when PyTorch finds one, else the CPU.',
        )

        self.save_probabilities = Binary(
            "Save probability image?",
            False,
            doc="If enabled, the foreground probability (1 - background) is kept as a new image.",
        )

        self.probabilities_name = ImageName(
            "Name the probability image",
            "StainsegProbabilities",
            doc="Enter the name you want to call the probability image produced by this module.",
        )

    def settings(self):
        return [
            self.x_name,
            self.y_name,
            self.further_images,
            self.model_directory,
            self.use_model_settings,
            self.tile_size,
            self.two_pass,
            self.threshold,
            self.device,
            self.save_probabilities,
            self.probabilities_name,
        ]

    def visible_settings(self):
        vis_settings = [self.x_name, self.further_images, self.y_name, self.model_directory, self.use_model_settings]
        if not self.use_model_settings.value:
            vis_settings += [self.tile_size, self.two_pass, self.threshold]
        vis_settings += [self.device, self.save_probabilities]
        if self.save_probabilities.value:
            vis_settings += [self.probabilities_name]
        return vis_settings

    def run(self, workspace):
        from stainseg.export.apply import segment_planes

        images = workspace.image_set
        x = images.get_image(self.x_name.value)
        if x.volumetric:
            raise ValueError("RunStainseg segments 2-D images; this image is 3-D.")
        planes = [x.pixel_data]
        for name in self.further_images.value:
            planes.append(images.get_image(name).pixel_data)
        if len(planes) == 1 and x.multichannel:
            planes = [numpy.moveaxis(x.pixel_data, -1, 0)]

        overrides = {}
        if not self.use_model_settings.value:
            overrides = dict(tile_size=self.tile_size.value, two_pass=self.two_pass.value, threshold=self.threshold.value)
        result = segment_planes(self.model_directory.get_absolute_path(), planes, device=self.device.value, **overrides)
        y_data = result["labels"].astype(numpy.int32)

        y = Objects()
        y.segmented = y_data
        y.parent_image = x.parent_image
        objects = workspace.object_set
        objects.add_objects(y, self.y_name.value)

        if self.save_probabilities.value:
            foreground = (1.0 - result["probability"][0]).astype(numpy.float32)
            prob_image = Image(foreground, parent_image=x.parent_image, convert=False, dimensions=2)
            workspace.image_set.add(self.probabilities_name.value, prob_image)
            if self.show_window:
                workspace.display_data.probabilities = foreground

        self.add_measurements(workspace)

        if self.show_window:
            workspace.display_data.x_data = x.pixel_data
            workspace.display_data.y_data = y_data
            workspace.display_data.dimensions = x.dimensions

    def display(self, workspace, figure):
        layout = (2, 2) if self.save_probabilities.value else (2, 1)
        figure.set_subplots(dimensions=workspace.display_data.dimensions, subplots=layout)
        figure.subplot_imshow(colormap="gray", image=workspace.display_data.x_data, title="Input Image", x=0, y=0)
        figure.subplot_imshow_labels(image=workspace.display_data.y_data, sharexy=figure.subplot(0, 0),
                                     title=self.y_name.value, x=1, y=0)
        if self.save_probabilities.value:
            figure.subplot_imshow(colormap="gray", image=workspace.display_data.probabilities,
                                  sharexy=figure.subplot(0, 0), title=self.probabilities_name.value, x=0, y=1)
