"""Pictures: the only package that imports matplotlib."""

from cnnlab.viz.curves import plot_history, plot_runs
from cnnlab.viz.grids import augment_preview, plot_image_grid
from cnnlab.viz.confusion import image_to_data_uri, plot_confusion_matrix, png_to_data_uri
from cnnlab.viz.maps import plot_feature_maps, plot_filters, plot_grad_cam

__all__ = ["plot_history", "plot_runs", "plot_image_grid", "augment_preview",
           "plot_confusion_matrix", "image_to_data_uri", "png_to_data_uri",
           "plot_feature_maps", "plot_filters", "plot_grad_cam"]
