"""keras.applications: famous networks as Keras builds them (names, shapes and weight counts equal
Keras's), with ImageNet weights read from Keras's own files. Models are cnnlab functional models.

    from cnnlab.keras.applications import VGG16, MobileNetV2, ResNet50, EfficientNetB0
    from cnnlab.keras.applications.mobilenet_v2 import preprocess_input, decode_predictions
"""

from cnnlab.keras.applications import efficientnet, imagenet_utils, mobilenet_v2, resnet50, vgg16
from cnnlab.keras.applications.efficientnet import EfficientNetB0
from cnnlab.keras.applications.mobilenet_v2 import MobileNetV2
from cnnlab.keras.applications.resnet50 import ResNet50
from cnnlab.keras.applications.vgg16 import VGG16

__all__ = ["EfficientNetB0", "MobileNetV2", "ResNet50", "VGG16", "efficientnet", "imagenet_utils", "mobilenet_v2",
           "resnet50", "vgg16"]
