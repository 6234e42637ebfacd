# Seed 003 ("Visualizing feature maps"), exactly as the tutorial writes it; imports swapped:
#   import tensorflow as tf; tf.keras.X             ->  from cnnlab import keras; keras.X
#   from tensorflow.keras.layers import ...         ->  from cnnlab.keras.layers import ...
# VGG16(weights='imagenet') reads Keras's own ImageNet file from ~/.keras/models (downloaded once).
from cnnlab import keras
from cnnlab.keras.layers import Conv2D, MaxPooling2D  # noqa: F401
import numpy as np
import matplotlib.pyplot as plt
# Load a pre-trained model
model = keras.applications.VGG16(weights='imagenet', include_top=False)
# Create a model that outputs feature maps from different layers
layer_names = ['block1_conv1', 'block2_conv1', 'block3_conv1', 'block4_conv1']
outputs = [model.get_layer(name).output for name in layer_names]
visualization_model = keras.Model(inputs=model.input, outputs=outputs)
# Load and preprocess a sample image
# Using a random image for demonstration
np.random.seed(42)
img = np.random.rand(1, 224, 224, 3).astype('float32') * 255
# Get feature maps
feature_maps = visualization_model.predict(img)
# Display feature maps from each layer
for i, (name, fmap) in enumerate(zip(layer_names, feature_maps)):
    print(f"Layer: {name}, Feature map shape: {fmap.shape}")
    n_features = min(8, fmap.shape[-1]) # Show first 8 filters
    fig, axes = plt.subplots(1, n_features, figsize=(20, 3))
    fig.suptitle(f'Feature maps from {name}')
    for j in range(n_features):
        axes[j].imshow(fmap[0, :, :, j], cmap='viridis')
        axes[j].axis('off')
        axes[j].set_title(f'Filter {j}')
    plt.tight_layout()
    plt.savefig(f'feature_maps_{name}.png')
    plt.show()
print("\nEarly layers detect simple patterns (edges, colors).")
print("Deeper layers detect complex patterns (textures, parts, objects).")
