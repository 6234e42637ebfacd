# Seed 003 ("Data augmentation" code example: nine augmented versions of one image), exactly as the tutorial
# writes it; imports swapped:
#   from tensorflow.keras.preprocessing.image import ...  ->  from cnnlab.keras.preprocessing.image import ...
from cnnlab import keras  # noqa: F401  (the tutorial's `import tensorflow as tf`)
from cnnlab.keras.preprocessing.image import ImageDataGenerator
import numpy as np
import matplotlib.pyplot as plt
# Create a sample image (for demonstration)
np.random.seed(42)
sample_image = np.random.rand(1, 150, 150, 3).astype('float32')
# Define augmentation
datagen = ImageDataGenerator(
    rotation_range=30, # Rotate up to 30 degrees
    width_shift_range=0.2, # Shift horizontally up to 20%
    height_shift_range=0.2, # Shift vertically up to 20%
    horizontal_flip=True, # Flip horizontally
    zoom_range=0.2, # Zoom in/out up to 20%
    shear_range=0.15, # Shear transformation
    brightness_range=[0.8, 1.2],# Brightness variation
    fill_mode='nearest' # Fill new pixels
)
# Generate augmented versions
fig, axes = plt.subplots(2, 5, figsize=(20, 8))
fig.suptitle('Original vs Augmented Images', fontsize=16)
# Show original
axes[0][0].imshow(sample_image[0])
axes[0][0].set_title('Original')
axes[0][0].axis('off')
# Generate 9 augmented versions
augmented_iterator = datagen.flow(sample_image, batch_size=1)
for i in range(9):
    augmented = next(augmented_iterator)
    row = (i + 1) // 5
    col = (i + 1) % 5
    axes[row][col].imshow(augmented[0])
    axes[row][col].set_title(f'Augmented {i+1}')
    axes[row][col].axis('off')
plt.tight_layout()
plt.savefig('augmentation_examples.png')
plt.show()
print("Each epoch sees different augmented versions of the same images.")
print("This effectively multiplies the dataset size and reduces overfitting.")
print("\nKey: NEVER augment validation or test data!")
