"""`keras.preprocessing`: `image` (ImageDataGenerator, load_img, ...) and `image_dataset_from_directory`.

>>> from cnnlab.keras import preprocessing
>>> preprocessing.image.ImageDataGenerator(rescale=1 / 255).rescale
0.00392156862745098
"""

from cnnlab.keras.image_dataset import image_dataset_from_directory
from cnnlab.keras.preprocessing import image

__all__ = ["image", "image_dataset_from_directory"]
